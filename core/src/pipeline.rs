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
use crate::storage::{join, CountingStorage, IoCounts, IoStats, Storage};
use serde::{Deserialize, Serialize};

/// The tag on a bronze data file's `add` naming the source file it came from.
pub const SOURCE_TAG: &str = "medallion.source";
/// The `metaData.configuration` key holding a hash of a silver/gold table's definition.
pub const SPEC_HASH_KEY: &str = "medallion.specHash";

/// Where and how to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
///
/// This is the three parts below in one process: [`dag::plan`], [`stage`] of every table in
/// order, [`commit`]. A runtime that builds independent tables in parallel (the wasmtime
/// host) calls the parts itself.
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

    let t = clock.monotonic_ms();
    let dag = dag::plan(spec)?;
    progress(Progress::Planned { tables: &dag.order });
    let plan_ms = clock.monotonic_ms() - t;

    let staged = stage(
        spec,
        storage.clone(),
        clock,
        opts,
        &dag.order,
        &[],
        progress,
    )
    .await?;
    let mut report = RunReport {
        pipeline: spec.pipeline.name.clone(),
        lake: opts.lake.clone(),
        run_id: opts.run_id.clone(),
        tables: staged.tables,
        stages: staged.stages,
        ..Default::default()
    };
    report.stages.insert(
        0,
        StageTime {
            stage: "plan".into(),
            ms: plan_ms,
        },
    );
    progress(Progress::Committing {
        tables: staged.commits.len(),
    });
    let t = clock.monotonic_ms();
    let committed = commit(storage.as_ref(), staged.commits).await?;
    report.stages.push(StageTime {
        stage: "commit".into(),
        ms: clock.monotonic_ms() - t,
    });
    record_versions(&mut report, &committed);
    report.ok = true;
    report.io = io.counts();
    report.elapsed_ms = clock.monotonic_ms() - started;
    Ok(report)
}

/// A staged table version as plain data: its data files are written, its log entry is not.
/// Serialisable, so that the part of a run that staged it need not be the one that commits it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedCommit {
    /// The pipeline table this version belongs to.
    pub table: String,
    /// Whether this is the table's quarantine rather than the table itself.
    pub quarantine: bool,
    pub location: String,
    pub version: u64,
    /// The version this one was built on; the commit fails if the table has moved since.
    pub base_version: Option<u64>,
    /// The data files written, removed if the commit is not made.
    pub written: Vec<String>,
    /// Newline-delimited JSON actions of the log entry.
    pub log_entry: String,
}

/// What later tables of a run read of a table built (or found up to date) earlier: its
/// staged or committed files and schema, and whether the run changes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableState {
    pub table: String,
    /// The schema as a Delta schema string (what the table's log would record).
    pub schema: String,
    /// Live data files (location, size).
    pub files: Vec<(String, u64)>,
    /// The version these files are (committed, or staged by this run).
    pub version: Option<u64>,
    /// Whether this run writes a new version of the table.
    pub changed: bool,
}

/// What [`stage`] did: versions to commit, the state later tables read, reports per table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Staged {
    pub commits: Vec<StagedCommit>,
    pub states: Vec<TableState>,
    pub tables: Vec<TableReport>,
    /// Time per layer built.
    pub stages: Vec<StageTime>,
    /// Reads and writes of this stage.
    pub io: IoCounts,
}

/// A version [`commit`] made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Committed {
    pub table: String,
    pub quarantine: bool,
    pub version: u64,
}

/// Builds `tables` in the given order (each after the tables it reads) and stages their new
/// versions. `inputs` are the states of tables built earlier in the same run, by other calls;
/// tables neither in `tables` nor in `inputs` are not readable. On error, this call's staged
/// files are removed and nothing is left to commit.
pub async fn stage(
    spec: &PipelineSpec,
    storage: Arc<dyn Storage>,
    clock: &dyn Clock,
    opts: &RunOptions,
    tables: &[String],
    inputs: &[TableState],
    progress: &dyn Fn(Progress),
) -> Result<Staged> {
    let counting = Arc::new(CountingStorage::new(storage));
    let io = counting.stats();
    let storage: Arc<dyn Storage> = counting;
    let dag = dag::plan(spec)?;
    let mut run = Run {
        spec,
        storage: storage.clone(),
        clock,
        opts,
        ctx: query::new_context(opts.engine),
        io: io.clone(),
        staged: Vec::new(),
        changed: BTreeSet::new(),
        registered: HashMap::new(),
        report: Staged::default(),
    };
    let result = run.stage_inputs(inputs);
    let result = match result {
        Ok(()) => run.build_all(&dag, tables, progress).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        for staged in std::mem::take(&mut run.staged) {
            staged.request.abort(storage.as_ref()).await;
        }
        return Err(e);
    }
    let mut out = run.report;
    for s in run.staged {
        out.commits.push(StagedCommit {
            table: s.table,
            quarantine: s.quarantine,
            location: s.request.location.clone(),
            version: s.request.version,
            base_version: s.base_version,
            written: s.request.written.clone(),
            log_entry: String::from_utf8_lossy(&s.request.log_entry).into_owned(),
        });
    }
    for name in tables {
        let Some(Registered {
            schema,
            files,
            version,
        }) = run.registered.get(name)
        else {
            continue;
        };
        out.states.push(TableState {
            table: name.clone(),
            schema: crate::delta::delta_schema_string(schema).map_err(|message| Error::Table {
                table: name.clone(),
                message,
            })?,
            files: files.clone(),
            version: *version,
            changed: run.changed.contains(name),
        });
    }
    out.io = io.counts();
    Ok(out)
}

