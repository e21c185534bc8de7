//! Writing a table version in two steps, so that a run can stage every table before it
//! commits any: [`TableWrite::prepare`] writes the data files (invisible until committed) and
//! [`CommitRequest::commit`] publishes them with one put-if-absent of the next log entry.

use std::collections::HashMap;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use serde_json::json;
use std::sync::Arc;

use super::actions::{encode_path, Action, Add, Format, Metadata, Protocol, Remove, Txn};
use super::checkpoint::{write_checkpoint, CHECKPOINT_INTERVAL_KEY, DEFAULT_CHECKPOINT_INTERVAL};
use super::commit_location;
use super::partition::{check_partition_columns, partition_dir, split};
use super::schema::{cast_batch, delta_compatible_schema, delta_schema_string};
use super::snapshot::{LiveFile, Snapshot};
use super::stats::file_stats;
use crate::error::{Context, Error, Result};
use crate::storage::{join, Storage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Add files to the current version.
    Append,
    /// Replace every live file.
    Overwrite,
}

/// One data file to be: its rows and the tags its `add` action carries. A partitioned table
/// writes one file per partition the rows fall in, each with these tags.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub batches: Vec<RecordBatch>,
    pub tags: HashMap<String, String>,
}

/// What a run wants to write to one table.
#[derive(Debug, Clone)]
pub struct TableWrite {
    /// The table's name, for messages.
    pub table: String,
    pub location: String,
    pub mode: WriteMode,
    /// The schema of the rows to write (any Arrow types; made storable here).
    pub schema: SchemaRef,
    pub files: Vec<DataFile>,
    pub description: Option<String>,
    /// The run this write belongs to, recorded in `commitInfo` (file names do not depend on it).
    pub run_id: String,
    pub now_ms: i64,
    /// Extra fields for `commitInfo` (the run's counts, for example).
    pub commit_info: serde_json::Value,
    /// Settings recorded in the table's `metaData.configuration`.
    pub configuration: HashMap<String, String>,
    /// Columns to partition a new table by (an existing table keeps its own; an overwrite may
    /// change them).
    pub partition_by: Vec<String>,
    /// An application's progress to record atomically with the data (see [`Txn`]).
    pub txn: Option<Txn>,
    /// With `Append`: live files (their `add.path`) this version removes, as a merge does
    /// with the files it rewrote. Their rows must be in `files` again if they are to stay.
    pub removes: Vec<String>,
}

/// Data files written and the log entry that will publish them.
#[derive(Debug)]
pub struct CommitRequest {
    pub table: String,
    pub location: String,
    pub version: u64,
    pub written: Vec<String>,
    pub bytes_written: u64,
    pub rows_written: u64,
    /// The table's schema once committed (partition columns included).
    pub schema: SchemaRef,
    pub partition_columns: Vec<String>,
    /// Every live data file once committed: what readers of the staged version should scan.
    pub live_files: Vec<LiveFile>,
    /// The log entry (newline-delimited JSON actions) that publishes the version.
    pub log_entry: Bytes,
    /// Commits between checkpoints of this table.
    pub checkpoint_interval: u64,
}

/// The checkpoint interval of a table (its property, or the default).
pub fn checkpoint_interval(configuration: &HashMap<String, Option<String>>) -> u64 {
    parse_interval(
        configuration
            .get(CHECKPOINT_INTERVAL_KEY)
            .and_then(|v| v.as_deref()),
    )
}

/// A `delta.checkpointInterval` value; the default if absent, zero or not a number.
fn parse_interval(value: Option<&str>) -> u64 {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL)
}

/// One data file to write: rows of one partition, and what its `add` records.
pub(crate) struct NewFile<'a> {
    /// The table's location.
    pub table: &'a str,
    pub partition_columns: &'a [String],
    /// Values of the partition columns (`None`: NULL).
    pub partition_values: Vec<Option<String>>,
    /// The data files' schema (partition columns left out).
    pub schema: &'a SchemaRef,
    pub batches: &'a [RecordBatch],
    pub tags: HashMap<String, Option<String>>,
    pub now_ms: i64,
    /// False for rewrites that keep the same rows (optimize).
    pub data_change: bool,
    /// Its place among the files of one commit, for readable names.
    pub index: usize,
}

