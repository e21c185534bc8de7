//! What a table's `_delta_log/` holds: commit files, checkpoints (single- and multi-part) and
//! `_last_checkpoint`, found by one listing where the store can list, and by reading
//! `_last_checkpoint` and probing commit names where it cannot (plain HTTP).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{commit_location, log_dir};
use crate::error::{Error, Result};
use crate::storage::{is_http, join, ObjectMeta, Storage};

/// `_delta_log/_last_checkpoint`: the latest checkpoint, so readers need not list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastCheckpoint {
    pub version: u64,
    /// Actions in the checkpoint.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
}

/// The files of one checkpoint: one, or `parts` of a multi-part checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFiles {
    pub version: u64,
    pub files: Vec<String>,
}

/// The log's contents as far as readers need them.
#[derive(Debug, Clone, Default)]
pub struct LogListing {
    /// Commit files by version (with what the store says of them, where it listed).
    pub commits: BTreeMap<u64, Option<ObjectMeta>>,
    /// Complete checkpoints, by version.
    pub checkpoints: BTreeMap<u64, CheckpointFiles>,
}

impl LogListing {
    /// The latest version in the log, if any.
    pub fn latest(&self) -> Option<u64> {
        let commit = self.commits.keys().next_back().copied();
        let checkpoint = self.checkpoints.keys().next_back().copied();
        commit.max(checkpoint)
    }

    /// The newest checkpoint at or below `version`.
    pub fn checkpoint_at_or_below(&self, version: u64) -> Option<&CheckpointFiles> {
        self.checkpoints
            .range(..=version)
            .next_back()
            .map(|(_, c)| c)
    }
}

/// Parses a log file name: `Some((version, kind))` for commits and checkpoint parts.
enum LogFile {
    Commit(u64),
    /// (version, part, parts); a single-file checkpoint is part 1 of 1.
    Checkpoint(u64, u32, u32),
}

pub(crate) fn is_log_file(name: &str) -> bool {
    parse_name(name).is_some()
}

fn parse_name(name: &str) -> Option<LogFile> {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(stem) = name.strip_suffix(".json") {
        if !digits(stem, 20) {
            return None;
        }
        return stem.parse().ok().map(LogFile::Commit);
    }
    let stem = name.strip_suffix(".parquet")?;
    let mut it = stem.split('.');
    let version = it.next().filter(|v| digits(v, 20))?.parse().ok()?;
    if it.next()? != "checkpoint" {
        return None;
    }
    match (it.next(), it.next(), it.next()) {
        (None, _, _) => Some(LogFile::Checkpoint(version, 1, 1)),
        (Some(part), Some(parts), None) if digits(part, 10) && digits(parts, 10) => Some(
            LogFile::Checkpoint(version, part.parse().ok()?, parts.parse().ok()?),
        ),
        // V2 checkpoints (`N.checkpoint.<uuid>.parquet`) need the v2Checkpoint reader
        // feature, which the protocol check refuses; their files are not listed here.
        _ => None,
    }
}

/// The name of a single-file checkpoint of `version`.
pub fn checkpoint_location(table: &str, version: u64) -> String {
    join(
        &log_dir(table),
        &format!("{version:020}.checkpoint.parquet"),
    )
}

/// `_delta_log/_last_checkpoint`.
pub fn last_checkpoint_location(table: &str) -> String {
    join(&log_dir(table), "_last_checkpoint")
}

