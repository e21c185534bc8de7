//! One run of a pipeline spec against a lake.
//!
//! A run builds every table in dependency order and *stages* each new version — its data files
//! are written but not yet referenced by the log — so later tables read exactly what will be
//! committed. Only when every table is built, and every expectation has passed, does it commit,
//! table by table. A failed run therefore changes no table; its staged files are removed.
//!
//! Incremental: bronze appends only source files its log has not recorded (each data file's
//! `add` carries its source in the tag `medallion.source`); silver and gold change only when an
//! input changed, the table is missing, or its definition changed — by appending or merging the
//! rows of an input's new files where the SQL allows it, else by a full rebuild (see
//! [`crate::incremental`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::clock::Clock;
use crate::dag::{self, Dag};
use crate::delta::{
    At, CommitRequest, DataFile, LiveFile, Snapshot, TableWrite, TableWriter, WriteMode,
};
use crate::error::{Context, Error, Result};
use crate::incremental::{self, DEFINITION_KEY, INPUTS_KEY};
use crate::quality;
use crate::query::{self, EngineOptions, ParquetFilesTable};
use crate::report::{RunReport, StageTime, TableReport};
use crate::source::{self, RescuedRow};
use crate::spec::{Format, Layer, PipelineSpec, SilverTable};
use crate::storage::{join, CountingStorage, IoCounts, IoStats, ObjectMeta, Storage};
use serde::{Deserialize, Serialize};

/// The tag on a bronze data file's `add` naming the source file it came from (several, one
/// per line, once `optimize` has merged files).
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
    /// Unique per run; recorded in each commit's `commitInfo`.
    pub run_id: String,
    pub engine: EngineOptions,
    /// At most this many new source files per bronze table in one run (oldest names first);
    /// the rest wait for the next run. Bounds a micro-batch when a burst of files arrives.
    #[serde(default)]
    pub max_files_per_table: Option<usize>,
    /// At most about this many bytes of new source files per bronze table in one run (always
    /// at least one file): bounds a batch of large files as `max_files_per_table` bounds a
    /// burst of small ones.
    #[serde(default)]
    pub max_bytes_per_table: Option<u64>,
}

/// The `txn` application id under which a bronze table records its batches: each run that
/// appends to it commits `version` = the previous batch + 1, atomically with the data.
pub fn batch_app_id(pipeline: &str, table: &str) -> String {
    format!("medallion:{pipeline}:{table}")
}

/// Where a run's silver and gold SQL executes when not in the run's own session: a
/// distributed engine (the host's Ballista cluster), which reads each input as the list of
/// files that make up its version. The run still checks, writes and commits what it returns.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait SqlEngine: crate::storage::MaybeSend + std::fmt::Debug {
    /// Makes `table` readable by later SQL as exactly `files` (replacing what it was).
    fn register(
        &self,
        table: &str,
        schema: SchemaRef,
        partition_columns: &[String],
        files: &[LiveFile],
    ) -> Result<()>;
    /// Starts `sql`, its rows to be read as they come; `what` names the table being built,
    /// for errors.
    async fn stream_sql(&self, what: &str, sql: &str) -> Result<SendableRecordBatchStream>;

    /// Whether this engine writes the data files of a table at `location` itself, where the
    /// rows are computed (a cluster's executors), instead of streaming the rows to the caller.
    fn writes_files(&self, _location: &str) -> bool {
        false
    }

    /// The schema `sql`'s rows have.
    async fn sql_schema(&self, what: &str, _sql: &str) -> Result<SchemaRef> {
        Err(Error::Spec(format!(
            "{what}: this engine only streams rows"
        )))
    }

    /// Runs `sql` with its rows cast to `schema`, writing them as Parquet files into the new
    /// directory `dir`, which holds nothing else.
    async fn write_files(
        &self,
        what: &str,
        _sql: &str,
        _schema: SchemaRef,
        _dir: &str,
    ) -> Result<()> {
        Err(Error::Spec(format!(
            "{what}: this engine only streams rows"
        )))
    }
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

/// One Delta table found in a lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeTable {
    /// `bronze`, `silver`, `gold` or `quarantine`.
    pub layer: &'static str,
    pub name: String,
    pub location: String,
}

/// Every Delta table of a lake, sorted by layer and name: the folders `<lake>/<layer>/<name>`
/// whose `_delta_log` holds a commit or checkpoint. One listing per layer, on disk or in a
/// bucket alike; an HTTP lake, which cannot be listed, holds none that can be found this way.
pub async fn lake_tables(storage: &dyn Storage, lake: &str) -> Result<Vec<LakeTable>> {
    let mut out = Vec::new();
    for layer in ["bronze", "silver", "gold", "quarantine"] {
        let dir = join(lake, layer);
        let listed = match storage.list(&dir).await {
            Ok(listed) => listed,
            Err(_) if crate::storage::is_http(lake) => continue,
            Err(e) => return Err(e),
        };
        let mut names = BTreeSet::new();
        for meta in listed {
            let Some(rel) = meta.location.strip_prefix(dir.as_str()) else {
                continue;
            };
            let mut parts = rel.trim_start_matches('/').split('/');
            if let (Some(name), Some("_delta_log"), Some(file), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                if crate::delta::is_log_file(file) {
                    names.insert(name.to_string());
                }
            }
        }
        out.extend(names.into_iter().map(|name| LakeTable {
            layer,
            location: join(&dir, &name),
            name,
        }));
    }
    Ok(out)
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
    run_on(spec, storage, clock, opts, progress, None).await
}