impl NewFile<'_> {
    /// Encodes the file and writes it under a fresh UUID name with put-if-absent (so no file a
    /// log may reference is ever replaced); returns its location and `add` action.
    pub async fn write(&self, storage: &dyn Storage) -> Result<(String, Add)> {
        let relative = format!(
            "{}part-{:05}-{}.c000.snappy.parquet",
            partition_dir(self.partition_columns, &self.partition_values),
            self.index,
            uuid::Uuid::new_v4()
        );
        let location = join(self.table, &relative);
        let bytes = encode_parquet(self.schema, self.batches)
            .context(|| format!("{location}: encoding Parquet"))?;
        let size = bytes.len() as i64;
        storage.put_if_absent(&location, bytes).await?;
        let add = Add {
            path: encode_path(&relative),
            partition_values: self
                .partition_columns
                .iter()
                .cloned()
                .zip(self.partition_values.iter().cloned())
                .collect(),
            size,
            modification_time: self.now_ms,
            data_change: self.data_change,
            stats: Some(file_stats(self.batches)),
            tags: (!self.tags.is_empty()).then(|| self.tags.clone()),
            deletion_vector: None,
        };
        Ok((location, add))
    }
}

/// A table version being written file by file ([`TableWrite::begin`]): for writers that
/// receive their rows in a stream and must not hold them all (a database extract). Its files
/// are invisible until the [`CommitRequest`] that [`TableWriter::finish`] returns is committed.
#[derive(Debug)]
pub struct TableWriter {
    write: TableWrite,
    version: u64,
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_columns: Vec<String>,
    actions: Vec<Action>,
    live_files: Vec<LiveFile>,
    written: Vec<String>,
    bytes_written: u64,
    rows_written: u64,
    checkpoint_interval: u64,
}

impl TableWrite {
    /// Writes the data files and builds the commit for version `base.version + 1` (or 0).
    /// Data files get fresh UUID names and are written with put-if-absent, so no write can
    /// replace a file a log may reference.
    pub async fn prepare(
        mut self,
        storage: &dyn Storage,
        base: Option<&Snapshot>,
    ) -> Result<CommitRequest> {
        let files = std::mem::take(&mut self.files);
        let mut writer = self.begin(base)?;
        for file in &files {
            if let Err(e) = writer.write_file(storage, file).await {
                writer.abort(storage).await;
                return Err(e);
            }
        }
        writer.finish()
    }

