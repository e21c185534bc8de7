//! A table's state at one version: the newest checkpoint at or below it, then the JSON
//! commits after that, replayed in order. Any version still in the log can be loaded (time
//! travel), by number or by the time it was committed.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use std::sync::Arc;

use super::actions::{decode_path, Action, Add, Metadata, Protocol, Remove, Txn};
use super::checkpoint::decode_checkpoint;
use super::commit_location;
use super::log::{list_log, probe_commits_from, LogListing};
use super::schema::arrow_schema_from_delta;
use crate::error::{Error, Result};
use crate::storage::{is_http, is_url, join, Storage};

/// Which version of a table to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum At {
    #[default]
    Latest,
    /// A version number.
    Version(u64),
    /// The last version committed at or before this time (milliseconds since the epoch).
    Timestamp(i64),
}

impl At {
    /// The version current at an RFC 3339 time (`2026-11-30T12:00:00Z`).
    pub fn from_rfc3339(text: &str) -> std::result::Result<At, String> {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| At::Timestamp(t.timestamp_millis()))
            .map_err(|e| {
                format!("`{text}` is not an RFC 3339 time (like 2026-11-30T12:00:00Z): {e}")
            })
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Latest => write!(f, "latest"),
            At::Version(v) => write!(f, "version {v}"),
            At::Timestamp(ms) => match chrono::DateTime::from_timestamp_millis(*ms) {
                Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
                None => write!(f, "{ms} ms"),
            },
        }
    }
}

/// The live files, schema and protocol of a Delta table at one version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub location: String,
    pub version: u64,
    pub protocol: Protocol,
    pub metadata: Metadata,
    /// Every column, partition columns included, in the order of the table's schema.
    pub schema: SchemaRef,
    /// Live data files by decoded path (relative to the table, or an absolute location).
    pub files: BTreeMap<String, Add>,
    /// Files removed and not yet expired, by decoded path: vacuum keeps them within retention,
    /// checkpoints carry them.
    pub tombstones: BTreeMap<String, Remove>,
    /// The last version each application committed (`txn` actions).
    pub txns: BTreeMap<String, Txn>,
    /// When this version was committed (ms since the epoch), where the store says.
    pub committed_ms: Option<i64>,
}

/// One live data file as a scan needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LiveFile {
    pub location: String,
    pub size: u64,
    /// The file's values of the table's partition columns, in their order (Delta's strings;
    /// `None` is NULL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_values: Vec<Option<String>>,
    /// The file's row count (`numRecords`), if its statistics give it: exact row counts let
    /// the planner put the smaller side of a join where it belongs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

fn delta_err(location: &str, message: impl Into<String>) -> Error {
    Error::Delta {
        location: location.to_string(),
        message: message.into(),
    }
}

/// The versions of the commit files in a table's log, ascending.
pub async fn commit_versions(storage: &dyn Storage, table: &str) -> Result<Vec<u64>> {
    Ok(list_log(storage, table)
        .await?
        .commits
        .into_keys()
        .collect())
}

/// The latest version of the table at `table`, `None` if there is no table.
pub async fn latest_version(storage: &dyn Storage, table: &str) -> Result<Option<u64>> {
    Ok(list_log(storage, table).await?.latest())
}

/// Whether `location` holds a Delta table (a `_delta_log/` with a commit or checkpoint).
pub async fn is_delta_table(storage: &dyn Storage, location: &str) -> Result<bool> {
    Ok(list_log(storage, location).await?.latest().is_some())
}

/// What one commit file says, for replay and history.
pub(crate) async fn read_commit(
    storage: &dyn Storage,
    table: &str,
    version: u64,
) -> Result<Vec<Action>> {
    let commit = commit_location(table, version);
    let bytes = storage.read(&commit).await?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| delta_err(&commit, "commit is not UTF-8"))?;
    let mut actions = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(a) = Action::parse_line(line)
            .map_err(|e| delta_err(&commit, format!("line {}: not a valid action: {e}", n + 1)))?
        {
            actions.push(a);
        }
    }
    Ok(actions)
}

/// Commit times by version, made strictly increasing as the protocol asks (a clock that went
/// backwards must not reorder versions). From the store's modification times, else from
/// each commit's `commitInfo.timestamp`.
pub(crate) async fn commit_times(
    storage: &dyn Storage,
    table: &str,
    listing: &LogListing,
) -> Result<BTreeMap<u64, i64>> {
    let mut times = BTreeMap::new();
    let mut previous = i64::MIN;
    for (v, meta) in &listing.commits {
        let t = match meta.as_ref().and_then(|m| m.last_modified_ms) {
            Some(t) => t,
            None => read_commit(storage, table, *v)
                .await?
                .iter()
                .find_map(|a| match a {
                    Action::CommitInfo(c) => c["timestamp"].as_i64(),
                    _ => None,
                })
                .unwrap_or(previous),
        };
        let t = t.max(previous.saturating_add(1));
        times.insert(*v, t);
        previous = t;
    }
    Ok(times)
}

