//! Jobs for the guest: a pipeline run staged across parallel instances and committed once,
//! and a query in one instance. Native runs use the same level-by-level staging
//! ([`run_levels`]) with tables staged in this process, on threads.
//!
//! A pipeline run goes level by level through the table graph ([`Dag::levels`]): the tables
//! of one level read only tables of earlier levels, so each is built in its own instance, up
//! to `instances` at a time. An instance stages its table (writes data files, not the log)
//! and answers the staged version as plain data; the next level's instances read those
//! staged files. When every table is staged, the host commits them all, as the in-process
//! run does. A failure anywhere removes every staged file, and no table changes. Each answer
//! is checked against the grants first ([`staged_check`]): one that names a path outside
//! them fails the run, and the host writes and removes nothing outside the grants.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use medallion_core::arrow::array::RecordBatch;
use medallion_core::arrow::datatypes::SchemaRef;
use medallion_core::arrow::ipc::reader::StreamReader;
use medallion_core::clock::Clock;
use medallion_core::dag::{self, Dag};
use medallion_core::pipeline::{self, RunOptions, StagedCommit, TableState};
use medallion_core::report::{RunReport, StageTime, TableReport};
use medallion_core::spec::PipelineSpec;
use medallion_core::storage::{is_url, join, CountingStorage, IoCounts, Storage};
use serde_json::json;

use super::grants::{Access, Grants};
use super::{staged_check, Context, Guest, GuestError};
use crate::SystemClock;

/// What a pipeline job may touch: the lake (read-write) and the files its bronze sources
/// can match (read).
pub fn pipeline_grants(spec: &PipelineSpec, opts: &RunOptions) -> Grants {
    let mut grants = Grants::new();
    grants.allow(&opts.lake, Access::ReadWrite);
    for src in spec.bronze.values().filter(|s| !s.is_extracted()) {
        let full = if src.path.starts_with('/') || is_url(&src.path) {
            src.path.clone()
        } else {
            join(&opts.base, &src.path)
        };
        grants.allow_pattern(&full, Access::Read);
    }
    grants
}

/// Stages one table, given the staged states of the tables it reads: in a guest instance, or
/// in this process. Called from several threads at once.
pub type StageTable<'a> =
    dyn Fn(&str, Vec<&TableState>) -> Result<pipeline::Staged, GuestError> + Sync + 'a;

/// Runs a pipeline in guest instances, `instances` at a time. `spec_text` is the spec's TOML
/// (what the guests parse), `spec` the same parsed. Blocks.
pub fn run_pipeline(
    guest: &Guest,
    ctx: &Context,
    spec_text: &str,
    spec: &PipelineSpec,
    opts: &RunOptions,
    instances: usize,
) -> Result<RunReport, GuestError> {
    let stage = |table: &str, inputs: Vec<&TableState>| {
        let request = json!({
            "op": "stage",
            "spec": spec_text,
            "options": opts,
            "tables": [table],
            "inputs": inputs,
        });
        let what = format!("building table `{table}`");
        guest
            .call(ctx, &what, request.to_string().as_bytes())
            .and_then(|(header, _)| {
                serde_json::from_value(header["ok"].clone()).map_err(|e| GuestError::Failed {
                    what: what.clone(),
                    message: format!("the guest's answer is not valid: {e}"),
                })
            })
    };
    run_levels(&stage, ctx, spec, opts, instances)
}

/// Runs a pipeline level by level, the tables of a level staged by `stage` up to `workers`
/// at a time, then commits them all (see the module's comment). Blocks.
pub fn run_levels(
    stage: &StageTable,
    ctx: &Context,
    spec: &PipelineSpec,
    opts: &RunOptions,
    workers: usize,
) -> Result<RunReport, GuestError> {
    let started = Instant::now();
    let dag = dag::plan(spec).map_err(|e| GuestError::Failed {
        what: "planning".into(),
        message: e.to_string(),
    })?;
    (ctx.progress)(&json!({ "event": "planned", "tables": dag.order }));
    let mut report = RunReport {
        pipeline: spec.pipeline.name.clone(),
        lake: opts.lake.clone(),
        run_id: opts.run_id.clone(),
        ..Default::default()
    };
    report.stages.push(StageTime {
        stage: "plan".into(),
        ms: started.elapsed().as_secs_f64() * 1000.0,
    });

    let mut states: HashMap<String, TableState> = HashMap::new();
    let mut commits: Vec<StagedCommit> = Vec::new();
    let mut tables: BTreeMap<String, TableReport> = BTreeMap::new();
    let mut io = IoCounts::default();
    for level in dag.levels() {
        let t = Instant::now();
        let results = stage_level(stage, &dag, &level, &states, workers);
        let mut failure = None;
        for (table, result) in level.iter().zip(results) {
            let result = result.and_then(|staged| {
                match staged_check::check(&ctx.grants, &staged.commits) {
                    Ok(()) => Ok(staged),
                    Err(refused) => {
                        // Its files inside the lake go with the rest of a failed run's.
                        commits.extend(staged_check::inside_grants(&ctx.grants, staged.commits));
                        Err(GuestError::Refused(format!(
                            "building table `{table}`: {refused}"
                        )))
                    }
                }
            });
            match result {
                Ok(staged) => {
                    commits.extend(staged.commits);
                    io = io + staged.io;
                    for s in staged.states {
                        states.insert(s.table.clone(), s);
                    }
                    for r in staged.tables {
                        tables.insert(r.table.clone(), r);
                    }
                }
                Err(e) => {
                    failure.get_or_insert((table.clone(), e));
                }
            }
        }
        if let Some((_, e)) = failure {
            let staged = std::mem::take(&mut commits);
            ctx.runtime.block_on(staged_check::discard(
                ctx.storage.as_ref(),
                &ctx.grants,
                staged,
            ));
            return Err(e);
        }
        report.stages.push(StageTime {
            stage: level_name(spec, &level),
            ms: t.elapsed().as_secs_f64() * 1000.0,
        });
    }

    (ctx.progress)(&json!({ "event": "committing", "tables": commits.len() }));
    let t = Instant::now();
    // The host's own requests of the commit (log entries, checkpoints) count too.
    let counting = Arc::new(CountingStorage::new(ctx.storage.clone()));
    let storage = CommitStorage::new(counting.clone());
    let committed = ctx.runtime.block_on(staged_check::commit(
        &storage,
        &ctx.grants,
        commits,
        SystemClock::new().now_ms(),
    ))?;
    report.stages.push(StageTime {
        stage: "commit".into(),
        ms: t.elapsed().as_secs_f64() * 1000.0,
    });
    report.tables = dag.order.iter().filter_map(|t| tables.remove(t)).collect();
    pipeline::record_versions(&mut report, &committed);
    report.ok = true;
    report.io = io + counting.stats().counts();
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}

