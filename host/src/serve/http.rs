//! The HTTP side of `medallion serve` (hyper, HTTP/1.1; HTTPS with the PostgreSQL port's
//! certificate when given `--tls-cert`, see [`super::tls`]):
//!
//! - `/lake/<path>`: the lake's files, read-only, through the same [`Storage`] the server
//!   queries (so an `s3://` lake is served too). GET and HEAD with single byte ranges (206,
//!   `Content-Range`; 416 when unsatisfiable), strong ETags, `If-None-Match` and `If-Range`, and
//!   the CORS headers a page on another origin needs. No listings: the npm package finds a Delta
//!   table's versions by probing its log, which plain files answer.
//! - `/`: the dashboard (web/) and the npm package files its import map names (`/wasm/js/`,
//!   `/wasm/pkg/`, `/node_modules/`), read from the repository's folders. The page reads the
//!   lake at `./lake`, which is `/lake/` here, so it needs no parameter.
//! - `/api/report`: the last batch report of the pipeline this process watches.
//! - `/api/alerts`: Server-Sent Events, one `alert` event per alert of that pipeline; a client
//!   that reconnects with `Last-Event-ID` gets the alerts it missed (of the last thousand).
//!
//! Paths are percent-decoded and then refused if a segment is empty, `.`/`..` or starts with a
//! dot (temporary files, `.git`); nothing outside the lake and the dashboard's folders is
//! reachable. With a password (any bind beyond loopback) every request but a CORS preflight
//! needs HTTP Basic authentication as user `medallion`.

use std::convert::Infallible;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use futures::stream::{self, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use medallion_core::storage::{join, ObjectMeta, Storage};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{Live, USER};
use crate::local_fs::LocalFs;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
// Unsync: a body stream holds storage futures, which are Send but not Sync.
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Bytes read from storage per body chunk: a large file is streamed, never held whole.
const CHUNK: u64 = 1 << 20;
/// A comment line this often keeps an idle SSE connection (and proxies on the way) open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Everything the HTTP side serves.
#[derive(Debug)]
pub struct Site {
    storage: Arc<dyn Storage>,
    lake: String,
    /// The dashboard's folder (index.html, app.js, style.css).
    web: PathBuf,
    /// The repository (or package) root the import map reaches with `../`: `wasm/js`,
    /// `wasm/pkg` and `node_modules` below it.
    root: PathBuf,
    /// The dashboard's files are local whatever the lake is.
    files: Arc<dyn Storage>,
    live: Live,
    /// The whole `Authorization` header a request must carry, when a password is set.
    authorization: Option<String>,
}

impl Site {
    pub fn new(
        storage: Arc<dyn Storage>,
        lake: &str,
        web: &Path,
        live: Live,
        password: Option<&str>,
    ) -> Site {
        use base64::Engine as _;
        let root = web.parent().unwrap_or(web).to_path_buf();
        Site {
            storage,
            lake: lake.trim_end_matches('/').to_string(),
            web: web.to_path_buf(),
            root,
            files: Arc::new(LocalFs),
            live,
            authorization: password.map(|p| {
                let credentials =
                    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{p}"));
                format!("Basic {credentials}")
            }),
        }
    }

    /// What is wrong with the dashboard's files, if anything: said on the page and at start.
    pub fn dashboard_problem(&self) -> Option<String> {
        if !self.web.join("index.html").is_file() {
            return Some(format!(
                "the dashboard's files are not at {} (pass --web DIR, the repository's web/ folder)",
                self.web.display()
            ));
        }
        let wasm = self.root.join("wasm/pkg/medallion_wasm_bg.wasm");
        if !wasm.is_file() {
            return Some(format!(
                "the npm package is not built ({} is missing): run `npm run build` in {}",
                wasm.display(),
                self.root.display()
            ));
        }
        None
    }
}

/// Accepts connections until the process stops; each is served on its own task, over TLS
/// when given an acceptor (`--tls-cert`).
pub async fn run(listener: tokio::net::TcpListener, site: Arc<Site>, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                eprintln!("HTTP: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let site = site.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, site).await;
            };
            if !speaks_tls(&stream).await {
                return refuse_plain_http(stream).await;
            }
            // A client that never finishes its handshake must not hold a task forever; one that
            // fails it (an untrusted certificate) is not worth a log line.
            if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
                serve_connection(stream, site).await;
            }
        });
    }
}

/// Time a client has to complete the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

