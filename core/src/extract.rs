//! Bronze tables whose rows a host extracts from a database (`[sources]` in the spec).
//!
//! The core never connects to the database: the host runs the query and hands the rows over
//! as Arrow batches, in order, through a [`BronzeExtract`]. Batches are written to Parquet
//! files as they come (a file every [`FILE_TARGET_BYTES`] of rows, so an extract larger than
//! memory streams through), and [`BronzeExtract::finish`] publishes all of them in one commit
//! through [`crate::pipeline::commit`] — the same commit path as a pipeline run.
//!
//! A snapshot replaces the table's rows; an incremental extract appends them and records the
//! greatest watermark value extracted in the same commit (the table property
//! [`WATERMARK_KEY`]), together with the bronze batch counter in a `txn` action, so the
//! progress recorded is always that of the rows committed: a failed extract records nothing.
//!
//! Change data capture (`mode = "cdc"`) records its progress in the `txn` action instead: the
//! application id names the replication slot ([`cdc_app_id`]) and the version is the WAL
//! position (LSN) that the changes committed reach. The host acknowledges a position to the
//! database only once a commit recording it has landed, and on a restart resumes from what the
//! table records, so a change is neither lost nor committed twice.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::Clock;
use crate::delta::{DataFile, Snapshot, TableWrite, TableWriter, Txn, WriteMode};
use crate::error::{Context, Error, Result};
use crate::pipeline::{batch_app_id, table_location, RunOptions, StagedCommit};
use crate::spec::{ExtractMode, Layer, PipelineSpec};
use crate::storage::Storage;

/// The table property holding the last watermark an incremental extract committed, as JSON
/// `{"column": …, "value": …}` (the value in the database's text form).
pub const WATERMARK_KEY: &str = "medallion.watermark";

/// Rows are buffered up to about this many bytes (Arrow's in-memory size) per data file.
pub const FILE_TARGET_BYTES: usize = 64 * 1024 * 1024;

/// The `txn` application id under which a CDC bronze table records how far it has committed the
/// changes of replication slot `slot`.
pub fn cdc_app_id(slot: &str) -> String {
    format!("medallion-cdc/{slot}")
}

/// What an extract records, with its rows, of how far it has read its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// Nothing beyond the bronze batch counter (a snapshot).
    None,
    /// The greatest watermark value of the rows (incremental).
    Watermark(Watermark),
    /// The WAL position that the rows' changes reach (cdc). `snapshot`: the rows are the
    /// slot's initial snapshot and replace the table's.
    Lsn {
        slot: String,
        lsn: u64,
        snapshot: bool,
    },
}

/// The WAL position bronze table `name` (a `mode = "cdc"` table) has committed changes up to,
/// if it has committed any (its initial snapshot included).
pub async fn last_lsn(
    storage: &dyn Storage,
    spec: &PipelineSpec,
    lake: &str,
    name: &str,
) -> Result<Option<u64>> {
    let Some(src) = spec.bronze.get(name) else {
        return Ok(None);
    };
    let location = table_location(lake, Layer::Bronze, name);
    let Some(snapshot) = Snapshot::try_load(storage, &location).await? else {
        return Ok(None);
    };
    Ok(snapshot
        .app_version(&cdc_app_id(&src.slot_name(name)))
        .map(|v| v as u64))
}

/// An LSN as PostgreSQL prints it (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The greatest value of an incremental extract's watermark column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub column: String,
    /// The value as the database prints it (its text form), compared there, never here.
    pub value: String,
}

/// What one extract did to its bronze table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtractReport {
    pub table: String,
    pub mode: ExtractMode,
    pub rows: u64,
    pub files: u64,
    pub bytes_written: u64,
    /// The version committed; `None` when an incremental extract found no new rows.
    pub version: Option<u64>,
    /// The watermark the table records after this extract.
    pub watermark: Option<Watermark>,
    /// For cdc: the WAL position the table records after this extract (as PostgreSQL prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
}