/// `bronze ×6`, `silver ×2, gold`: what a level builds, for the report's stage times.
fn level_name(spec: &PipelineSpec, level: &[String]) -> String {
    let mut counts: BTreeMap<_, usize> = BTreeMap::new();
    for t in level {
        if let Some(layer) = spec.layer_of(t) {
            *counts.entry(layer).or_default() += 1;
        }
    }
    counts
        .iter()
        .map(|(layer, n)| match n {
            1 => layer.as_str().to_string(),
            n => format!("{} ×{n}", layer.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stages each table of a level with `stage`, at most `workers` at once; results in the
/// level's order. Staged files of a failed level are removed by the caller.
fn stage_level(
    stage: &StageTable,
    dag: &Dag,
    level: &[String],
    states: &HashMap<String, TableState>,
    workers: usize,
) -> Vec<Result<pipeline::Staged, GuestError>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<pipeline::Staged, GuestError>>>> =
        Mutex::new((0..level.len()).map(|_| None).collect());
    let workers = workers.clamp(1, level.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(table) = level.get(i) else { break };
                let inputs: Vec<&TableState> = dag.inputs[table]
                    .iter()
                    .filter_map(|t| states.get(t))
                    .collect();
                let result = stage(table, inputs);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(GuestError::Failed {
                    what: "building a table".into(),
                    message: "its instance did not answer".into(),
                })
            })
        })
        .collect()
}

/// What a query answered.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub io: IoCounts,
}

/// Runs `sql` over `tables` (name, location; `delta:` for Delta tables) in one instance.
pub fn run_query(
    guest: &Guest,
    ctx: &Context,
    sql: &str,
    tables: &[(String, String)],
    engine: medallion_core::query::EngineOptions,
) -> Result<QueryResult, GuestError> {
    let tables: Vec<_> = tables
        .iter()
        .map(|(name, location)| json!({ "name": name, "location": location }))
        .collect();
    let request = json!({ "op": "query", "sql": sql, "tables": tables, "engine": engine });
    let what = "running the query";
    let (header, body) = guest.call(ctx, what, request.to_string().as_bytes())?;
    let bad = |message: String| GuestError::Failed {
        what: what.into(),
        message,
    };
    let io: IoCounts = serde_json::from_value(header["ok"]["io"].clone())
        .map_err(|e| bad(format!("the guest's answer is not valid: {e}")))?;
    let reader = StreamReader::try_new(std::io::Cursor::new(body), None)
        .map_err(|e| bad(format!("the guest's result is not Arrow IPC: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("the guest's result is not Arrow IPC: {e}")))?;
    Ok(QueryResult {
        schema,
        batches,
        io,
    })
}

/// The storage commits go through. With `MEDALLION_COMMIT_PAUSE_MS` set (crash tests only),
/// it says on stderr when each log entry is about to be written and waits that long first,
/// so that a test can kill the process between two tables' commits.
#[derive(Debug)]
struct CommitStorage {
    inner: Arc<dyn Storage>,
    pause: Option<std::time::Duration>,
}

impl CommitStorage {
    fn new(inner: Arc<dyn Storage>) -> Self {
        let pause = std::env::var("MEDALLION_COMMIT_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
        Self { inner, pause }
    }
}

#[async_trait::async_trait]
impl Storage for CommitStorage {
    async fn head(&self, l: &str) -> medallion_core::Result<medallion_core::storage::ObjectMeta> {
        self.inner.head(l).await
    }
    async fn read_range(
        &self,
        l: &str,
        r: std::ops::Range<u64>,
    ) -> medallion_core::Result<bytes::Bytes> {
        self.inner.read_range(l, r).await
    }
    async fn list(
        &self,
        p: &str,
    ) -> medallion_core::Result<Vec<medallion_core::storage::ObjectMeta>> {
        self.inner.list(p).await
    }
    async fn put(&self, l: &str, b: bytes::Bytes) -> medallion_core::Result<()> {
        self.inner.put(l, b).await
    }
    async fn put_if_absent(&self, l: &str, b: bytes::Bytes) -> medallion_core::Result<()> {
        if let Some(pause) = self.pause {
            eprintln!("medallion: committing {l}");
            std::thread::sleep(pause);
        }
        self.inner.put_if_absent(l, b).await
    }
    async fn delete(&self, l: &str) -> medallion_core::Result<()> {
        self.inner.delete(l).await
    }
}
