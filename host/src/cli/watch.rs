//! `medallion run --watch`: the streaming driver. A loop of micro-batches, each one ordinary
//! run of the pipeline (`pipeline::run`) bounded to `--max-batch-files` new files per bronze
//! table, so a batch run and a stream are the same code with a different driver:
//!
//! - exactly once per source file: bronze records each file it ingests in its Delta log,
//!   atomically with the data and a `txn` batch id, so what was consumed lives in the table logs
//!   only and a restart resumes from them;
//! - after each batch, the alerts of tables that declare `alert` (see `medallion_host::alerts`)
//!   go to `--alerts` in the background;
//! - every `--optimize-every` batches, the bronze tables' small files are compacted;
//! - SIGINT/SIGTERM stop the loop after the batch in progress has committed;
//! - [`Observers`] let the process that runs the loop see it too: `medallion serve --run …
//!   --watch` hands the alerts to its Server-Sent Events and each batch to `/api/report`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use medallion_core::clock::Clock;
use medallion_core::delta::{self, Snapshot};
use medallion_core::pipeline::{self, Progress, RunOptions};
use medallion_core::query::EngineOptions;
use medallion_core::report::RunReport;
use medallion_core::spec::{ExtractMode, Layer, PipelineSpec};
use medallion_core::storage::Storage;
use medallion_host::alerts::{self, AlertSink, AlertTable, Cursor, Emitter};
use medallion_host::serve::LastReport;
use medallion_host::{local_fs, SystemClock};
use serde_json::json;
use tokio::sync::Notify;

/// Files smaller than this are compacted by the periodic optimize (as `medallion optimize`).
const OPTIMIZE_TARGET_SIZE: u64 = 128 * 1024 * 1024;

#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Streaming (--watch)")]
pub struct WatchArgs {
    /// Keep running: pick up new source files in micro-batches until Ctrl-C or SIGTERM, which
    /// stop after the batch in progress has committed. Runs the native engine (in-process).
    ///
    /// Each batch ingests at most --max-batch-files new files per bronze table, exactly once (the
    /// files a table has ingested are recorded in its Delta log atomically with their rows, with
    /// a txn batch id), rebuilds the silver and gold tables whose inputs changed, and prints one
    /// status line on stderr (with --json, one JSON event per batch on stdout). Put new files in
    /// place atomically (write elsewhere, then rename into the watched folder): a file is read
    /// once, under its name.
    ///
    /// Alerts: a row of a table that declares `alert = { key = [...] }` whose key was not in the
    /// table's previous version is written as one JSON line {table, version, key, row, at} to
    /// --alerts. No alert is lost across crashes and restarts: how far the alerts went out is
    /// recorded in <lake>/_medallion/alerts/<table>.json after they are emitted, and a restart
    /// goes on from there. An alert is repeated only if the process died between emitting it
    /// and recording that. Webhook failures are logged on stderr and never hold up a commit.
    ///
    /// Examples:
    ///   medallion run pipeline.toml --watch --trigger-interval 1s --alerts alerts.ndjson
    ///   medallion run pipeline.toml --watch --alerts https://hooks.example.com/stock --json
    #[arg(long, verbatim_doc_comment)]
    pub watch: bool,
    /// Time from the start of one batch to the start of the next, e.g. 200ms, 2s, 1m. A batch
    /// that leaves files pending is followed at once by the next.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION", requires = "watch")]
    pub trigger_interval: Duration,
    /// At most N new source files per bronze table in one batch (oldest names first): a burst
    /// of files is taken in several batches, in bounded memory.
    #[arg(long, default_value_t = 100, value_name = "N", requires = "watch")]
    pub max_batch_files: usize,
    /// At most about this much new source data per bronze table in one batch, e.g. 64MiB
    /// (always at least one file): bounds a batch of large files as --max-batch-files bounds a
    /// burst of small ones.
    #[arg(long, value_parser = super::parse_size, value_name = "SIZE", requires = "watch")]
    pub max_batch_bytes: Option<usize>,
    /// Where the alerts of tables that declare `alert = { key = [...] }` go: `-` (stdout), a
    /// file (appended to), or an http(s) URL (one JSON POST per alert, retried).
    #[arg(long, value_name = "-|FILE|URL", requires = "watch")]
    pub alerts: Option<String>,
    /// Compact the bronze tables' small files every N batches that ingested something (0: never).
    #[arg(long, default_value_t = 50, value_name = "N", requires = "watch")]
    pub optimize_every: u64,
}