    /// Starts the version `base.version + 1` (or 0) without writing anything: checks the
    /// schema and partitioning against `base` and prepares the log entry's metadata. The
    /// files (`self.files` is ignored) come through [`TableWriter::write_file`].
    pub fn begin(self, base: Option<&Snapshot>) -> Result<TableWriter> {
        let table = self.table.clone();
        let removes = (self.mode == WriteMode::Overwrite
            && base.is_some_and(|b| !b.files.is_empty()))
            || !self.removes.is_empty();
        if let Some(b) = base {
            b.check_writable(removes)?;
        }
        let new_schema = delta_compatible_schema(&self.schema).map_err(|message| Error::Table {
            table: table.clone(),
            message,
        })?;
        let schema = match (self.mode, base) {
            (WriteMode::Append, Some(b)) => merge_schemas(&table, &b.schema, &new_schema)?,
            _ => new_schema,
        };
        let partition_columns = match (self.mode, base) {
            (WriteMode::Append, Some(b)) => {
                if !self.partition_by.is_empty()
                    && self.partition_by != b.metadata.partition_columns
                {
                    return Err(Error::Table {
                        table,
                        message: format!(
                            "the table is partitioned by [{}], not [{}]; appends keep the table's partitioning",
                            b.metadata.partition_columns.join(", "),
                            self.partition_by.join(", ")
                        ),
                    });
                }
                b.metadata.partition_columns.clone()
            }
            _ => self.partition_by.clone(),
        };
        check_partition_columns(&table, &schema, &partition_columns)?;
        let schema_string = delta_schema_string(&schema).map_err(|message| Error::Table {
            table: table.clone(),
            message,
        })?;

        let mut actions = vec![Action::CommitInfo(self.commit_info_json(base.is_none()))];
        match base {
            None => {
                actions.push(Action::Protocol(Protocol {
                    min_reader_version: 1,
                    min_writer_version: 2,
                    reader_features: None,
                    writer_features: None,
                }));
                actions.push(Action::Metadata(self.metadata(
                    schema_string,
                    &partition_columns,
                    None,
                )));
            }
            Some(b)
                if b.metadata.schema_string != schema_string
                    || b.metadata.partition_columns != partition_columns
                    || self.configuration_changes(&b.metadata) =>
            {
                actions.push(Action::Metadata(self.metadata(
                    schema_string,
                    &partition_columns,
                    Some(&b.metadata),
                )));
            }
            Some(_) => {}
        }
        if let Some(t) = &self.txn {
            actions.push(Action::Txn(Txn {
                last_updated: t.last_updated.or(Some(self.now_ms)),
                ..t.clone()
            }));
        }
        if let (WriteMode::Overwrite, Some(b)) = (self.mode, base) {
            for a in b.files.values() {
                actions.push(Action::Remove(remove_of(a, self.now_ms, true)));
            }
        }

        if !self.removes.is_empty() {
            let Some(b) = base.filter(|_| self.mode == WriteMode::Append) else {
                return Err(Error::Table {
                    table,
                    message: "removing some files needs an existing table and an append".into(),
                });
            };
            for path in &self.removes {
                let add = b.files.get(path).ok_or_else(|| Error::Table {
                    table: table.clone(),
                    message: format!(
                        "file {path} is not live in version {}; nothing was written",
                        b.version
                    ),
                })?;
                actions.push(Action::Remove(remove_of(add, self.now_ms, true)));
            }
        }
        let live_files: Vec<LiveFile> = match (self.mode, base) {
            (WriteMode::Append, Some(b)) => {
                let removed: std::collections::HashSet<String> =
                    self.removes.iter().map(|p| b.file_location(p)).collect();
                b.live_files()
                    .into_iter()
                    .filter(|f| !removed.contains(&f.location))
                    .collect()
            }
            _ => Vec::new(),
        };
        let file_schema = super::partition::file_schema(&schema, &partition_columns);
        // The interval this write sets, else the table's, else the default.
        let checkpoint_interval = match (self.configuration.get(CHECKPOINT_INTERVAL_KEY), base) {
            (Some(v), _) => parse_interval(Some(v)),
            (None, Some(b)) => checkpoint_interval(&b.metadata.configuration),
            (None, None) => DEFAULT_CHECKPOINT_INTERVAL,
        };
        Ok(TableWriter {
            version: base.map(|b| b.version + 1).unwrap_or(0),
            write: self,
            schema,
            file_schema,
            partition_columns,
            actions,
            live_files,
            written: Vec::new(),
            bytes_written: 0,
            rows_written: 0,
            checkpoint_interval,
        })
    }

    fn commit_info_json(&self, create: bool) -> serde_json::Value {
        let mut info = json!({
            "timestamp": self.now_ms,
            "operation": if create { "CREATE TABLE AS SELECT" } else { "WRITE" },
            "operationParameters": {
                "mode": match self.mode { WriteMode::Append => "Append", WriteMode::Overwrite => "Overwrite" },
                "partitionBy": serde_json::to_string(&self.partition_by).unwrap_or_default(),
            },
            "isBlindAppend": self.mode == WriteMode::Append && self.txn.is_none(),
            "engineInfo": concat!("medallion/", env!("CARGO_PKG_VERSION")),
        });
        if !self.commit_info.is_null() {
            info["medallion"] = self.commit_info.clone();
        }
        info
    }

    fn configuration_changes(&self, m: &Metadata) -> bool {
        self.configuration
            .iter()
            .any(|(k, v)| m.configuration.get(k).and_then(|x| x.as_deref()) != Some(v.as_str()))
    }

