//! Alerts: the rows of a table that appear under a key the table's previous version did not
//! have, emitted once as NDJSON to stdout, a file or a webhook.
//!
//! A silver or gold table declares `alert = { key = [...] }`. For each new version `v` of the
//! table, the rows of `v` whose key is absent from `v - 1` are alerts (read through time
//! travel, so a key that leaves the table and comes back alerts again). How far a table's
//! alerts went out is recorded in `<lake>/_medallion/alerts/<table>.json`, written atomically
//! *after* the alerts were emitted; a restarted watcher walks from the recorded version to the
//! current one. The guarantee: no alert is lost, and one repeats only if the process died
//! between emitting it and recording that it did.
//!
//! Besides the sink the user names, alerts can go to subscribers in the same process
//! ([`Broadcast`]): the Server-Sent Events stream of `medallion serve --run … --watch`.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use medallion_core::arrow::array::RecordBatch;
use medallion_core::arrow::json::writer::{LineDelimited, WriterBuilder};
use medallion_core::delta::{self, At};
use medallion_core::query::{self, EngineOptions};
use medallion_core::storage::{join, Storage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// Where the alert state of a lake's tables lives, relative to the lake.
pub const STATE_DIR: &str = "_medallion/alerts";

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alerts of `{table}`: reading version {version}: {source}")]
    Read {
        table: String,
        version: u64,
        source: medallion_core::Error,
    },
    #[error(
        "alerts of `{table}`: the key column `{column}` is not in the table (columns: {columns})"
    )]
    KeyColumn {
        table: String,
        column: String,
        columns: String,
    },
    #[error("alert state {location}: {message}")]
    State { location: String, message: String },
    #[error("alert sink {target}: {message}")]
    Sink { target: String, message: String },
}

type Result<T> = std::result::Result<T, AlertError>;

/// Where alerts go: `-` (stdout), an `http(s)://` URL (one POST per alert), a file
/// (appended to), or subscribers in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertSink {
    Stdout,
    File(PathBuf),
    Webhook(String),
    Broadcast(Broadcast),
}

impl AlertSink {
    pub fn parse(target: &str) -> AlertSink {
        if target == "-" {
            AlertSink::Stdout
        } else if medallion_core::storage::is_url(target) {
            AlertSink::Webhook(target.to_string())
        } else {
            AlertSink::File(PathBuf::from(target))
        }
    }
}

impl std::fmt::Display for AlertSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlertSink::Stdout => write!(f, "stdout"),
            AlertSink::File(p) => write!(f, "{}", p.display()),
            AlertSink::Webhook(url) => write!(f, "{url}"),
            AlertSink::Broadcast(_) => write!(f, "subscribers in this process"),
        }
    }
}

/// Alerts kept for subscribers that reconnect: an SSE client that was away for a moment asks
/// for what it missed (Last-Event-ID), and gets it if it is among the last this many.
const RECENT_ALERTS: usize = 1000;

/// A fan-out of alerts to subscribers in this process, e.g. the SSE stream of
/// `medallion serve`. Each alert gets a sequence number (from 1); subscribers that fall more
/// than the channel's capacity behind lose the oldest, never hold up the emitter.
#[derive(Debug, Clone)]
pub struct Broadcast {
    inner: Arc<BroadcastInner>,
}

/// An alert's number in the stream (the SSE event id) and its JSON line.
pub type NumberedAlert = (u64, Arc<str>);

#[derive(Debug)]
struct BroadcastInner {
    live: broadcast::Sender<NumberedAlert>,
    /// The last [`RECENT_ALERTS`] alerts and the number of the next one, under one lock so that
    /// a subscriber's replay and its live feed neither overlap nor leave a gap.
    recent: Mutex<(VecDeque<NumberedAlert>, u64)>,
}