impl Snapshot {
    /// The latest version of the table at `location`, or `None` if there is no table there.
    pub async fn try_load(storage: &dyn Storage, location: &str) -> Result<Option<Snapshot>> {
        let listing = list_log(storage, location).await?;
        if listing.latest().is_none() {
            return Ok(None);
        }
        Self::replay(storage, location, listing, At::Latest)
            .await
            .map(Some)
    }

    /// Like [`Snapshot::try_load`], but a missing table is an error.
    pub async fn load(storage: &dyn Storage, location: &str) -> Result<Snapshot> {
        Self::load_at(storage, location, At::Latest).await
    }

    /// The table at version or time `at`.
    pub async fn load_at(storage: &dyn Storage, location: &str, at: At) -> Result<Snapshot> {
        let listing = list_log(storage, location).await?;
        if listing.latest().is_none() {
            return Err(delta_err(
                location,
                "no Delta table here (no commits in _delta_log/)",
            ));
        }
        Self::replay(storage, location, listing, at).await
    }

    async fn replay(
        storage: &dyn Storage,
        location: &str,
        mut listing: LogListing,
        at: At,
    ) -> Result<Snapshot> {
        let latest = listing.latest().unwrap_or(0);
        let target = match at {
            At::Latest => latest,
            At::Version(v) if v > latest => {
                return Err(delta_err(
                    location,
                    format!("there is no version {v}: the latest is {latest}"),
                ))
            }
            At::Version(v) => v,
            At::Timestamp(ms) => {
                if is_http(location) && listing.commits.keys().next().is_some_and(|f| *f > 0) {
                    probe_commits_from(storage, location, 0, &mut listing).await?;
                }
                let times = commit_times(storage, location, &listing).await?;
                match times.iter().rev().find(|(_, t)| **t <= ms) {
                    Some((v, _)) => *v,
                    None => {
                        let earliest = times
                            .iter()
                            .next()
                            .map(|(v, t)| {
                                format!("version {v}, committed at {}", At::Timestamp(*t))
                            })
                            .unwrap_or_else(|| "unknown".into());
                        return Err(delta_err(
                            location,
                            format!(
                                "no version was committed at or before {at}; the earliest in the log is {earliest}"
                            ),
                        ));
                    }
                }
            }
        };
        // Over HTTP only the commits after `_last_checkpoint` were probed; an older version
        // needs the commits from the start.
        if is_http(location)
            && listing.checkpoint_at_or_below(target).is_none()
            && !listing.commits.contains_key(&0)
        {
            probe_commits_from(storage, location, 0, &mut listing).await?;
        }
        let checkpoint = listing.checkpoint_at_or_below(target).cloned();
        let first = checkpoint.as_ref().map(|c| c.version + 1).unwrap_or(0);
        for v in first..=target {
            if !listing.commits.contains_key(&v) {
                let earliest = listing.commits.keys().next().copied().unwrap_or(0);
                return Err(delta_err(
                    location,
                    format!(
                        "version {target} cannot be read: the log has no commit {v} and no checkpoint \
                         covers it (commits before {earliest} were removed by log cleanup)"
                    ),
                ));
            }
        }

        let mut state = Replay::default();
        if let Some(c) = &checkpoint {
            for part in &c.files {
                let bytes = storage.read(part).await?;
                for a in decode_checkpoint(part, bytes)? {
                    state.apply(location, a)?;
                }
            }
        }
        for v in first..=target {
            for a in read_commit(storage, location, v).await? {
                state.apply(location, a)?;
            }
        }
        let protocol = state
            .protocol
            .ok_or_else(|| delta_err(location, "the log has no protocol action"))?;
        let metadata = state
            .metadata
            .ok_or_else(|| delta_err(location, "the log has no metaData action"))?;
        check_readable(location, &protocol, &metadata, &state.files)?;
        let schema =
            arrow_schema_from_delta(&metadata.schema_string).map_err(|m| delta_err(location, m))?;
        for p in &metadata.partition_columns {
            if schema.field_with_name(p).is_err() {
                return Err(delta_err(
                    location,
                    format!("partition column `{p}` is not in the table's schema"),
                ));
            }
        }
        let committed_ms = listing
            .commits
            .get(&target)
            .and_then(|m| m.as_ref())
            .and_then(|m| m.last_modified_ms);
        Ok(Snapshot {
            location: location.to_string(),
            version: target,
            protocol,
            metadata,
            schema: Arc::new(schema),
            files: state.files,
            tombstones: state.tombstones,
            txns: state.txns,
            committed_ms,
        })
    }

