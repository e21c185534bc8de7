//! A table's history: one entry per version still in the log — when, what operation, and how
//! many files and rows it added and removed.

use std::collections::HashMap;

use serde::Serialize;

use super::actions::{decode_path, Action};
use super::log::list_log;
use super::snapshot::{add_num_records, commit_times, read_commit, At, Snapshot};
use crate::error::Result;
use crate::storage::Storage;

/// One version of a table.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub version: u64,
    /// When the version was committed (ms since the epoch): the log file's modification time,
    /// as Delta time travel uses it.
    pub timestamp_ms: i64,
    /// `commitInfo.operation` (`WRITE`, `OPTIMIZE`, `CREATE TABLE AS SELECT`…), if recorded.
    pub operation: Option<String>,
    /// The writer (`commitInfo.engineInfo`), if recorded.
    pub engine: Option<String>,
    pub files_added: u64,
    pub files_removed: u64,
    /// Rows in the added files, from their statistics (None if a file has none).
    pub rows_added: Option<u64>,
    /// Rows in the removed files, from the statistics of their `add` (None if unknown).
    pub rows_removed: Option<u64>,
    /// Whether the version changed data (false for compaction: same rows, other files).
    pub data_change: bool,
    /// Applications whose progress this version records (`txn` app id → version).
    pub transactions: Vec<(String, i64)>,
}

/// Every version still in the log, oldest first. Versions whose commits were cleaned up
/// (only a checkpoint remains) are not listed.
pub async fn history(storage: &dyn Storage, location: &str) -> Result<Vec<HistoryEntry>> {
    let listing = list_log(storage, location).await?;
    let times = commit_times(storage, location, &listing).await?;
    // Rows of live files by path, to count the rows a `remove` takes away.
    let mut rows: HashMap<String, Option<u64>> = HashMap::new();
    if let Some(first) = listing.commits.keys().next().copied().filter(|f| *f > 0) {
        if let Ok(s) = Snapshot::load_at(storage, location, At::Version(first - 1)).await {
            for (p, a) in &s.files {
                rows.insert(p.clone(), add_num_records(a));
            }
        }
    }
    let mut out = Vec::new();
    for v in listing.commits.keys() {
        let mut e = HistoryEntry {
            version: *v,
            timestamp_ms: times.get(v).copied().unwrap_or(0),
            operation: None,
            engine: None,
            files_added: 0,
            files_removed: 0,
            rows_added: Some(0),
            rows_removed: Some(0),
            data_change: false,
            transactions: Vec::new(),
        };
        for a in read_commit(storage, location, *v).await? {
            match a {
                Action::CommitInfo(c) => {
                    e.operation = c["operation"].as_str().map(str::to_string);
                    e.engine = c["engineInfo"].as_str().map(str::to_string);
                }
                Action::Add(a) => {
                    let n = add_num_records(&a);
                    e.files_added += 1;
                    e.rows_added = e.rows_added.zip(n).map(|(x, y)| x + y);
                    e.data_change |= a.data_change;
                    rows.insert(decode_path(&a.path).unwrap_or(a.path), n);
                }
                Action::Remove(r) => {
                    let n = rows
                        .remove(&decode_path(&r.path).unwrap_or(r.path))
                        .flatten();
                    e.files_removed += 1;
                    e.rows_removed = e.rows_removed.zip(n).map(|(x, y)| x + y);
                    e.data_change |= r.data_change;
                }
                Action::Txn(t) => e.transactions.push((t.app_id, t.version)),
                Action::Protocol(_) | Action::Metadata(_) => e.data_change = true,
            }
        }
        out.push(e);
    }
    Ok(out)
}
