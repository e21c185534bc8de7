//! Jobs for the guest: a pipeline run staged across parallel instances and committed once,
//! and a query in one instance. Native runs use the same staging ([`run_graph`]) with tables
//! staged in this process, on threads.
//!
//! A pipeline run goes through the table graph ([`Dag`]): each table is built in its own
//! instance, up to `instances` at a time, as soon as the tables it reads are staged (not
//! when a whole level of the graph is: a small table's chain need not wait for the largest
//! bronze file). An instance stages its table (writes data files, not the log) and answers
//! the staged version as plain data; the instances of tables that read it read those staged
//! files. When every table is staged, the host commits them all, as the in-process run does.
//! A failure anywhere removes every staged file, and no table changes. Each answer is
//! checked against the grants first ([`staged_check`]): one that names a path outside them
//! fails the run, and the host writes and removes nothing outside the grants.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use medallion_core::arrow::array::RecordBatch;
use medallion_core::arrow::datatypes::SchemaRef;
use medallion_core::arrow::ipc::reader::StreamReader;
use medallion_core::clock::Clock;
use medallion_core::dag::{self, Dag};
use medallion_core::pipeline::{self, RunOptions, StagedCommit, TableState};
use medallion_core::report::{RunReport, StageTime, TableReport};
use medallion_core::spec::{Layer, PipelineSpec};
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
    run_graph(&stage, ctx, spec, opts, instances)
}

/// Runs a pipeline through its table graph: a table is staged by `stage` as soon as the
/// tables it reads are, up to `workers` at a time, then all are committed (see the module's
/// comment). Blocks.
pub fn run_graph(
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

    let Board {
        waiting,
        commits,
        failure,
        tables: mut built,
        io,
        spans,
        ..
    } = stage_graph(stage, ctx, spec, &dag, workers, started);
    let failure = failure.or_else(|| {
        // Every input of a table is in the graph (dag::plan), so all become ready; should one
        // not, the run stops rather than commit without it.
        waiting.first().map(|t| {
            let e = GuestError::Failed {
                what: format!("building table `{t}`"),
                message: "the tables it reads were never built".into(),
            };
            (t.clone(), e)
        })
    });
    if let Some((_, e)) = failure {
        ctx.runtime.block_on(staged_check::discard(
            ctx.storage.as_ref(),
            &ctx.grants,
            commits,
        ));
        return Err(e);
    }
    for (layer, span) in spans {
        report.stages.push(StageTime {
            stage: match span.tables {
                1 => layer.as_str().to_string(),
                n => format!("{} ×{n}", layer.as_str()),
            },
            ms: span.end - span.start,
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
    report.tables = dag.order.iter().filter_map(|t| built.remove(t)).collect();
    pipeline::record_versions(&mut report, &committed);
    report.ok = true;
    report.io = io + counting.stats().counts();
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}

/// When the tables of one layer were being built, in ms since the run started; spans of
/// layers overlap, since a table starts when its own inputs are ready.
#[derive(Default)]
struct Span {
    start: f64,
    end: f64,
    tables: usize,
}

/// What the workers of [`stage_graph`] share.
#[derive(Default)]
struct Board {
    /// Tables not started yet, in build order.
    waiting: Vec<String>,
    /// Tables staged (whatever the outcome).
    finished: HashSet<String>,
    running: usize,
    states: HashMap<String, TableState>,
    commits: Vec<StagedCommit>,
    tables: BTreeMap<String, TableReport>,
    io: IoCounts,
    /// The first table that failed, and why; no table starts after it.
    failure: Option<(String, GuestError)>,
    spans: BTreeMap<Layer, Span>,
}

impl Board {
    /// The first waiting table whose inputs are all staged, taken off the list.
    fn next_ready(&mut self, dag: &Dag) -> Option<String> {
        let at = self
            .waiting
            .iter()
            .position(|t| dag.inputs[t].iter().all(|i| self.finished.contains(i)))?;
        Some(self.waiting.remove(at))
    }

    fn record(&mut self, ctx: &Context, table: &str, result: Result<pipeline::Staged, GuestError>) {
        let result = result.and_then(|staged| {
            match staged_check::check(&ctx.grants, &staged.commits) {
                Ok(()) => Ok(staged),
                Err(refused) => {
                    // Its files inside the lake go with the rest of a failed run's.
                    self.commits
                        .extend(staged_check::inside_grants(&ctx.grants, staged.commits));
                    Err(GuestError::Refused(format!(
                        "building table `{table}`: {refused}"
                    )))
                }
            }
        });
        match result {
            Ok(staged) => {
                self.commits.extend(staged.commits);
                self.io = self.io + staged.io;
                for s in staged.states {
                    self.states.insert(s.table.clone(), s);
                }
                for r in staged.tables {
                    self.tables.insert(r.table.clone(), r);
                }
            }
            Err(e) => {
                self.failure.get_or_insert((table.to_string(), e));
            }
        }
    }
}

/// Stages every table of `dag` with `stage`, at most `workers` at once, each as soon as the
/// tables it reads are staged, in build order among those ready. After a failure no table
/// starts; those running finish, so that the caller can remove all that was staged.
fn stage_graph(
    stage: &StageTable,
    ctx: &Context,
    spec: &PipelineSpec,
    dag: &Dag,
    workers: usize,
    started: Instant,
) -> Board {
    let board = Mutex::new(Board {
        waiting: dag.levels().into_iter().flatten().collect(),
        ..Default::default()
    });
    let changed = Condvar::new();
    let ms = || started.elapsed().as_secs_f64() * 1000.0;
    // A worker that panicked leaves the board as it was; the scope then panics too.
    let lock = || board.lock().unwrap_or_else(PoisonError::into_inner);
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, dag.order.len().max(1)) {
            scope.spawn(|| {
                let mut b = lock();
                loop {
                    if b.failure.is_some() || b.waiting.is_empty() {
                        break;
                    }
                    let Some(table) = b.next_ready(dag) else {
                        if b.running == 0 {
                            break;
                        }
                        b = changed.wait(b).unwrap_or_else(PoisonError::into_inner);
                        continue;
                    };
                    b.running += 1;
                    let inputs: Vec<TableState> = dag.inputs[&table]
                        .iter()
                        .filter_map(|t| b.states.get(t).cloned())
                        .collect();
                    drop(b);
                    let start = ms();
                    // A panic while building one table fails the run naming that table: left
                    // to unwind, it would leave this table running forever for the workers
                    // waiting on it.
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        stage(&table, inputs.iter().collect())
                    }))
                    .unwrap_or_else(|panic| {
                        let message = panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("no message");
                        Err(GuestError::Failed {
                            what: format!("building table `{table}`"),
                            message: format!("it panicked: {message}"),
                        })
                    });
                    let end = ms();
                    b = lock();
                    b.record(ctx, &table, result);
                    b.running -= 1;
                    b.finished.insert(table.clone());
                    if let Some(layer) = spec.layer_of(&table) {
                        let span = b.spans.entry(layer).or_insert(Span {
                            start,
                            end,
                            tables: 0,
                        });
                        span.start = span.start.min(start);
                        span.end = span.end.max(end);
                        span.tables += 1;
                    }
                    changed.notify_all();
                }
                changed.notify_all();
            });
        }
    });
    board.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// What a query answered.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub io: IoCounts,
    /// The parts it ran in, each its own instance (1: whole, in one instance).
    pub parts: usize,
}

