//! What a guest staged, checked before the host acts on it.
//!
//! A guest answers its staged versions ([`StagedCommit`]) as plain data, and the host then
//! writes their log entries or removes their files. The guest's own reads and writes went
//! through the grants, but its answer did not: a guest that names a path outside the lake
//! would have the host write or delete it. So every path of an answer is checked against the
//! job's grants first: the table's folder, its log entry, each written file, and each
//! `add`/`remove`/`cdc` path of the log entry, which must also be relative to the table
//! folder and stay in it (no absolute path, URI scheme or `..` segment, percent-encoded or
//! not, since other Delta readers decode them). If any path is refused, nothing is
//! committed, and only staged files inside the grants are removed.

use medallion_core::delta::{commit_location, decode_path};
use medallion_core::pipeline::{self, Committed, StagedCommit};
use medallion_core::storage::{join, Storage};

use super::grants::Grants;
use super::GuestError;

/// A staged version the host will not commit, naming the path and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused the guest's staged version of table `{table}`: {path} {reason}")]
pub struct StagedRefused {
    pub table: String,
    pub path: String,
    pub reason: String,
}

/// Checks every path of the staged versions against `grants` (write access).
pub fn check(grants: &Grants, staged: &[StagedCommit]) -> Result<(), StagedRefused> {
    for s in staged {
        let refuse = |path: &str, reason: String| StagedRefused {
            table: s.table.clone(),
            path: path.to_string(),
            reason,
        };
        let granted = |path: &str| {
            grants.check(path, true).map_err(|e| {
                refuse(
                    path,
                    format!("is outside the job's grants (granted: {})", e.granted),
                )
            })
        };
        if s.location.trim_matches('/').is_empty() {
            return Err(refuse(&s.location, "is not a table folder".into()));
        }
        granted(&s.location)?;
        granted(&commit_location(&s.location, s.version))?;
        for file in &s.written {
            granted(file)?;
        }
        for (line_no, line) in s.log_entry.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let action: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                refuse(
                    &commit_location(&s.location, s.version),
                    format!(
                        "has a log entry whose line {} is not JSON: {e}",
                        line_no + 1
                    ),
                )
            })?;
            for kind in ["add", "remove", "cdc"] {
                let Some(file) = action.get(kind) else {
                    continue;
                };
                let Some(path) = file.get("path").and_then(|p| p.as_str()) else {
                    return Err(refuse(
                        &commit_location(&s.location, s.version),
                        format!("has a log entry `{kind}` action without a path"),
                    ));
                };
                if let Some(reason) = not_inside_table(path) {
                    return Err(refuse(path, format!("({kind} path) {reason}")));
                }
                granted(&join(&s.location, path))?;
                if let Some(decoded) = decode_path(path).filter(|d| d != path) {
                    granted(&join(&s.location, &decoded))?;
                }
            }
        }
    }
    Ok(())
}

/// The staged versions with only their written files inside `grants`: what may be removed.
pub fn inside_grants(grants: &Grants, staged: Vec<StagedCommit>) -> Vec<StagedCommit> {
    staged
        .into_iter()
        .map(|mut s| {
            s.written.retain(|f| grants.check(f, true).is_ok());
            s
        })
        .collect()
}

/// Commits the staged versions ([`pipeline::commit`], at `now_ms`) if every path in them is
/// inside `grants`; otherwise commits none and removes their staged files that are inside.
pub async fn commit(
    storage: &dyn Storage,
    grants: &Grants,
    staged: Vec<StagedCommit>,
    now_ms: i64,
) -> Result<Vec<Committed>, GuestError> {
    if let Err(refused) = check(grants, &staged) {
        discard(storage, grants, staged).await;
        return Err(GuestError::Refused(format!("committing: {refused}")));
    }
    pipeline::commit(storage, staged, now_ms)
        .await
        .map_err(GuestError::Commit)
}

