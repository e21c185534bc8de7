//! Writing a table version in two steps, so that a run can stage every table before it
//! commits any: [`TableWrite::prepare`] writes the data files (invisible until committed) and
//! [`CommitRequest::commit`] publishes them with one put-if-absent of the next log entry.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use serde_json::json;
use std::sync::Arc;

use super::actions::{Action, Add, Format, Metadata, Protocol, Remove};
use super::commit_location;
use super::schema::{cast_batch, delta_compatible_schema, delta_schema_string};
use super::snapshot::Snapshot;
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

/// One data file to be: its rows and the tags its `add` action carries.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub batches: Vec<RecordBatch>,
    pub tags: HashMap<String, String>,
}

/// What a run wants to write to one table.
#[derive(Debug)]
pub struct TableWrite {
    /// The table's name, for messages.
    pub table: String,
    pub location: String,
    pub mode: WriteMode,
    /// The schema of the rows to write (any Arrow types; made storable here).
    pub schema: SchemaRef,
    pub files: Vec<DataFile>,
    pub description: Option<String>,
    /// Distinguishes this run's file names from every other run's.
    pub run_id: String,
    pub now_ms: i64,
    /// Extra fields for `commitInfo` (the run's counts, for example).
    pub commit_info: serde_json::Value,
    /// Settings recorded in the table's `metaData.configuration`.
    pub configuration: HashMap<String, String>,
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
    /// The table's schema once committed.
    pub schema: SchemaRef,
    /// Every live data file (location, size) once committed: what readers of the staged
    /// version should scan.
    pub live_files: Vec<(String, u64)>,
    /// The log entry (newline-delimited JSON actions) that publishes the version.
    pub log_entry: Bytes,
}