/// [`run`] with silver and gold SQL executed by `sql` (a cluster) instead of in-process.
pub async fn run_on(
    spec: &PipelineSpec,
    storage: Arc<dyn Storage>,
    clock: &dyn Clock,
    opts: &RunOptions,
    progress: &dyn Fn(Progress),
    sql: Option<&dyn SqlEngine>,
) -> Result<RunReport> {
    let started = clock.monotonic_ms();
    let counting = Arc::new(CountingStorage::new(storage));
    let io = counting.stats();
    let storage: Arc<dyn Storage> = counting;

    let t = clock.monotonic_ms();
    let dag = dag::plan(spec)?;
    progress(Progress::Planned { tables: &dag.order });
    let plan_ms = clock.monotonic_ms() - t;

    let staged = stage_on(
        spec,
        storage.clone(),
        clock,
        opts,
        &dag.order,
        &[],
        progress,
        sql,
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
    let committed = match commit(storage.as_ref(), staged.commits, clock.now_ms()).await {
        Ok(c) => c,
        Err(e) => return Err(e),
    };
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
    /// Commits between checkpoints of the table (a checkpoint follows every Nth).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: u64,
}

impl StagedCommit {
    /// The plain-data form of a prepared version of `table` built on `base_version`.
    pub fn new(
        table: &str,
        quarantine: bool,
        request: &CommitRequest,
        base_version: Option<u64>,
    ) -> Self {
        StagedCommit {
            table: table.to_string(),
            quarantine,
            location: request.location.clone(),
            version: request.version,
            base_version,
            written: request.written.clone(),
            log_entry: String::from_utf8_lossy(&request.log_entry).into_owned(),
            checkpoint_interval: request.checkpoint_interval,
        }
    }
}

fn default_checkpoint_interval() -> u64 {
    crate::delta::DEFAULT_CHECKPOINT_INTERVAL
}

/// What later tables of a run read of a table built (or found up to date) earlier: its
/// staged or committed files and schema, and whether the run changes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableState {
    pub table: String,
    /// The schema as a Delta schema string (what the table's log would record).
    pub schema: String,
    /// Columns the table is partitioned by (their values are in each file's entry).
    #[serde(default)]
    pub partition_columns: Vec<String>,
    /// Live data files.
    pub files: Vec<LiveFile>,
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
    stage_on(spec, storage, clock, opts, tables, inputs, progress, None).await
}

/// [`stage`] with silver and gold SQL executed by `sql` (a cluster) instead of in-process.
#[allow(clippy::too_many_arguments)]
pub async fn stage_on(
    spec: &PipelineSpec,
    storage: Arc<dyn Storage>,
    clock: &dyn Clock,
    opts: &RunOptions,
    tables: &[String],
    inputs: &[TableState],
    progress: &dyn Fn(Progress),
    sql: Option<&dyn SqlEngine>,
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
        sql,
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
        out.commits.push(StagedCommit::new(
            &s.table,
            s.quarantine,
            &s.request,
            s.base_version,
        ));
    }
    for name in tables {
        let Some(Registered {
            schema,
            partition_columns,
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
            partition_columns: partition_columns.clone(),
            files: files.clone(),
            version: *version,
            changed: run.changed.contains(name),
        });
    }
    out.io = io.counts();
    Ok(out)
}

/// Checks that no table moved since it was staged, then publishes each staged version with
/// one put-if-absent of its log entry ([`crate::delta::publish`]), and writes a checkpoint
/// where one is due. If any table moved, nothing is committed and every staged file is
/// removed ([`Error::CommitConflict`]). If a commit fails midway, the versions before it stay
/// committed and the rest are not made; the error ([`Error::PartialCommit`]) names both. The
/// data files of a commit whose outcome is uncertain are kept: the log may reference them.
pub async fn commit(
    storage: &dyn Storage,
    staged: Vec<StagedCommit>,
    now_ms: i64,
) -> Result<Vec<Committed>> {
    for s in &staged {
        let latest = crate::delta::latest_version(storage, &s.location).await?;
        if latest != s.base_version {
            let table = s.table.clone();
            let version = latest.unwrap_or(0);
            abort(storage, staged).await;
            return Err(Error::CommitConflict { table, version });
        }
    }
    let mut committed: Vec<Committed> = Vec::with_capacity(staged.len());
    let mut pending = staged.into_iter();
    while let Some(s) = pending.next() {
        let result = crate::delta::publish(
            storage,
            &s.table,
            &s.location,
            s.version,
            bytes::Bytes::from(s.log_entry.clone()),
        )
        .await;
        if let Err(e) = result {
            let rest: Vec<StagedCommit> = pending.collect();
            let mut not_committed = vec![s.table.clone()];
            not_committed.extend(rest.iter().map(|r| r.table.clone()));
            // Only a conflict proves this version's files unreferenced.
            if matches!(e, Error::CommitConflict { .. }) {
                abort(storage, vec![s]).await;
            }
            abort(storage, rest).await;
            if committed.is_empty() && e.changed_nothing() {
                return Err(e);
            }
            return Err(Error::PartialCommit {
                committed: committed
                    .iter()
                    .map(|c| (c.display_name(), c.version))
                    .collect(),
                not_committed,
                source: Box::new(e),
            });
        }
        // The commit stands whatever happens to the checkpoint; readers replay the JSON.
        let _ = crate::delta::checkpoint_if_due(
            storage,
            &s.location,
            s.version,
            s.checkpoint_interval,
            now_ms,
        )
        .await;
        committed.push(Committed {
            table: s.table,
            quarantine: s.quarantine,
            version: s.version,
        });
    }
    Ok(committed)
}