    /// The full location of a file given by its decoded path. Below an HTTP URL the path is
    /// percent-encoded again, as the log has it: a folder named `k=a%2Fb` is `k%3Da%252Fb`
    /// in a URL, or the server would decode it into another name. An S3 key is the decoded
    /// path itself, as other Delta writers store it.
    pub fn file_location(&self, path: &str) -> String {
        absolute_location(path).unwrap_or_else(|| match is_http(&self.location) {
            true => join(&self.location, &super::actions::encode_path(path)),
            false => join(&self.location, path),
        })
    }

    /// Full locations and sizes of the live data files.
    pub fn file_locations(&self) -> Vec<(String, u64)> {
        self.files
            .iter()
            .map(|(p, a)| (self.file_location(p), a.size.max(0) as u64))
            .collect()
    }

    /// The live files with their partition values, as a scan reads them.
    pub fn live_files(&self) -> Vec<LiveFile> {
        self.files
            .iter()
            .map(|(p, a)| LiveFile {
                location: self.file_location(p),
                size: a.size.max(0) as u64,
                // The protocol reads an empty partition value as NULL.
                partition_values: self
                    .metadata
                    .partition_columns
                    .iter()
                    .map(|c| {
                        a.partition_values
                            .get(c)
                            .cloned()
                            .flatten()
                            .filter(|v| !v.is_empty())
                    })
                    .collect(),
                rows: add_num_records(a),
            })
            .collect()
    }

    /// The partition columns' fields, in partition order.
    pub fn partition_fields(&self) -> Vec<Field> {
        partition_fields(&self.schema, &self.metadata.partition_columns)
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
        self.files.values().map(add_num_records).sum()
    }

    /// The last version application `app_id` recorded with a `txn` action.
    pub fn app_version(&self, app_id: &str) -> Option<i64> {
        self.txns.get(app_id).map(|t| t.version)
    }

    /// A table property from `metaData.configuration`.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.metadata
            .configuration
            .get(key)
            .and_then(|v| v.as_deref())
    }

    /// The actions a checkpoint of this version holds: protocol, metadata, transactions,
    /// live files, and tombstones younger than the table's retention.
    pub fn checkpoint_actions(&self, now_ms: i64) -> Vec<Action> {
        let retention = retention_ms(self.property(DELETED_FILE_RETENTION_KEY));
        let mut actions = vec![
            Action::Protocol(self.protocol.clone()),
            Action::Metadata(self.metadata.clone()),
        ];
        actions.extend(self.txns.values().cloned().map(Action::Txn));
        actions.extend(self.files.values().map(|a| {
            let mut a = a.clone();
            a.data_change = false;
            Action::Add(a)
        }));
        actions.extend(
            self.tombstones
                .values()
                .filter(|r| r.deletion_timestamp.unwrap_or(now_ms) > now_ms - retention)
                .cloned()
                .map(|mut r| {
                    r.data_change = false;
                    Action::Remove(r)
                }),
        );
        actions
    }

    /// Refuses tables this writer cannot write correctly, naming the feature. `removes`:
    /// whether the write removes files (an overwrite, optimize), which append-only tables forbid.
    pub fn check_writable(&self, removes: bool) -> Result<()> {
        check_writable(&self.location, &self.protocol, &self.metadata, removes)
    }
}

/// The table property holding how long removed files stay restorable (vacuum keeps them).
pub const DELETED_FILE_RETENTION_KEY: &str = "delta.deletedFileRetentionDuration";

/// A Delta interval (`interval 7 days`, `interval 36 hours`…) in milliseconds; 7 days if absent
/// or unreadable (the protocol's default).
pub fn retention_ms(value: Option<&str>) -> i64 {
    const WEEK: i64 = 7 * 24 * 3600 * 1000;
    let Some(v) = value else { return WEEK };
    let mut words = v.split_whitespace();
    if words.next().map(|w| w.eq_ignore_ascii_case("interval")) != Some(true) {
        return WEEK;
    }
    let (Some(n), Some(unit)) = (
        words.next().and_then(|n| n.parse::<i64>().ok()),
        words.next(),
    ) else {
        return WEEK;
    };
    let unit_ms = match unit.trim_end_matches('s').to_ascii_lowercase().as_str() {
        "week" => 7 * 24 * 3600 * 1000,
        "day" => 24 * 3600 * 1000,
        "hour" => 3600 * 1000,
        "minute" => 60 * 1000,
        "second" => 1000,
        _ => return WEEK,
    };
    n.saturating_mul(unit_ms)
}