/// The watermark bronze table `name` last committed, if it is incremental and has one. An
/// error when the table recorded a different column: its rows would be re-read or skipped.
pub async fn last_watermark(
    storage: &dyn Storage,
    spec: &PipelineSpec,
    lake: &str,
    name: &str,
) -> Result<Option<Watermark>> {
    let Some(column) = spec.bronze.get(name).and_then(|s| s.watermark.as_deref()) else {
        return Ok(None);
    };
    let location = table_location(lake, Layer::Bronze, name);
    let Some(snapshot) = Snapshot::try_load(storage, &location).await? else {
        return Ok(None);
    };
    recorded_watermark(name, &snapshot, column)
}

fn recorded_watermark(name: &str, snapshot: &Snapshot, column: &str) -> Result<Option<Watermark>> {
    let Some(text) = snapshot.property(WATERMARK_KEY) else {
        return Ok(None);
    };
    let recorded: Watermark = serde_json::from_str(text).map_err(|e| Error::Table {
        table: name.to_string(),
        message: format!("the recorded watermark `{text}` is not readable: {e}"),
    })?;
    if recorded.column != column {
        return Err(Error::Table {
            table: name.to_string(),
            message: format!(
                "the table's rows were extracted up to a watermark on column `{}`, not `{column}`; \
                 changing the watermark column would skip or repeat rows — extract into a new bronze table",
                recorded.column
            ),
        });
    }
    Ok(Some(recorded))
}

/// One extract into a bronze table, fed batch by batch.
pub struct BronzeExtract {
    table: String,
    mode: ExtractMode,
    storage: Arc<dyn Storage>,
    writer: TableWriter,
    base_version: Option<u64>,
    watermark: Option<Watermark>,
    lsn: Option<u64>,
    /// The rows are added to the table's (not replacing them).
    appends: bool,
    /// For cdc: the `txn` application id of the slot.
    cdc_app_id: Option<String>,
    buffered: Vec<RecordBatch>,
    buffered_bytes: usize,
    files: u64,
    now_us: i64,
    now_ms: i64,
}

impl BronzeExtract {
    /// Starts an extract into bronze table `name` of `spec`, whose rows have `schema` (the
    /// lineage column `_ingested_at` is added). `mark` is how far the rows about to be pushed
    /// reach in the source (the greatest watermark value, or the LSN); it is recorded when they
    /// are committed. Nothing is written yet.
    pub async fn begin(
        spec: &PipelineSpec,
        name: &str,
        storage: Arc<dyn Storage>,
        clock: &dyn Clock,
        opts: &RunOptions,
        schema: SchemaRef,
        mark: Mark,
    ) -> Result<Self> {
        let src = spec.bronze.get(name).ok_or_else(|| Error::Table {
            table: name.to_string(),
            message: "no such bronze table in the spec".into(),
        })?;
        let mode = src.mode.unwrap_or_default();
        let location = table_location(&opts.lake, Layer::Bronze, name);
        let snapshot = Snapshot::try_load(storage.as_ref(), &location).await?;
        let now_ms = clock.now_ms();
        let app_id = batch_app_id(&spec.pipeline.name, name);
        let batch = snapshot
            .as_ref()
            .and_then(|s| s.app_version(&app_id))
            .map_or(0, |v| v + 1);
        let watermark = match &mark {
            Mark::Watermark(w) => Some(w.clone()),
            _ => None,
        };
        let (write_mode, txn, lsn) = match &mark {
            Mark::Lsn {
                slot,
                lsn,
                snapshot,
            } => (
                if *snapshot {
                    WriteMode::Overwrite
                } else {
                    WriteMode::Append
                },
                Txn {
                    app_id: cdc_app_id(slot),
                    version: i64::try_from(*lsn).map_err(|_| Error::Table {
                        table: name.to_string(),
                        message: format!("LSN {} is out of range", format_lsn(*lsn)),
                    })?,
                    last_updated: Some(now_ms),
                },
                Some(*lsn),
            ),
            _ => (
                match mode {
                    ExtractMode::Incremental => WriteMode::Append,
                    _ => WriteMode::Overwrite,
                },
                Txn {
                    app_id,
                    version: batch,
                    last_updated: None,
                },
                None,
            ),
        };
        let mut configuration = HashMap::new();
        if let Some(n) = spec.pipeline.checkpoint_interval {
            configuration.insert(
                crate::delta::CHECKPOINT_INTERVAL_KEY.to_string(),
                n.to_string(),
            );
        }
        if let Some(w) = &watermark {
            let text = serde_json::to_string(w).map_err(|e| Error::Table {
                table: name.to_string(),
                message: format!("recording the watermark: {e}"),
            })?;
            configuration.insert(WATERMARK_KEY.to_string(), text);
        }
        let write = TableWrite {
            table: name.to_string(),
            location,
            mode: write_mode,
            schema: with_ingested_at(&schema),
            files: Vec::new(),
            description: Some(src.description.clone()),
            run_id: opts.run_id.clone(),
            now_ms,
            commit_info: json!({
                "pipeline": spec.pipeline.name,
                "runId": opts.run_id,
                "extract": {
                    "source": src.source,
                    "mode": mode.as_str(),
                    "watermark": watermark,
                },
            }),
            configuration,
            partition_by: Vec::new(),
            txn: Some(txn),
            removes: Vec::new(),
        };
        let writer = write.begin(snapshot.as_ref())?;
        Ok(BronzeExtract {
            table: name.to_string(),
            mode,
            storage,
            writer,
            base_version: snapshot.map(|s| s.version),
            watermark,
            lsn,
            appends: write_mode == WriteMode::Append,
            cdc_app_id: match &mark {
                Mark::Lsn { slot, .. } => Some(cdc_app_id(slot)),
                _ => None,
            },
            buffered: Vec::new(),
            buffered_bytes: 0,
            files: 0,
            now_us: now_ms * 1000,
            now_ms,
        })
    }