impl TableWrite {
    /// Writes the data files and builds the commit for version `base.version + 1` (or 0).
    pub async fn prepare(
        self,
        storage: &dyn Storage,
        base: Option<&Snapshot>,
    ) -> Result<CommitRequest> {
        let table = self.table.clone();
        let new_schema = delta_compatible_schema(&self.schema).map_err(|message| Error::Table {
            table: table.clone(),
            message,
        })?;
        let schema = match (self.mode, base) {
            (WriteMode::Append, Some(b)) => merge_schemas(&table, &b.schema, &new_schema)?,
            _ => new_schema,
        };
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
                actions.push(Action::Metadata(self.metadata(schema_string, None)));
            }
            Some(b)
                if b.metadata.schema_string != schema_string
                    || self.configuration_changes(&b.metadata) =>
            {
                actions.push(Action::Metadata(
                    self.metadata(schema_string, Some(&b.metadata)),
                ));
            }
            Some(_) => {}
        }
        if let (WriteMode::Overwrite, Some(b)) = (self.mode, base) {
            for a in b.files.values() {
                actions.push(Action::Remove(Remove {
                    path: a.path.clone(),
                    deletion_timestamp: Some(self.now_ms),
                    data_change: true,
                    extended_file_metadata: Some(true),
                    partition_values: Some(HashMap::new()),
                    size: Some(a.size),
                }));
            }
        }

        let mut live_files: Vec<(String, u64)> = match (self.mode, base) {
            (WriteMode::Append, Some(b)) => b.file_locations(),
            _ => Vec::new(),
        };
        let mut written = Vec::new();
        let mut bytes_written = 0;
        let mut rows_written = 0;
        for (i, file) in self.files.iter().enumerate() {
            let batches = file
                .batches
                .iter()
                .map(|b| cast_batch(b, &schema, &table))
                .collect::<Result<Vec<_>>>()?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let bytes = encode_parquet(&schema, &batches)
                .context(|| format!("table `{table}`: encoding Parquet"))?;
            let name = format!("part-{i:05}-{}.snappy.parquet", self.run_id);
            let location = join(&self.location, &name);
            let size = bytes.len() as i64;
            if let Err(e) = storage.put(&location, bytes).await {
                remove_all(storage, &written).await;
                return Err(e);
            }
            live_files.push((location.clone(), size as u64));
            written.push(location);
            bytes_written += size as u64;
            rows_written += rows as u64;
            actions.push(Action::Add(Add {
                path: name,
                partition_values: HashMap::new(),
                size,
                modification_time: self.now_ms,
                data_change: true,
                stats: Some(file_stats(&batches)),
                tags: (!file.tags.is_empty()).then(|| {
                    file.tags
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone())))
                        .collect()
                }),
                deletion_vector: None,
            }));
        }

        let mut log = String::new();
        for a in &actions {
            log.push_str(&serde_json::to_string(a).map_err(|e| Error::Table {
                table: table.clone(),
                message: format!("serialising the commit: {e}"),
            })?);
            log.push('\n');
        }
        Ok(CommitRequest {
            table,
            location: self.location,
            version: base.map(|b| b.version + 1).unwrap_or(0),
            written,
            bytes_written,
            rows_written,
            schema,
            live_files,
            log_entry: Bytes::from(log),
        })
    }

    fn commit_info_json(&self, create: bool) -> serde_json::Value {
        let mut info = json!({
            "timestamp": self.now_ms,
            "operation": if create { "CREATE TABLE AS SELECT" } else { "WRITE" },
            "operationParameters": {
                "mode": match self.mode { WriteMode::Append => "Append", WriteMode::Overwrite => "Overwrite" },
            },
            "isBlindAppend": self.mode == WriteMode::Append,
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

    fn metadata(&self, schema_string: String, previous: Option<&Metadata>) -> Metadata {
        Metadata {
            id: previous
                .map(|m| m.id.clone())
                .unwrap_or_else(|| table_id(&self.location, &self.run_id, self.now_ms)),
            name: Some(self.table.clone()),
            description: self.description.clone().filter(|d| !d.is_empty()),
            format: Format {
                provider: "parquet".into(),
                options: HashMap::new(),
            },
            schema_string,
            partition_columns: vec![],
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

impl CommitRequest {
    /// Publishes the version. If another writer took this version first, the data files are
    /// removed and [`Error::CommitConflict`] returned; the table stays at the other's version.
    pub async fn commit(self, storage: &dyn Storage) -> Result<u64> {
        let log = commit_location(&self.location, self.version);
        match storage.put_if_absent(&log, self.log_entry.clone()).await {
            Ok(()) => Ok(self.version),
            Err(Error::AlreadyExists { .. }) => {
                remove_all(storage, &self.written).await;
                Err(Error::CommitConflict {
                    table: self.table,
                    version: self.version,
                })
            }
            Err(e) => {
                remove_all(storage, &self.written).await;
                Err(e)
            }
        }
    }

    /// Removes the data files of a commit that will not be made.
    pub async fn abort(self, storage: &dyn Storage) {
        remove_all(storage, &self.written).await;
    }
}

/// Best effort: files left behind are invisible to readers, only wasted space.
async fn remove_all(storage: &dyn Storage, locations: &[String]) {
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

/// The table schema after appending rows of `new`: new columns are added, a column whose type
/// changed is an error naming it.
fn merge_schemas(table: &str, old: &SchemaRef, new: &SchemaRef) -> Result<SchemaRef> {
    let mut fields: Vec<_> = old.fields().iter().cloned().collect();
    for f in new.fields() {
        match old.field_with_name(f.name()) {
            Ok(existing) if existing.data_type() != f.data_type() => {
                return Err(Error::Table {
                    table: table.to_string(),
                    message: format!(
                        "column `{}` is {} in the new data but {} in the table; declare its type in the spec",
                        f.name(),
                        f.data_type(),
                        existing.data_type()
                    ),
                })
            }
            Ok(_) => {}
            Err(_) => fields.push(f.clone()),
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// A UUID-shaped id, derived from what makes a table unique (Delta wants one per table;
/// the core has no random source of its own).
fn table_id(location: &str, run_id: &str, now_ms: i64) -> String {
    let hash = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, location, run_id, now_ms).hash(&mut h);
        h.finish()
    };
    let (a, b) = (hash(1), hash(2));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}