/// `500ms`, `2s`, `1.5s`, `1m`, or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, unit) = super::number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a duration like 500ms, 2s or 1m"))?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n * 1e3,
        "m" | "min" => n * 60e3,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(ms.max(0.0) / 1e3))
}

/// Who else, in this process, follows the loop (`medallion serve --run … --watch`).
#[derive(Debug, Clone, Default)]
pub struct Observers {
    /// Every alert, besides `--alerts`.
    pub alerts: Option<alerts::Broadcast>,
    /// The last batch's report (the first run's until a batch does something).
    pub reports: Option<Arc<LastReport>>,
}

/// Set by SIGINT or SIGTERM; the loop checks it between batches, never inside one.
pub(super) struct Stop {
    requested: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl Stop {
    pub(super) fn install() -> anyhow::Result<Stop> {
        let requested = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let (flag, notify) = (requested.clone(), wake.clone());
        let on_signal = move |name: &str| {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("{name}: already stopping after the current batch");
            } else {
                eprintln!("{name}: stopping after the current batch commits");
            }
            // A stored permit: wakes the sleep even if it starts after the signal.
            notify.notify_one();
        };
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
            let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
            tokio::spawn(async move {
                loop {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    on_signal(name);
                }
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                on_signal("Ctrl-C");
            }
        });
        Ok(Stop { requested, wake })
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The flag a signal sets, for loops that check it themselves.
    pub(super) fn flag(&self) -> Arc<AtomicBool> {
        self.requested.clone()
    }

    /// Sleeps `d`, or less if a stop is requested.
    async fn sleep(&self, d: Duration) {
        if self.requested() || d.is_zero() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.wake.notified() => {}
        }
    }
}

/// One table that declares an alert: how far its alerts went out, and its latest version.
struct Alerting {
    table: AlertTable,
    cursor: Cursor,
    latest: Option<u64>,
    /// The last error computing its alerts, reported once rather than on every retry.
    error: Option<String>,
}

/// The alert tables of a spec and the emitter their alerts go through.
struct AlertState {
    emitter: Emitter,
    tables: Vec<Alerting>,
}

impl AlertState {
    /// Delivers the alerts of every version of each table after its cursor up to its latest
    /// version; returns how many. A table whose alerts fail to compute keeps its cursor and is
    /// tried again after the next batch.
    async fn advance(
        &mut self,
        storage: &Arc<dyn Storage>,
        engine: EngineOptions,
        now_ms: i64,
    ) -> usize {
        let mut count = 0;
        for t in &mut self.tables {
            let Some(latest) = t.latest else { continue };
            if matches!(t.cursor, Cursor::Through(v) if v >= latest) {
                continue;
            }
            match alerts::alerts_since(storage, engine, &t.table, t.cursor, latest, now_ms).await {
                Ok((lines, after)) => {
                    count += lines.len();
                    self.emitter.send(&t.table.table, latest, lines);
                    t.cursor = after;
                    t.error = None;
                }
                Err(e) => {
                    let e = e.to_string();
                    if t.error.as_ref() != Some(&e) {
                        eprintln!("error: {e} (retried after every batch)");
                        t.error = Some(e);
                    }
                }
            }
        }
        count
    }
}

