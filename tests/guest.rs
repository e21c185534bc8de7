//! The core as a wasmtime guest gives the same tables as the core in-process, runs independent
//! tables in parallel instances while staying all-or-nothing, and stays inside its sandbox:
//! paths outside its grants are refused, and a job over its memory or time cap fails cleanly
//! with the lake unchanged.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medallion_core::pipeline::RunOptions;
use medallion_core::query::EngineOptions;
use medallion_core::report::RunReport;
use medallion_core::spec::PipelineSpec;
use medallion_host::guest::grants::{Access, Grants};
use medallion_host::guest::{job, Context, Guest, GuestError, Limits};
use medallion_host::retail_data::RetailData;
use medallion_tests::{data_files, rows, run_spec, storage, versions, write};

const RETAIL: &str = include_str!("../examples/retail/pipeline.toml");
const GOLD: [&str; 3] = [
    "sales_by_region_day",
    "customer_segments",
    "low_stock_alerts",
];

fn guest() -> &'static Guest {
    static GUEST: std::sync::OnceLock<Guest> = std::sync::OnceLock::new();
    // With time limits: one test here runs under one.
    GUEST.get_or_init(|| Guest::load(true).unwrap_or_else(|e| panic!("{e}")))
}

fn context(grants: Grants, limits: Limits) -> Context {
    Context {
        storage: storage(),
        grants: Arc::new(grants),
        limits,
        started: Instant::now(),
        runtime: tokio::runtime::Handle::current(),
        progress: Arc::new(|_| {}),
    }
}

/// A run of the spec next to `base` into `lake`, with default engine options.
fn run_options(base: &Path, lake: &Path) -> RunOptions {
    RunOptions {
        lake: lake.to_string_lossy().into_owned(),
        base: base.to_string_lossy().into_owned(),
        run_id: medallion_host::new_run_id(),
        engine: EngineOptions::default(),
        max_files_per_table: None,
        max_bytes_per_table: None,
    }
}

/// Runs `spec` in guest instances (4 at a time), with the grants the CLI would give.
async fn run_in_guest(
    spec: &str,
    base: &Path,
    lake: &Path,
    limits: Limits,
) -> Result<RunReport, GuestError> {
    let text = spec.to_string();
    let spec = PipelineSpec::from_toml(spec).unwrap();
    let opts = run_options(base, lake);
    let ctx = context(job::pipeline_grants(&spec, &opts), limits);
    tokio::task::spawn_blocking(move || job::run_pipeline(guest(), &ctx, &text, &spec, &opts, 4))
        .await
        .unwrap()
}

