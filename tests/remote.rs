//! Remote Parquet over HTTP Range requests, against a real local HTTP server
//! (`tests/rangeserve.py`) that counts requests and misbehaves on purpose.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use medallion_core::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use medallion_core::parquet::arrow::ArrowWriter;
use medallion_core::parquet::file::properties::WriterProperties;
use medallion_core::query::{collect_sql, new_context, register_location, EngineOptions};
use medallion_core::storage::{CountingStorage, IoStats, Storage};
use medallion_host::http::{HttpSettings, HttpStorage};

/// A rangeserve.py process serving one folder; killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(root: &std::path::Path, fault: &str) -> Server {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/rangeserve.py");
        let mut child = Command::new("python3")
            .args([
                script,
                root.to_str().unwrap(),
                "--port",
                "0",
                "--fault",
                fault,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 tests/rangeserve.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(
            base.starts_with("http://127.0.0.1:"),
            "unexpected first line: {line}"
        );
        Server { child, base }
    }

    /// What the server counted: `requests`, `bytes`, and `log` ([method, path, range, …]).
    async fn counters(&self) -> serde_json::Value {
        let text = reqwest::get(format!("{}/__stats", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// (requests, body bytes) the server has answered.
    async fn stats(&self) -> (u64, u64) {
        let v = self.counters().await;
        (
            v["requests"].as_u64().unwrap(),
            v["bytes"].as_u64().unwrap(),
        )
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 200k rows sorted by id in 20 row groups: id, value, a wide text column.
fn write_fixture(dir: &std::path::Path) -> u64 {
    let n = 200_000i64;
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter_values(0..n)) as _),
        (
            "value",
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| (i % 97) as f64),
            )) as _,
        ),
        (
            "note",
            Arc::new(StringArray::from_iter_values((0..n).map(|i| {
                format!("note number {i:>12} ---------------------------------")
            }))) as _,
        ),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(10_000))
        .build();
    let path = dir.join("t.parquet");
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    std::fs::metadata(&path).unwrap().len()
}

fn http(settings: HttpSettings) -> (Arc<dyn Storage>, Arc<IoStats>) {
    let counting = Arc::new(CountingStorage::new(Arc::new(HttpStorage::new(settings))));
    let stats = counting.stats();
    (counting, stats)
}

fn quick() -> HttpSettings {
    HttpSettings {
        retries: 2,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

async fn query(
    storage: &Arc<dyn Storage>,
    url: &str,
    sql: &str,
) -> medallion_core::Result<Vec<RecordBatch>> {
    let ctx = new_context(EngineOptions::default());
    register_location(&ctx, storage, "t", url).await?;
    Ok(collect_sql(&ctx, "test", sql).await?.1)
}

fn first_i64(batches: &[RecordBatch]) -> i64 {
    i64_at(batches, 0)
}

/// The first row's value in `column`, an Int64 column.
fn i64_at(batches: &[RecordBatch], column: usize) -> i64 {
    batches[0]
        .column(column)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test]
async fn reads_only_what_the_query_needs() {
    let dir = tempfile::tempdir().unwrap();
    let size = write_fixture(dir.path());
    let server = Server::start(dir.path(), "none");
    let url = server.url("t.parquet");

    let (storage, stats) = http(HttpSettings::default());
    let got = query(&storage, &url, "SELECT count(*) FROM t")
        .await
        .unwrap();
    assert_eq!(first_i64(&got), 200_000);
    assert_eq!(
        stats.counts().read_requests,
        1,
        "count(*) is answered from the footer, read with one suffix request"
    );
    // ... and from its row count (the 200,000 rows `write_fixture` wrote): no scan is planned.
    let plan = query(&storage, &url, "EXPLAIN SELECT count(*) FROM t")
        .await
        .unwrap();
    let physical = medallion_tests::physical_plan(&plan);
    assert!(
        physical.contains("200000") && !physical.contains("DataSourceExec"),
        "count(*) should be the footer's count, not a scan:\n{physical}"
    );

    let (storage, stats) = http(HttpSettings::default());
    let got = query(&storage, &url, "SELECT count(*) FROM t WHERE id = 123456")
        .await
        .unwrap();
    assert_eq!(first_i64(&got), 1);
    let c = stats.counts();
    assert!(
        c.read_requests <= 1 + 3,
        "point lookup: footer + at most 3 requests, got {}",
        c.read_requests
    );
    assert!(
        c.bytes_read < size / 10,
        "point lookup read {} of {size} bytes",
        c.bytes_read
    );

    let (storage, stats) = http(HttpSettings::default());
    let got = query(&storage, &url, "SELECT sum(value) FROM t")
        .await
        .unwrap();
    assert_eq!(got[0].num_rows(), 1);
    assert!(
        stats.counts().bytes_read < size / 2,
        "one narrow column of three: {} of {size}",
        stats.counts().bytes_read
    );
}

/// A URL with a query (a presigned URL's signature, a version to bust caches) is one file:
/// its `?` is no wildcard, and it is Parquet by the name before the query.
#[tokio::test]
async fn a_url_with_a_query_is_one_file() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let server = Server::start(dir.path(), "none");
    let url = format!(
        "{}?X-Amz-Credential=AKIA%2F20261203&X-Amz-Signature=0f3a@9&v=2",
        server.url("t.parquet")
    );

    let (storage, stats) = http(HttpSettings::default());
    // sum(id) makes it read a column, not only the footer's count.
    let got = query(&storage, &url, "SELECT count(*), sum(id) FROM t")
        .await
        .unwrap();
    assert_eq!(first_i64(&got), 200_000);
    assert_eq!(
        i64_at(&got, 1),
        199_999 * 200_000 / 2,
        "ids 0..200000, as written"
    );
    assert_eq!(stats.counts().list_requests, 0, "not listed as a glob");
    // Every request asked for the file itself, with its query: none looked for a Delta log
    let log = server.counters().await;
    let requests: Vec<(&str, &str)> = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap(), r[1].as_str().unwrap()))
        .collect();
    // ... and were reads of ranges, as for any one file (its size comes with the footer).
    let own = &url[server.base.len()..];
    assert!(
        requests.len() >= 2 && requests.iter().all(|r| *r == ("GET", own)),
        "requests: {requests:?}"
    );
}