impl PartialEq for Broadcast {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Broadcast {}

impl Default for Broadcast {
    fn default() -> Self {
        Self::new()
    }
}

impl Broadcast {
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(RECENT_ALERTS);
        Broadcast {
            inner: Arc::new(BroadcastInner {
                live,
                recent: Mutex::new((VecDeque::new(), 1)),
            }),
        }
    }

    /// Hands one alert (a JSON line) to every subscriber.
    pub fn publish(&self, line: &str) {
        let mut recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        let id = recent.1;
        recent.1 += 1;
        let line: Arc<str> = Arc::from(line);
        recent.0.push_back((id, line.clone()));
        if recent.0.len() > RECENT_ALERTS {
            recent.0.pop_front();
        }
        // No subscriber is not an error: the alert is kept for replay only.
        let _ = self.inner.live.send((id, line));
    }

    /// A new subscription: the kept alerts numbered after `after` (none if `None`), then a
    /// receiver of every later one.
    pub fn subscribe(
        &self,
        after: Option<u64>,
    ) -> (Vec<NumberedAlert>, broadcast::Receiver<NumberedAlert>) {
        let recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        let replay = match after {
            Some(after) => recent
                .0
                .iter()
                .filter(|(id, _)| *id > after)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (replay, self.inner.live.subscribe())
    }
}

/// How far a table's alerts have gone out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Every version up to and including this one has been alerted.
    Through(u64),
    /// Nothing yet, and the table's whole history is to be alerted (it did not exist when
    /// alerting started).
    FromStart,
    /// Nothing yet, for a table that already had versions when alerting started: its latest
    /// version is alerted against an empty table (every current row once), not its history.
    LatestOnly,
}

/// The state file: `version` is the last version alerted, `null` for none yet.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    table: String,
    version: Option<u64>,
}

/// The state file of `table` in `lake`.
pub fn state_location(lake: &str, table: &str) -> String {
    join(lake, &format!("{STATE_DIR}/{table}.json"))
}