/// The Arrow fields of `columns` in `schema`, in the order of `columns`.
pub fn partition_fields(schema: &Schema, columns: &[String]) -> Vec<Field> {
    columns
        .iter()
        .filter_map(|c| schema.field_with_name(c).ok().cloned())
        .collect()
}

/// `numRecords` from an `add`'s statistics.
pub fn add_num_records(a: &Add) -> Option<u64> {
    let stats: serde_json::Value = serde_json::from_str(a.stats.as_deref()?).ok()?;
    stats["numRecords"].as_u64()
}

/// A decoded `add.path` that is itself a full location (another writer's absolute path).
fn absolute_location(path: &str) -> Option<String> {
    if let Some(local) = path.strip_prefix("file://") {
        return Some(local.to_string());
    }
    (is_url(path) || path.contains("://")).then(|| path.to_string())
}

/// The state built up while replaying a log.
#[derive(Default)]
struct Replay {
    protocol: Option<Protocol>,
    metadata: Option<Metadata>,
    files: BTreeMap<String, Add>,
    tombstones: BTreeMap<String, Remove>,
    txns: BTreeMap<String, Txn>,
}

impl Replay {
    fn apply(&mut self, location: &str, action: Action) -> Result<()> {
        let decode = |p: &str| {
            decode_path(p).ok_or_else(|| {
                delta_err(
                    location,
                    format!("file path `{p}` has escapes that are not UTF-8"),
                )
            })
        };
        match action {
            Action::Protocol(p) => self.protocol = Some(p),
            Action::Metadata(m) => self.metadata = Some(m),
            Action::Add(a) => {
                let path = decode(&a.path)?;
                self.tombstones.remove(&path);
                self.files.insert(path, a);
            }
            Action::Remove(r) => {
                let path = decode(&r.path)?;
                self.files.remove(&path);
                self.tombstones.insert(path, r);
            }
            Action::Txn(t) => {
                self.txns.insert(t.app_id.clone(), t);
            }
            Action::CommitInfo(_) => {}
        }
        Ok(())
    }
}

/// Reader features Medallion reads correctly; the others are refused by name.
/// `deletionVectors` and `columnMapping` are checked by use (a file with a deletion vector, a
/// mapping mode other than `none`), so a table that only enables them stays readable.
const READER_FEATURES: &[&str] = &[
    "timestampNtz",
    "deletionVectors",
    "columnMapping",
    "vacuumProtocolCheck",
];

fn check_readable(
    location: &str,
    protocol: &Protocol,
    metadata: &Metadata,
    files: &BTreeMap<String, Add>,
) -> Result<()> {
    if protocol.min_reader_version > 3 {
        return Err(delta_err(
            location,
            format!(
                "reader version {} is newer than Medallion supports (3)",
                protocol.min_reader_version
            ),
        ));
    }
    let unsupported: Vec<String> = protocol
        .reader_features
        .iter()
        .flatten()
        .filter(|f| !READER_FEATURES.contains(&f.as_str()))
        .map(|f| format!("`{f}`"))
        .collect();
    if !unsupported.is_empty() {
        return Err(delta_err(
            location,
            format!(
                "the table needs reader feature{} {}, which Medallion does not support",
                if unsupported.len() > 1 { "s" } else { "" },
                unsupported.join(", ")
            ),
        ));
    }
    if let Some(Some(mode)) = metadata.configuration.get("delta.columnMapping.mode") {
        if mode != "none" {
            return Err(delta_err(
                location,
                format!("column mapping (mode `{mode}`) is not supported"),
            ));
        }
    }
    if let Some(a) = files.values().find(|a| a.deletion_vector.is_some()) {
        return Err(delta_err(
            location,
            format!(
                "file {} has a deletion vector (reader feature `deletionVectors`), which Medallion does not support",
                a.path
            ),
        ));
    }
    Ok(())
}

