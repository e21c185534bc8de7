//! The core's [`Storage`] over the global `fetch` — the one HTTP client that browsers, Node,
//! Deno and workerd all have (no XHR, no threads, no SharedArrayBuffer). Read-only.
//!
//! Like the native client (host/src/http.rs), every way a server can misbehave ends in an
//! error naming the URL and byte range, or in a bounded retry:
//! - a suffix read (`Range: bytes=-n`) learns the size from `Content-Range`, so Parquet
//!   footers cost one request and no HEAD; if a cross-origin server does not expose
//!   `Content-Range`, one HEAD supplies the size;
//! - a server that ignores `Range` (200 with the whole body) is served from that one body if
//!   it is at most [`FetchSettings::max_full_body`] bytes, else refused;
//! - 404 is [`Error::NotFound`]; 416 and other 4xx fail at once; 5xx and network errors are
//!   retried with exponential backoff; each request has a timeout (`AbortSignal.timeout`);
//! - an ETag that changes between responses means the file changed while being read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use js_sys::{Promise, Uint8Array};
use medallion_core::storage::{ObjectMeta, Storage};
use medallion_core::{Error, Result};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, Request, RequestInit, Response};

#[wasm_bindgen]
extern "C" {
    /// `globalThis.fetch`, whatever the runtime.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &Request) -> Promise;

    /// `globalThis.setTimeout`, for retry backoff.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &js_sys::Function, ms: i32) -> JsValue;
}

#[derive(Debug, Clone, Copy)]
pub struct FetchSettings {
    /// Attempts after the first, for 5xx and network errors.
    pub retries: u32,
    /// Wait before the first retry, in ms; doubles each time.
    pub backoff_ms: u32,
    /// Longest time one request may take, in ms (0: no limit).
    pub timeout_ms: u32,
    /// The largest whole body accepted from a server that ignores `Range`.
    pub max_full_body: u64,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff_ms: 100,
            timeout_ms: 30_000,
            max_full_body: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Default)]
pub struct FetchStorage {
    settings: FetchSettings,
    /// The first ETag seen per URL.
    etags: RefCell<HashMap<String, String>>,
    /// Whole bodies of files whose server ignored `Range`.
    bodies: RefCell<HashMap<String, Bytes>>,
}

/// One answered request.
struct Answer {
    status: u16,
    headers: web_sys::Headers,
    body: Bytes,
}

fn io(url: &str, range: Option<Range<u64>>, message: impl Into<String>) -> Error {
    Error::Io {
        location: url.to_string(),
        range,
        message: message.into(),
    }
}