/// The recorded cursor of `table` (at `location`). With no record: a missing table starts
/// from its first version, and that is recorded at once so a crash before the first alert
/// cannot turn it into [`Cursor::LatestOnly`]; an existing table is [`Cursor::LatestOnly`].
pub async fn load_cursor(
    storage: &dyn Storage,
    lake: &str,
    table: &str,
    location: &str,
) -> Result<Cursor> {
    let state = state_location(lake, table);
    let err = |message: String| AlertError::State {
        location: state.clone(),
        message,
    };
    match storage.read(&state).await {
        Ok(bytes) => {
            let file: StateFile = serde_json::from_slice(&bytes)
                .map_err(|e| err(format!("not a Medallion alert state: {e}")))?;
            Ok(file.version.map_or(Cursor::FromStart, Cursor::Through))
        }
        Err(medallion_core::Error::NotFound { .. }) => {
            let exists = delta::latest_version(storage, location)
                .await
                .map_err(|e| err(e.to_string()))?
                .is_some();
            if exists {
                Ok(Cursor::LatestOnly)
            } else {
                record(storage, lake, table, None).await?;
                Ok(Cursor::FromStart)
            }
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Records that `table`'s alerts went out through `version` (temporary file, then rename).
pub async fn record(
    storage: &dyn Storage,
    lake: &str,
    table: &str,
    version: Option<u64>,
) -> Result<()> {
    let state = state_location(lake, table);
    let body = serde_json::to_vec(&StateFile {
        table: table.to_string(),
        version,
    })
    .unwrap_or_default();
    storage
        .put(&state, Bytes::from(body))
        .await
        .map_err(|e| AlertError::State {
            location: state,
            message: e.to_string(),
        })
}

/// A table that declares an alert.
#[derive(Debug, Clone)]
pub struct AlertTable {
    pub table: String,
    pub location: String,
    pub key: Vec<String>,
}

fn quote(column: &str) -> String {
    format!("\"{}\"", column.replace('"', "\"\""))
}

/// The rows of `table` at `version` whose key is not in `previous` (every row if `None`).
pub async fn new_rows(
    storage: &Arc<dyn Storage>,
    engine: EngineOptions,
    table: &AlertTable,
    previous: Option<u64>,
    version: u64,
) -> Result<Vec<RecordBatch>> {
    let read = |version: u64| {
        move |source| AlertError::Read {
            table: table.table.clone(),
            version,
            source,
        }
    };
    let ctx = query::new_context(engine);
    let location = format!("delta:{}", table.location);
    query::register_location_at(&ctx, storage, "cur", &location, At::Version(version))
        .await
        .map_err(read(version))?;
    let columns: Vec<String> = ctx
        .table("cur")
        .await
        .map(|df| {
            df.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    for column in &table.key {
        if !columns.contains(column) {
            return Err(AlertError::KeyColumn {
                table: table.table.clone(),
                column: column.clone(),
                columns: columns.join(", "),
            });
        }
    }
    let sql = match previous {
        None => "SELECT * FROM cur".to_string(),
        Some(p) => {
            query::register_location_at(&ctx, storage, "prev", &location, At::Version(p))
                .await
                .map_err(read(p))?;
            let on: Vec<String> = table
                .key
                .iter()
                .map(|k| format!("(c.{0} IS NOT DISTINCT FROM p.{0})", quote(k)))
                .collect();
            format!(
                "SELECT c.* FROM cur AS c LEFT ANTI JOIN prev AS p ON {}",
                on.join(" AND ")
            )
        }
    };
    let (_, batches) = query::collect_sql(&ctx, &table.table, &sql)
        .await
        .map_err(read(version))?;
    Ok(batches)
}

/// One NDJSON line per row: `{"table", "version", "key": {...}, "row": {...}, "at"}`.
pub fn alert_lines(
    table: &AlertTable,
    version: u64,
    batches: &[RecordBatch],
    at_ms: i64,
) -> Result<Vec<String>> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(Vec::new());
    let encoded = batches
        .iter()
        .try_for_each(|b| writer.write(b))
        .and_then(|_| writer.finish());
    encoded.map_err(|e| AlertError::Read {
        table: table.table.clone(),
        version,
        source: medallion_core::Error::Format {
            location: table.location.clone(),
            message: format!("rows to JSON: {e}"),
        },
    })?;
    let at = At::Timestamp(at_ms).to_string();
    let text = String::from_utf8_lossy(&writer.into_inner()).into_owned();
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Map<String, Value>>(line).ok())
        .map(|row| {
            let key: Map<String, Value> = table
                .key
                .iter()
                .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
                .collect();
            json!({ "table": table.table, "version": version, "key": key, "row": row, "at": at })
                .to_string()
        })
        .collect())
}

/// The alerts of every version after `cursor` up to `latest`, each version against the one
/// before it, and the cursor after them.
pub async fn alerts_since(
    storage: &Arc<dyn Storage>,
    engine: EngineOptions,
    table: &AlertTable,
    cursor: Cursor,
    latest: u64,
    now_ms: i64,
) -> Result<(Vec<String>, Cursor)> {
    let steps: Vec<(Option<u64>, u64)> = match cursor {
        Cursor::Through(v) => (v + 1..=latest).map(|v| (Some(v - 1), v)).collect(),
        Cursor::FromStart => std::iter::once((None, 0))
            .chain((1..=latest).map(|v| (Some(v - 1), v)))
            .collect(),
        Cursor::LatestOnly => vec![(None, latest)],
    };
    let mut lines = Vec::new();
    for (previous, version) in steps {
        let rows = new_rows(storage, engine, table, previous, version).await?;
        lines.extend(alert_lines(table, version, &rows, now_ms)?);
    }
    let after = match cursor {
        Cursor::Through(v) if v >= latest => cursor,
        _ => Cursor::Through(latest),
    };
    Ok((lines, after))
}

/// Alerts of one table up to a version, handed to the [`Emitter`].
struct Delivery {
    table: String,
    through: u64,
    lines: Vec<String>,
}

/// Delivers alerts to a sink in the background, in order, and records each table's state
/// once its alerts are out. The watcher never waits for it, except when it stops.
pub struct Emitter {
    sinks: Vec<AlertSink>,
    queue: mpsc::UnboundedSender<Delivery>,
    task: JoinHandle<()>,
}

/// Attempts per webhook POST (the first and retries); after one alert exhausts them, later
/// alerts get a single attempt each until one gets through, so a dead endpoint delays the
/// queue by one request per alert, not by a full backoff.
const WEBHOOK_ATTEMPTS: u32 = 5;

impl Emitter {
    /// Starts delivery to `sinks`, each alert to each in turn; state files go to `lake`. A
    /// file sink is opened (created, appended to) here, so an unwritable path fails at once.
    pub fn start(sinks: Vec<AlertSink>, storage: Arc<dyn Storage>, lake: &str) -> Result<Emitter> {
        let (queue, mut rx) = mpsc::unbounded_channel::<Delivery>();
        let mut outputs = sinks.iter().map(Output::open).collect::<Result<Vec<_>>>()?;
        let lake = lake.to_string();
        let task = tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if !d.lines.is_empty() {
                    for out in &mut outputs {
                        out.emit(&d.lines).await;
                    }
                }
                if let Err(e) = record(storage.as_ref(), &lake, &d.table, Some(d.through)).await {
                    eprintln!("warning: {e} (its alerts may be emitted again after a restart)");
                }
            }
        });
        Ok(Emitter { sinks, queue, task })
    }

    /// Where the alerts go, for messages: `alerts.ndjson, subscribers in this process`.
    pub fn sinks(&self) -> String {
        let names: Vec<String> = self.sinks.iter().map(|s| s.to_string()).collect();
        names.join(", ")
    }

    /// Queues `lines` (alerts of `table` through version `through`) for delivery.
    pub fn send(&self, table: &str, through: u64, lines: Vec<String>) {
        let _ = self.queue.send(Delivery {
            table: table.to_string(),
            through,
            lines,
        });
    }

    /// Delivers what is queued, records it, and stops; gives up after `patience` (a webhook
    /// that is down), leaving the undelivered alerts unrecorded, so a restart emits them.
    pub async fn finish(self, patience: Duration) {
        let sinks = self.sinks();
        drop(self.queue);
        let mut task = self.task;
        if tokio::time::timeout(patience, &mut task).await.is_err() {
            task.abort();
            eprintln!(
                "warning: alerts still undelivered to {} after {} s; they are emitted again on the next start",
                sinks,
                patience.as_secs()
            );
        }
    }
}