/// Writer features Medallion honours when writing: `appendOnly` (no removes),
/// `timestampNtz`, `vacuumProtocolCheck`. Invariants, constraints, generated and identity
/// columns, change data feed, column mapping, deletion vectors, row tracking, in-commit
/// timestamps, domain metadata, v2 checkpoints… each need writer behaviour Medallion does not
/// have, so tables that use them are refused by name rather than silently corrupted.
const WRITER_FEATURES: &[&str] = &[
    "appendOnly",
    "timestampNtz",
    "vacuumProtocolCheck",
    "invariants",
    "checkConstraints",
    "changeDataFeed",
    "generatedColumns",
];

fn check_writable(
    location: &str,
    protocol: &Protocol,
    metadata: &Metadata,
    removes: bool,
) -> Result<()> {
    let refuse = |what: String| {
        Err(delta_err(
            location,
            format!("Medallion cannot write this table: {what}"),
        ))
    };
    if protocol.min_writer_version > 7 {
        return refuse(format!(
            "writer version {} is newer than Medallion supports (7)",
            protocol.min_writer_version
        ));
    }
    for f in protocol.writer_features.iter().flatten() {
        if !WRITER_FEATURES.contains(&f.as_str()) {
            return refuse(format!("it needs writer feature `{f}`"));
        }
    }
    let config = |k: &str| {
        metadata
            .configuration
            .get(k)
            .and_then(|v| v.as_deref())
            .map(str::to_ascii_lowercase)
    };
    if removes
        && config("delta.appendonly")
            .or(config("delta.appendOnly"))
            .as_deref()
            == Some("true")
    {
        return refuse(
            "it is append-only (delta.appendOnly = true) and this write removes files".into(),
        );
    }
    if config("delta.enableChangeDataFeed").as_deref() == Some("true") && removes {
        return refuse("it records a change data feed (writer feature `changeDataFeed`)".into());
    }
    if metadata
        .configuration
        .keys()
        .any(|k| k.starts_with("delta.constraints."))
    {
        return refuse("it has CHECK constraints (writer feature `checkConstraints`)".into());
    }
    let schema = &metadata.schema_string;
    for (marker, feature) in [
        ("delta.invariants", "invariants"),
        ("delta.generationExpression", "generatedColumns"),
        ("delta.identity", "identityColumns"),
        ("delta.columnMapping", "columnMapping"),
    ] {
        if schema.contains(marker) {
            return refuse(format!("its schema uses writer feature `{feature}`"));
        }
    }
    if let Some(mode) = config("delta.columnMapping.mode") {
        if mode != "none" {
            return refuse("it uses column mapping (writer feature `columnMapping`)".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(w: i32, features: Option<Vec<&str>>) -> Protocol {
        Protocol {
            min_reader_version: 1,
            min_writer_version: w,
            reader_features: None,
            writer_features: features.map(|f| f.into_iter().map(String::from).collect()),
        }
    }

    fn metadata(config: &[(&str, &str)]) -> Metadata {
        Metadata {
            id: "x".into(),
            name: None,
            description: None,
            format: super::super::actions::Format {
                provider: "parquet".into(),
                options: Default::default(),
            },
            schema_string: r#"{"type":"struct","fields":[]}"#.into(),
            partition_columns: vec![],
            configuration: config
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect(),
            created_time: None,
        }
    }

    #[test]
    fn writers_refuse_features_they_cannot_honour() {
        let ok = check_writable("t", &protocol(2, None), &metadata(&[]), true);
        assert!(ok.is_ok());
        let err = check_writable(
            "t",
            &protocol(7, Some(vec!["rowTracking"])),
            &metadata(&[]),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rowTracking"), "{err}");
        let err = check_writable(
            "t",
            &protocol(2, None),
            &metadata(&[("delta.appendOnly", "true")]),
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("append-only"), "{err}");
        assert!(check_writable(
            "t",
            &protocol(2, None),
            &metadata(&[("delta.appendOnly", "true")]),
            false
        )
        .is_ok());
        let err = check_writable(
            "t",
            &protocol(3, None),
            &metadata(&[("delta.constraints.positive", "x > 0")]),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("checkConstraints"), "{err}");
        let err = check_writable("t", &protocol(8, None), &metadata(&[]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("writer version 8"), "{err}");
    }

    #[test]
    fn retention_intervals() {
        assert_eq!(retention_ms(None), 7 * 24 * 3600 * 1000);
        assert_eq!(retention_ms(Some("interval 2 days")), 2 * 24 * 3600 * 1000);
        assert_eq!(retention_ms(Some("interval 1 hour")), 3600 * 1000);
        assert_eq!(retention_ms(Some("nonsense")), 7 * 24 * 3600 * 1000);
    }
}