async fn serve_connection<S>(stream: S, site: Arc<Site>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let site = site.clone();
        async move { Ok::<_, Infallible>(site.handle(req).await) }
    });
    // A client that goes away mid-answer is not worth a log line.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// Whether a connection starts with a TLS handshake record (a browser pointed at `http://` of
/// an HTTPS port sends `GET` instead).
async fn speaks_tls(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(HANDSHAKE, stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == 0x16
    )
}

/// Tells a plain-HTTP client to use https, rather than dropping it with a handshake error it
/// cannot explain.
async fn refuse_plain_http(stream: tokio::net::TcpStream) {
    let service = hyper::service::service_fn(|_req| async {
        let mut r = error(
            StatusCode::BAD_REQUEST,
            "this port serves HTTPS (medallion serve --tls-cert): use https:// with the same address",
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(r)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

impl Site {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let mut response = self.route(&req).await;
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Content-Range, Content-Length, ETag, Accept-Ranges"),
        );
        response
    }

    async fn route(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.method() == Method::OPTIONS {
            // A CORS preflight: browsers send it without credentials.
            let mut r = respond(StatusCode::NO_CONTENT, empty());
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Range, If-None-Match, If-Range, Last-Event-ID"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            return r;
        }
        if let Some(want) = &self.authorization {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !same_bytes(given, want.as_bytes()) {
                let mut r = error(StatusCode::UNAUTHORIZED, "log in as user `medallion`");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"medallion\", charset=\"UTF-8\""),
                );
                return r;
            }
        }
        let head = req.method() == Method::HEAD;
        if !(head || req.method() == Method::GET) {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "the server is read-only");
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            return r;
        }
        let path = req.uri().path();
        match path {
            "/api/report" => return self.report(),
            "/api/alerts" => return self.alerts(req.headers(), head),
            "/" | "/index.html" => {
                if let Some(problem) = self.dashboard_problem() {
                    return problem_page(&problem);
                }
            }
            _ => {}
        }
        let (storage, location): (Arc<dyn Storage>, String) =
            if let Some(rest) = path.strip_prefix("/lake/") {
                if rest.is_empty() || rest.ends_with('/') {
                    return error(StatusCode::NOT_FOUND, "folders are not listed");
                }
                match safe_relative(rest) {
                    Ok(rel) => (self.storage.clone(), join(&self.lake, &rel)),
                    Err(why) => return error(StatusCode::BAD_REQUEST, &why),
                }
            } else {
                let rest = path.trim_start_matches('/');
                let rel = match safe_relative(if rest.is_empty() { "index.html" } else { rest }) {
                    Ok(rel) => rel,
                    Err(why) => return error(StatusCode::BAD_REQUEST, &why),
                };
                // The import map's `../wasm/js/index.js` resolves to /wasm/js/index.js from `/`.
                let file = if ["wasm/js/", "wasm/pkg/", "node_modules/"]
                    .iter()
                    .any(|p| rel.starts_with(p))
                {
                    self.root.join(&rel)
                } else {
                    self.web.join(&rel)
                };
                (self.files.clone(), file.to_string_lossy().into_owned())
            };
        serve_object(storage, &location, req.headers(), head).await
    }

    fn report(&self) -> Response<Body> {
        let Some(slot) = &self.live.report else {
            return error(
                StatusCode::NOT_FOUND,
                "this server runs no pipeline (start it with --run PIPELINE.toml --watch)",
            );
        };
        match slot.get() {
            Some(report) => json_response(StatusCode::OK, &report),
            None => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the pipeline's first run has not finished yet",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
        }
    }

    fn alerts(&self, headers: &HeaderMap, head: bool) -> Response<Body> {
        let Some(broadcast) = &self.live.alerts else {
            return error(
                StatusCode::NOT_FOUND,
                "no watched pipeline runs in this server (start it with --run PIPELINE.toml --watch)",
            );
        };
        let mut r = respond(StatusCode::OK, empty());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if head {
            return r;
        }
        let after = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let (replay, receiver) = broadcast.subscribe(after);
        let mut first = String::from("retry: 2000\n: alerts of the watched pipeline\n\n");
        let mut last = after.unwrap_or(0);
        for (id, line) in &replay {
            first.push_str(&sse_event(*id, line));
            last = last.max(*id);
        }
        let events = stream::unfold(
            (Some(first), receiver, last),
            |(first, mut receiver, last)| async move {
                if let Some(first) = first {
                    return Some((first, (None, receiver, last)));
                }
                loop {
                    match tokio::time::timeout(KEEPALIVE, receiver.recv()).await {
                        Err(_) => return Some((": keepalive\n\n".into(), (None, receiver, last))),
                        // Already sent in the replay.
                        Ok(Ok((id, _))) if id <= last => continue,
                        Ok(Ok((id, line))) => {
                            return Some((sse_event(id, &line), (None, receiver, id)))
                        }
                        Ok(Err(RecvError::Lagged(n))) => {
                            let note =
                                format!(": {n} alert(s) skipped, this client fell behind\n\n");
                            return Some((note, (None, receiver, last)));
                        }
                        Ok(Err(RecvError::Closed)) => return None,
                    }
                }
            },
        )
        .map(|text| Ok::<_, BoxError>(Frame::data(Bytes::from(text))));
        *r.body_mut() = BodyExt::boxed_unsync(StreamBody::new(events));
        r
    }
}