pub async fn watch(
    spec_path: &Path,
    lake: &str,
    json: bool,
    storage: Arc<dyn Storage>,
    engine: EngineOptions,
    args: WatchArgs,
    observers: Observers,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read the pipeline spec {}", spec_path.display()))?;
    let spec =
        PipelineSpec::from_toml(&text).with_context(|| format!("in {}", spec_path.display()))?;
    let base = match spec_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let lake = local_fs::absolute(lake).with_context(|| format!("lake folder {lake}"))?;
    let base = local_fs::absolute(&base.to_string_lossy())?;
    let clock = SystemClock::new();
    let stop = Stop::install()?;

    let bronze: Vec<(String, String)> = spec
        .bronze
        .keys()
        .map(|n| (n.clone(), pipeline::table_location(&lake, Layer::Bronze, n)))
        .collect();
    // The txn batch id each bronze table committed last (the core commits previous + 1).
    let mut txn: HashMap<String, Option<i64>> = HashMap::new();
    for (name, location) in &bronze {
        let snapshot = Snapshot::try_load(storage.as_ref(), location).await?;
        let app = pipeline::batch_app_id(&spec.pipeline.name, name);
        txn.insert(name.clone(), snapshot.and_then(|s| s.app_version(&app)));
    }

    let alert_tables: Vec<AlertTable> = spec
        .tables()
        .filter_map(|(name, layer)| {
            spec.alert(name).map(|a| AlertTable {
                table: name.to_string(),
                location: pipeline::table_location(&lake, layer, name),
                key: a.key.clone(),
            })
        })
        .collect();
    let sinks: Vec<AlertSink> = args
        .alerts
        .as_deref()
        .map(AlertSink::parse)
        .into_iter()
        .chain(observers.alerts.clone().map(AlertSink::Broadcast))
        .collect();
    let mut alerting = match sinks.is_empty() {
        false => {
            if alert_tables.is_empty() && args.alerts.is_some() {
                eprintln!("warning: --alerts is given but no table of the spec declares `alert`");
            }
            let emitter = Emitter::start(sinks, storage.clone(), &lake)?;
            let mut tables = Vec::new();
            for t in &alert_tables {
                let cursor =
                    alerts::load_cursor(storage.as_ref(), &lake, &t.table, &t.location).await?;
                let latest = delta::latest_version(storage.as_ref(), &t.location).await?;
                tables.push(Alerting {
                    table: t.clone(),
                    cursor,
                    latest,
                    error: None,
                });
            }
            let mut state = AlertState { emitter, tables };
            // Catch up on versions committed while no watcher was alerting.
            state.advance(&storage, engine, clock.now_ms()).await;
            Some(state)
        }
        true => {
            if !alert_tables.is_empty() {
                let names: Vec<&str> = alert_tables.iter().map(|t| t.table.as_str()).collect();
                eprintln!(
                    "note: {} declare(s) alerts; add --alerts -|FILE|URL to emit them",
                    names.join(", ")
                );
            }
            None
        }
    };

    let interval = args.trigger_interval;
    let sink = alerting
        .as_ref()
        .map(|a| a.emitter.sinks())
        .unwrap_or_else(|| "none".into());
    if json {
        emit_json(&json!({
            "event": "started",
            "pipeline": spec.pipeline.name,
            "lake": lake,
            "trigger_interval_ms": interval.as_millis() as u64,
            "max_batch_files": args.max_batch_files,
            "max_batch_bytes": args.max_batch_bytes,
            "alerts": sink,
        }))?;
    }
    eprintln!(
        "watching {} into {lake}: a batch every {} ms, at most {} new file(s) per bronze table each; alerts: {sink}. Ctrl-C stops after the current batch.",
        spec_path.display(),
        interval.as_millis(),
        args.max_batch_files.max(1),
    );

    let mut batches = 0u64;
    let mut ingesting_batches = 0u64;
    let mut attempts = 0u64;
    let mut failures = 0u32;
    let mut caught_up = false;
    while !stop.requested() {
        let started = Instant::now();
        attempts += 1;
        let opts = RunOptions {
            lake: lake.clone(),
            base: base.clone(),
            run_id: medallion_host::new_run_id(),
            engine,
            max_files_per_table: Some(args.max_batch_files.max(1)),
            max_bytes_per_table: args.max_batch_bytes.map(|b| b as u64),
        };
        let ingested: Mutex<Vec<String>> = Mutex::new(Vec::new());
        // Database tables first: cdc and incremental ones catch up every batch (a cdc extract
        // stops at the server's position when it started); snapshots are taken once.
        let extracts: Vec<String> = medallion_host::postgres::extracted_tables(&spec)
            .into_iter()
            .filter(|t| {
                attempts == 1
                    || spec.bronze.get(t).and_then(|s| s.mode).unwrap_or_default()
                        != ExtractMode::Snapshot
            })
            .collect();
        let extracted = match extracts.is_empty() {
            true => Ok(Vec::new()),
            false => {
                super::extract::extract_all(&spec, &extracts, storage.clone(), &opts, false).await
            }
        };
        let result = match extracted {
            Err(e) => Err(e),
            Ok(_) => pipeline::run(&spec, storage.clone(), &clock, &opts, &|event| {
                if let Progress::FileIngested { file, .. } = event {
                    ingested
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(file.to_string());
                }
            })
            .await
            .map_err(anyhow::Error::from),
        };
        let committed = SystemTime::now();
        let report = match result {
            Ok(r) => {
                failures = 0;
                r
            }
            Err(e) => {
                let e = e.context(format!("micro-batch of {} failed", spec_path.display()));
                if attempts == 1 {
                    return Err(e);
                }
                failures += 1;
                let backoff = interval
                    .max(Duration::from_millis(100))
                    .saturating_mul(1 << failures.min(8))
                    .min(Duration::from_secs(60));
                eprintln!("error: {e:#}; retrying in {} ms", backoff.as_millis());
                stop.sleep(backoff).await;
                continue;
            }
        };
        let ingested = ingested.into_inner().unwrap_or_else(|e| e.into_inner());
        if attempts == 1 {
            if let Some(reports) = &observers.reports {
                reports.set(json!({ "batch": null, "report": report }));
            }
        }
        let changed = report.tables.iter().any(|t| t.version.is_some());
        let pending: u64 = report.tables.iter().map(|t| t.files_pending).sum();

        let mut alert_count = 0;
        if let Some(state) = alerting.as_mut() {
            for a in &mut state.tables {
                let committed = report
                    .tables
                    .iter()
                    .find(|t| t.table == a.table.table)
                    .and_then(|t| t.version);
                a.latest = committed.or(a.latest);
            }
            alert_count = state.advance(&storage, engine, clock.now_ms()).await;
        }

        if changed || !ingested.is_empty() {
            batches += 1;
            caught_up = false;
            let mut committed_txn = BTreeMap::new();
            for t in &report.tables {
                if t.layer == Layer::Bronze && t.version.is_some() {
                    let id = txn.get(&t.table).copied().flatten().map_or(0, |v| v + 1);
                    txn.insert(t.table.clone(), Some(id));
                    committed_txn.insert(t.table.clone(), id);
                }
            }
            let batch = Batch {
                number: batches,
                report: &report,
                files: ingested.len() as u64,
                latency_ms: latency_ms(&ingested, committed),
                txn: committed_txn,
                alerts: alert_count,
                pending,
                ms: started.elapsed().as_secs_f64() * 1e3,
            };
            if json {
                emit_json(&batch.event())?;
            } else {
                eprintln!("{}", batch.status_line());
            }
            if let Some(reports) = &observers.reports {
                reports.set(json!({ "batch": batch.event(), "report": report }));
            }
            if !ingested.is_empty() {
                ingesting_batches += 1;
            }
            if !ingested.is_empty()
                && args.optimize_every > 0
                && ingesting_batches.is_multiple_of(args.optimize_every)
            {
                optimize(storage.as_ref(), &bronze, &lake, &clock, json).await?;
            }
        } else if !caught_up {
            caught_up = true;
            if json {
                emit_json(&json!({ "event": "caught_up", "batches": batches }))?;
            } else {
                eprintln!("caught up after {batches} batch(es); waiting for new files");
            }
        }
        if pending == 0 {
            stop.sleep(interval.saturating_sub(started.elapsed())).await;
        }
    }

    if let Some(state) = alerting {
        state.emitter.finish(Duration::from_secs(30)).await;
    }
    if json {
        emit_json(&json!({ "event": "stopped", "batches": batches }))?;
    }
    eprintln!("stopped after {batches} batch(es)");
    Ok(())
}

