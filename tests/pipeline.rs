//! The pipeline's guarantees on small hand-made inputs: dedupe, each expectation action,
//! quarantine, incremental runs, commit conflicts, and that a failed run changes nothing.

use medallion_core::delta::{DataFile, Snapshot, TableWrite, WriteMode};
use medallion_core::pipeline::{self, StagedCommit};
use medallion_core::Error;
use medallion_tests::{data_files, rows, run_spec, storage, versions, write};

const SPEC: &str = r#"
[pipeline]
name = "shop"

[bronze.orders_raw]
path = "in/orders/*.ndjson"
schema = { id = "bigint", customer = "string", qty = "bigint", updated = "timestamp" }

[silver.orders]
sql = "SELECT id, customer, qty, updated FROM orders_raw"
dedupe = { key = ["id"], order_by = "updated" }
expect = [
  { name = "has_customer", condition = "customer IS NOT NULL", on_violation = "warn" },
  { name = "positive_qty", condition = "qty > 0", on_violation = "drop" },
]

[gold.qty_per_customer]
sql = "SELECT customer, sum(qty) AS qty, count(*) AS orders FROM orders GROUP BY customer"
"#;

fn day1(dir: &std::path::Path) {
    write(
        &dir.join("in/orders/day1.ndjson"),
        concat!(
            r#"{"id":1,"customer":"ann","qty":2,"updated":"2026-01-01T10:00:00Z"}"#,
            "\n",
            r#"{"id":1,"customer":"ann","qty":3,"updated":"2026-01-01T12:00:00Z"}"#,
            "\n",
            r#"{"id":2,"customer":null,"qty":1,"updated":"2026-01-01T10:00:00Z"}"#,
            "\n",
            r#"{"id":3,"customer":"bob","qty":-4,"updated":"2026-01-01T10:00:00Z"}"#,
            "\n",
            r#"{"id":4,"customer":"bob","qty":5,"upd"#,
            "\n",
            r#"{"id":5,"customer":"bob","qty":"many","updated":"2026-01-01T10:00:00Z"}"#,
            "\n",
        ),
    );
}

#[tokio::test]
async fn dedupe_expectations_and_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    day1(dir.path());
    let report = run_spec(SPEC, dir.path(), &lake, 1).await.unwrap();

    let bronze = &report.tables[0];
    assert_eq!(
        (
            bronze.table.as_str(),
            bronze.rows_in,
            bronze.rows_out,
            bronze.quarantined
        ),
        ("orders_raw", 6, 4, 2)
    );
    // The malformed line and the wrong-typed one are in quarantine, with file and line.
    let q = rows(
        &lake.join("quarantine/orders_raw"),
        "SELECT _line, _error FROM t",
    )
    .await;
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(q[0].starts_with("5|invalid JSON"), "{q:?}");
    assert!(q[1].starts_with("6|"), "{q:?}");

    let silver = report.tables.iter().find(|t| t.table == "orders").unwrap();
    assert_eq!(silver.dropped, 1, "qty -4 dropped");
    assert_eq!(silver.deduplicated, 1, "id 1 kept once");
    let warn = silver
        .expectations
        .iter()
        .find(|e| e.name == "has_customer")
        .unwrap();
    assert_eq!(warn.violations, 1, "NULL customer counted, row kept");
    assert_eq!(
        rows(
            &lake.join("silver/orders"),
            "SELECT id, customer, qty FROM t"
        )
        .await,
        vec!["1|ann|3", "2|∅|1"],
        "latest version of id 1 wins; the null-customer row is kept (warn)"
    );
    let dropped = rows(
        &lake.join("quarantine/orders"),
        "SELECT id, _quarantine_reason FROM t",
    )
    .await;
    assert_eq!(
        dropped,
        vec!["3|expectation `positive_qty` violated: qty > 0"]
    );
    assert_eq!(
        rows(&lake.join("gold/qty_per_customer"), "SELECT * FROM t").await,
        vec!["ann|3|1", "∅|1|1"]
    );
}

#[tokio::test]
async fn incremental_runs_ingest_only_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    day1(dir.path());
    run_spec(SPEC, dir.path(), &lake, 1).await.unwrap();

    // Nothing new: no table gets a new version.
    let again = run_spec(SPEC, dir.path(), &lake, 1).await.unwrap();
    assert!(
        again.tables.iter().all(|t| t.version.is_none()),
        "{:#?}",
        again.tables
    );
    assert_eq!(again.tables[0].files_skipped, 1);
    assert_eq!(versions(&lake.join("gold/qty_per_customer")), vec![0]);

    // A new file with a late update of order 1 and a new order.
    write(
        &dir.path().join("in/orders/day2.ndjson"),
        concat!(
            r#"{"id":1,"customer":"ann","qty":7,"updated":"2026-01-02T09:00:00Z"}"#,
            "\n",
            r#"{"id":6,"customer":"cat","qty":1,"updated":"2026-01-02T09:00:00Z"}"#,
            "\n",
        ),
    );
    let third = run_spec(SPEC, dir.path(), &lake, 1).await.unwrap();
    let bronze = &third.tables[0];
    assert_eq!(
        (bronze.files_ingested, bronze.files_skipped, bronze.rows_in),
        (1, 1, 2)
    );
    assert_eq!(bronze.version, Some(1));
    assert_eq!(
        rows(
            &lake.join("bronze/orders_raw"),
            "SELECT count(*), count(DISTINCT _source_file) FROM t"
        )
        .await,
        vec!["6|2"]
    );
    assert_eq!(
        rows(&lake.join("gold/qty_per_customer"), "SELECT * FROM t").await,
        vec!["ann|7|1", "cat|1|1", "∅|1|1"]
    );
}