    fn metadata(
        &self,
        schema_string: String,
        partition_columns: &[String],
        previous: Option<&Metadata>,
    ) -> Metadata {
        Metadata {
            id: previous
                .map(|m| m.id.clone())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            name: Some(self.table.clone()),
            description: self.description.clone().filter(|d| !d.is_empty()),
            format: Format {
                provider: "parquet".into(),
                options: HashMap::new(),
            },
            schema_string,
            partition_columns: partition_columns.to_vec(),
            configuration: {
                let mut c = previous
                    .map(|m| m.configuration.clone())
                    .unwrap_or_default();
                c.extend(
                    self.configuration
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone()))),
                );
                c
            },
            created_time: previous.and_then(|m| m.created_time).or(Some(self.now_ms)),
        }
    }
}

impl TableWriter {
    /// The table's schema once committed: what every file's rows are cast to.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Writes `file`'s rows (one Parquet file per partition they fall in) and adds them to
    /// the version. On error the version cannot be finished: [`TableWriter::abort`] removes
    /// every file written so far.
    pub async fn write_file(&mut self, storage: &dyn Storage, file: &DataFile) -> Result<()> {
        let table = &self.write.table;
        let batches = file
            .batches
            .iter()
            .map(|b| cast_batch(b, &self.schema, table))
            .collect::<Result<Vec<_>>>()?;
        let parts = split(table, &self.schema, &self.partition_columns, &batches)?;
        for (values, batches) in parts {
            // An empty string partition value is NULL to Spark and delta-rs; say so.
            let values: Vec<Option<String>> = values
                .into_iter()
                .map(|v| v.filter(|s| !s.is_empty()))
                .collect();
            let tags = file
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            let new_file = NewFile {
                table: &self.write.location,
                partition_columns: &self.partition_columns,
                partition_values: values,
                schema: &self.file_schema,
                batches: &batches,
                tags,
                now_ms: self.write.now_ms,
                data_change: true,
                index: self.written.len(),
            };
            let (location, add) = new_file.write(storage).await?;
            self.live_files.push(LiveFile {
                location: location.clone(),
                size: add.size as u64,
                partition_values: new_file.partition_values.clone(),
                rows: Some(batches.iter().map(|b| b.num_rows() as u64).sum()),
            });
            self.written.push(location);
            self.bytes_written += add.size as u64;
            self.rows_written += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            self.actions.push(Action::Add(add));
        }
        Ok(())
    }

    /// The schema data files have (the table's, without partition columns).
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    /// Adds a Parquet data file another writer put at `location`, inside the table (a
    /// cluster's executors), to the version: its `add` comes from the file's footer, after
    /// checking that its columns are the table's. [`TableWriter::abort`] removes it too.
    pub async fn add_existing(&mut self, storage: &dyn Storage, location: &str) -> Result<()> {
        let table = self.write.table.clone();
        let fail = |message: String| Error::Table {
            table: table.clone(),
            message: format!("{location}: {message}"),
        };
        if !self.partition_columns.is_empty() {
            return Err(fail(
                "files written elsewhere join only unpartitioned tables".into(),
            ));
        }
        let root = format!("{}/", self.write.location.trim_end_matches('/'));
        let relative = location.strip_prefix(&root).ok_or_else(|| {
            fail(format!(
                "is not inside the table at {}",
                self.write.location
            ))
        })?;
        let meta = storage.head(location).await?;
        let footer = crate::parquet_footer::read(storage, location, meta.size)
            .await?
            .map_err(|e| fail(format!("not a readable Parquet file: {e}")))?;
        let columns = |s: &Schema| -> Vec<(String, DataType)> {
            s.fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect()
        };
        if columns(footer.schema()) != columns(&self.file_schema) {
            return Err(fail(format!(
                "its columns {:?} are not the table's {:?}",
                columns(footer.schema()),
                columns(&self.file_schema)
            )));
        }
        let metadata = footer.metadata();
        let rows = metadata.file_metadata().num_rows().max(0) as u64;
        let add = Add {
            path: encode_path(relative),
            partition_values: Default::default(),
            size: meta.size as i64,
            modification_time: self.write.now_ms,
            data_change: true,
            stats: Some(super::stats::footer_stats(metadata, &self.file_schema)),
            tags: None,
            deletion_vector: None,
        };
        self.live_files.push(LiveFile {
            location: location.to_string(),
            size: meta.size,
            partition_values: vec![],
            rows: Some(rows),
        });
        self.written.push(location.to_string());
        self.bytes_written += meta.size;
        self.rows_written += rows;
        self.actions.push(Action::Add(add));
        Ok(())
    }