/// Removes the staged files of versions that will not be committed ([`pipeline::abort`]),
/// but never a file outside `grants`.
pub async fn discard(storage: &dyn Storage, grants: &Grants, staged: Vec<StagedCommit>) {
    pipeline::abort(storage, inside_grants(grants, staged)).await;
}

/// Why a log entry's file path does not name a file inside its table's folder, if it does
/// not. Checked on the path as written and percent-decoded, as Delta readers read it.
fn not_inside_table(path: &str) -> Option<String> {
    let Some(decoded) = decode_path(path) else {
        return Some("has percent-escapes that are not UTF-8".into());
    };
    for p in [path, decoded.as_str()] {
        if p.is_empty() {
            return Some("is empty".into());
        }
        if p.starts_with('/') || p.starts_with('\\') {
            return Some("is absolute; log entry paths must be relative to the table".into());
        }
        if has_scheme(p) {
            return Some("is a URI; log entry paths must be relative to the table".into());
        }
        // Medallion never writes `..`; refusing every one (not only those that climb out)
        // leaves nothing to how a reader resolves links.
        if p.split(['/', '\\']).any(|seg| seg == "..") {
            return Some("has a `..` segment; it must stay in the table folder".into());
        }
        if p.contains('\0') {
            return Some("has a NUL byte".into());
        }
    }
    None
}