    /// Adds rows; writes a data file once enough are buffered. After an error, call
    /// [`BronzeExtract::abort`].
    pub async fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = self.lineage(&batch)?;
        self.buffered_bytes += batch.get_array_memory_size();
        self.buffered.push(batch);
        if self.buffered_bytes >= FILE_TARGET_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.writer.rows_written()
            + self
                .buffered
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum::<u64>()
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let file = DataFile {
            batches: std::mem::take(&mut self.buffered),
            tags: HashMap::new(),
        };
        self.buffered_bytes = 0;
        self.writer.write_file(self.storage.as_ref(), &file).await?;
        self.files += 1;
        Ok(())
    }

    /// For a cdc extract: the WAL position the rows pushed so far reach, recorded when they are
    /// committed. Positions only move forward.
    pub fn advance_lsn(&mut self, lsn: u64) -> Result<()> {
        let (Some(current), Some(app_id)) = (self.lsn, self.cdc_app_id.clone()) else {
            return Err(Error::Table {
                table: self.table.clone(),
                message: "advance_lsn on an extract that is not cdc".into(),
            });
        };
        if lsn < current {
            return Err(Error::Table {
                table: self.table.clone(),
                message: format!(
                    "the WAL position went back from {} to {}",
                    format_lsn(current),
                    format_lsn(lsn)
                ),
            });
        }
        self.lsn = Some(lsn);
        self.writer.set_txn(Txn {
            app_id,
            version: lsn as i64,
            last_updated: Some(self.now_ms),
        });
        Ok(())
    }

    /// Writes what is buffered and commits every file in one version (none for an
    /// incremental extract that found no rows). On error nothing is committed and the files
    /// are removed, except when the commit's outcome is unknown ([`Error::CommitUncertain`]).
    pub async fn finish(mut self) -> Result<ExtractReport> {
        if let Err(e) = self.flush().await {
            self.writer.abort(self.storage.as_ref()).await;
            return Err(e);
        }
        let rows = self.writer.rows_written();
        let mut report = ExtractReport {
            table: self.table.clone(),
            mode: self.mode,
            rows,
            files: self.files,
            bytes_written: 0,
            version: None,
            watermark: self.watermark.clone(),
            lsn: self.lsn.map(format_lsn),
        };
        if rows == 0 && self.appends && self.base_version.is_some() {
            // Nothing new: the table and its recorded watermark stay as they are.
            return Ok(report);
        }
        let request = self.writer.finish()?;
        report.bytes_written = request.bytes_written;
        let staged = StagedCommit::new(&self.table, false, &request, self.base_version);
        let committed =
            crate::pipeline::commit(self.storage.as_ref(), vec![staged], self.now_ms).await?;
        report.version = committed.first().map(|c| c.version);
        Ok(report)
    }

    /// Removes the files written: nothing of this extract will be committed.
    pub async fn abort(self) {
        self.writer.abort(self.storage.as_ref()).await;
    }

    fn lineage(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let schema = with_ingested_at(&batch.schema());
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(vec![self.now_us; batch.num_rows()])
                .with_timezone("UTC"),
        ));
        RecordBatch::try_new(schema, columns)
            .context(|| format!("bronze table `{}`: adding _ingested_at", self.table))
    }
}