    /// Continues this version with `schema`, which adds columns to the one it began with (a
    /// later source file has more): the files written so far stay in it, their missing
    /// columns read as NULL, as Delta specifies.
    pub fn widen(&mut self, schema: SchemaRef, base: Option<&Snapshot>) -> Result<()> {
        let mut write = self.write.clone();
        write.schema = schema;
        let mut next = write.begin(base)?;
        let written: std::collections::HashSet<&String> = self.written.iter().collect();
        next.live_files.extend(
            self.live_files
                .iter()
                .filter(|f| written.contains(&f.location))
                .cloned(),
        );
        next.actions.extend(
            self.actions
                .iter()
                .filter(|a| matches!(a, Action::Add(_)))
                .cloned(),
        );
        next.written = std::mem::take(&mut self.written);
        next.bytes_written = self.bytes_written;
        next.rows_written = self.rows_written;
        *self = next;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Sets the application progress the commit records, replacing the one `begin` had: a
    /// stream knows how far its rows reach only once the last of them is written.
    pub fn set_txn(&mut self, txn: Txn) {
        self.actions.retain(|a| !matches!(a, Action::Txn(_)));
        self.actions.push(Action::Txn(txn));
    }

    /// The commit that publishes every file written.
    pub fn finish(self) -> Result<CommitRequest> {
        let log_entry = log_bytes(&self.write.table, &self.actions)?;
        Ok(CommitRequest {
            table: self.write.table,
            location: self.write.location,
            version: self.version,
            written: self.written,
            bytes_written: self.bytes_written,
            rows_written: self.rows_written,
            schema: self.schema,
            partition_columns: self.partition_columns,
            live_files: self.live_files,
            log_entry,
            checkpoint_interval: self.checkpoint_interval,
        })
    }

    /// Removes the files written: the version will not be committed.
    pub async fn abort(self, storage: &dyn Storage) {
        remove_all(storage, &self.written).await;
    }
}

/// The `remove` of a live file, at `now_ms`.
pub fn remove_of(a: &Add, now_ms: i64, data_change: bool) -> Remove {
    Remove {
        path: a.path.clone(),
        deletion_timestamp: Some(now_ms),
        data_change,
        extended_file_metadata: Some(true),
        partition_values: Some(a.partition_values.clone()),
        size: Some(a.size),
    }
}

/// Newline-delimited JSON of `actions`: a commit file's bytes.
pub fn log_bytes(table: &str, actions: &[Action]) -> Result<Bytes> {
    let mut log = String::new();
    for a in actions {
        log.push_str(&serde_json::to_string(a).map_err(|e| Error::Table {
            table: table.to_string(),
            message: format!("serialising the commit: {e}"),
        })?);
        log.push('\n');
    }
    Ok(Bytes::from(log))
}

impl CommitRequest {
    /// Removes the data files of a commit that will not be made.
    pub async fn abort(self, storage: &dyn Storage) {
        remove_all(storage, &self.written).await;
    }
}

/// Publishes `log_entry` as `version` of the table with one put-if-absent. `Ok` when this
/// entry is in the log (also when a retried request had already put it);
/// [`Error::CommitConflict`] when another writer took the version (only then may the caller
/// delete its data files); [`Error::CommitUncertain`] when the store failed and the log,
/// read again, does not prove the entry absent-by-conflict — its data files must be kept.
pub async fn publish(
    storage: &dyn Storage,
    table: &str,
    location: &str,
    version: u64,
    log_entry: Bytes,
) -> Result<()> {
    let log = commit_location(location, version);
    let conflict = || Error::CommitConflict {
        table: table.to_string(),
        version,
    };
    let failure = match storage.put_if_absent(&log, log_entry.clone()).await {
        Ok(()) => return Ok(()),
        Err(Error::AlreadyExists { .. }) => None,
        Err(e) => Some(e),
    };
    // Either another writer holds the version, or the outcome is unknown: the log decides.
    match storage.read(&log).await {
        Ok(found) if found == log_entry => Ok(()),
        Ok(_) => Err(conflict()),
        Err(read_err) => match failure {
            // It said "exists" and now cannot be read: treat as the other writer's.
            None => Err(conflict()),
            Some(e) => Err(Error::CommitUncertain {
                table: table.to_string(),
                version,
                message: match read_err {
                    Error::NotFound { .. } => format!(
                        "writing {log} failed ({e}) and the log does not hold it; the version was not committed"
                    ),
                    other => format!(
                        "writing {log} failed ({e}) and reading it back failed too ({other}); whether the version was committed is unknown"
                    ),
                },
            }),
        },
    }
}

/// Writes a checkpoint of `version` if the table's interval says one is due. A failure here
/// leaves the table as it is (the commit stands; readers replay the JSON commits).
pub async fn checkpoint_if_due(
    storage: &dyn Storage,
    location: &str,
    version: u64,
    interval: u64,
    now_ms: i64,
) -> Result<bool> {
    if version == 0 || !version.is_multiple_of(interval.max(1)) {
        return Ok(false);
    }
    let snapshot =
        Snapshot::load_at(storage, location, super::snapshot::At::Version(version)).await?;
    write_checkpoint(storage, &snapshot, now_ms).await?;
    Ok(true)
}

/// Best effort: files left behind are invisible to readers, only wasted space.
pub(crate) async fn remove_all(storage: &dyn Storage, locations: &[String]) {
    for l in locations {
        let _ = storage.delete(l).await;
    }
}

/// Parquet bytes for `batches`: Snappy (fast, and every reader has it), page statistics on.
pub fn encode_parquet(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> std::result::Result<Bytes, datafusion::parquet::errors::ParquetError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(256 * 1024))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
    for b in batches {
        writer.write(b)?;
    }
    Ok(Bytes::from(writer.into_inner()?))
}

