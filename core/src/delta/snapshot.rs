//! A table's state at one version, replayed from its JSON commits.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::SchemaRef;
use std::sync::Arc;

use super::actions::{Action, Add, Metadata, Protocol};
use super::schema::arrow_schema_from_delta;
use super::{commit_location, log_dir};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// The live files, schema and protocol of a Delta table at one version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub location: String,
    pub version: u64,
    pub protocol: Protocol,
    pub metadata: Metadata,
    pub schema: SchemaRef,
    /// Live data files by path relative to the table.
    pub files: BTreeMap<String, Add>,
}

fn delta_err(location: &str, message: impl Into<String>) -> Error {
    Error::Delta {
        location: location.to_string(),
        message: message.into(),
    }
}

/// The versions of the commit files in a table's log, ascending.
pub async fn commit_versions(storage: &dyn Storage, table: &str) -> Result<Vec<u64>> {
    if crate::storage::is_url(table) {
        return probe_versions(storage, table).await;
    }
    let mut versions: Vec<u64> = storage
        .list(&log_dir(table))
        .await?
        .iter()
        .filter_map(|m| {
            let name = m.location.rsplit('/').next()?;
            let stem = name.strip_suffix(".json")?;
            (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
                .then(|| stem.parse().ok())
                .flatten()
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Plain HTTP cannot list `_delta_log/`: ask for commit 0, 1, 2… until one is missing.
async fn probe_versions(storage: &dyn Storage, table: &str) -> Result<Vec<u64>> {
    let mut versions = Vec::new();
    loop {
        let v = versions.len() as u64;
        match storage.head(&commit_location(table, v)).await {
            Ok(_) => versions.push(v),
            Err(Error::NotFound { .. }) => return Ok(versions),
            Err(e) => return Err(e),
        }
    }
}

/// Whether `location` holds a Delta table (a `_delta_log/` with at least one commit).
pub async fn is_delta_table(storage: &dyn Storage, location: &str) -> Result<bool> {
    Ok(!commit_versions(storage, location).await?.is_empty())
}

impl Snapshot {
    /// The latest version of the table at `location`, or `None` if there is no table there.
    pub async fn try_load(storage: &dyn Storage, location: &str) -> Result<Option<Snapshot>> {
        let versions = commit_versions(storage, location).await?;
        if versions.is_empty() {
            return Ok(None);
        }
        for (expected, v) in versions.iter().enumerate() {
            if *v != expected as u64 {
                return Err(delta_err(
                    location,
                    format!(
                        "the log has no commit {expected} (it starts at or skips to {v}); \
                         tables whose early commits were replaced by checkpoints are not supported yet"
                    ),
                ));
            }
        }
        let mut protocol = None;
        let mut metadata = None;
        let mut files = BTreeMap::new();
        for v in &versions {
            let commit = commit_location(location, *v);
            let bytes = storage.read(&commit).await?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| delta_err(&commit, "commit is not UTF-8"))?;
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let action = Action::parse_line(line).map_err(|e| {
                    delta_err(&commit, format!("line {}: not a valid action: {e}", n + 1))
                })?;
                match action {
                    Some(Action::Protocol(p)) => protocol = Some(p),
                    Some(Action::Metadata(m)) => metadata = Some(m),
                    Some(Action::Add(a)) => {
                        files.insert(a.path.clone(), a);
                    }
                    Some(Action::Remove(r)) => {
                        files.remove(&r.path);
                    }
                    Some(Action::CommitInfo(_)) | None => {}
                }
            }
        }
        let protocol =
            protocol.ok_or_else(|| delta_err(location, "the log has no protocol action"))?;
        let metadata =
            metadata.ok_or_else(|| delta_err(location, "the log has no metaData action"))?;
        check_readable(location, &protocol, &metadata, &files)?;
        let schema =
            arrow_schema_from_delta(&metadata.schema_string).map_err(|m| delta_err(location, m))?;
        Ok(Some(Snapshot {
            location: location.to_string(),
            version: *versions.last().unwrap_or(&0),
            protocol,
            metadata,
            schema: Arc::new(schema),
            files,
        }))
    }

    /// Like [`Snapshot::try_load`], but a missing table is an error.
    pub async fn load(storage: &dyn Storage, location: &str) -> Result<Snapshot> {
        Self::try_load(storage, location)
            .await?
            .ok_or_else(|| delta_err(location, "no Delta table here (no commits in _delta_log/)"))
    }

    /// Full locations and sizes of the live data files.
    pub fn file_locations(&self) -> Vec<(String, u64)> {
        self.files
            .values()
            .map(|a| {
                (
                    crate::storage::join(&self.location, &a.path),
                    a.size.max(0) as u64,
                )
            })
            .collect()
    }

    /// The value of tag `key` on each live file that has it.
    pub fn file_tags<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.files.values().filter_map(move |a| {
            a.tags
                .as_ref()
                .and_then(|t| t.get(key))
                .and_then(|v| v.as_deref())
        })
    }

    /// Rows in the live files, from their statistics (None if any file lacks them).
    pub fn num_records(&self) -> Option<u64> {
        self.files
            .values()
            .map(|a| {
                let stats: serde_json::Value = serde_json::from_str(a.stats.as_deref()?).ok()?;
                stats["numRecords"].as_u64()
            })
            .sum()
    }
}

fn check_readable(
    location: &str,
    protocol: &Protocol,
    metadata: &Metadata,
    files: &BTreeMap<String, Add>,
) -> Result<()> {
    const SUPPORTED: &[&str] = &["timestampNtz"];
    if protocol.min_reader_version > 3 {
        return Err(delta_err(
            location,
            format!(
                "reader version {} is newer than Medallion supports (3)",
                protocol.min_reader_version
            ),
        ));
    }
    for f in protocol.reader_features.iter().flatten() {
        if !SUPPORTED.contains(&f.as_str()) {
            return Err(delta_err(
                location,
                format!("the table needs reader feature `{f}`, which Medallion does not support"),
            ));
        }
    }
    if let Some(Some(mode)) = metadata.configuration.get("delta.columnMapping.mode") {
        if mode != "none" {
            return Err(delta_err(
                location,
                format!("column mapping mode `{mode}` is not supported"),
            ));
        }
    }
    if !metadata.partition_columns.is_empty() {
        return Err(delta_err(
            location,
            format!(
                "partitioned tables (by {}) are not supported yet",
                metadata.partition_columns.join(", ")
            ),
        ));
    }
    if let Some(a) = files.values().find(|a| a.deletion_vector.is_some()) {
        return Err(delta_err(
            location,
            format!(
                "file {} has a deletion vector, which is not supported",
                a.path
            ),
        ));
    }
    Ok(())
}