/// Reads `_last_checkpoint`; `None` if missing. A malformed one is ignored (the protocol
/// makes it a hint: readers must work without it).
pub async fn read_last_checkpoint(
    storage: &dyn Storage,
    table: &str,
) -> Result<Option<LastCheckpoint>> {
    match storage.read(&last_checkpoint_location(table)).await {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Lists the log of the table at `table`. An empty listing means no table.
pub async fn list_log(storage: &dyn Storage, table: &str) -> Result<LogListing> {
    if is_http(table) {
        return probe_log(storage, table).await;
    }
    let mut listing = LogListing::default();
    let mut parts: BTreeMap<(u64, u32), Vec<(u32, String)>> = BTreeMap::new();
    for meta in storage.list(&log_dir(table)).await? {
        let Some(name) = meta.location.rsplit('/').next() else {
            continue;
        };
        match parse_name(name) {
            Some(LogFile::Commit(v)) => {
                listing.commits.insert(v, Some(meta));
            }
            Some(LogFile::Checkpoint(v, part, of)) => parts
                .entry((v, of))
                .or_default()
                .push((part, meta.location.clone())),
            None => {}
        }
    }
    for ((version, of), mut files) in parts {
        files.sort();
        files.dedup_by_key(|(p, _)| *p);
        // A multi-part checkpoint counts only when every part is there (a writer may have
        // died half way through writing them).
        let complete = files.len() as u32 == of
            && files
                .iter()
                .enumerate()
                .all(|(i, (p, _))| *p == i as u32 + 1);
        if complete {
            listing.checkpoints.insert(
                version,
                CheckpointFiles {
                    version,
                    files: files.into_iter().map(|(_, l)| l).collect(),
                },
            );
        }
    }
    Ok(listing)
}

/// Plain HTTP cannot list `_delta_log/`: start from `_last_checkpoint` if there is one, then
/// ask for the following commits until one is missing. Commits before the checkpoint are
/// not probed (time travel to them probes from 0, see [`probe_commits_from`]).
async fn probe_log(storage: &dyn Storage, table: &str) -> Result<LogListing> {
    let mut listing = LogListing::default();
    let mut next = 0;
    if let Some(last) = read_last_checkpoint(storage, table).await? {
        let files = match last.parts {
            None | Some(1) => vec![checkpoint_location(table, last.version)],
            Some(n) => (1..=n)
                .map(|p| {
                    join(
                        &log_dir(table),
                        &format!("{:020}.checkpoint.{p:010}.{n:010}.parquet", last.version),
                    )
                })
                .collect(),
        };
        listing.checkpoints.insert(
            last.version,
            CheckpointFiles {
                version: last.version,
                files,
            },
        );
        next = last.version + 1;
    }
    probe_commits_from(storage, table, next, &mut listing).await?;
    Ok(listing)
}

/// Adds commits `from`, `from + 1`… to `listing` until one is missing.
///
/// A server that answers every path with 200 (a single-page app's fallback page) would make
/// this endless, so after the 8th, 16th, 32nd… commit found it asks for one that cannot exist
/// yet; tables with few commits since their checkpoint pay nothing for that.
pub async fn probe_commits_from(
    storage: &dyn Storage,
    table: &str,
    from: u64,
    listing: &mut LogListing,
) -> Result<()> {
    let mut v = from;
    loop {
        match storage.head(&commit_location(table, v)).await {
            Ok(meta) => {
                listing.commits.insert(v, Some(meta));
                v += 1;
            }
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        let found = v - from;
        if found >= 8 && found.is_power_of_two() {
            let impossible = commit_location(table, v + IMPOSSIBLY_AHEAD);
            match storage.head(&impossible).await {
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
                Ok(_) => {
                    return Err(Error::Delta {
                        location: table.to_string(),
                        message: format!(
                            "the server answers 200 for {impossible}, a commit that cannot exist, \
                             so it answers every path (a single-page app's fallback?) and the log \
                             cannot be read over HTTP; serve the table from a plain file server, \
                             or if this is a Parquet file, name it `.parquet`"
                        ),
                    });
                }
            }
        }
    }
}

/// How far past the last commit found the check of [`probe_commits_from`] looks: no table
/// gains 2^40 commits between two reads.
const IMPOSSIBLY_AHEAD: u64 = 1 << 40;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_commits_and_checkpoints() {
        assert!(matches!(
            parse_name("00000000000000000042.json"),
            Some(LogFile::Commit(42))
        ));
        assert!(matches!(
            parse_name("00000000000000000010.checkpoint.parquet"),
            Some(LogFile::Checkpoint(10, 1, 1))
        ));
        assert!(matches!(
            parse_name("00000000000000000010.checkpoint.0000000002.0000000003.parquet"),
            Some(LogFile::Checkpoint(10, 2, 3))
        ));
        assert!(parse_name("00000000000000000010.crc").is_none());
        assert!(parse_name("_last_checkpoint").is_none());
        assert!(parse_name("00000000000000000010.checkpoint.80a083e8-7026.parquet").is_none());
        assert!(parse_name("0042.json").is_none());
    }
}