impl Committed {
    /// The table's name, or `<table> (quarantine)`.
    pub fn display_name(&self) -> String {
        match self.quarantine {
            true => format!("{} (quarantine)", self.table),
            false => self.table.clone(),
        }
    }
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
#[derive(Clone)]
struct Registered {
    schema: SchemaRef,
    partition_columns: Vec<String>,
    files: Vec<LiveFile>,
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
    /// Where silver and gold SQL runs if not in `ctx`.
    sql: Option<&'a dyn SqlEngine>,
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
            self.register(
                &input.table,
                Arc::new(schema),
                &input.partition_columns,
                &input.files,
                input.version,
            )?;
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
    ) -> (SchemaRef, Vec<String>, Vec<LiveFile>) {
        let out = (
            request.schema.clone(),
            request.partition_columns.clone(),
            request.live_files.clone(),
        );
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

    /// `files` as a table this run reads. Plain strings, not views: see
    /// [`ParquetFilesTable::with_plain_strings`].
    fn files_table(
        &self,
        schema: SchemaRef,
        partition_columns: &[String],
        files: &[LiveFile],
    ) -> Result<ParquetFilesTable> {
        Ok(ParquetFilesTable::partitioned(
            &self.ctx,
            &self.storage,
            schema,
            partition_columns,
            files,
        )?
        .with_plain_strings())
    }

    fn register(
        &mut self,
        name: &str,
        schema: SchemaRef,
        partition_columns: &[String],
        files: &[LiveFile],
        version: Option<u64>,
    ) -> Result<()> {
        self.registered.insert(
            name.to_string(),
            Registered {
                schema: schema.clone(),
                partition_columns: partition_columns.to_vec(),
                files: files.to_vec(),
                version,
            },
        );
        let table = self.files_table(schema, partition_columns, files)?;
        let _ = self.ctx.deregister_table(name);
        self.ctx
            .register_table(name, Arc::new(table))
            .context(|| format!("registering table `{name}`"))?;
        if let Some(engine) = self.sql {
            let schema = self.registered[name].schema.clone();
            engine.register(name, schema, partition_columns, files)?;
        }
        Ok(())
    }

    /// Runs a table's own SQL: on the run's [`SqlEngine`] if it has one, else in-process.
    async fn table_sql(&self, what: &str, sql: &str) -> Result<SendableRecordBatchStream> {
        match self.sql {
            Some(engine) => engine.stream_sql(what, sql).await,
            None => query::stream_sql(&self.ctx, what, sql).await,
        }
    }

    /// Bytes of Arrow data a streamed table gathers before writing them as one data file: a
    /// share of the memory limit, so that a file being encoded stays within it.
    fn file_chunk(&self) -> usize {
        const MIB: usize = 1 << 20;
        match self.opts.engine.memory_limit {
            Some(limit) => (limit / 8).clamp(4 * MIB, 128 * MIB),
            None => 128 * MIB,
        }
    }

    /// The size of the parts a large source file is read in; a file no larger is read whole.
    /// Reading whole is faster (a file without a declared schema read in parts is read twice,
    /// types first: +56% time for the retail demo at scale 500 in 32 MiB parts; in the guest,
    /// whose queries get half its memory as their limit, the retail clicks files at scale 40
    /// were read so), so only files too large to hold are split. Under a memory limit, a
    /// sixteenth of it: the part, its rows parsed into columns (a few times the text) and a
    /// data file's rows being encoded (an eighth) take under half the limit. Without one,
    /// 1 GiB.
    fn source_part_bytes(&self) -> u64 {
        const MIB: usize = 1 << 20;
        match self.opts.engine.memory_limit {
            Some(limit) => (limit / 16).clamp(MIB, 1024 * MIB) as u64,
            None => 1024 * MIB as u64,
        }
    }

    /// Reads one source file a part at a time into data files of [`Self::file_chunk`] bytes,
    /// each tagged with the file, so only a part and a data file's rows are in memory.
    #[allow(clippy::too_many_arguments)]
    async fn ingest_file(
        &self,
        table: &str,
        file: &ObjectMeta,
        (format, declared, csv): (Format, Option<&Schema>, &crate::spec::CsvOptions),
        part_bytes: u64,
        now_us: i64,
        snapshot: Option<&Snapshot>,
        ingest: &mut BronzeFiles,
        rescued: &mut Vec<RescuedRow>,
        report: &mut TableReport,
    ) -> Result<()> {
        let storage = self.storage.as_ref();
        let mut parts =
            source::SourceParts::open(storage, file, format, declared, csv, part_bytes).await?;
        let tags = HashMap::from([(SOURCE_TAG.to_string(), file.location.clone())]);
        let mut chunk = FileChunk::new(self.file_chunk());
        let mut files = 0usize;
        while let Some(parsed) = parts.next().await? {
            report.rows_in += parsed.rows() + parsed.rescued.len() as u64;
            rescued.extend(parsed.rescued);
            for b in &parsed.batches {
                if let Some(batches) = chunk.push(with_lineage(b, now_us, &file.location)?) {
                    files += 1;
                    let tags = tags.clone();
                    ingest
                        .add(storage, table, snapshot, DataFile { batches, tags })
                        .await?;
                }
            }
        }
        report.files_ingested += 1;
        // A file without rows still gets an (empty) data file, which records it as read.
        if !chunk.is_empty() || files == 0 {
            let batches = chunk.take();
            ingest
                .add(storage, table, snapshot, DataFile { batches, tags })
                .await?;
        }
        Ok(())
    }

    /// Writes `stream`'s rows as data files of [`Self::file_chunk`] bytes each, as they come,
    /// and prepares the commit of `write` with them; on an error, removes what it wrote.
    /// Returns the commit and the rows written.
    async fn write_stream(
        &self,
        write: TableWrite,
        base: Option<&Snapshot>,
        mut stream: SendableRecordBatchStream,
        failed: impl Fn(DataFusionError) -> Error,
    ) -> Result<CommitRequest> {
        let storage = self.storage.as_ref();
        let mut writer = write.begin(base)?;
        let mut chunk = FileChunk::new(self.file_chunk());
        let written: Result<()> = async {
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(&failed)?;
                if batch.num_rows() == 0 {
                    continue;
                }
                if let Some(batches) = chunk.push(batch) {
                    let file = DataFile {
                        batches,
                        tags: HashMap::new(),
                    };
                    writer.write_file(storage, &file).await?;
                }
            }
            if !chunk.is_empty() || writer.rows_written() == 0 {
                let file = DataFile {
                    batches: chunk.take(),
                    tags: HashMap::new(),
                };
                writer.write_file(storage, &file).await?;
            }
            Ok(())
        }
        .await;
        match written {
            Ok(()) => writer.finish(),
            Err(e) => {
                writer.abort(storage).await;
                Err(e)
            }
        }
    }