fn sse_event(id: u64, line: &str) -> String {
    // An alert is one JSON line; a stray newline would end the event early.
    let data = line.replace(['\r', '\n'], " ");
    format!("id: {id}\nevent: alert\ndata: {data}\n\n")
}

/// `a/b%20c/d` → `a/b c/d`, refusing what could leave the folder it is joined to or reach a
/// hidden file.
fn safe_relative(raw: &str) -> Result<String, String> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "the path is not UTF-8".to_string())?;
    for segment in decoded.split('/') {
        if segment.is_empty() || segment.starts_with('.') || segment.contains(['\\', '\0']) {
            return Err(format!(
                "refused the path `{raw}`: empty, `.`, `..` and hidden segments are not served"
            ));
        }
    }
    Ok(decoded.into_owned())
}

/// One object with Range, ETag and conditional requests; the body streams in chunks.
async fn serve_object(
    storage: Arc<dyn Storage>,
    location: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let meta = match storage.head(location).await {
        Ok(meta) => meta,
        Err(medallion_core::Error::NotFound { .. }) => {
            return error(StatusCode::NOT_FOUND, "no such file")
        }
        // A local folder is not an object (no listings), whatever the error says.
        Err(_) if Path::new(location).is_dir() => {
            return error(StatusCode::NOT_FOUND, "no such file")
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let etag = etag(&meta);
    let header_is = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let mut r = respond(StatusCode::OK, empty());
    {
        let h = r.headers_mut();
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        // Tables change under the same names (_last_checkpoint): revalidate, cheaply by ETag.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if let Some(tags) = header_is(header::IF_NONE_MATCH) {
        if tags == "*" || tags.split(',').any(|t| t.trim() == etag) {
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return r;
        }
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(location)),
    );
    let size = meta.size;
    // If-Range: the range only applies to the version the client already has part of.
    let range_applies = header_is(header::IF_RANGE).is_none_or(|t| t == etag);
    let range = match header_is(header::RANGE).filter(|_| range_applies) {
        None => None,
        Some(spec) => match parse_range(spec, size) {
            RangeSpec::Ignore => None,
            RangeSpec::Unsatisfiable => {
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                insert(
                    r.headers_mut(),
                    header::CONTENT_RANGE,
                    &format!("bytes */{size}"),
                );
                r.headers_mut().remove(header::CONTENT_TYPE);
                return r;
            }
            RangeSpec::Bytes(range) => Some(range),
        },
    };
    let span = match range {
        Some(range) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            insert(
                r.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{size}", range.start, range.end - 1),
            );
            range
        }
        None => 0..size,
    };
    insert(
        r.headers_mut(),
        header::CONTENT_LENGTH,
        &(span.end - span.start).to_string(),
    );
    if !head && span.end > span.start {
        *r.body_mut() = chunks(storage, location, span);
    }
    r
}