/// Checks that no table moved since it was staged, then publishes each staged version with
/// one put-if-absent of its log entry. If any table moved, nothing is committed and every
/// staged file is removed; if a commit fails midway, the rest are not made (and their files
/// removed), the ones before stay.
pub async fn commit(storage: &dyn Storage, staged: Vec<StagedCommit>) -> Result<Vec<Committed>> {
    for s in &staged {
        let latest = crate::delta::commit_versions(storage, &s.location)
            .await?
            .last()
            .copied();
        if latest != s.base_version {
            let table = s.table.clone();
            let version = latest.unwrap_or(0);
            abort(storage, staged).await;
            return Err(Error::CommitConflict { table, version });
        }
    }
    let mut committed = Vec::with_capacity(staged.len());
    let mut pending = staged.into_iter();
    while let Some(s) = pending.next() {
        let log = crate::delta::commit_location(&s.location, s.version);
        let result = storage
            .put_if_absent(&log, bytes::Bytes::from(s.log_entry.clone()))
            .await;
        if let Err(e) = result {
            let rest: Vec<StagedCommit> = std::iter::once(s.clone()).chain(pending).collect();
            abort(storage, rest).await;
            return Err(match e {
                Error::AlreadyExists { .. } => Error::CommitConflict {
                    table: s.table,
                    version: s.version,
                },
                other => other,
            });
        }
        committed.push(Committed {
            table: s.table,
            quarantine: s.quarantine,
            version: s.version,
        });
    }
    Ok(committed)
}

/// Removes the data files of staged versions that will not be committed. Best effort: files
/// left behind are invisible to readers, only wasted space.
pub async fn abort(storage: &dyn Storage, staged: Vec<StagedCommit>) {
    for s in staged {
        for l in &s.written {
            let _ = storage.delete(l).await;
        }
    }
}

/// Writes committed versions into the reports of their tables.
pub fn record_versions(report: &mut RunReport, committed: &[Committed]) {
    for c in committed {
        if let Some(t) = report.tables.iter_mut().find(|t| t.table == c.table) {
            if c.quarantine {
                t.quarantine_version = Some(c.version);
            } else {
                t.version = Some(c.version);
            }
        }
    }
}

/// A table later tables can read: schema, live files, and the version they make up.
struct Registered {
    schema: SchemaRef,
    files: Vec<(String, u64)>,
    version: Option<u64>,
}

struct StagedRequest {
    request: CommitRequest,
    base_version: Option<u64>,
    table: String,
    quarantine: bool,
}

struct Run<'a> {
    spec: &'a PipelineSpec,
    storage: Arc<dyn Storage>,
    clock: &'a dyn Clock,
    opts: &'a RunOptions,
    ctx: SessionContext,
    io: Arc<IoStats>,
    staged: Vec<StagedRequest>,
    /// Tables whose content changes in this run.
    changed: BTreeSet<String>,
    /// What each readable table is: schema and live files.
    registered: HashMap<String, Registered>,
    report: Staged,
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

    /// Makes tables staged by earlier parts of the run readable.
    fn stage_inputs(&mut self, inputs: &[TableState]) -> Result<()> {
        for input in inputs {
            let schema =
                crate::delta::arrow_schema_from_delta(&input.schema).map_err(|message| {
                    Error::Table {
                        table: input.table.clone(),
                        message: format!("staged schema: {message}"),
                    }
                })?;
            self.register(&input.table, Arc::new(schema), &input.files, input.version)?;
            if input.changed {
                self.changed.insert(input.table.clone());
            }
        }
        Ok(())
    }

    async fn build_all(
        &mut self,
        dag: &Dag,
        tables: &[String],
        progress: &dyn Fn(Progress),
    ) -> Result<()> {
        for name in tables {
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
        let table = match quarantine {
            // Quarantines are staged while their table is being built: it is the next report.
            true => request.table.trim_end_matches(" (quarantine)").to_string(),
            false => request.table.clone(),
        };
        self.staged.push(StagedRequest {
            request,
            base_version: base.map(|b| b.version),
            table,
            quarantine,
        });
        out
    }

    fn register(
        &mut self,
        name: &str,
        schema: SchemaRef,
        files: &[(String, u64)],
        version: Option<u64>,
    ) -> Result<()> {
        self.registered.insert(
            name.to_string(),
            Registered {
                schema: schema.clone(),
                files: files.to_vec(),
                version,
            },
        );
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
                Some(s) => {
                    self.register(name, s.schema.clone(), &s.file_locations(), Some(s.version))?
                }
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
        let version = request.version;
        let (schema, live) = self.push_staged(request, base, false);
        self.changed.insert(name.to_string());
        self.register(name, schema, &live, Some(version))
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
        // The hash covers the versions of the inputs too: a table built from inputs that have
        // moved since (say, committed by a run that crashed before committing this table) is
        // rebuilt even when nothing changes in this run.
        let input_versions: Vec<String> = inputs
            .iter()
            .map(|i| match self.registered.get(i).and_then(|r| r.version) {
                Some(v) => format!("{i}@{v}"),
                None => i.clone(),
            })
            .collect();
        let spec_hash = format!(
            "{:016x}",
            fnv1a(format!("{definition}\n{}", input_versions.join(",")).as_bytes())
        );
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
            return self.register(name, s.schema.clone(), &s.file_locations(), Some(s.version));
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