async fn gold(lake: &Path) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for t in GOLD {
        out.push(rows(&lake.join("gold").join(t), "SELECT * FROM t").await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retail_gold_is_identical_through_the_guest_and_natively() {
    let dir = tempfile::tempdir().unwrap();
    let data = RetailData {
        scale: 0.2,
        seed: 11,
    };
    data.write_initial(&dir.path().join("data"), 2).unwrap();
    let (native, wasm) = (dir.path().join("native"), dir.path().join("guest"));

    let n = run_spec(RETAIL, dir.path(), &native, 1).await.unwrap();
    let g = run_in_guest(RETAIL, dir.path(), &wasm, Limits::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(g.ok);
    assert_eq!(gold(&native).await, gold(&wasm).await);
    for t in GOLD {
        assert!(!rows(&wasm.join("gold").join(t), "SELECT * FROM t")
            .await
            .is_empty());
    }
    // Same counts table by table, same versions committed.
    let counts = |r: &RunReport| {
        r.tables
            .iter()
            .map(|t| {
                (
                    t.table.clone(),
                    t.rows_in,
                    t.rows_out,
                    t.dropped,
                    t.quarantined,
                    t.version,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&n), counts(&g));

    // A new day, incrementally: only new files are read, and both still agree.
    data.write_batch(&dir.path().join("data"), 2).unwrap();
    run_spec(RETAIL, dir.path(), &native, 1).await.unwrap();
    let g = run_in_guest(RETAIL, dir.path(), &wasm, Limits::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let orders = g.tables.iter().find(|t| t.table == "orders_raw").unwrap();
    assert_eq!((orders.files_ingested, orders.files_skipped), (1, 2));
    assert_eq!(gold(&native).await, gold(&wasm).await);
}

const SPEC: &str = r#"
[bronze.events_raw]
path = "data/events.csv"
schema = { id = "bigint", kind = "string", amount = "double" }

[silver.events]
sql = "SELECT id, kind, amount FROM events_raw"

[gold.by_kind]
sql = "SELECT kind, count(*) AS n, sum(amount) AS total FROM events GROUP BY kind"
"#;

/// A small lake: SPEC run once, `rows` events.
async fn small_lake(dir: &Path, rows: usize) {
    let mut csv = String::from("id,kind,amount\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},{},{}.5\n", ["a", "b", "c"][i % 3], i));
    }
    write(&dir.join("data/events.csv"), &csv);
    run_in_guest(SPEC, dir, &dir.join("lake"), Limits::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Every table of the lake at version 0 and nothing else written.
fn assert_unchanged(lake: &Path) {
    for t in ["bronze/events_raw", "silver/events", "gold/by_kind"] {
        assert_eq!(versions(&lake.join(t)), vec![0], "{t}");
        assert_eq!(
            data_files(&lake.join(t)),
            1,
            "{t}: staged files were removed"
        );
    }
    assert!(!lake.join("gold/heavy").exists() || data_files(&lake.join("gold/heavy")) == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_outside_the_grants_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    small_lake(dir.path(), 10).await;
    let secret = dir.path().join("secret");
    write(&secret.join("s.csv"), "id,kind,amount\n1,x,1\n");

    // A source file that is a link to a file outside the spec's sources.
    std::os::unix::fs::symlink(secret.join("s.csv"), dir.path().join("data/more.csv")).unwrap();
    let spec = SPEC.replace("data/events.csv", "data/*.csv");
    // The glob grants data/; the link resolves outside it.
    let err = run_in_guest(
        &spec,
        dir.path(),
        &dir.path().join("lake"),
        Limits::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("refused") && err.contains("more.csv") && err.contains("events_raw"),
        "{err}"
    );
    assert_unchanged(&dir.path().join("lake"));

    // A query may read only what it was granted.
    let mut grants = Grants::new();
    grants.allow(dir.path().join("lake").to_str().unwrap(), Access::Read);
    let ctx = context(grants, Limits::default());
    let table = vec![(
        "t".to_string(),
        secret.join("s.csv").to_string_lossy().into_owned(),
    )];
    let err = tokio::task::spawn_blocking(move || {
        job::run_query(
            guest(),
            &ctx,
            "SELECT * FROM t",
            &table,
            EngineOptions::default(),
            2,
        )
        .map(|_| ())
    })
    .await
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("refused") && err.contains(&secret.join("s.csv").display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_over_the_memory_cap_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    small_lake(dir.path(), 10).await;
    // Each row makes a 20 MB string, 200 MB for the ten: over a 128 MiB cap.
    let spec = format!(
        "{SPEC}\n[gold.heavy]\nsql = \"SELECT kind, length(repeat(kind, 20000000)) AS n FROM events\"\n"
    );
    let limits = Limits {
        max_memory: 128 << 20,
        timeout: None,
    };
    let err = run_in_guest(&spec, dir.path(), &dir.path().join("lake"), limits)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, GuestError::Memory { .. })
            && text.contains("128 MiB")
            && text.contains("`heavy`"),
        "{text}"
    );
    assert_unchanged(&dir.path().join("lake"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_over_the_time_limit_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    small_lake(dir.path(), 50_000).await;
    // 50 000² rows to add up, streamed (little memory): minutes of work.
    let spec = format!(
        "{SPEC}\n[gold.heavy]\nsql = \"SELECT sum(a.id + b.id) AS n FROM events a, events b\"\n"
    );
    let limits = Limits {
        max_memory: 2 << 30,
        timeout: Some(Duration::from_secs(3)),
    };
    let started = Instant::now();
    let err = run_in_guest(&spec, dir.path(), &dir.path().join("lake"), limits)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped promptly"
    );
    let text = err.to_string();
    assert!(
        matches!(err, GuestError::Timeout { .. }) && text.contains("`heavy`"),
        "{text}"
    );
    assert_unchanged(&dir.path().join("lake"));
}

/// Runs `spec` with [`job::run_graph`] and tables staged in this process, as the native CLI
/// does; `before` runs first in each table's thread.
async fn run_graph_in_process(
    spec: &str,
    base: &Path,
    lake: &Path,
    before: impl Fn(&str) -> Result<(), GuestError> + Send + Sync + 'static,
) -> Result<RunReport, GuestError> {
    let spec = PipelineSpec::from_toml(spec).unwrap();
    let opts = run_options(base, lake);
    let ctx = context(job::pipeline_grants(&spec, &opts), Limits::default());
    tokio::task::spawn_blocking(move || {
        let stage = |table: &str, inputs: Vec<&medallion_core::pipeline::TableState>| {
            before(table)?;
            let inputs: Vec<_> = inputs.into_iter().cloned().collect();
            ctx.runtime
                .block_on(medallion_core::pipeline::stage(
                    &spec,
                    ctx.storage.clone(),
                    &medallion_host::SystemClock::new(),
                    &opts,
                    &[table.to_string()],
                    &inputs,
                    &|_| {},
                ))
                .map_err(GuestError::InProcess)
        };
        job::run_graph(&stage, &ctx, &spec, &opts, 2)
    })
    .await
    .unwrap()
}

const TWO_CHAINS: &str = r#"
[bronze.big_raw]
path = "data/big.csv"
schema = { id = "bigint" }

[bronze.small_raw]
path = "data/small.csv"
schema = { id = "bigint" }

[silver.small]
sql = "SELECT id FROM small_raw"

[gold.both]
sql = "SELECT (SELECT count(*) FROM big_raw) + (SELECT count(*) FROM small) AS n"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_starts_when_its_inputs_are_staged_not_its_whole_level() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("data/big.csv"), "id\n1\n2\n3\n");
    write(&dir.path().join("data/small.csv"), "id\n4\n");
    // `big_raw` stays in its thread until `small` (a level later) has started: built level by
    // level, `small` could not start before `big_raw` ended, and the wait would time out.
    let small_started = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let signal = small_started.clone();
    let order = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = order.clone();
    let report = run_graph_in_process(
        TWO_CHAINS,
        dir.path(),
        &dir.path().join("lake"),
        move |table| {
            seen.lock().unwrap().push(table.to_string());
            let (lock, cv) = &*signal;
            match table {
                "big_raw" => {
                    let (done, timeout) = cv
                        .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(30), |d| !*d)
                        .unwrap();
                    assert!(
                        *done && !timeout.timed_out(),
                        "`small` did not start while `big_raw` was being built"
                    );
                }
                "small" => {
                    *lock.lock().unwrap() = true;
                    cv.notify_all();
                }
                _ => {}
            }
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok);
    let order = order.lock().unwrap().clone();
    // `both` reads `big_raw` too, so it cannot start before `big_raw` is staged.
    assert_eq!(order.last().map(String::as_str), Some("both"), "{order:?}");
    assert_eq!(
        rows(&dir.path().join("lake/gold/both"), "SELECT n FROM t").await,
        vec!["4"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failure_no_table_starts_and_nothing_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("data/big.csv"), "id\n1\n2\n3\n");
    write(&dir.path().join("data/small.csv"), "id\n4\n");
    let started = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = started.clone();
    let lake = dir.path().join("lake");
    let err = run_graph_in_process(TWO_CHAINS, dir.path(), &lake, move |table| {
        seen.lock().unwrap().push(table.to_string());
        match table {
            "small_raw" => Err(GuestError::Failed {
                what: "building table `small_raw`".into(),
                message: "injected".into(),
            }),
            // Still running when `small_raw` fails: it finishes, and its files go too.
            "big_raw" => {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            }
            _ => Ok(()),
        }
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    let started = started.lock().unwrap().clone();
    assert!(
        !started.iter().any(|t| t == "small" || t == "both"),
        "{started:?}"
    );
    // No log was written, and the staged data file of `big_raw` was removed.
    assert!(!lake.join("bronze/big_raw/_delta_log").exists());
    assert_eq!(data_files(&lake.join("bronze/big_raw")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_panics_fails_the_run_naming_it_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("data/big.csv"), "id\n1\n2\n3\n");
    write(&dir.path().join("data/small.csv"), "id\n4\n");
    let lake = dir.path().join("lake");
    // `small` waits for `small_raw` while `small_raw` panics: the run must end.
    let run = run_graph_in_process(TWO_CHAINS, dir.path(), &lake, |table| {
        if table == "small_raw" {
            panic!("injected panic");
        }
        Ok(())
    });
    let err = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ended")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`small_raw`") && err.contains("injected panic"),
        "{err}"
    );
    assert!(!lake.join("bronze/big_raw/_delta_log").exists());
    assert_eq!(data_files(&lake.join("bronze/big_raw")), 0);
}
