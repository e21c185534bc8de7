//! `medallion run`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use medallion_core::pipeline::{RunOptions, TableState};
use medallion_core::query::EngineOptions;
use medallion_core::report::RunReport;
use medallion_core::spec::PipelineSpec;
use medallion_core::storage::CountingStorage;

use super::progress::RunProgress;
use super::{Engine, GuestArgs};
use medallion_host::{guest, local_fs, SystemClock};

/// Runs the spec at `spec_path` into `lake`; prints the report (summary or JSON).
pub async fn run(
    spec_path: &Path,
    lake: &str,
    json: bool,
    storage: Arc<CountingStorage>,
    engine: EngineOptions,
    guest: GuestArgs,
    cluster: Option<&str>,
) -> anyhow::Result<()> {
    let report = match run_spec(spec_path, lake, !json, storage, engine, guest, cluster).await {
        Ok(r) => r,
        Err(e) if json => {
            // Programs reading --json learn on stdout what the lake now holds.
            outln!("{}", serde_json::to_string_pretty(&failure_json(&e))?)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        out!("{}", report.summary())?;
    }
    Ok(())
}

/// Runs a spec and returns its report; shows progress on stderr if `show_progress`. With
/// `cluster` (`df://HOST:PORT`), silver and gold SQL runs there and this process commits.
pub async fn run_spec(
    spec_path: &Path,
    lake: &str,
    show_progress: bool,
    storage: Arc<CountingStorage>,
    engine: EngineOptions,
    guest: GuestArgs,
    cluster: Option<&str>,
) -> anyhow::Result<RunReport> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read the pipeline spec {}", spec_path.display()))?;
    let spec =
        PipelineSpec::from_toml(&text).with_context(|| format!("in {}", spec_path.display()))?;
    let opts = run_options(spec_path, lake, engine)?;
    let extracted = medallion_host::postgres::extracted_tables(&spec);
    let mut pulled: Vec<(String, u64)> = Vec::new();
    if !extracted.is_empty() {
        // Database sources are pulled by this process (the guest has no sockets), each in its
        // own commit, before the pipeline builds on them.
        let storage: Arc<dyn medallion_core::storage::Storage> = storage.clone();
        // extract_all's error says which extracts committed before the one that failed.
        let reports = super::extract::extract_all(&spec, &extracted, storage, &opts, show_progress)
            .await
            .map_err(|e| e.context(format!("pipeline {} failed", spec_path.display())))?;
        pulled = reports
            .iter()
            .filter_map(|r| r.version.map(|v| (r.table.clone(), v)))
            .collect();
    }
    let progress = Arc::new(RunProgress::new(show_progress));
    if let Some(url) = cluster {
        let report = run_on_cluster(&spec, storage, &opts, url, &progress).await;
        progress.finish();
        return report.map_err(|e| failed(spec_path, e, &pulled));
    }
    let report = match guest.engine {
        // Under a memory limit, one table at a time: each table's session holds the whole
        // limit.
        Engine::Native if opts.engine.memory_limit.is_some() => {
            medallion_core::pipeline::run(&spec, storage, &SystemClock::new(), &opts, &|event| {
                progress.on(event)
            })
            .await
        }
        Engine::Native => {
            let result = run_native_graph(spec, opts, storage, &guest, progress.clone()).await;
            progress.finish();
            return result.map_err(|e| failed(spec_path, e, &pulled));
        }
        Engine::Guest => {
            // Parallelism comes from instances.
            let opts = RunOptions {
                engine: guest.engine_options(opts.engine),
                ..opts
            };
            let grants = guest::job::pipeline_grants(&spec, &opts);
            let shown = progress.clone();
            let ctx = guest::Context {
                storage,
                grants: Arc::new(grants),
                limits: guest.limits(),
                started: std::time::Instant::now(),
                runtime: tokio::runtime::Handle::current(),
                progress: Arc::new(move |event| shown.on_guest(event)),
            };
            let instances = guest.instances();
            let result = tokio::task::spawn_blocking(move || {
                let module = super::load_guest(&ctx.limits)?;
                guest::job::run_pipeline(&module, &ctx, &text, &spec, &opts, instances)
                    .map_err(anyhow::Error::from)
            })
            .await?;
            progress.finish();
            return result.map_err(|e| failed(spec_path, e, &pulled));
        }
    };
    progress.finish();
    report.map_err(|e| failed(spec_path, anyhow::Error::from(e), &pulled))
}

