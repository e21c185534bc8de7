//! One run of a pipeline spec against a lake.
//!
//! A run builds every table in dependency order and *stages* each new version — its data files
//! are written but not yet referenced by the log — so later tables read exactly what will be
//! committed. Only when every table is built, and every expectation has passed, does it commit,
//! table by table. A failed run therefore changes no table; its staged files are removed.
//!
//! Incremental: bronze appends only source files its log has not recorded (each data file's
//! `add` carries its source in the tag `medallion.source`); silver and gold are rebuilt only
//! when an input changed, the table is missing, or its definition changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::prelude::SessionContext;
use serde_json::json;

use crate::clock::Clock;
use crate::dag::{self, Dag};
use crate::delta::{CommitRequest, DataFile, Snapshot, TableWrite, WriteMode};
use crate::error::{Context, Error, Result};
use crate::quality;
use crate::query::{self, EngineOptions, ParquetFilesTable};
use crate::report::{RunReport, StageTime, TableReport};
use crate::source::{self, RescuedRow};
use crate::spec::{Layer, PipelineSpec};
use crate::storage::{join, CountingStorage, IoStats, Storage};

/// The tag on a bronze data file's `add` naming the source file it came from.
pub const SOURCE_TAG: &str = "medallion.source";
/// The `metaData.configuration` key holding a hash of a silver/gold table's definition.
pub const SPEC_HASH_KEY: &str = "medallion.specHash";

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The lake's root; tables live at `<lake>/<layer>/<name>/`.
    pub lake: String,
    /// The folder relative source paths start from (the spec's folder).
    pub base: String,
    /// Unique per run; part of every data file name.
    pub run_id: String,
    pub engine: EngineOptions,
}

/// What a run is doing, for progress displays.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    Planned {
        tables: &'a [String],
    },
    TableStarted {
        table: &'a str,
        layer: Layer,
    },
    FileIngested {
        table: &'a str,
        file: &'a str,
        bytes: u64,
    },
    TableFinished {
        table: &'a str,
        rows: u64,
        skipped: bool,
    },
    Committing {
        tables: usize,
    },
}

/// Where a table lives in a lake.
pub fn table_location(lake: &str, layer: Layer, name: &str) -> String {
    join(lake, &format!("{}/{name}", layer.as_str()))
}

/// Where a table's quarantine lives in a lake.
pub fn quarantine_location(lake: &str, name: &str) -> String {
    join(lake, &format!("quarantine/{name}"))
}

/// Runs a pipeline. On error nothing has been committed, except when another writer
/// commits to one of the tables between this run's check and its commit (then
/// [`Error::CommitConflict`] names the table).
pub async fn run(
    spec: &PipelineSpec,
    storage: Arc<dyn Storage>,
    clock: &dyn Clock,
    opts: &RunOptions,
    progress: &dyn Fn(Progress),
) -> Result<RunReport> {
    let started = clock.monotonic_ms();
    let counting = Arc::new(CountingStorage::new(storage));
    let io = counting.stats();
    let storage: Arc<dyn Storage> = counting;
    let mut run = Run {
        spec,
        storage: storage.clone(),
        clock,
        opts,
        ctx: query::new_context(opts.engine),
        io: io.clone(),
        staged: Vec::new(),
        changed: BTreeSet::new(),
        report: RunReport {
            pipeline: spec.pipeline.name.clone(),
            lake: opts.lake.clone(),
            run_id: opts.run_id.clone(),
            ..Default::default()
        },
    };

    let t = clock.monotonic_ms();
    let dag = dag::plan(spec)?;
    progress(Progress::Planned { tables: &dag.order });
    run.stage_time("plan", t);

    let result = run.build_all(&dag, progress).await;
    let result = match result {
        Ok(()) => {
            progress(Progress::Committing {
                tables: run.staged.len(),
            });
            let t = clock.monotonic_ms();
            let r = run.commit_all().await;
            run.stage_time("commit", t);
            r
        }
        Err(e) => {
            for staged in std::mem::take(&mut run.staged) {
                staged.request.abort(storage.as_ref()).await;
            }
            Err(e)
        }
    };
    result?;
    run.report.ok = true;
    run.report.io = io.counts();
    run.report.elapsed_ms = clock.monotonic_ms() - started;
    Ok(run.report)
}

struct Staged {
    request: CommitRequest,
    base_version: Option<u64>,
    /// Index into the report's tables.
    report_index: usize,
    quarantine: bool,
}

struct Run<'a> {
    spec: &'a PipelineSpec,
    storage: Arc<dyn Storage>,
    clock: &'a dyn Clock,
    opts: &'a RunOptions,
    ctx: SessionContext,
    io: Arc<IoStats>,
    staged: Vec<Staged>,
    /// Tables whose content changes in this run.
    changed: BTreeSet<String>,
    report: RunReport,
}