/// `schema` and the lineage column `_ingested_at`.
fn with_ingested_at(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(
        "_ingested_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::query::EngineOptions;
    use crate::storage::MemoryStorage;
    use datafusion::arrow::array::{Int64Array, StringArray};

    fn spec() -> PipelineSpec {
        PipelineSpec::from_toml(
            r#"
            [sources.shop]
            kind = "postgres"
            url = "postgres://h/db"
            [bronze.orders_raw]
            source = "shop"
            table = "orders"
            mode = "incremental"
            watermark = "id"
            [bronze.snap]
            source = "shop"
            table = "orders"
            "#,
        )
        .unwrap()
    }

    fn batch(ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(
                    ids.iter()
                        .map(|i| Some(format!("n{i}")))
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    async fn extract(
        storage: &Arc<dyn Storage>,
        table: &str,
        ids: &[i64],
        watermark: Option<&str>,
    ) -> ExtractReport {
        let opts = RunOptions {
            lake: "/lake".into(),
            base: "/".into(),
            run_id: "r".into(),
            engine: EngineOptions::default(),
            max_files_per_table: None,
            max_bytes_per_table: None,
        };
        let spec = spec();
        let mut e = BronzeExtract::begin(
            &spec,
            table,
            storage.clone(),
            &FixedClock(1_700_000_000_000),
            &opts,
            batch(&[]).schema(),
            match watermark {
                Some(v) => Mark::Watermark(Watermark {
                    column: "id".into(),
                    value: v.into(),
                }),
                None => Mark::None,
            },
        )
        .await
        .unwrap();
        for chunk in ids.chunks(2) {
            e.push(batch(chunk)).await.unwrap();
        }
        e.finish().await.unwrap()
    }

    #[test]
    fn incremental_extracts_append_and_record_their_watermark() {
        futures::executor::block_on(incremental());
    }

    async fn incremental() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let spec = spec();
        let r = extract(&storage, "orders_raw", &[1, 2, 3], Some("3")).await;
        assert_eq!((r.rows, r.version), (3, Some(0)));
        let r = extract(&storage, "orders_raw", &[], Some("3")).await;
        assert_eq!((r.rows, r.version), (0, None));
        let r = extract(&storage, "orders_raw", &[4, 5], Some("5")).await;
        assert_eq!((r.rows, r.version), (2, Some(1)));
        let w = last_watermark(storage.as_ref(), &spec, "/lake", "orders_raw")
            .await
            .unwrap();
        assert_eq!(w.map(|w| w.value).as_deref(), Some("5"));
        let s = Snapshot::try_load(storage.as_ref(), "/lake/bronze/orders_raw")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.num_records(), Some(5));
        assert_eq!(
            s.app_version(&batch_app_id(&spec.pipeline.name, "orders_raw")),
            Some(1)
        );
    }

    #[test]
    fn snapshots_replace_the_rows() {
        futures::executor::block_on(snapshots());
    }

    async fn snapshots() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        extract(&storage, "snap", &[1, 2, 3], None).await;
        let r = extract(&storage, "snap", &[1, 2], None).await;
        assert_eq!(r.version, Some(1));
        let s = Snapshot::try_load(storage.as_ref(), "/lake/bronze/snap")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.num_records(), Some(2));
    }
}