/// Starts with a URI scheme (RFC 3986: a letter, then letters, digits, `+`, `-` or `.`, then
/// `:`), which also covers a Windows drive (`C:`). A `:` after `%` or `=` (in a partition
/// value) is not one.
fn has_scheme(path: &str) -> bool {
    let Some((scheme, _)) = path.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::guest::grants::Access;
    use crate::local_fs::LocalFs;

    const NOW: i64 = 1_700_000_000_000;

    /// A lake granted read-write, a sentinel file next to it (outside), and one staged
    /// table `silver/a` with a data file written.
    struct Fixture {
        _dir: tempfile::TempDir,
        lake: String,
        sentinel: String,
        grants: Grants,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        std::fs::create_dir_all(&lake).unwrap();
        let sentinel = dir.path().join("outside.parquet");
        std::fs::write(&sentinel, b"not the lake's").unwrap();
        let mut grants = Grants::new();
        grants.allow(lake.to_str().unwrap(), Access::ReadWrite);
        Fixture {
            lake: lake.to_str().unwrap().to_string(),
            sentinel: sentinel.to_str().unwrap().to_string(),
            _dir: dir,
            grants,
        }
    }

    /// A staged version 0 of `<lake>/<table>` whose data file exists, as a guest answers it.
    fn staged(lake: &str, table: &str) -> StagedCommit {
        let location = join(lake, table);
        let file = join(&location, "part-00000-r.snappy.parquet");
        std::fs::create_dir_all(&location).unwrap();
        std::fs::write(&file, b"PAR1").unwrap();
        StagedCommit {
            table: table.replace('/', "."),
            quarantine: false,
            location,
            version: 0,
            base_version: None,
            written: vec![file],
            log_entry: add_entry("part-00000-r.snappy.parquet"),
            checkpoint_interval: 10,
        }
    }

    fn add_entry(path: &str) -> String {
        let add = serde_json::json!({ "add": {
            "path": path, "partitionValues": {}, "size": 4,
            "modificationTime": 0, "dataChange": true,
        }});
        format!("{{\"commitInfo\":{{}}}}\n{add}\n")
    }

    fn no_log(location: &str) -> bool {
        !Path::new(&medallion_core::delta::log_dir(location)).exists()
    }

    #[tokio::test]
    async fn a_written_file_outside_the_lake_is_neither_committed_nor_deleted() {
        let f = fixture();
        let a = staged(&f.lake, "silver/a");
        let mut b = staged(&f.lake, "silver/b");
        b.written.push(f.sentinel.clone());
        let inside = a.written[0].clone();

        let err = commit(&LocalFs, &f.grants, vec![a.clone(), b.clone()], NOW)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&f.sentinel), "{err}");
        assert!(err.contains("outside the job's grants"), "{err}");
        assert!(Path::new(&f.sentinel).exists(), "the sentinel was deleted");
        assert!(
            no_log(&a.location) && no_log(&b.location),
            "a log entry was written"
        );
        // The refused run's staged files inside the lake are removed, as a failed run's.
        assert!(!Path::new(&inside).exists());
        assert!(!Path::new(&b.written[0]).exists());

        // Discarding a failed run's answer never reaches outside the grants either.
        discard(&LocalFs, &f.grants, vec![b]).await;
        assert!(
            Path::new(&f.sentinel).exists(),
            "discard deleted the sentinel"
        );
    }

    #[tokio::test]
    async fn a_log_entry_path_out_of_the_table_is_refused() {
        let f = fixture();
        let remove = serde_json::json!({ "remove": { "path": f.sentinel, "dataChange": true }});
        // (log entry, the path the error must name)
        let cases = [
            (
                add_entry("../../outside.parquet"),
                "../../outside.parquet".to_string(),
            ),
            (add_entry(&f.sentinel), f.sentinel.clone()),
            (
                add_entry("%2e%2e/%2E%2E/outside.parquet"),
                "%2e%2e/%2E%2E/outside.parquet".to_string(),
            ),
            (
                add_entry(&format!("file://{}", f.sentinel)),
                f.sentinel.clone(),
            ),
            (
                format!("{}{remove}\n", add_entry("part-00000-r.snappy.parquet")),
                f.sentinel.clone(),
            ),
        ];
        for (log_entry, named) in cases {
            let mut s = staged(&f.lake, "silver/a");
            s.log_entry = log_entry.clone();
            assert!(check(&f.grants, std::slice::from_ref(&s)).is_err());
            let err = commit(&LocalFs, &f.grants, vec![s.clone()], NOW)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(&named), "{log_entry}: {err}");
            assert!(Path::new(&f.sentinel).exists());
            assert!(no_log(&s.location), "{log_entry}: a log entry was written");
            assert!(!Path::new(&s.written[0]).exists());
        }
    }

    #[tokio::test]
    async fn a_table_outside_the_lake_is_refused() {
        let f = fixture();
        let outside = Path::new(&f.lake).parent().unwrap().join("elsewhere");
        let s = staged(outside.to_str().unwrap(), "t");
        let err = commit(&LocalFs, &f.grants, vec![s.clone()], NOW)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&s.location), "{err}");
        assert!(no_log(&s.location));
        assert!(
            Path::new(&s.written[0]).exists(),
            "a file outside the lake was deleted"
        );
    }

    #[tokio::test]
    async fn an_honest_answer_commits() {
        let f = fixture();
        let mut s = staged(&f.lake, "silver/a");
        // `..` inside a file name, not as a segment, is fine.
        s.log_entry.push_str(&add_entry("x..y.parquet"));
        check(&f.grants, std::slice::from_ref(&s)).unwrap();
        let committed = commit(&LocalFs, &f.grants, vec![s.clone()], NOW)
            .await
            .unwrap();
        assert_eq!(committed.len(), 1);
        assert!(Path::new(&commit_location(&s.location, 0)).exists());
        assert!(Path::new(&s.written[0]).exists());
    }

    #[test]
    fn paths_that_leave_the_table() {
        for bad in [
            "",
            "/abs.parquet",
            "\\abs.parquet",
            "..",
            "a/../../x",
            "a/..",
            "s3://bucket/x",
            "C:\\x",
            "%2e%2e/x",
            "%2Fabs",
            "%ff.parquet",
        ] {
            assert!(not_inside_table(bad).is_some(), "{bad}");
        }
        for good in [
            "part-0.parquet",
            "a/b.parquet",
            "x..y",
            "%20.parquet",
            "100%",
            "ts%3D2024-01-01%2000:00:00/part-0.parquet",
            "k=a%2Fb/part-0.parquet",
        ] {
            assert_eq!(not_inside_table(good), None, "{good}");
        }
    }
}