    /// Has `engine` write `write`'s data files where the rows are computed, into a fresh
    /// directory of the table, and prepares the commit of what it wrote; on an error, removes
    /// everything in that directory (no log references it).
    async fn write_on_engine(
        &self,
        engine: &dyn SqlEngine,
        write: TableWrite,
        base: Option<&Snapshot>,
        what: &str,
        sql: &str,
    ) -> Result<CommitRequest> {
        let storage = self.storage.as_ref();
        let dir = join(
            &write.location,
            &format!("executors-{}", uuid::Uuid::new_v4()),
        );
        let mut writer = write.begin(base)?;
        let written: Result<()> = async {
            engine
                .write_files(what, sql, writer.file_schema().clone(), &dir)
                .await?;
            let mut files: Vec<_> = storage
                .list(&dir)
                .await?
                .into_iter()
                .filter(|f| f.location.ends_with(".parquet"))
                .collect();
            files.sort_by(|a, b| a.location.cmp(&b.location));
            for f in files {
                writer.add_existing(storage, &f.location).await?;
            }
            Ok(())
        }
        .await;
        match written {
            Ok(()) => writer.finish(),
            Err(e) => {
                writer.abort(storage).await;
                if let Ok(left) = storage.list(&dir).await {
                    for f in left {
                        let _ = storage.delete(&f.location).await;
                    }
                }
                Err(e)
            }
        }
    }

