//! The core's [`Storage`] over HTTP(S) for native runs: range reads with `Range` headers,
//! read-only. Every way a server can misbehave ends in an error that names the URL and the
//! byte range, or in a bounded retry — never in silently wrong or unbounded data:
//!
//! - a server that ignores `Range` (answers 200 with the whole file) is served from one
//!   download of the body if it is at most [`HttpSettings::max_full_body`] bytes, else refused;
//! - 404 is [`Error::NotFound`]; 416 and other 4xx are errors at once;
//! - 5xx, dropped connections and truncated bodies are retried with exponential backoff,
//!   [`HttpSettings::retries`] times;
//! - a slow server hits [`HttpSettings::timeout`];
//! - a file whose ETag changes between requests (rewritten while being read) is an error.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use medallion_core::storage::{ObjectMeta, Storage};
use medallion_core::{Error, Result};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, RANGE};
use reqwest::StatusCode;

#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Attempts after the first, for 5xx, dropped connections and truncated bodies.
    pub retries: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
    /// Longest time one request may take, headers and body.
    pub timeout: Duration,
    /// The largest whole-file body accepted from a server that ignores `Range`.
    pub max_full_body: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff: Duration::from_millis(100),
            timeout: Duration::from_secs(30),
            max_full_body: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
pub struct HttpStorage {
    /// Built on the first request: building it reads the system's root certificates, which
    /// was about a tenth of a local `medallion query`'s start.
    client: OnceLock<reqwest::Client>,
    settings: HttpSettings,
    /// The first ETag seen per URL: a different one later means the file changed.
    etags: Mutex<HashMap<String, String>>,
    /// Whole bodies of files whose server ignored `Range`.
    bodies: Mutex<HashMap<String, Bytes>>,
}

fn io(url: &str, range: Option<Range<u64>>, message: impl Into<String>) -> Error {
    Error::Io {
        location: url.to_string(),
        range,
        message: message.into(),
    }
}

/// What one attempt ended in: a final answer, or something worth trying again.
enum Attempt<T> {
    Done(Result<T>),
    Retry(String),
}

impl HttpStorage {
    pub fn new(settings: HttpSettings) -> Self {
        Self {
            client: OnceLock::new(),
            settings,
            etags: Mutex::default(),
            bodies: Mutex::default(),
        }
    }