enum Output {
    Stdout,
    File {
        path: PathBuf,
        file: std::fs::File,
    },
    Webhook {
        url: String,
        client: reqwest::Client,
        down: bool,
    },
    Broadcast(Broadcast),
}

impl Output {
    fn open(sink: &AlertSink) -> Result<Output> {
        let fail = |message: String| AlertError::Sink {
            target: sink.to_string(),
            message,
        };
        Ok(match sink {
            AlertSink::Stdout => Output::Stdout,
            AlertSink::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| fail(e.to_string()))?;
                Output::File {
                    path: path.clone(),
                    file,
                }
            }
            AlertSink::Webhook(url) => Output::Webhook {
                url: url.clone(),
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| fail(e.to_string()))?,
                down: false,
            },
            AlertSink::Broadcast(b) => Output::Broadcast(b.clone()),
        })
    }

    /// Writes or posts the lines; failures are reported on stderr, never returned: a sink
    /// that is down must not stop the pipeline.
    async fn emit(&mut self, lines: &[String]) {
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                for line in lines {
                    if writeln!(out, "{line}").is_err() {
                        break;
                    }
                }
                let _ = out.flush();
            }
            Output::File { path, file } => {
                // One write per line (O_APPEND): a crash leaves whole lines only.
                let written = lines
                    .iter()
                    .try_for_each(|line| file.write_all(format!("{line}\n").as_bytes()))
                    .and_then(|_| file.sync_data());
                if let Err(e) = written {
                    eprintln!("error: writing alerts to {}: {e}", path.display());
                }
            }
            Output::Broadcast(b) => {
                for line in lines {
                    b.publish(line);
                }
            }
            Output::Webhook { url, client, down } => {
                for line in lines {
                    let attempts = if *down { 1 } else { WEBHOOK_ATTEMPTS };
                    match post(client, url, line, attempts).await {
                        Ok(()) => *down = false,
                        Err(why) => {
                            *down = true;
                            eprintln!(
                                "error: alert webhook {url}: {why}; alert not delivered: {line}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// POSTs one alert, retrying connection failures, timeouts, 408, 429 and 5xx with exponential
/// backoff and jitter (honouring `Retry-After` in seconds, up to 30 s).
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    attempts: u32,
) -> std::result::Result<(), String> {
    let mut wait = Duration::from_millis(250);
    let mut last = String::new();
    for attempt in 0..attempts {
        if attempt > 0 {
            // Jitter of up to half the wait, so that restarted watchers do not retry in step.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as u64);
            let jitter = Duration::from_millis(nanos % (wait.as_millis() as u64 / 2 + 1));
            tokio::time::sleep(wait + jitter).await;
            wait = (wait * 2).min(Duration::from_secs(8));
        }
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let status = r.status();
                let retryable = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                if !retryable {
                    return Err(format!("answered {status}"));
                }
                if let Some(secs) = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                {
                    wait = Duration::from_secs(secs.min(30));
                }
                last = format!("answered {status}");
            }
            Err(e) => last = format!("request failed: {e}"),
        }
    }
    Err(format!("{last} (gave up after {attempts} attempt(s))"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_by_target() {
        assert_eq!(AlertSink::parse("-"), AlertSink::Stdout);
        assert_eq!(
            AlertSink::parse("https://hooks.example.com/x"),
            AlertSink::Webhook("https://hooks.example.com/x".into())
        );
        assert_eq!(
            AlertSink::parse("alerts.ndjson"),
            AlertSink::File("alerts.ndjson".into())
        );
    }

    #[test]
    fn broadcast_replays_what_a_reconnecting_subscriber_missed() {
        let b = Broadcast::new();
        b.publish("a");
        let (replay, mut live) = b.subscribe(None);
        assert!(replay.is_empty(), "a new subscriber starts from now");
        b.publish("b");
        b.publish("c");
        assert_eq!(live.try_recv().unwrap(), (2, Arc::from("b")));
        let (replay, _) = b.subscribe(Some(1));
        let replay: Vec<(u64, &str)> = replay.iter().map(|(id, l)| (*id, l.as_ref())).collect();
        assert_eq!(replay, [(2, "b"), (3, "c")]);
        assert_eq!(AlertSink::Broadcast(b.clone()), AlertSink::Broadcast(b));
    }

    #[tokio::test]
    async fn cursor_is_recorded_before_a_new_table_exists() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().to_str().unwrap().to_string();
        let storage = crate::local_fs::LocalFs;
        let location = join(&lake, "gold/low");
        let c = load_cursor(&storage, &lake, "low", &location)
            .await
            .unwrap();
        assert_eq!(c, Cursor::FromStart);
        assert!(std::path::Path::new(&state_location(&lake, "low")).exists());
        record(&storage, &lake, "low", Some(4)).await.unwrap();
        let c = load_cursor(&storage, &lake, "low", &location)
            .await
            .unwrap();
        assert_eq!(c, Cursor::Through(4));
    }
}