/// Each table's log versions and data-file count: what a failed run must not change.
fn table_state(lake: &std::path::Path) -> Vec<(Vec<u64>, usize)> {
    [
        "bronze/orders_raw",
        "silver/orders",
        "gold/qty_per_customer",
        "quarantine/orders_raw",
    ]
    .iter()
    .map(|t| (versions(&lake.join(t)), data_files(&lake.join(t))))
    .collect()
}

#[tokio::test]
async fn a_failing_expectation_changes_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    day1(dir.path());
    run_spec(SPEC, dir.path(), &lake, 1).await.unwrap();
    let before = table_state(&lake);

    write(
        &dir.path().join("in/orders/day2.ndjson"),
        concat!(
            r#"{"id":9,"customer":"dan","qty":0,"updated":"2026-01-02T09:00:00Z"}"#,
            "\n",
            "not json\n"
        ),
    );
    let strict = SPEC.replace(r#"on_violation = "drop""#, r#"on_violation = "fail""#);
    let err = run_spec(&strict, dir.path(), &lake, 1).await.unwrap_err();
    match &err {
        Error::ExpectationFailed {
            table,
            expectation,
            violations,
            sample,
        } => {
            assert_eq!(
                (table.as_str(), expectation.as_str()),
                ("orders", "positive_qty")
            );
            assert_eq!(*violations, 2, "qty -4 and qty 0");
            assert!(
                sample.contains("qty: -4") || sample.contains("qty: 0"),
                "{sample}"
            );
        }
        other => panic!("expected an expectation failure, got {other}"),
    }
    let after = table_state(&lake);
    assert_eq!(
        before, after,
        "versions and data files unchanged, staged files removed"
    );
}

#[tokio::test]
async fn concurrent_writers_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let location = table.to_string_lossy().into_owned();
    let s = storage();
    let batch = {
        use medallion_core::arrow::array::Int64Array;
        use medallion_core::arrow::record_batch::RecordBatch;
        RecordBatch::try_from_iter([("n", std::sync::Arc::new(Int64Array::from(vec![1, 2])) as _)])
            .unwrap()
    };
    let write = |run: &str| TableWrite {
        table: "t".into(),
        location: location.clone(),
        mode: WriteMode::Append,
        schema: batch.schema(),
        files: vec![DataFile {
            batches: vec![batch.clone()],
            tags: Default::default(),
        }],
        description: None,
        run_id: run.into(),
        now_ms: 0,
        commit_info: Default::default(),
        configuration: Default::default(),
        partition_by: vec![],
        txn: None,
        removes: Vec::new(),
    };
    // Through pipeline::commit, the path every run takes.
    let commit = |request: medallion_core::delta::CommitRequest, base: Option<u64>| {
        let s = s.clone();
        async move {
            let staged = StagedCommit::new("t", false, &request, base);
            pipeline::commit(s.as_ref(), vec![staged], 0).await
        }
    };
    let v0 = write("a").prepare(s.as_ref(), None).await.unwrap();
    commit(v0, None).await.unwrap();
    let base = Snapshot::load(s.as_ref(), &location).await.unwrap();
    let first = write("b").prepare(s.as_ref(), Some(&base)).await.unwrap();
    let second = write("c").prepare(s.as_ref(), Some(&base)).await.unwrap();
    assert_eq!(commit(first, Some(0)).await.unwrap()[0].version, 1);
    let err = commit(second, Some(0)).await.unwrap_err();
    assert!(
        matches!(err, Error::CommitConflict { version: 1, .. }),
        "{err}"
    );
    assert!(err.changed_nothing(), "{err}");
    assert_eq!(
        rows(&table, "SELECT count(*) FROM t").await,
        vec!["4"],
        "the loser's rows are not visible"
    );
    assert_eq!(data_files(&table), 2, "the loser's data file was removed");
}

#[tokio::test]
async fn errors_name_the_table_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    day1(dir.path());
    let lake = dir.path().join("lake");
    let bad_sql = SPEC.replace(
        "SELECT id, customer, qty, updated FROM orders_raw",
        "SELECT id, nope FROM orders_raw",
    );
    let err = run_spec(&bad_sql, dir.path(), &lake, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("silver table `orders`") && err.contains("nope"),
        "{err}"
    );
    assert!(
        !lake.join("bronze/orders_raw/_delta_log").exists(),
        "nothing committed: {err}"
    );

    let missing = SPEC.replace("in/orders/*.ndjson", "in/nothing/*.ndjson");
    let err = run_spec(&missing, dir.path(), &lake, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("orders_raw") && err.contains("no files match"),
        "{err}"
    );
}
