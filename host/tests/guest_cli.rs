//! `medallion` with its default engine, the wasm guest: a run killed (SIGKILL) while it
//! commits leaves every table readable at its previous or its new version, never torn; the
//! sandbox flags are documented and a refused path is named.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use medallion_core::query::{collect_sql, new_context, register_location, EngineOptions};
use medallion_core::storage::Storage;
use medallion_host::local_fs::LocalFs;

fn medallion(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medallion"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run medallion")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

const SPEC: &str = r#"
[bronze.a_raw]
path = "data/a/*.csv"
schema = { id = "bigint", v = "double" }

[bronze.b_raw]
path = "data/b/*.csv"
schema = { id = "bigint", v = "double" }

[silver.a]
sql = "SELECT id, v FROM a_raw"

[silver.b]
sql = "SELECT id, v FROM b_raw"

[gold.a_total]
sql = "SELECT count(*) AS n, sum(v) AS total FROM a"

[gold.b_total]
sql = "SELECT count(*) AS n, sum(v) AS total FROM b"
"#;

const TABLES: [&str; 6] = [
    "bronze/a_raw",
    "bronze/b_raw",
    "silver/a",
    "silver/b",
    "gold/a_total",
    "gold/b_total",
];

fn batch(dir: &Path, n: usize) {
    for t in ["a", "b"] {
        let folder = dir.join("data").join(t);
        std::fs::create_dir_all(&folder).unwrap();
        let mut csv = String::from("id,v\n");
        for i in 0..100 {
            csv.push_str(&format!("{},{}.5\n", n * 100 + i, i));
        }
        std::fs::write(folder.join(format!("{n}.csv")), csv).unwrap();
    }
}

fn versions(table: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(table.join("_delta_log"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Rows of a Delta table as read by the core's reader.
async fn count(table: &Path) -> i64 {
    let storage: Arc<dyn Storage> = Arc::new(LocalFs);
    let ctx = new_context(EngineOptions::default());
    register_location(&ctx, &storage, "t", &format!("delta:{}", table.display()))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", table.display()));
    let (_, batches) = collect_sql(&ctx, "test", "SELECT count(*) FROM t")
        .await
        .unwrap();
    let col = batches[0].column(0);
    medallion_core::arrow::array::cast::as_primitive_array::<
        medallion_core::arrow::datatypes::Int64Type,
    >(col)
    .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_while_committing_leaves_every_table_at_one_version() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), SPEC).unwrap();
    batch(dir.path(), 0);
    let out = medallion(dir.path(), &["run", "pipeline.toml", "--lake", "lake"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A second day; the run is killed after its second table's commit has started.
    batch(dir.path(), 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_medallion"))
        .current_dir(dir.path())
        .args(["run", "pipeline.toml", "--lake", "lake"])
        .env("MEDALLION_COMMIT_PAUSE_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut commits = 0;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.starts_with("medallion: committing") {
            commits += 1;
            if commits == 3 {
                // Two log entries are written, the third is pending.
                break;
            }
        }
    }
    assert_eq!(commits, 3, "the run reached its commits");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let lake = dir.path().join("lake");
    let mut at = Vec::new();
    for t in TABLES {
        let v = versions(&lake.join(t));
        let latest = *v.last().unwrap();
        assert!(v == [0] || v == [0, 1], "{t}: {v:?}");
        // Readable at whichever version it is, with that version's rows.
        let rows = count(&lake.join(t)).await;
        let expected = match (t.starts_with("gold"), latest) {
            (true, _) => 1,
            (false, 0) => 100,
            (false, _) => 200,
        };
        assert_eq!(rows, expected, "{t} at version {latest}");
        at.push(latest);
    }
    assert!(
        at.contains(&0) && at.contains(&1),
        "killed mid-commit: {at:?}"
    );

    // The next run finishes the job: tables built from inputs that moved are rebuilt.
    let out = medallion(
        dir.path(),
        &["run", "pipeline.toml", "--lake", "lake", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for t in ["gold/a_total", "gold/b_total"] {
        let out = medallion(
            dir.path(),
            &[
                "query",
                "SELECT n FROM t",
                "--table",
                &format!("t=delta:lake/{t}"),
                "--format",
                "csv",
            ],
        );
        assert_eq!(text(&out.stdout), "n\n200\n", "{t}: {}", text(&out.stderr));
    }
}

#[test]
fn help_documents_the_sandbox_and_a_refused_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = medallion(dir.path(), &["run", "--help"]);
    let help = text(&out.stdout);
    for flag in ["--engine", "--max-memory", "--timeout", "--instances"] {
        assert!(help.contains(flag), "run --help lacks {flag}:\n{help}");
    }

    std::fs::write(dir.path().join("pipeline.toml"), SPEC).unwrap();
    batch(dir.path(), 0);
    std::fs::write(dir.path().join("outside.csv"), "id,v\n1,1\n").unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("outside.csv"),
        dir.path().join("data/a/link.csv"),
    )
    .unwrap();
    let out = medallion(dir.path(), &["run", "pipeline.toml"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("link.csv") && err.contains("no table was changed"),
        "{err}"
    );
    assert!(!dir.path().join("lake/bronze/a_raw/_delta_log").exists());

    // The same spec in-process: no sandbox, the link is followed.
    let out = medallion(dir.path(), &["run", "pipeline.toml", "--engine", "native"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