/// A host that answers every path with its app's page (200) must not look like a Delta log
/// with endless commits: probing the log stops with an error that says why.
#[tokio::test]
async fn a_server_that_answers_every_path_is_not_probed_forever() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let server = Server::start(dir.path(), "catch-all");
    let (storage, _) = http(quick());
    for location in [
        format!("delta:{}", server.url("lake/gold/sales")),
        server.url("lake/gold/sales"),
    ] {
        let err = tokio::time::timeout(
            Duration::from_secs(30),
            query(&storage, &location, "SELECT 1"),
        )
        .await
        .expect("registering must not hang")
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&server.url("lake/gold/sales")) && err.contains("cannot exist"),
            "{location}: {err}"
        );
    }
    let (requests, _) = server.stats().await;
    assert!(requests <= 2 * 11, "two registrations, {requests} requests");
    // The file itself still reads, by its name.
    let got = query(&storage, &server.url("t.parquet"), "SELECT count(*) FROM t")
        .await
        .unwrap();
    assert_eq!(first_i64(&got), 200_000);
}

#[tokio::test]
async fn a_server_that_ignores_range_is_read_once_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let size = write_fixture(dir.path());
    let server = Server::start(dir.path(), "ignore-range");
    let url = server.url("t.parquet");

    let (storage, stats) = http(quick());
    let got = query(&storage, &url, "SELECT count(*) FROM t WHERE id < 10")
        .await
        .unwrap();
    assert_eq!(first_i64(&got), 10);
    assert_eq!(server.stats().await, (1, size), "the whole body, once");
    assert!(
        stats.counts().bytes_read < size,
        "the query still used only what it needed"
    );

    let (storage, _) = http(HttpSettings {
        max_full_body: size / 2,
        ..quick()
    });
    let err = query(&storage, &url, "SELECT count(*) FROM t")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ignores Range") && err.contains(&url), "{err}");
}

#[tokio::test]
async fn http_errors_name_the_url_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let size = write_fixture(dir.path());

    let server = Server::start(dir.path(), "none");
    let (storage, _) = http(quick());
    let err = query(&storage, &server.url("missing.parquet"), "SELECT 1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not found") && err.contains("missing.parquet"),
        "{err}"
    );
    let err = storage
        .read_range(&server.url("t.parquet"), size + 10..size + 20)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("range not satisfiable")
            && err.contains(&format!("bytes {}-{}", size + 10, size + 19)),
        "{err}"
    );

    for (fault, expect) in [
        ("status-500", "server error 500"),
        ("truncate", "truncated"),
        ("drop", ""),
    ] {
        let server = Server::start(dir.path(), fault);
        let (storage, stats) = http(quick());
        let result = storage.read_range(&server.url("t.parquet"), 0..1000).await;
        if fault == "drop" {
            // Every other connection is dropped: a retry gets through.
            assert_eq!(result.unwrap().len(), 1000);
            continue;
        }
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains(expect)
                && err.contains("bytes 0-999")
                && err.contains("gave up after 3 attempts"),
            "{fault}: {err}"
        );
        assert_eq!(stats.counts().read_requests, 1, "one logical read");
    }

    let server = Server::start(dir.path(), "flaky");
    let (storage, _) = http(quick());
    let got = query(
        &storage,
        &server.url("t.parquet"),
        "SELECT count(*) FROM t WHERE id < 5",
    )
    .await
    .unwrap();
    assert_eq!(first_i64(&got), 5, "503 on every other request is retried");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let server = Server::start(dir.path(), "slow");
    let (storage, _) = http(HttpSettings {
        timeout: Duration::from_millis(500),
        ..quick()
    });
    let started = std::time::Instant::now();
    let err = storage
        .read_range(&server.url("t.parquet"), 0..10)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("timed out") && err.contains("t.parquet"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_file_changing_mid_query_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let server = Server::start(dir.path(), "etag-flip");
    let (storage, _) = http(quick());
    let err = query(
        &storage,
        &server.url("t.parquet"),
        "SELECT sum(value) FROM t",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("changed while being read"), "{err}");
}