    /// Makes a committed table version readable by later tables.
    fn register_snapshot(&mut self, name: &str, s: &Snapshot) -> Result<()> {
        self.register(
            name,
            s.schema.clone(),
            &s.metadata.partition_columns,
            &s.live_files(),
            Some(s.version),
        )
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
            configuration: self
                .spec
                .pipeline
                .checkpoint_interval
                .map(|n| {
                    HashMap::from([(
                        crate::delta::CHECKPOINT_INTERVAL_KEY.to_string(),
                        n.to_string(),
                    )])
                })
                .unwrap_or_default(),
            partition_by: self.spec.partition_by(name).to_vec(),
            txn: None,
            removes: Vec::new(),
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
        if src.is_extracted() {
            // The host extracts database sources before the run (crate::extract); the run
            // reads what they committed.
            return match &snapshot {
                Some(s) => {
                    report.rows_out = s.num_records().unwrap_or(0);
                    self.register_snapshot(name, s)
                }
                None => Err(Error::Table {
                    table: name.to_string(),
                    message: format!(
                        "nothing has been extracted from source `{}` yet; run `medallion extract` (or `medallion run` with the native host)",
                        src.source.as_deref().unwrap_or_default()
                    ),
                }),
            };
        }
        let seen: BTreeSet<String> = snapshot
            .as_ref()
            .map(|s| {
                s.file_tags(SOURCE_TAG)
                    .flat_map(|t| t.lines())
                    .map(str::to_string)
                    .collect()
            })
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
        let mut rescued: Vec<RescuedRow> = Vec::new();
        let mut unseen: Vec<_> = files
            .iter()
            .filter(|f| !seen.contains(&f.location))
            .collect();
        report.files_skipped = (files.len() - unseen.len()) as u64;
        unseen.sort_by(|a, b| a.location.cmp(&b.location));
        let listed = unseen.len();
        if let Some(max) = self.opts.max_files_per_table {
            unseen.truncate(max.max(1));
        }
        if let Some(max) = self.opts.max_bytes_per_table {
            let mut total = 0u64;
            let keep = unseen
                .iter()
                .take_while(|f| {
                    let first = total == 0;
                    total = total.saturating_add(f.size.max(1));
                    first || total <= max
                })
                .count();
            unseen.truncate(keep);
        }
        report.files_pending = (listed - unseen.len()) as u64;

        // Each source file is written as a data file as soon as it is parsed, so only one
        // file's rows are in memory at a time. The commit records them all at the end.
        let description = src.description.clone();
        let mut write = self.write(
            name,
            location,
            WriteMode::Append,
            Arc::new(Schema::empty()),
            Vec::new(),
            &description,
        );
        let app_id = batch_app_id(&self.spec.pipeline.name, name);
        let batch = snapshot
            .as_ref()
            .and_then(|s| s.app_version(&app_id))
            .map_or(0, |v| v + 1);
        write.txn = Some(crate::delta::Txn {
            app_id,
            version: batch,
            last_updated: None,
        });
        let mut ingest = BronzeFiles {
            write,
            writer: None,
            schema: None,
            empty: Vec::new(),
        };
        let mut any_file = false;
        let mut failed = None;
        let part_bytes = self.source_part_bytes();
        for file in unseen {
            any_file = true;
            let read = self
                .ingest_file(
                    name,
                    file,
                    (format, declared.as_ref(), &src.csv),
                    part_bytes,
                    now_us,
                    snapshot.as_ref(),
                    &mut ingest,
                    &mut rescued,
                    report,
                )
                .await;
            if let Err(e) = read {
                failed = Some(e);
                break;
            }
            progress(Progress::FileIngested {
                table: name,
                file: &file.location,
                bytes: file.size,
            });
        }
        if let Some(e) = failed {
            ingest.abort(self.storage.as_ref()).await;
            return Err(e);
        }
        report.quarantined = rescued.len() as u64;
        report.rows_out = report.rows_in - report.quarantined;

        if !rescued.is_empty() {
            let staged = match rescued_batch(&rescued, now_us) {
                Ok(batch) => {
                    self.stage_quarantine(name, vec![batch], WriteMode::Append)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = staged {
                ingest.abort(self.storage.as_ref()).await;
                return Err(e);
            }
        }
        // Files whose rows were all rescued still get an (empty) data file, so that they are
        // recorded as seen and not re-read on every run; without any parsed row, they need
        // the table's schema.
        let request = match ingest
            .finish(self.storage.as_ref(), snapshot.as_ref())
            .await?
        {
            Some(request) => request,
            None => {
                // Nothing new (or only unreadable files): downstream reads the committed version.
                match &snapshot {
                    Some(s) => self.register_snapshot(name, s)?,
                    None => {
                        return Err(Error::Table {
                            table: name.to_string(),
                            message: "no source row could be read; see its quarantine".into(),
                        })
                    }
                }
                if any_file {
                    self.changed.insert(name.to_string());
                }
                return Ok(());
            }
        };
        self.stage_request(name, request, snapshot.as_ref(), report)
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
        self.stage_request(name, request, base, report)
    }

    /// Stages a prepared commit of `name` and lets later tables read the staged version.
    fn stage_request(
        &mut self,
        name: &str,
        request: CommitRequest,
        base: Option<&Snapshot>,
        report: &mut TableReport,
    ) -> Result<()> {
        report.bytes_written += request.bytes_written;
        let version = request.version;
        let (schema, partition_columns, live) = self.push_staged(request, base, false);
        self.changed.insert(name.to_string());
        self.register(name, schema, &partition_columns, &live, Some(version))
    }

    /// Stages rows set aside while building `name`: appended for bronze (each run's new
    /// source lines), replacing the previous ones for silver (a rebuild re-checks every row,
    /// so its quarantine is the whole set again, not more of it).
    async fn stage_quarantine(
        &mut self,
        name: &str,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
    ) -> Result<()> {
        let location = quarantine_location(&self.opts.lake, name);
        let snapshot = Snapshot::try_load(self.storage.as_ref(), &location).await?;
        let schema = match (batches.first(), &snapshot) {
            (Some(b), _) => b.schema(),
            // Nothing set aside this time: only an overwrite of a non-empty quarantine changes it.
            (None, Some(s)) if mode == WriteMode::Overwrite && !s.files.is_empty() => {
                s.schema.clone()
            }
            (None, _) => return Ok(()),
        };
        let files = match batches.is_empty() {
            true => vec![],
            false => vec![DataFile {
                batches,
                tags: HashMap::new(),
            }],
        };
        let write = self.write(
            &format!("{name} (quarantine)"),
            location,
            mode,
            schema,
            files,
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
            return self.register_snapshot(name, s);
        }
        let definition_hash = format!("{:016x}", fnv1a(definition.as_bytes()));
        let versions: BTreeMap<String, u64> = inputs
            .iter()
            .filter_map(|i| {
                self.registered
                    .get(i)
                    .and_then(|r| r.version)
                    .map(|v| (i.clone(), v))
            })
            .collect();
        let mut configuration = HashMap::from([
            (SPEC_HASH_KEY.to_string(), spec_hash),
            (DEFINITION_KEY.to_string(), definition_hash.clone()),
            (
                INPUTS_KEY.to_string(),
                serde_json::to_string(&versions).unwrap_or_default(),
            ),
        ]);
        let plan = self
            .plan_refresh(name, &sql, &definition_hash, &versions, snapshot.as_ref())
            .await?;
        let why = match (plan, &snapshot) {
            (Refresh::Full(why), _) => why,
            (Refresh::New { .. }, None) => "first build".into(),
            (
                Refresh::New {
                    input,
                    files,
                    aggregate,
                },
                Some(s),
            ) => {
                let new = NewRows {
                    input: &input,
                    files,
                    aggregate,
                };
                match self
                    .build_new_rows(name, layer, &sql, new, s, report)
                    .await?
                {
                    Built::Staged(write) => {
                        let mut write = *write;
                        write.configuration.extend(configuration);
                        return self
                            .stage_table(name, write, snapshot.as_ref(), report)
                            .await;
                    }
                    Built::NeedsFull(why) => why,
                }
            }
        };
        report.refresh = Some(format!("full: {why}"));

        // The rows stream from the SQL (through the silver checks) into data files, so a table
        // never has to fit in memory; sorts, joins and aggregates spill under a memory limit.
        let what = format!("{layer} table `{name}`");
        // Gold has no checks to run here, so a cluster's executors can write its files.
        if let Some(engine) = self
            .sql
            .filter(|e| layer == Layer::Gold && e.writes_files(&location))
        {
            let description = self.spec.gold[name].description.clone();
            let schema = engine.sql_schema(&what, &sql).await?;
            let mut write = self.write(
                name,
                location,
                WriteMode::Overwrite,
                schema,
                Vec::new(),
                &description,
            );
            write.configuration.extend(configuration.drain());
            let request = self
                .write_on_engine(engine, write, snapshot.as_ref(), &what, &sql)
                .await?;
            report.rows_out = request.rows_written;
            report.rows_in = request.rows_written;
            report.refresh = report
                .refresh
                .take()
                .map(|r| format!("{r}; files written by the cluster's executors"));
            return self.stage_request(name, request, snapshot.as_ref(), report);
        }
        let stream = self.table_sql(&what, &sql).await?;
        let (stream, checks) = match layer {
            Layer::Silver => {
                let cleaning =
                    quality::clean_stream(&self.ctx, name, &self.spec.silver[name], stream).await?;
                (cleaning.stream, Some(cleaning.checks))
            }
            _ => (stream, None),
        };
        let description = match layer {
            Layer::Silver => self.spec.silver[name].description.clone(),
            _ => self.spec.gold[name].description.clone(),
        };
        let mut write = self.write(
            name,
            location,
            WriteMode::Overwrite,
            stream.schema(),
            Vec::new(),
            &description,
        );
        write.configuration.extend(configuration.drain());
        let failed = |e: DataFusionError| match &checks {
            Some(c) => c.error_for(e, name),
            None => Error::datafusion(format!("{what}: running SQL"), e),
        };
        let request = self
            .write_stream(write, snapshot.as_ref(), stream, failed)
            .await?;
        report.rows_out = request.rows_written;
        report.rows_in = request.rows_written;
        if let Some(checks) = checks {
            let checked = match checks.finish() {
                Ok(c) => c,
                Err(e) => {
                    request.abort(self.storage.as_ref()).await;
                    return Err(e);
                }
            };
            report.rows_in = checked.rows_in;
            report.dropped = checked.dropped;
            report.deduplicated = checked.rows_kept - request.rows_written;
            report.expectations = checked.expectations;
            report.quarantined = checked.quarantine.iter().map(|b| b.num_rows() as u64).sum();
            let quarantine = match checked.quarantine.first() {
                Some(first) => {
                    match datafusion::arrow::compute::concat_batches(
                        &first.schema(),
                        &checked.quarantine,
                    ) {
                        Ok(b) => vec![b],
                        Err(e) => {
                            request.abort(self.storage.as_ref()).await;
                            return Err(Error::Arrow {
                                context: format!("{what}: quarantine"),
                                source: e,
                            });
                        }
                    }
                }
                None => vec![],
            };
            if let Err(e) = self
                .stage_quarantine(name, quarantine, WriteMode::Overwrite)
                .await
            {
                request.abort(self.storage.as_ref()).await;
                return Err(e);
            }
        }
        self.stage_request(name, request, snapshot.as_ref(), report)
    }

    /// Whether table `name` can take in only the new files of one input, or why not.
    async fn plan_refresh(
        &self,
        name: &str,
        sql: &str,
        definition_hash: &str,
        versions: &BTreeMap<String, u64>,
        snapshot: Option<&Snapshot>,
    ) -> Result<Refresh> {
        let full = |why: String| Ok(Refresh::Full(why));
        let Some(s) = snapshot else {
            return full("first build".into());
        };
        if s.property(DEFINITION_KEY) != Some(definition_hash) {
            return full(match s.property(DEFINITION_KEY) {
                Some(_) => "its definition changed".into(),
                None => "no record of the definition it was built with".into(),
            });
        }
        let Some(recorded) = incremental::recorded_inputs(s.property(INPUTS_KEY)) else {
            return full("no record of the input versions it was built from".into());
        };
        let moved: Vec<&String> = versions
            .keys()
            .filter(|i| recorded.get(*i) != versions.get(*i))
            .collect();
        let [input] = moved.as_slice() else {
            return full(match moved.len() {
                0 => "it was built from other input versions".into(),
                n => format!("{n} of its inputs changed ({})", join_names(&moved)),
            });
        };
        let input = (*input).clone();
        if let Some(t) = self.spec.silver.get(name) {
            if t.apply_changes.is_some() {
                return full("apply_changes tables are rebuilt from all their events".into());
            }
        }
        let Some(old) = recorded.get(&input).copied() else {
            return full(format!("{input} is a new input"));
        };
        let Some(input_layer) = self.spec.layer_of(&input) else {
            return full(format!("{input} is not a table of the spec"));
        };
        let location = table_location(&self.opts.lake, input_layer, &input);
        let before =
            match Snapshot::load_at(self.storage.as_ref(), &location, At::Version(old)).await {
                Ok(b) => b,
                Err(e) => return full(format!("version {old} of {input} cannot be read ({e})")),
            };
        let now: HashSet<&str> = self.registered[&input]
            .files
            .iter()
            .map(|f| f.location.as_str())
            .collect();
        let before: HashSet<String> = before
            .live_files()
            .into_iter()
            .map(|f| f.location)
            .collect();
        if before.iter().any(|f| !now.contains(f.as_str())) {
            return full(format!(
                "{input} was rewritten or compacted since version {old}, not only appended to"
            ));
        }
        let plan = match self.ctx.state().create_logical_plan(sql).await {
            Ok(p) => p,
            Err(e) => return full(format!("its SQL could not be planned alone ({e})")),
        };
        let aggregate = match incremental::per_row_over(&plan, &input) {
            true => None,
            false if !self.spec.gold.contains_key(name) => {
                return full(format!(
                    "its SQL is not row by row over {input} (an aggregate, window, DISTINCT, LIMIT, subquery, or a join that does not keep {input}'s rows)"
                ))
            }
            false => match incremental::aggregate_merge(&plan, &input) {
                Ok(merge) => Some(merge),
                Err(why) => {
                    return full(format!(
                    "its SQL is neither row by row over {input} nor an aggregate that merges by group key: {why}"
                ))
                }
            },
        };
        let files = self.registered[&input]
            .files
            .iter()
            .filter(|f| !before.contains(&f.location))
            .cloned()
            .collect();
        Ok(Refresh::New {
            input,
            files,
            aggregate,
        })
    }

    /// Builds table `name` from the rows of `new.files`, the new files of `new.input`:
    /// appended, or merged by key into the files of the table they touch (`dedupe`, or the
    /// group keys of an aggregate).
    async fn build_new_rows(
        &mut self,
        name: &str,
        layer: Layer,
        sql: &str,
        new: NewRows<'_>,
        s: &Snapshot,
        report: &mut TableReport,
    ) -> Result<Built> {
        let NewRows {
            input,
            files,
            aggregate,
        } = new;
        let what = format!("{layer} table `{name}`");
        let whole = self.registered[input].clone();
        let new_files = files.len();
        self.register(
            input,
            whole.schema.clone(),
            &whole.partition_columns,
            &files,
            whole.version,
        )?;
        let result = match self.table_sql(&what, sql).await {
            Ok(stream) => {
                let schema = stream.schema();
                stream
                    .try_collect::<Vec<_>>()
                    .await
                    .context(|| format!("{what}: running SQL"))
                    .map(|batches| (schema, batches))
            }
            Err(e) => Err(e),
        };
        self.register(
            input,
            whole.schema,
            &whole.partition_columns,
            &whole.files,
            whole.version,
        )?;
        let (schema, batches) = result?;
        report.rows_in = batches.iter().map(|b| b.num_rows() as u64).sum();
        let silver = self.spec.silver.get(name);
        let (schema, batches) = match silver {
            Some(t) => {
                // Casts and expectations row by row; the key step below, against the table.
                let rows_only = SilverTable {
                    dedupe: None,
                    apply_changes: None,
                    ..t.clone()
                };
                let cleaned = quality::clean(&self.ctx, name, &rows_only, schema, batches).await?;
                if !same_names(&cleaned.schema, &s.schema) {
                    return Ok(Built::NeedsFull(
                        "its columns changed (the new rows have other columns than the table)"
                            .into(),
                    ));
                }
                report.dropped = cleaned.dropped;
                report.expectations = cleaned.expectations;
                report.quarantined = cleaned.quarantine.iter().map(|b| b.num_rows() as u64).sum();
                self.stage_quarantine(name, cleaned.quarantine, WriteMode::Append)
                    .await?;
                (cleaned.schema, cleaned.batches)
            }
            None => (schema, batches),
        };
        if !same_names(&schema, &s.schema) {
            return Ok(Built::NeedsFull(
                "its columns changed (the new rows have other columns than the table)".into(),
            ));
        }
        let batches = batches
            .iter()
            .map(|b| crate::delta::cast_batch(b, &s.schema, name))
            .collect::<Result<Vec<_>>>()?;
        let description = silver
            .map(|t| t.description.clone())
            .or_else(|| self.spec.gold.get(name).map(|t| t.description.clone()))
            .unwrap_or_default();
        let new_rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let merge = match (silver.and_then(|t| t.dedupe.clone()), aggregate) {
            (Some(d), _) => Merge::Dedupe(d),
            (None, Some(a)) => Merge::Aggregate(a),
            (None, None) => {
                report.rows_out = new_rows;
                report.refresh = Some(format!(
                    "append: {new_rows} row(s) from {new_files} new file(s) of {input}"
                ));
                let write = self.write(
                    name,
                    table_location(&self.opts.lake, layer, name),
                    WriteMode::Append,
                    s.schema.clone(),
                    vec![DataFile {
                        batches,
                        tags: HashMap::new(),
                    }],
                    &description,
                );
                return Ok(Built::Staged(Box::new(write)));
            }
        };
        let keys = match &merge {
            Merge::Dedupe(d) => d.key.clone(),
            Merge::Aggregate(a) => a.keys.clone(),
        };

        // Merge: the table's files holding a key of the new rows are rewritten with them.
        let (touched, old_rows) = self.rows_sharing_keys(&what, s, &keys, &batches).await?;
        let old_count: u64 = old_rows.iter().map(|b| b.num_rows() as u64).sum();
        let mut all = old_rows;
        all.extend(batches);
        let (merged, by) = match merge {
            Merge::Dedupe(d) => {
                let key_only = SilverTable {
                    sql: String::new(),
                    casts: Default::default(),
                    expect: Vec::new(),
                    dedupe: Some(d),
                    apply_changes: None,
                    description: String::new(),
                    partition_by: Vec::new(),
                    alert: None,
                };
                let merged =
                    quality::clean(&self.ctx, name, &key_only, s.schema.clone(), all).await?;
                report.deduplicated = merged.deduplicated;
                (merged.batches, "key")
            }
            Merge::Aggregate(a) => (self.reaggregate(&what, s, &a, all).await?, "group key"),
        };
        report.rows_out = merged.iter().map(|b| b.num_rows() as u64).sum();
        report.refresh = Some(format!(
            "merge: {new_rows} row(s) from {new_files} new file(s) of {input} by {by} [{}]; {} of {} file(s) rewritten ({old_count} row(s))",
            keys.join(", "),
            touched.len(),
            s.files.len()
        ));
        let mut write = self.write(
            name,
            table_location(&self.opts.lake, layer, name),
            WriteMode::Append,
            s.schema.clone(),
            vec![DataFile {
                batches: merged,
                tags: HashMap::new(),
            }],
            &description,
        );
        write.removes = touched;
        Ok(Built::Staged(Box::new(write)))
    }

    /// The paths of the files of `s` holding a row whose `keys` equal a row of `new`'s, and
    /// all the rows of those files (in `s`'s schema).
    async fn rows_sharing_keys(
        &mut self,
        what: &str,
        s: &Snapshot,
        keys: &[String],
        new: &[RecordBatch],
    ) -> Result<(Vec<String>, Vec<RecordBatch>)> {
        const NEW: &str = "__medallion_merge_new";
        const FILE: &str = "__medallion_merge_file";
        let mem = datafusion::datasource::MemTable::try_new(s.schema.clone(), vec![new.to_vec()])
            .context(|| format!("{what}: merge"))?;
        self.ctx
            .register_table(NEW, Arc::new(mem))
            .context(|| format!("{what}: merge"))?;
        let on = keys
            .iter()
            .map(|k| {
                let k = quality::quote(k);
                // Parenthesised: the SQL parser binds `IS NOT DISTINCT FROM b AND …` to `b AND …`.
                format!("(f.{k} IS NOT DISTINCT FROM n.{k})")
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        let probe = format!("SELECT count(*) AS n FROM {FILE} f LEFT SEMI JOIN {NEW} n ON {on}");
        let live = s.live_files();
        let mut touched: Vec<(String, LiveFile)> = Vec::new();
        let mut outcome = Ok(());
        for (path, file) in s.files.keys().zip(live) {
            let table = self.files_table(
                s.schema.clone(),
                &s.metadata.partition_columns,
                std::slice::from_ref(&file),
            )?;
            let _ = self.ctx.deregister_table(FILE);
            self.ctx
                .register_table(FILE, Arc::new(table))
                .context(|| format!("{what}: merge"))?;
            match query::collect_sql(&self.ctx, what, &probe).await {
                Ok((_, counts)) => {
                    let hits = counts
                        .first()
                        .and_then(|b| {
                            b.column(0)
                                .as_any()
                                .downcast_ref::<Int64Array>()
                                .map(|a| a.value(0))
                        })
                        .unwrap_or(1);
                    if hits > 0 {
                        touched.push((path.clone(), file));
                    }
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let _ = self.ctx.deregister_table(FILE);
        let _ = self.ctx.deregister_table(NEW);
        outcome?;
        let touched_files: Vec<LiveFile> = touched.iter().map(|(_, f)| f.clone()).collect();
        let old_rows = match touched_files.is_empty() {
            true => Vec::new(),
            false => {
                let table = self.files_table(
                    s.schema.clone(),
                    &s.metadata.partition_columns,
                    &touched_files,
                )?;
                self.ctx
                    .read_table(Arc::new(table))
                    .context(|| format!("{what}: merge"))?
                    .collect()
                    .await
                    .context(|| format!("{what}: reading the files the new rows touch"))?
            }
        };
        let old_rows = old_rows
            .iter()
            .map(|b| crate::delta::cast_batch(b, &s.schema, what))
            .collect::<Result<Vec<_>>>()?;
        Ok((touched.into_iter().map(|(p, _)| p).collect(), old_rows))
    }

    /// One row per group of `rows` (old rows of the table and the new rows' partial results),
    /// each aggregate re-combined: sums and counts added up, minimums and maximums kept.
    async fn reaggregate(
        &mut self,
        what: &str,
        s: &Snapshot,
        merge: &incremental::AggregateMerge,
        rows: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        const ROWS: &str = "__medallion_merge_rows";
        let mem = datafusion::datasource::MemTable::try_new(s.schema.clone(), vec![rows])
            .context(|| format!("{what}: merge"))?;
        self.ctx
            .register_table(ROWS, Arc::new(mem))
            .context(|| format!("{what}: merge"))?;
        let combine: HashMap<&str, &str> = merge
            .combine
            .iter()
            .map(|(c, f)| (c.as_str(), *f))
            .collect();
        let columns = s
            .schema
            .fields()
            .iter()
            .map(|f| {
                let c = quality::quote(f.name());
                match combine.get(f.name().as_str()) {
                    Some(agg) => format!("{agg}({c}) AS {c}"),
                    None => c,
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let keys = merge
            .keys
            .iter()
            .map(|k| quality::quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {columns} FROM {ROWS} GROUP BY {keys}");
        let result = query::collect_sql(&self.ctx, what, &sql).await;
        let _ = self.ctx.deregister_table(ROWS);
        result?
            .1
            .iter()
            .map(|b| crate::delta::cast_batch(b, &s.schema, what))
            .collect()
    }
}

/// How new rows are merged into the table's rows sharing their keys.
enum Merge {
    Dedupe(crate::spec::Dedupe),
    Aggregate(incremental::AggregateMerge),
}

/// The new files of one input that a table takes in, and how it merges their rows if it does.
struct NewRows<'a> {
    input: &'a str,
    files: Vec<LiveFile>,
    aggregate: Option<incremental::AggregateMerge>,
}

/// Rows gathered for one data file until they reach its size ([`Run::file_chunk`]).
struct FileChunk {
    batches: Vec<RecordBatch>,
    bytes: usize,
    limit: usize,
}

impl FileChunk {
    fn new(limit: usize) -> Self {
        Self {
            batches: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    /// Adds `batch`; returns the rows gathered once they fill a data file.
    fn push(&mut self, batch: RecordBatch) -> Option<Vec<RecordBatch>> {
        self.bytes += batch.get_array_memory_size();
        self.batches.push(batch);
        (self.bytes >= self.limit).then(|| self.take())
    }

    fn take(&mut self) -> Vec<RecordBatch> {
        self.bytes = 0;
        std::mem::take(&mut self.batches)
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// A bronze table's new source files being written as they are parsed, one data file each,
/// into one version.
struct BronzeFiles {
    /// What the version records; its schema is set once the files' columns are known.
    write: TableWrite,
    writer: Option<TableWriter>,
    /// The columns of the files parsed so far.
    schema: Option<SchemaRef>,
    /// Files all of whose rows were rescued, before any file gave the columns.
    empty: Vec<DataFile>,
}

impl BronzeFiles {
    async fn add(
        &mut self,
        storage: &dyn Storage,
        table: &str,
        base: Option<&Snapshot>,
        file: DataFile,
    ) -> Result<()> {
        let Some(first) = file.batches.first() else {
            return match &mut self.writer {
                Some(w) => w.write_file(storage, &file).await,
                None => {
                    self.empty.push(file);
                    Ok(())
                }
            };
        };
        let schema = merge_for_bronze(table, self.schema.clone(), first.schema())?;
        let widened = self.schema.as_ref() != Some(&schema);
        self.schema = Some(schema.clone());
        let writer = match &mut self.writer {
            Some(w) => {
                if widened {
                    w.widen(schema, base)?;
                }
                w
            }
            None => {
                let mut write = self.write.clone();
                write.schema = schema;
                self.writer.insert(write.begin(base)?)
            }
        };
        writer.write_file(storage, &file).await
    }

    /// The commit of every file added, or `None` if there is nothing to commit (no file, or
    /// only files without rows and no table to take its columns from).
    async fn finish(
        self,
        storage: &dyn Storage,
        base: Option<&Snapshot>,
    ) -> Result<Option<CommitRequest>> {
        let mut writer = match (self.writer, base) {
            (Some(w), _) => w,
            (None, Some(b)) if !self.empty.is_empty() => {
                let mut write = self.write;
                write.schema = b.schema.clone();
                write.begin(base)?
            }
            (None, _) => return Ok(None),
        };
        for file in &self.empty {
            if let Err(e) = writer.write_file(storage, file).await {
                writer.abort(storage).await;
                return Err(e);
            }
        }
        writer.finish().map(Some)
    }

    async fn abort(self, storage: &dyn Storage) {
        if let Some(w) = self.writer {
            w.abort(storage).await;
        }
    }
}

/// How a derived table takes in its inputs' changes.
enum Refresh {
    /// Rebuilt from all of its inputs, for this reason.
    Full(String),
    /// From these new files of `input` only; an aggregate merges by group key.
    New {
        input: String,
        files: Vec<LiveFile>,
        aggregate: Option<incremental::AggregateMerge>,
    },
}

enum Built {
    Staged(Box<TableWrite>),
    NeedsFull(String),
}

fn same_names(a: &Schema, b: &Schema) -> bool {
    let names = |s: &Schema| -> Vec<String> {
        let mut n: Vec<String> = s.fields().iter().map(|f| f.name().clone()).collect();
        n.sort();
        n
    };
    names(a) == names(b)
}

fn join_names(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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