/// What one micro-batch did, for the status line and the JSON event.
struct Batch<'a> {
    number: u64,
    report: &'a RunReport,
    files: u64,
    latency_ms: Option<u64>,
    txn: BTreeMap<String, i64>,
    alerts: usize,
    pending: u64,
    ms: f64,
}

impl Batch<'_> {
    /// Rows read by bronze (from new files), written by silver and gold (rebuilt tables).
    fn rows(&self, layer: Layer) -> u64 {
        self.report
            .tables
            .iter()
            .filter(|t| t.layer == layer && t.version.is_some())
            .map(|t| {
                if layer == Layer::Bronze {
                    t.rows_in
                } else {
                    t.rows_out
                }
            })
            .sum()
    }

    fn rebuilt(&self) -> Vec<&str> {
        self.report
            .tables
            .iter()
            .filter(|t| t.layer != Layer::Bronze && t.version.is_some())
            .map(|t| t.table.as_str())
            .collect()
    }

    /// Each changed silver and gold table with how it took the batch (append, merge, full).
    fn refreshed(&self) -> Vec<String> {
        self.report
            .tables
            .iter()
            .filter(|t| t.layer != Layer::Bronze && t.version.is_some())
            .map(
                |t| match t.refresh.as_deref().and_then(|r| r.split(':').next()) {
                    Some(kind) => format!("{} ({kind})", t.table),
                    None => t.table.clone(),
                },
            )
            .collect()
    }

    fn status_line(&self) -> String {
        let id = self
            .txn
            .values()
            .max()
            .map(|v| format!(" (txn {v})"))
            .unwrap_or_default();
        let rebuilt = self.refreshed();
        format!(
            "batch {}{id}: bronze {} file(s) {} rows → silver {} rows → gold {} rows; updated {}; {} alert(s); latency {}; {} file(s) pending; {:.0} ms",
            self.number,
            self.files,
            self.rows(Layer::Bronze),
            self.rows(Layer::Silver),
            self.rows(Layer::Gold),
            if rebuilt.is_empty() { "none".to_string() } else { rebuilt.join(", ") },
            self.alerts,
            self.latency_ms
                .map(|l| format!("{l} ms"))
                .unwrap_or_else(|| "-".into()),
            self.pending,
            self.ms,
        )
    }

    fn event(&self) -> serde_json::Value {
        let versions: BTreeMap<&str, u64> = self
            .report
            .tables
            .iter()
            .filter_map(|t| t.version.map(|v| (t.table.as_str(), v)))
            .collect();
        let ingested: BTreeMap<&str, u64> = self
            .report
            .tables
            .iter()
            .filter(|t| t.files_ingested > 0)
            .map(|t| (t.table.as_str(), t.files_ingested))
            .collect();
        json!({
            "event": "batch",
            "batch": self.number,
            "run_id": self.report.run_id,
            "txn": self.txn,
            "files": self.files,
            "ingested": ingested,
            "rows": {
                "bronze": self.rows(Layer::Bronze),
                "silver": self.rows(Layer::Silver),
                "gold": self.rows(Layer::Gold),
            },
            "rebuilt": self.rebuilt(),
            "refresh": self
                .report
                .tables
                .iter()
                .filter_map(|t| t.refresh.as_ref().map(|r| (t.table.as_str(), r)))
                .collect::<BTreeMap<&str, &String>>(),
            "versions": versions,
            "alerts": self.alerts,
            "latency_ms": self.latency_ms,
            "pending_files": self.pending,
            "stages": self.report.stages,
            "ms": self.ms,
        })
    }
}