    /// The client, built for the first request (to `url`, named if that fails).
    fn client(&self, url: &str) -> Result<&reqwest::Client> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .timeout(self.settings.timeout)
            .connect_timeout(self.settings.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| io(url, None, format!("cannot start the HTTP client: {e}")))?;
        Ok(self.client.get_or_init(|| client))
    }

    fn cached_body(&self, url: &str) -> Option<Bytes> {
        self.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(url)
            .cloned()
    }

    fn check_etag(
        &self,
        url: &str,
        response: &reqwest::Response,
        range: &Option<Range<u64>>,
    ) -> Result<Option<String>> {
        let Some(tag) = response.headers().get(ETAG).and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let mut etags = self.etags.lock().unwrap_or_else(|e| e.into_inner());
        match etags.get(url) {
            Some(first) if first != tag => Err(io(
                url,
                range.clone(),
                format!("the file changed while being read (ETag was {first}, now {tag}); re-run the query"),
            )),
            Some(_) => Ok(Some(tag.to_string())),
            None => {
                etags.insert(url.to_string(), tag.to_string());
                Ok(Some(tag.to_string()))
            }
        }
    }

    /// Sends a request, retrying what is worth retrying; `handle` turns a response into a result.
    async fn with_retries<T, F, Fut>(
        &self,
        url: &str,
        range: Option<Range<u64>>,
        send: impl Fn() -> reqwest::RequestBuilder,
        handle: F,
    ) -> Result<T>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let mut wait = self.settings.backoff;
        let mut last = String::new();
        for attempt in 0..=self.settings.retries {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            let outcome = match send().send().await {
                Ok(response) if response.status().is_server_error() => {
                    Attempt::Retry(format!("server error {}", response.status()))
                }
                Ok(response) => handle(response).await,
                Err(e) if e.is_timeout() => {
                    return Err(io(
                        url,
                        range,
                        format!("timed out after {:?}", self.settings.timeout),
                    ));
                }
                Err(e) => Attempt::Retry(format!("connection failed: {}", root_cause(&e))),
            };
            match outcome {
                Attempt::Done(result) => return result,
                Attempt::Retry(why) => last = why,
            }
        }
        Err(io(
            url,
            range,
            format!(
                "{last} (gave up after {} attempts)",
                self.settings.retries + 1
            ),
        ))
    }

    /// Reads the body of a 200 answer to a range request, if it is small enough to keep.
    async fn whole_body(
        &self,
        url: &str,
        response: reqwest::Response,
        range: &Option<Range<u64>>,
    ) -> Attempt<Bytes> {
        let length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        match length {
            Some(n) if n <= self.settings.max_full_body => {}
            other => {
                return Attempt::Done(Err(io(
                    url,
                    range.clone(),
                    format!(
                        "the server ignores Range requests and would send the whole file ({}); refusing to download more than {} bytes",
                        other.map(|n| format!("{n} bytes")).unwrap_or_else(|| "of unknown size".into()),
                        self.settings.max_full_body
                    ),
                )))
            }
        }
        match response.bytes().await {
            Ok(body) => {
                self.bodies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(url.to_string(), body.clone());
                Attempt::Done(Ok(body))
            }
            Err(e) => Attempt::Retry(format!("truncated body: {}", root_cause(&e))),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut text = e.to_string();
    while let Some(next) = cur.source() {
        text = format!("{text}: {next}");
        cur = next;
    }
    text
}

/// `bytes 0-99/1234` → (0..100, 1234).
fn parse_content_range(v: &str) -> Option<(Range<u64>, u64)> {
    let rest = v.strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((
        a.parse().ok()?..b.parse::<u64>().ok()? + 1,
        total.parse().ok()?,
    ))
}

fn slice(url: &str, body: &Bytes, range: Range<u64>) -> Result<Bytes> {
    if range.end > body.len() as u64 || range.start > range.end {
        return Err(io(
            url,
            Some(range),
            format!("out of bounds: the file has {} bytes", body.len()),
        ));
    }
    Ok(body.slice(range.start as usize..range.end as usize))
}

#[async_trait::async_trait]
impl Storage for HttpStorage {
    async fn head(&self, url: &str) -> Result<ObjectMeta> {
        if let Some(body) = self.cached_body(url) {
            return Ok(ObjectMeta {
                location: url.to_string(),
                size: body.len() as u64,
                last_modified_ms: None,
                etag: None,
            });
        }
        let client = self.client(url)?;
        self.with_retries(
            url,
            None,
            || client.head(url),
            |response| async move {
                match response.status() {
                    StatusCode::NOT_FOUND => Attempt::Done(Err(Error::NotFound {
                        location: url.to_string(),
                    })),
                    s if s.is_success() => {
                        let etag = match self.check_etag(url, &response, &None) {
                            Ok(t) => t,
                            Err(e) => return Attempt::Done(Err(e)),
                        };
                        match response
                            .headers()
                            .get(CONTENT_LENGTH)
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                        {
                            Some(size) => Attempt::Done(Ok(ObjectMeta {
                                location: url.to_string(),
                                size,
                                last_modified_ms: None,
                                etag,
                            })),
                            None => Attempt::Done(Err(io(
                                url,
                                None,
                                "the server does not say the file's size (no Content-Length)",
                            ))),
                        }
                    }
                    s => Attempt::Done(Err(io(url, None, format!("HTTP {s}")))),
                }
            },
        )
        .await
    }

    async fn read_range(&self, url: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        if let Some(body) = self.cached_body(url) {
            return slice(url, &body, range);
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let want = Some(range.clone());
        let client = self.client(url)?;
        self.with_retries(
            url,
            want.clone(),
            || client.get(url).header(RANGE, &header),
            |response| {
                let (want, range) = (want.clone(), range.clone());
                async move {
                    if let Err(e) = self.check_etag(url, &response, &want) {
                        return Attempt::Done(Err(e));
                    }
                    match response.status() {
                        StatusCode::PARTIAL_CONTENT => {
                            let got = response
                                .headers()
                                .get(CONTENT_RANGE)
                                .and_then(|v| parse_content_range(v.to_str().ok()?));
                            if let Some((got, _)) = &got {
                                if got.start != range.start {
                                    return Attempt::Done(Err(io(
                                        url,
                                        want,
                                        format!(
                                            "the server sent bytes {}-{} instead",
                                            got.start,
                                            got.end - 1
                                        ),
                                    )));
                                }
                            }
                            match response.bytes().await {
                                Ok(b) if b.len() as u64 == range.end - range.start => {
                                    Attempt::Done(Ok(b))
                                }
                                Ok(b) => Attempt::Retry(format!(
                                    "truncated body: {} of {} bytes",
                                    b.len(),
                                    range.end - range.start
                                )),
                                Err(e) => {
                                    Attempt::Retry(format!("truncated body: {}", root_cause(&e)))
                                }
                            }
                        }
                        StatusCode::OK => match self.whole_body(url, response, &want).await {
                            Attempt::Done(Ok(body)) => Attempt::Done(slice(url, &body, range)),
                            other => other,
                        },
                        StatusCode::NOT_FOUND => Attempt::Done(Err(Error::NotFound {
                            location: url.to_string(),
                        })),
                        StatusCode::RANGE_NOT_SATISFIABLE => {
                            let size = response
                                .headers()
                                .get(CONTENT_RANGE)
                                .and_then(|v| v.to_str().ok().map(str::to_string));
                            Attempt::Done(Err(io(
                                url,
                                want,
                                format!(
                                    "range not satisfiable (server says {})",
                                    size.unwrap_or_else(|| "nothing more".into())
                                ),
                            )))
                        }
                        s => Attempt::Done(Err(io(url, want, format!("HTTP {s}")))),
                    }
                }
            },
        )
        .await
    }

    async fn read_suffix(&self, url: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        if let Some(body) = self.cached_body(url) {
            let size = body.len() as u64;
            let tail = slice(url, &body, size.saturating_sub(n)..size)?;
            return Ok((
                tail,
                ObjectMeta {
                    location: url.to_string(),
                    size,
                    last_modified_ms: None,
                    etag: None,
                },
            ));
        }
        let header = format!("bytes=-{n}");
        let client = self.client(url)?;
        self.with_retries(
            url,
            None,
            || client.get(url).header(RANGE, &header),
            |response| async move {
                let etag = match self.check_etag(url, &response, &None) {
                    Ok(t) => t,
                    Err(e) => return Attempt::Done(Err(e)),
                };
                let meta = |size| ObjectMeta {
                    location: url.to_string(),
                    size,
                    last_modified_ms: None,
                    etag: etag.clone(),
                };
                match response.status() {
                    StatusCode::PARTIAL_CONTENT => {
                        let Some((span, size)) = response
                            .headers()
                            .get(CONTENT_RANGE)
                            .and_then(|v| parse_content_range(v.to_str().ok()?))
                        else {
                            return Attempt::Done(Err(io(
                                url,
                                None,
                                "206 answer without a valid Content-Range",
                            )));
                        };
                        match response.bytes().await {
                            Ok(b) if b.len() as u64 == span.end - span.start => {
                                Attempt::Done(Ok((b, meta(size))))
                            }
                            Ok(b) => Attempt::Retry(format!(
                                "truncated body: {} of {} bytes",
                                b.len(),
                                span.end - span.start
                            )),
                            Err(e) => Attempt::Retry(format!("truncated body: {}", root_cause(&e))),
                        }
                    }
                    StatusCode::OK => match self.whole_body(url, response, &None).await {
                        Attempt::Done(Ok(body)) => {
                            let size = body.len() as u64;
                            Attempt::Done(
                                slice(url, &body, size.saturating_sub(n)..size)
                                    .map(|t| (t, meta(size))),
                            )
                        }
                        Attempt::Done(Err(e)) => Attempt::Done(Err(e)),
                        Attempt::Retry(why) => Attempt::Retry(why),
                    },
                    StatusCode::RANGE_NOT_SATISFIABLE => Attempt::Done(Ok((Bytes::new(), meta(0)))),
                    StatusCode::NOT_FOUND => Attempt::Done(Err(Error::NotFound {
                        location: url.to_string(),
                    })),
                    s => Attempt::Done(Err(io(url, None, format!("HTTP {s}")))),
                }
            },
        )
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Err(io(
            prefix,
            None,
            "plain HTTP servers cannot list folders; name the files (no wildcards)",
        ))
    }

    async fn put(&self, location: &str, _bytes: Bytes) -> Result<()> {
        Err(io(location, None, "HTTP locations are read-only"))
    }

    async fn put_if_absent(&self, location: &str, _bytes: Bytes) -> Result<()> {
        Err(io(location, None, "HTTP locations are read-only"))
    }

    async fn delete(&self, location: &str) -> Result<()> {
        Err(io(location, None, "HTTP locations are read-only"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10..20, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
    }
}