impl Run<'_> {
    fn stage_time(&mut self, stage: &str, since: f64) {
        let ms = self.clock.monotonic_ms() - since;
        match self.report.stages.iter_mut().find(|s| s.stage == stage) {
            Some(s) => s.ms += ms,
            None => self.report.stages.push(StageTime {
                stage: stage.to_string(),
                ms,
            }),
        }
    }

    async fn build_all(&mut self, dag: &Dag, progress: &dyn Fn(Progress)) -> Result<()> {
        for name in &dag.order {
            let layer = self
                .spec
                .layer_of(name)
                .ok_or_else(|| Error::Spec(format!("unknown table `{name}`")))?;
            progress(Progress::TableStarted { table: name, layer });
            let t = self.clock.monotonic_ms();
            let mut report = TableReport::new(name, layer);
            let before = self.bytes_read();
            match layer {
                Layer::Bronze => self.build_bronze(name, &mut report, progress).await?,
                Layer::Silver | Layer::Gold => {
                    self.build_derived(name, layer, &dag.inputs[name], &mut report)
                        .await?
                }
            }
            report.bytes_read = self.bytes_read() - before;
            report.ms = self.clock.monotonic_ms() - t;
            let skipped = !self.changed.contains(name);
            progress(Progress::TableFinished {
                table: name,
                rows: report.rows_out,
                skipped,
            });
            self.report.tables.push(report);
            self.stage_time(layer.as_str(), t);
        }
        Ok(())
    }

    fn bytes_read(&self) -> u64 {
        self.io.counts().bytes_read
    }

    fn push_staged(
        &mut self,
        request: CommitRequest,
        base: Option<&Snapshot>,
        quarantine: bool,
    ) -> (SchemaRef, Vec<(String, u64)>) {
        let out = (request.schema.clone(), request.live_files.clone());
        self.staged.push(Staged {
            request,
            base_version: base.map(|b| b.version),
            report_index: self.report.tables.len(),
            quarantine,
        });
        out
    }

    fn register(&self, name: &str, schema: SchemaRef, files: &[(String, u64)]) -> Result<()> {
        let table = ParquetFilesTable::new(&self.ctx, &self.storage, schema, files)?;
        let _ = self.ctx.deregister_table(name);
        self.ctx
            .register_table(name, Arc::new(table))
            .context(|| format!("registering table `{name}`"))?;
        Ok(())
    }

    fn write(
        &self,
        name: &str,
        location: String,
        mode: WriteMode,
        schema: SchemaRef,
        files: Vec<DataFile>,
        description: &str,
    ) -> TableWrite {
        TableWrite {
            table: name.to_string(),
            location,
            mode,
            schema,
            files,
            description: Some(description.to_string()),
            run_id: self.opts.run_id.clone(),
            now_ms: self.clock.now_ms(),
            commit_info: json!({ "pipeline": self.spec.pipeline.name, "runId": self.opts.run_id }),
            configuration: HashMap::new(),
        }
    }

    async fn build_bronze(
        &mut self,
        name: &str,
        report: &mut TableReport,
        progress: &dyn Fn(Progress),
    ) -> Result<()> {
        let src = &self.spec.bronze[name];
        let location = table_location(&self.opts.lake, Layer::Bronze, name);
        let snapshot = Snapshot::try_load(self.storage.as_ref(), &location).await?;
        let seen: BTreeSet<String> = snapshot
            .as_ref()
            .map(|s| s.file_tags(SOURCE_TAG).map(str::to_string).collect())
            .unwrap_or_default();
        let files = source::resolve_files(self.storage.as_ref(), &self.opts.base, &src.path)
            .await
            .map_err(|e| match e {
                Error::NotFound { location } => Error::Table {
                    table: name.to_string(),
                    message: format!("source file {location} does not exist"),
                },
                other => other,
            })?;
        if files.is_empty() && snapshot.is_none() {
            return Err(Error::Table {
                table: name.to_string(),
                message: format!(
                    "no files match `{}` (looked in {})",
                    src.path, self.opts.base
                ),
            });
        }
        let format = src.resolved_format().map_err(Error::Spec)?;
        let declared = src.declared_schema().map_err(Error::Spec)?;
        let now_us = self.clock.now_ms() * 1000;
        let mut data_files = Vec::new();
        let mut rescued: Vec<RescuedRow> = Vec::new();
        let mut schema: Option<SchemaRef> = None;
        for file in &files {
            if seen.contains(&file.location) {
                report.files_skipped += 1;
                continue;
            }
            let bytes = self.storage.read(&file.location).await?;
            progress(Progress::FileIngested {
                table: name,
                file: &file.location,
                bytes: bytes.len() as u64,
            });
            let parsed = source::parse(&file.location, format, &bytes, declared.as_ref(), &src.csv);
            report.rows_in += parsed.rows() + parsed.rescued.len() as u64;
            report.files_ingested += 1;
            let batches = parsed
                .batches
                .iter()
                .map(|b| with_lineage(b, now_us, &file.location))
                .collect::<Result<Vec<_>>>()?;
            if let Some(b) = batches.first() {
                schema = Some(merge_for_bronze(name, schema, b.schema())?);
            }
            rescued.extend(parsed.rescued);
            let mut tags = HashMap::new();
            tags.insert(SOURCE_TAG.to_string(), file.location.clone());
            data_files.push(DataFile { batches, tags });
        }
        report.quarantined = rescued.len() as u64;
        report.rows_out = report.rows_in - report.quarantined;

        if !rescued.is_empty() {
            self.stage_quarantine(name, rescued_batch(&rescued, now_us)?)
                .await?;
        }
        let new_schema = schema.or_else(|| snapshot.as_ref().map(|s| s.schema.clone()));
        if data_files.is_empty() || new_schema.is_none() {
            // Nothing new (or only unreadable files): downstream reads the committed version.
            match &snapshot {
                Some(s) => self.register(name, s.schema.clone(), &s.file_locations())?,
                None => {
                    return Err(Error::Table {
                        table: name.to_string(),
                        message: "no source row could be read; see its quarantine".into(),
                    })
                }
            }
            if !data_files.is_empty() {
                self.changed.insert(name.to_string());
            }
            return Ok(());
        }
        let schema = new_schema.unwrap_or_else(|| Arc::new(Schema::empty()));
        // Files whose rows were all rescued still get an (empty) data file, so that they are
        // recorded as seen and not re-read on every run.
        let description = src.description.clone();
        let write = self.write(
            name,
            location,
            WriteMode::Append,
            schema,
            data_files,
            &description,
        );
        self.stage_table(name, write, snapshot.as_ref(), report)
            .await
    }

    /// Writes a table's new data files, stages its commit, and lets later tables read the
    /// staged version.
    async fn stage_table(
        &mut self,
        name: &str,
        write: TableWrite,
        base: Option<&Snapshot>,
        report: &mut TableReport,
    ) -> Result<()> {
        let request = write.prepare(self.storage.as_ref(), base).await?;
        report.bytes_written += request.bytes_written;
        let (schema, live) = self.push_staged(request, base, false);
        self.changed.insert(name.to_string());
        self.register(name, schema, &live)
    }

    async fn stage_quarantine(&mut self, name: &str, batch: RecordBatch) -> Result<()> {
        let location = quarantine_location(&self.opts.lake, name);
        let snapshot = Snapshot::try_load(self.storage.as_ref(), &location).await?;
        let write = self.write(
            &format!("{name} (quarantine)"),
            location,
            WriteMode::Append,
            batch.schema(),
            vec![DataFile {
                batches: vec![batch],
                tags: HashMap::new(),
            }],
            &format!("rows of `{name}` set aside by Medallion"),
        );
        let request = write
            .prepare(self.storage.as_ref(), snapshot.as_ref())
            .await?;
        self.push_staged(request, snapshot.as_ref(), true);
        Ok(())
    }

    async fn build_derived(
        &mut self,
        name: &str,
        layer: Layer,
        inputs: &BTreeSet<String>,
        report: &mut TableReport,
    ) -> Result<()> {
        let (sql, definition) = match layer {
            Layer::Silver => {
                let t = &self.spec.silver[name];
                (t.sql.clone(), serde_json::to_string(t).unwrap_or_default())
            }
            _ => {
                let t = &self.spec.gold[name];
                (t.sql.clone(), serde_json::to_string(t).unwrap_or_default())
            }
        };
        let spec_hash = format!("{:016x}", fnv1a(definition.as_bytes()));
        let location = table_location(&self.opts.lake, layer, name);
        let snapshot = Snapshot::try_load(self.storage.as_ref(), &location).await?;
        let up_to_date = snapshot.as_ref().is_some_and(|s| {
            s.metadata
                .configuration
                .get(SPEC_HASH_KEY)
                .and_then(|v| v.as_deref())
                == Some(spec_hash.as_str())
        }) && inputs.iter().all(|i| !self.changed.contains(i));
        if let (true, Some(s)) = (up_to_date, &snapshot) {
            report.rows_out = s.num_records().unwrap_or(0);
            return self.register(name, s.schema.clone(), &s.file_locations());
        }

        let what = format!("{layer} table `{name}`");
        let (schema, batches) = query::collect_sql(&self.ctx, &what, &sql).await?;
        report.rows_in = batches.iter().map(|b| b.num_rows() as u64).sum();
        let (schema, batches) = if layer == Layer::Silver {
            let cleaned =
                quality::clean(&self.ctx, name, &self.spec.silver[name], schema, batches).await?;
            report.dropped = cleaned.dropped;
            report.deduplicated = cleaned.deduplicated;
            report.expectations = cleaned.expectations;
            if !cleaned.quarantine.is_empty() {
                report.quarantined = cleaned.quarantine.iter().map(|b| b.num_rows() as u64).sum();
                let batch = datafusion::arrow::compute::concat_batches(
                    &cleaned.quarantine[0].schema(),
                    &cleaned.quarantine,
                )
                .context(|| format!("{what}: quarantine"))?;
                self.stage_quarantine(name, batch).await?;
            }
            (cleaned.schema, cleaned.batches)
        } else {
            (schema, batches)
        };
        report.rows_out = batches.iter().map(|b| b.num_rows() as u64).sum();
        let description = match layer {
            Layer::Silver => self.spec.silver[name].description.clone(),
            _ => self.spec.gold[name].description.clone(),
        };
        let mut write = self.write(
            name,
            location,
            WriteMode::Overwrite,
            schema,
            vec![DataFile {
                batches,
                tags: HashMap::new(),
            }],
            &description,
        );
        write
            .configuration
            .insert(SPEC_HASH_KEY.to_string(), spec_hash);
        self.stage_table(name, write, snapshot.as_ref(), report)
            .await
    }

    /// Checks that no table moved since it was read, then commits each staged version.
    async fn commit_all(&mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        for s in &staged {
            let latest = crate::delta::commit_versions(self.storage.as_ref(), &s.request.location)
                .await?
                .last()
                .copied();
            if latest != s.base_version {
                let table = s.request.table.clone();
                let version = latest.unwrap_or(0);
                for s in staged {
                    s.request.abort(self.storage.as_ref()).await;
                }
                return Err(Error::CommitConflict { table, version });
            }
        }
        let mut pending = staged.into_iter();
        while let Some(s) = pending.next() {
            let report_index = s.report_index;
            let quarantine = s.quarantine;
            match s.request.commit(self.storage.as_ref()).await {
                Ok(version) => {
                    if let Some(t) = self.report.tables.get_mut(report_index) {
                        if quarantine {
                            t.quarantine_version = Some(version);
                        } else {
                            t.version = Some(version);
                        }
                    }
                }
                Err(e) => {
                    for rest in pending {
                        rest.request.abort(self.storage.as_ref()).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// FNV-1a: a hash that stays the same across Rust releases, for definitions stored in logs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Adds `_ingested_at` and `_source_file` to a batch read from a source file.
fn with_lineage(batch: &RecordBatch, now_us: i64, file: &str) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != "_ingested_at" && f.name() != "_source_file")
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| f.name() != "_ingested_at" && f.name() != "_source_file")
        .map(|(_, c)| c.clone())
        .collect();
    fields.push(Field::new(
        "_ingested_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    fields.push(Field::new("_source_file", DataType::Utf8, false));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![now_us; n]).with_timezone("UTC"),
    ));
    columns.push(Arc::new(StringArray::from(vec![file; n])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .context(|| format!("adding lineage columns for {file}"))
}

fn merge_for_bronze(table: &str, current: Option<SchemaRef>, next: SchemaRef) -> Result<SchemaRef> {
    let Some(current) = current else {
        return Ok(next);
    };
    let mut fields: Vec<Field> = current
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for f in next.fields() {
        match current.field_with_name(f.name()) {
            Ok(existing) if existing.data_type() != f.data_type() => {
                return Err(Error::Table {
                    table: table.to_string(),
                    message: format!(
                        "column `{}` is {} in one source file and {} in another; declare its type in the spec's [bronze.{table}.schema]",
                        f.name(),
                        existing.data_type(),
                        f.data_type()
                    ),
                })
            }
            Ok(_) => {}
            Err(_) => fields.push(f.as_ref().clone().with_nullable(true)),
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Rescued source lines as a quarantine batch.
fn rescued_batch(rows: &[RescuedRow], now_us: i64) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("_source_file", DataType::Utf8, false),
        Field::new("_line", DataType::Int64, false),
        Field::new("_raw", DataType::Utf8, false),
        Field::new("_error", DataType::Utf8, false),
        Field::new(
            "_ingested_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.file.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.line as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.raw.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.error.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(vec![now_us; rows.len()]).with_timezone("UTC"),
            ),
        ],
    )
    .context(|| "building the quarantine batch".to_string())
}