/// The table schema after appending rows of `new`: new columns are added (nullable, so older
/// files read as NULL); a column whose new type the table's type holds exactly (int32 into
/// long, float into double) is written as the table's type; any other change is an error
/// naming the column.
fn merge_schemas(table: &str, old: &SchemaRef, new: &SchemaRef) -> Result<SchemaRef> {
    let mut fields: Vec<_> = old.fields().iter().cloned().collect();
    for f in new.fields() {
        match old.field_with_name(f.name()) {
            Ok(existing)
                if existing.data_type() != f.data_type()
                    && !widens_to(f.data_type(), existing.data_type()) =>
            {
                return Err(Error::Table {
                    table: table.to_string(),
                    message: format!(
                        "column `{}` is {} in the new data but {} in the table, which cannot hold it exactly; declare its type in the spec",
                        f.name(),
                        f.data_type(),
                        existing.data_type()
                    ),
                })
            }
            Ok(_) => {}
            Err(_) => fields.push(Arc::new(f.as_ref().clone().with_nullable(true))),
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Whether every value of type `from` converts to `to` without loss.
fn widens_to(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    match (from, to) {
        (Int8, Int16 | Int32 | Int64) | (Int16, Int32 | Int64) | (Int32, Int64) => true,
        (Int8 | Int16, Float32 | Float64) | (Int32, Float64) | (Float32, Float64) => true,
        (Null, _) => true,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => {
            s2 >= s1 && (*p2 as i16 - *s2 as i16) >= (*p1 as i16 - *s1 as i16)
        }
        (Int8 | Int16 | Int32 | Int64, Decimal128(p, s)) => {
            let digits = match from {
                Int8 => 3,
                Int16 => 5,
                Int32 => 10,
                _ => 19,
            };
            (*p as i16 - *s as i16) >= digits
        }
        _ => false,
    }
}