/// Time from the newest ingested file's modification to the commit (local files only).
fn latency_ms(files: &[String], committed: SystemTime) -> Option<u64> {
    let newest = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok()?.modified().ok())
        .max()?;
    Some(
        committed
            .duration_since(newest)
            .unwrap_or_default()
            .as_millis() as u64,
    )
}

/// Compacts the bronze tables and any quarantine tables; failures are reported, not fatal.
async fn optimize(
    storage: &dyn Storage,
    bronze: &[(String, String)],
    lake: &str,
    clock: &SystemClock,
    json: bool,
) -> anyhow::Result<()> {
    let mut tables: Vec<(String, String)> = bronze.to_vec();
    tables.extend(bronze.iter().map(|(n, _)| {
        (
            format!("{n} (quarantine)"),
            pipeline::quarantine_location(lake, n),
        )
    }));
    for (name, location) in tables {
        let report = match delta::is_delta_table(storage, &location).await {
            Ok(true) => delta::optimize(storage, &location, OPTIMIZE_TARGET_SIZE, clock.now_ms())
                .await
                .map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        match report {
            Ok(Some(r)) if r.version.is_some() => {
                if json {
                    emit_json(&json!({ "event": "optimized", "table": name, "report": r }))?;
                } else {
                    eprintln!(
                        "optimized {name}: {} file(s) → {} at version {}",
                        r.files_removed,
                        r.files_added,
                        r.version.unwrap_or_default()
                    );
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: optimizing {name}: {e}"),
        }
    }
    Ok(())
}

/// One JSON event on stdout, flushed at once (a reader follows the stream live).
fn emit_json(value: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
