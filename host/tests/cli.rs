//! The `medallion` binary as a user meets it: help that teaches, readable and JSON output,
//! non-zero exits with errors that name the file, table or column.

use std::path::Path;
use std::process::{Command, Output};

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
[bronze.events_raw]
path = "events.csv"
schema = { id = "bigint", kind = "string", amount = "double" }

[silver.events]
sql = "SELECT id, kind, amount FROM events_raw"
expect = [{ name = "positive", condition = "amount > 0", on_violation = "drop" }]

[gold.by_kind]
sql = "SELECT kind, count(*) AS n, sum(amount) AS total FROM events GROUP BY kind"
"#;

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), SPEC).unwrap();
    std::fs::write(
        dir.path().join("events.csv"),
        "id,kind,amount\n1,a,2.5\n2,b,-1\n3,a,1.5\n4,b\n",
    )
    .unwrap();
    dir
}

#[test]
fn help_teaches_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = medallion(dir.path(), &["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "run",
        "query",
        "inspect",
        "demo",
        "Examples:",
        "medallion demo",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    let out = medallion(dir.path(), &["query", "--help"]);
    assert!(text(&out.stdout).contains("--coalesce-gap"));
}

#[test]
fn run_prints_a_summary_or_json_and_query_reads_the_lake() {
    let dir = fixture();
    let out = medallion(dir.path(), &["run", "pipeline.toml", "--lake", "lake"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.contains("by_kind") && summary.contains("positive: 1 violation(s)"),
        "{summary}"
    );

    let out = medallion(
        dir.path(),
        &[
            "query",
            "SELECT kind, n, total FROM by_kind ORDER BY kind",
            "--lake",
            "lake",
            "--format",
            "csv",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "kind,n,total\na,2,4.0\n");

    let out = medallion(
        dir.path(),
        &[
            "query",
            "SELECT _line, _error FROM events_raw_quarantine",
            "--lake",
            "lake",
            "--format",
            "json",
        ],
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["_line"], 5, "{rows}");

    // A second run has nothing new: JSON report says so.
    let out = medallion(
        dir.path(),
        &["run", "pipeline.toml", "--lake", "lake", "--json"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert!(
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["version"].is_null()),
        "{report}"
    );
}

#[test]
fn failures_exit_non_zero_and_say_what_failed() {
    let dir = fixture();
    std::fs::write(
        dir.path().join("bad.toml"),
        SPEC.replace("FROM events GROUP BY kind", "FROM nowhere GROUP BY kind"),
    )
    .unwrap();
    let out = medallion(dir.path(), &["run", "bad.toml"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("by_kind")
            && err.contains("unknown table `nowhere`")
            && err.contains("no table was changed"),
        "{err}"
    );
    assert!(!dir.path().join("lake").exists(), "nothing written");
    let out = medallion(dir.path(), &["run", "bad.toml", "--json"]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["changed_nothing"], true, "{report}");
    assert_eq!(report["committed"], serde_json::json!([]));
    assert!(
        report["error"].as_str().unwrap().contains("nowhere"),
        "{report}"
    );

    let out = medallion(
        dir.path(),
        &["query", "SELECT * FROM t", "--table", "t=missing.parquet"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing.parquet"),
        "{}",
        text(&out.stderr)
    );

    let out = medallion(dir.path(), &["inspect", "events.csv"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a Parquet file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn inspect_shows_row_groups_and_statistics() {
    let dir = fixture();
    assert!(medallion(dir.path(), &["run", "pipeline.toml"])
        .status
        .success());
    let file = std::fs::read_dir(dir.path().join("lake/gold/by_kind"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .unwrap()
        .path();
    let out = medallion(dir.path(), &["inspect", file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["num_rows"], 1);
    assert_eq!(s["row_groups"][0]["columns"][0]["min"], "a");
}