/// Runs `sql` over `tables` (name, location; `delta:` for Delta tables). With `instances`
/// above 1 the query is split into that many parts, each in its own instance at once, and
/// finished in one more (`medallion_core::query_parts`), when its plan has scans to split;
/// otherwise it runs in one instance.
pub fn run_query(
    guest: &Guest,
    ctx: &Context,
    sql: &str,
    tables: &[(String, String)],
    engine: medallion_core::query::EngineOptions,
    instances: usize,
) -> Result<QueryResult, GuestError> {
    let tables: Vec<_> = tables
        .iter()
        .map(|(name, location)| json!({ "name": name, "location": location }))
        .collect();
    let mut io = IoCounts::default();
    if instances > 1 {
        if let Some(result) = query_in_parts(guest, ctx, sql, &tables, engine, instances, &mut io)?
        {
            return Ok(result);
        }
        // A table changed between the parts' plannings: the query runs whole.
    }
    let request = json!({ "op": "query", "sql": sql, "tables": tables, "engine": engine });
    let what = "running the query";
    let (header, body) = guest.call(ctx, what, request.to_string().as_bytes())?;
    query_result(what, &header, body, io)
}

/// The query split into `parts` instances; `None` if their plans disagree (a table changed
/// in between). `io` gathers what every instance read.
fn query_in_parts(
    guest: &Guest,
    ctx: &Context,
    sql: &str,
    tables: &[serde_json::Value],
    engine: medallion_core::query::EngineOptions,
    parts: usize,
    io: &mut IoCounts,
) -> Result<Option<QueryResult>, GuestError> {
    let answers: Vec<Result<(serde_json::Value, Vec<u8>), GuestError>> =
        std::thread::scope(|scope| {
            let running: Vec<_> = (0..parts)
                .map(|part| {
                    let request = json!({ "op": "query_part", "sql": sql, "tables": tables,
                        "engine": engine, "parts": parts, "part": part });
                    scope.spawn(move || {
                        let what = format!("running part {part} of {parts} of the query");
                        guest.call(ctx, &what, request.to_string().as_bytes())
                    })
                })
                .collect();
            running
                .into_iter()
                .enumerate()
                .map(|(part, r)| {
                    r.join().unwrap_or_else(|_| {
                        Err(GuestError::Failed {
                            what: format!("running part {part} of {parts} of the query"),
                            message: "it panicked".into(),
                        })
                    })
                })
                .collect()
        });
    let answers = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
    let bad = |message: String| GuestError::Failed {
        what: "running the query in parts".into(),
        message,
    };
    let mut lengths: Vec<Vec<usize>> = Vec::with_capacity(parts);
    for (part, (header, _)) in answers.iter().enumerate() {
        *io = *io + io_of(&header["ok"]["io"]).map_err(bad)?;
        let part_lengths = match header["ok"].get("lengths") {
            Some(l) => serde_json::from_value(l.clone()).map_err(|e| {
                bad(format!(
                    "part {part} answered lengths that are not valid: {e}"
                ))
            })?,
            None => Vec::new(),
        };
        lengths.push(part_lengths);
    }
    let (first, first_body) = &answers[0];
    if first["ok"].get("rows").is_some() {
        // No scans to split: part 0 answered the whole query.
        let others = *io - io_of(&first["ok"]["io"]).map_err(bad)?;
        return query_result("running the query", first, first_body.clone(), others).map(Some);
    }
    let fingerprint = first["ok"]["fingerprint"].clone();
    if !fingerprint.is_string()
        || answers
            .iter()
            .any(|(h, _)| h["ok"]["fingerprint"] != fingerprint)
    {
        return Ok(None);
    }
    // The parts' results as they answered them, part by part.
    let mut payload = Vec::new();
    for (part, (_, body)) in answers.iter().enumerate() {
        let sum = lengths[part]
            .iter()
            .try_fold(0usize, |sum, &l| sum.checked_add(l));
        if sum != Some(body.len()) {
            return Err(bad(format!(
                "part {part} answered {} bytes, where its lengths {:?} say otherwise",
                body.len(),
                lengths[part]
            )));
        }
        payload.extend_from_slice(body);
    }
    drop(answers);
    let mut request = json!({ "op": "query_finish", "sql": sql, "tables": tables,
        "engine": engine, "parts": parts, "fingerprint": fingerprint, "lengths": lengths })
    .to_string()
    .into_bytes();
    request.push(b'\n');
    request.extend_from_slice(&payload);
    drop(payload);
    let what = "finishing the query";
    let (header, body) = guest.call(ctx, what, &request)?;
    if header["ok"]["changed"] == json!(true) {
        *io = *io + io_of(&header["ok"]["io"]).map_err(bad)?;
        return Ok(None);
    }
    let result = query_result(what, &header, body, *io)?;
    Ok(Some(QueryResult { parts, ..result }))
}

fn io_of(value: &serde_json::Value) -> Result<IoCounts, String> {
    serde_json::from_value(value.clone())
        .map_err(|e| format!("the guest's answer is not valid: {e}"))
}

/// A query's answer: its header (`{"ok": {"rows", "io"}}`) and its rows as Arrow IPC; `io`
/// is what other instances of the query read.
fn query_result(
    what: &str,
    header: &serde_json::Value,
    body: Vec<u8>,
    io: IoCounts,
) -> Result<QueryResult, GuestError> {
    let bad = |message: String| GuestError::Failed {
        what: what.into(),
        message,
    };
    let own = io_of(&header["ok"]["io"]).map_err(bad)?;
    let reader = StreamReader::try_new(std::io::Cursor::new(body), None)
        .map_err(|e| bad(format!("the guest's result is not Arrow IPC: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("the guest's result is not Arrow IPC: {e}")))?;
    Ok(QueryResult {
        schema,
        batches,
        io: io + own,
        parts: 1,
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