/// The bytes of `span` read in [`CHUNK`]s as the client takes them.
fn chunks(storage: Arc<dyn Storage>, location: &str, span: Range<u64>) -> Body {
    let location = location.to_string();
    let body = stream::unfold(span.start, move |at| {
        let storage = storage.clone();
        let location = location.clone();
        let end = span.end;
        async move {
            if at >= end {
                return None;
            }
            let next = (at + CHUNK).min(end);
            let read = storage
                .read_range(&location, at..next)
                .await
                .map(Frame::data)
                .map_err(|e| BoxError::from(e.to_string()));
            // After a failed read the stream ends; hyper then drops the connection, so the
            // client sees a short body rather than a wrong one.
            let next = if read.is_ok() { next } else { end };
            Some((read, next))
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(body))
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` as RFC 9110 reads them: one range of a satisfiable
/// kind is answered; any other unit, several ranges or bad syntax are ignored (the whole
/// file); a valid range that starts past the end (or asks for the last 0 bytes) is 416.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    Ignore,
    Unsatisfiable,
    Bytes(Range<u64>),
}

fn parse_range(header: &str, size: u64) -> RangeSpec {
    let Some(spec) = header
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| header[6..].trim())
    else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeSpec::Ignore;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes(size.saturating_sub(n)..size),
            None => RangeSpec::Ignore,
        },
        (false, true) => match number(first) {
            Some(a) if a >= size => RangeSpec::Unsatisfiable,
            Some(a) => RangeSpec::Bytes(a..size),
            None => RangeSpec::Ignore,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if b < a => RangeSpec::Ignore,
            (Some(a), Some(_)) if a >= size => RangeSpec::Unsatisfiable,
            (Some(a), Some(b)) => RangeSpec::Bytes(a..b.saturating_add(1).min(size)),
            _ => RangeSpec::Ignore,
        },
        (true, true) => RangeSpec::Ignore,
    }
}

/// The store's ETag (quoted, as HTTP wants), else one made of the size and modification time.
fn etag(meta: &ObjectMeta) -> String {
    match &meta.etag {
        Some(t) if t.starts_with('"') || t.starts_with("W/") => t.clone(),
        Some(t) => format!("\"{t}\""),
        None => format!(
            "\"{:x}-{:x}\"",
            meta.size,
            meta.last_modified_ms.unwrap_or_default()
        ),
    }
}

fn content_type(location: &str) -> &'static str {
    let ext = location
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map_or("", |(_, ext)| ext);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "csv" => "text/csv; charset=utf-8",
        "md" | "txt" | "ts" => "text/plain; charset=utf-8",
        "parquet" => "application/vnd.apache.parquet",
        _ => "application/octet-stream",
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of a password.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn empty() -> Body {
    BodyExt::boxed_unsync(Empty::<Bytes>::new().map_err(|never| match never {}))
}

fn full(bytes: impl Into<Bytes>) -> Body {
    BodyExt::boxed_unsync(Full::new(bytes.into()).map_err(|never| match never {}))
}

fn respond(status: StatusCode, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = respond(status, full(value.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// The page `/` shows when the dashboard cannot run, saying what to do.
fn problem_page(problem: &str) -> Response<Body> {
    let escaped = problem
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let html = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Medallion dashboard unavailable</title>\
         <body><h1>The dashboard cannot be served</h1><p>{escaped}</p>\
         <p>The lake's files are still served at <a href=\"/lake/\">/lake/</a>, and the PostgreSQL protocol is unaffected.</p></body></html>"
    );
    let mut r = respond(StatusCode::SERVICE_UNAVAILABLE, full(html));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-9", 100), Bytes(0..10));
        assert_eq!(parse_range("bytes=90-200", 100), Bytes(90..100));
        assert_eq!(parse_range("bytes=10-", 100), Bytes(10..100));
        assert_eq!(parse_range("bytes=-10", 100), Bytes(90..100));
        assert_eq!(parse_range("bytes=-1000", 100), Bytes(0..100));
        assert_eq!(parse_range("BYTES=1-1", 100), Bytes(1..2));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignore);
        assert_eq!(parse_range("items=0-1", 100), Ignore);
        assert_eq!(parse_range("bytes=a-b", 100), Ignore);
        assert_eq!(parse_range("bytes=-", 100), Ignore);
    }

    #[test]
    fn paths_stay_inside() {
        assert_eq!(
            safe_relative("gold/t/_delta_log/0.json").unwrap(),
            "gold/t/_delta_log/0.json"
        );
        assert_eq!(safe_relative("a%20b/c%3Dd").unwrap(), "a b/c=d");
        for bad in [
            "../x",
            "a/../../x",
            "%2e%2e/x",
            "a//b",
            ".git/config",
            "a/.x.tmp",
            "",
            "a%5cb",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn etags_are_quoted() {
        let meta = |etag: Option<&str>| ObjectMeta {
            location: "x".into(),
            size: 255,
            last_modified_ms: Some(16),
            etag: etag.map(str::to_string),
        };
        assert_eq!(etag(&meta(None)), "\"ff-10\"");
        assert_eq!(etag(&meta(Some("abc"))), "\"abc\"");
        assert_eq!(etag(&meta(Some("\"abc\""))), "\"abc\"");
    }
}