/// The pipeline run in this process with tables built side by side as soon as the tables they
/// read are, each in its own session on its own thread (bronze parsing is one thread per
/// table), staged and then committed together as guest instances' are
/// ([`guest::job::run_graph`]).
async fn run_native_graph(
    spec: PipelineSpec,
    opts: RunOptions,
    storage: Arc<CountingStorage>,
    guest: &GuestArgs,
    progress: Arc<RunProgress>,
) -> anyhow::Result<RunReport> {
    let shown = progress.clone();
    let ctx = guest::Context {
        storage: storage.clone(),
        grants: Arc::new(guest::job::pipeline_grants(&spec, &opts)),
        limits: guest.limits(),
        started: std::time::Instant::now(),
        runtime: tokio::runtime::Handle::current(),
        progress: Arc::new(move |event| shown.on_guest(event)),
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = tokio::task::spawn_blocking(move || {
        let stage = |table: &str, inputs: Vec<&TableState>| {
            let inputs: Vec<TableState> = inputs.into_iter().cloned().collect();
            let storage: Arc<dyn medallion_core::storage::Storage> = ctx.storage.clone();
            ctx.runtime
                .block_on(medallion_core::pipeline::stage(
                    &spec,
                    storage,
                    &SystemClock::new(),
                    &opts,
                    &[table.to_string()],
                    &inputs,
                    &|event| progress.on(event),
                ))
                .map_err(guest::GuestError::InProcess)
        };
        guest::job::run_graph(&stage, &ctx, &spec, &opts, workers)
    })
    .await?;
    Ok(report?)
}

/// The pipeline run natively in this process (bronze ingestion, checks, writes, commits) with
/// silver and gold SQL run as Ballista jobs on the cluster at `url`.
#[cfg(feature = "cluster")]
async fn run_on_cluster(
    spec: &PipelineSpec,
    storage: Arc<CountingStorage>,
    opts: &RunOptions,
    url: &str,
    progress: &RunProgress,
) -> anyhow::Result<RunReport> {
    let storage: Arc<dyn medallion_core::storage::Storage> = storage;
    let session = medallion_host::cluster::session::ClusterSession::connect(
        url,
        storage.clone(),
        opts.engine,
    )
    .await?;
    let report = medallion_core::pipeline::run_on(
        spec,
        storage,
        &SystemClock::new(),
        opts,
        &|event| progress.on(event),
        Some(&session),
    )
    .await?;
    Ok(report)
}

#[cfg(not(feature = "cluster"))]
async fn run_on_cluster(
    _spec: &PipelineSpec,
    _storage: Arc<CountingStorage>,
    _opts: &RunOptions,
    _url: &str,
    _progress: &RunProgress,
) -> anyhow::Result<RunReport> {
    anyhow::bail!("this medallion was built without the `cluster` feature")
}

/// Where and how a run of the spec at `spec_path` writes: the lake and the spec's folder as
/// absolute locations, a fresh run id.
pub fn run_options(
    spec_path: &Path,
    lake: &str,
    engine: EngineOptions,
) -> anyhow::Result<RunOptions> {
    let base = match spec_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok(RunOptions {
        lake: local_fs::absolute(lake).with_context(|| format!("lake folder {lake}"))?,
        base: local_fs::absolute(&base.to_string_lossy())?,
        run_id: medallion_host::new_run_id(),
        engine,
        max_files_per_table: None,
        max_bytes_per_table: None,
    })
}

/// A failed run as JSON: the error, whether any table changed, and which committed.
fn failure_json(e: &anyhow::Error) -> serde_json::Value {
    let core = e
        .chain()
        .find_map(|c| c.downcast_ref::<medallion_core::Error>());
    let (committed, not_committed) = match core {
        Some(medallion_core::Error::PartialCommit {
            committed,
            not_committed,
            ..
        }) => (committed.clone(), not_committed.clone()),
        _ => (vec![], vec![]),
    };
    let pulled = e
        .downcast_ref::<Extracted>()
        .map(|x| x.0.clone())
        .unwrap_or_default();
    let changed_nothing = pulled.is_empty()
        && e.chain()
            .filter_map(|c| c.downcast_ref::<medallion_core::Error>())
            .all(|c| c.changed_nothing());
    let committed: Vec<(String, u64)> = pulled.into_iter().chain(committed).collect();
    serde_json::json!({
        "ok": false,
        "error": format!("{e:#}"),
        "changed_nothing": changed_nothing,
        "committed": committed
            .iter()
            .map(|(t, v)| serde_json::json!({ "table": t, "version": v }))
            .collect::<Vec<_>>(),
        "not_committed": not_committed,
    })
}

/// The error of a failed run, saying "no table was changed" only when that is true (a
/// failure part way through committing names what did and did not commit).
/// Database extracts commit before the pipeline runs: a later failure leaves them committed.
fn failed(spec_path: &Path, e: anyhow::Error, pulled: &[(String, u64)]) -> anyhow::Error {
    let unchanged = e
        .chain()
        .filter_map(|c| c.downcast_ref::<medallion_core::Error>())
        .all(|c| c.changed_nothing());
    let what = match (unchanged, pulled.is_empty()) {
        (true, true) => "no table was changed".to_string(),
        (true, false) => format!(
            "only the extracted tables were committed ({}); no other table was changed",
            Extracted(pulled.to_vec())
        ),
        (false, _) => "some tables were committed (listed below)".to_string(),
    };
    let e = if pulled.is_empty() {
        e
    } else {
        e.context(Extracted(pulled.to_vec()))
    };
    e.context(format!("pipeline {} failed; {what}", spec_path.display()))
}

/// The extracts a failed run committed before failing: (table, version).
#[derive(Debug)]
struct Extracted(Vec<(String, u64)>);

impl std::fmt::Display for Extracted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(|(t, v)| format!("{t} v{v}")).collect();
        write!(f, "extracted and committed: {}", list.join(", "))
    }
}