/// The text of a JS exception (`TypeError: fetch failed`, an abort, ...).
fn js_message(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        let name = String::from(err.name());
        let message = String::from(err.message());
        if name == "TimeoutError" || name == "AbortError" {
            return format!("timed out ({message})");
        }
        return format!("{name}: {message}");
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

async fn sleep(ms: u32) {
    let promise = Promise::new(&mut |resolve, _| {
        let _ = set_timeout(&resolve, ms as i32);
    });
    let _ = JsFuture::from(promise).await;
}

impl FetchStorage {
    pub fn new(settings: FetchSettings) -> Self {
        Self {
            settings,
            ..Default::default()
        }
    }

    /// One request with retries. `range` is the header value (`bytes=a-b`, `bytes=-n`).
    async fn request(
        &self,
        method: &str,
        url: &str,
        range_header: Option<&str>,
        range: Option<Range<u64>>,
    ) -> Result<Answer> {
        let mut attempt = 0;
        loop {
            let result = self.request_once(method, url, range_header).await;
            let retryable = match &result {
                Ok(a) => a.status >= 500,
                Err(_) => true,
            };
            if !retryable || attempt >= self.settings.retries {
                let attempts = attempt + 1;
                return match result {
                    Ok(a) if a.status >= 500 => Err(io(
                        url,
                        range,
                        format!("HTTP {} after {attempts} attempt(s)", a.status),
                    )),
                    Ok(a) => Ok(a),
                    Err(message) => Err(io(
                        url,
                        range,
                        format!("{message} (after {attempts} attempt(s))"),
                    )),
                };
            }
            sleep(
                self.settings
                    .backoff_ms
                    .saturating_mul(1 << attempt.min(10)),
            )
            .await;
            attempt += 1;
        }
    }

    async fn request_once(
        &self,
        method: &str,
        url: &str,
        range_header: Option<&str>,
    ) -> std::result::Result<Answer, String> {
        let init = RequestInit::new();
        init.set_method(method);
        if self.settings.timeout_ms > 0 {
            // AbortSignal.timeout exists in every runtime we target; without it, no timeout
            // (calling a missing function would throw through the module).
            let has_timeout = js_sys::Reflect::get(&js_sys::global(), &"AbortSignal".into())
                .and_then(|c| js_sys::Reflect::has(&c, &"timeout".into()))
                .unwrap_or(false);
            if has_timeout {
                init.set_signal(Some(&AbortSignal::timeout_with_u32(
                    self.settings.timeout_ms,
                )));
            }
        }
        let request = Request::new_with_str_and_init(url, &init).map_err(|e| js_message(&e))?;
        if let Some(range) = range_header {
            request
                .headers()
                .set("Range", range)
                .map_err(|e| js_message(&e))?;
        }
        let response: Response = JsFuture::from(global_fetch(&request))
            .await
            .map_err(|e| js_message(&e))?
            .dyn_into()
            .map_err(|_| "fetch did not return a Response".to_string())?;
        let status = response.status();
        let headers = response.headers();
        let body = if method == "HEAD" || status >= 400 {
            Bytes::new()
        } else {
            let buffer = response.array_buffer().map_err(|e| js_message(&e))?;
            let buffer = JsFuture::from(buffer).await.map_err(|e| js_message(&e))?;
            Bytes::from(Uint8Array::new(&buffer).to_vec())
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn header(answer: &Answer, name: &str) -> Option<String> {
        answer.headers.get(name).ok().flatten()
    }

    /// Fails if the file's ETag differs from the first one seen.
    fn check_etag(&self, url: &str, answer: &Answer, range: Option<Range<u64>>) -> Result<()> {
        let Some(tag) = Self::header(answer, "ETag") else {
            return Ok(());
        };
        let mut etags = self.etags.borrow_mut();
        match etags.get(url) {
            Some(first) if *first != tag => Err(io(
                url,
                range,
                format!("the file changed while being read (ETag {first} became {tag})"),
            )),
            Some(_) => Ok(()),
            None => {
                etags.insert(url.to_string(), tag);
                Ok(())
            }
        }
    }

    fn check_status(url: &str, answer: &Answer, range: Option<Range<u64>>) -> Result<()> {
        match answer.status {
            200..=299 => Ok(()),
            404 | 410 => Err(Error::NotFound {
                location: url.to_string(),
            }),
            416 => Err(io(url, range, "HTTP 416: the range is outside the file")),
            s => Err(io(url, range, format!("HTTP {s}"))),
        }
    }

    /// Total size from `Content-Range: bytes a-b/total`.
    fn total_from_content_range(answer: &Answer) -> Option<u64> {
        Self::header(answer, "Content-Range")?
            .rsplit_once('/')?
            .1
            .trim()
            .parse()
            .ok()
    }

    /// A server ignored `Range` and sent the whole body: keep it once, if small enough.
    fn keep_full_body(
        &self,
        url: &str,
        answer: Answer,
        range: Option<Range<u64>>,
    ) -> Result<Bytes> {
        let size = answer.body.len() as u64;
        if size > self.settings.max_full_body {
            return Err(io(
                url,
                range,
                format!(
                    "the server ignores Range and sent the whole file ({size} bytes, more than the {} byte limit for whole-body reads)",
                    self.settings.max_full_body
                ),
            ));
        }
        self.bodies
            .borrow_mut()
            .insert(url.to_string(), answer.body.clone());
        Ok(answer.body)
    }

    fn slice_of(url: &str, body: &Bytes, range: Range<u64>) -> Result<Bytes> {
        if range.end > body.len() as u64 {
            return Err(io(
                url,
                Some(range),
                format!("beyond the end of the file ({} bytes)", body.len()),
            ));
        }
        Ok(body.slice(range.start as usize..range.end as usize))
    }

    fn meta(url: &str, size: u64, answer: &Answer) -> ObjectMeta {
        ObjectMeta {
            location: url.to_string(),
            size,
            last_modified_ms: None,
            etag: Self::header(answer, "ETag"),
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Storage for FetchStorage {
    async fn head(&self, url: &str) -> Result<ObjectMeta> {
        if let Some(body) = self.bodies.borrow().get(url) {
            return Ok(ObjectMeta {
                location: url.to_string(),
                size: body.len() as u64,
                last_modified_ms: None,
                etag: None,
            });
        }
        let answer = self.request("HEAD", url, None, None).await?;
        Self::check_status(url, &answer, None)?;
        self.check_etag(url, &answer, None)?;
        let size = Self::header(&answer, "Content-Length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io(url, None, "the server sent no Content-Length for HEAD"))?;
        Ok(Self::meta(url, size, &answer))
    }

    async fn read_range(&self, url: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        if let Some(body) = self.bodies.borrow().get(url) {
            return Self::slice_of(url, body, range);
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let answer = self
            .request("GET", url, Some(&header), Some(range.clone()))
            .await?;
        Self::check_status(url, &answer, Some(range.clone()))?;
        self.check_etag(url, &answer, Some(range.clone()))?;
        if answer.status == 200 {
            let body = self.keep_full_body(url, answer, Some(range.clone()))?;
            return Self::slice_of(url, &body, range);
        }
        let want = range.end - range.start;
        if answer.body.len() as u64 != want {
            return Err(io(
                url,
                Some(range),
                format!(
                    "the server sent {} bytes for a {want}-byte range",
                    answer.body.len()
                ),
            ));
        }
        Ok(answer.body)
    }

    async fn read(&self, url: &str) -> Result<Bytes> {
        if let Some(body) = self.bodies.borrow().get(url) {
            return Ok(body.clone());
        }
        // One plain GET rather than HEAD + ranged GET: whole reads are for small source files.
        let answer = self.request("GET", url, None, None).await?;
        Self::check_status(url, &answer, None)?;
        self.check_etag(url, &answer, None)?;
        Ok(answer.body)
    }

    async fn read_suffix(&self, url: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        if let Some(body) = self.bodies.borrow().get(url).cloned() {
            let size = body.len() as u64;
            let tail = body.slice((size.saturating_sub(n)) as usize..);
            return Ok((tail, self.cached_meta(url, size)));
        }
        let header = format!("bytes=-{n}");
        let answer = self.request("GET", url, Some(&header), None).await?;
        Self::check_status(url, &answer, None)?;
        self.check_etag(url, &answer, None)?;
        if answer.status == 200 {
            let meta = Self::meta(url, answer.body.len() as u64, &answer);
            let body = self.keep_full_body(url, answer, None)?;
            let size = body.len() as u64;
            return Ok((body.slice((size.saturating_sub(n)) as usize..), meta));
        }
        let size = match Self::total_from_content_range(&answer) {
            Some(size) => size,
            // Cross-origin servers must list Content-Range in Access-Control-Expose-Headers;
            // when they do not, one HEAD tells the size.
            None => self.head(url).await?.size,
        };
        if answer.body.len() as u64 != n.min(size) {
            return Err(io(
                url,
                Some(size.saturating_sub(n)..size),
                format!(
                    "the server sent {} bytes for the last {} bytes of the file",
                    answer.body.len(),
                    n.min(size)
                ),
            ));
        }
        let meta = Self::meta(url, size, &answer);
        Ok((answer.body, meta))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Err(Error::Spec(format!(
            "{prefix}: plain http(s) servers cannot be listed; name the files, or pass them in the `files` option"
        )))
    }

    async fn put(&self, location: &str, _bytes: Bytes) -> Result<()> {
        Err(read_only(location))
    }

    async fn put_if_absent(&self, location: &str, _bytes: Bytes) -> Result<()> {
        Err(read_only(location))
    }

    async fn delete(&self, location: &str) -> Result<()> {
        Err(read_only(location))
    }
}

impl FetchStorage {
    fn cached_meta(&self, url: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            location: url.to_string(),
            size,
            last_modified_ms: None,
            etag: self.etags.borrow().get(url).cloned(),
        }
    }
}

fn read_only(location: &str) -> Error {
    io(
        location,
        None,
        "URLs are read-only here; write tables to the in-memory lake instead",
    )
}
