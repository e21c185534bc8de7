//! The core's [`Storage`] over the global `fetch` — the one HTTP client that browsers, Node,
//! Deno and workerd all have (no XHR, no threads, no SharedArrayBuffer). Read-only over plain
//! HTTP(S); in its S3 mode ([`Remote::S3`]) it reads `s3://bucket/key` locations at a bucket's
//! endpoint, through a JS function that signs each request, and [`crate::s3_storage`] adds
//! listing and writes on top of the same requests, retries and errors.
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
//! - an ETag that changes between responses means the file changed while being read (a whole
//!   read is one response, so it records the tag it saw instead of comparing);
//! - ranges already fetched are served from the engine's [`RangeCache`] once the file is
//!   confirmed unchanged in the current call: by the validator of the call's first answer about
//!   it, or by one HEAD if that first read would be a hit, or by no request while the server's
//!   `Cache-Control: max-age` says the file stays fresh, or for a Delta table's data files,
//!   which the protocol never rewrites (the guarantee is in that module).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;

use bytes::Bytes;
use js_sys::{Function, Promise, Uint8Array};
use medallion_core::storage::{ObjectMeta, Storage};
use medallion_core::{Error, Result};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, RequestInit, Response};

use crate::range_cache::{self, Lookup, RangeCache, Version};
use crate::s3_protocol::{self, S3Endpoint};

#[wasm_bindgen]
extern "C" {
    /// `globalThis.fetch`, whatever the runtime.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(url: &str, init: &RequestInit) -> Promise;

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

/// What the locations are and how requests leave.
#[derive(Debug, Default)]
pub enum Remote {
    /// `http(s)://` URLs, fetched as they are with the global `fetch`.
    #[default]
    Http,
    /// `s3://bucket/key` locations, at `endpoint`. `send(url, init)` has the signature of
    /// `fetch` and signs before fetching (SigV4 with keys, the app's own signer, or nothing
    /// for a public bucket): secrets stay in JavaScript, never in this module's memory.
    S3 {
        endpoint: S3Endpoint,
        send: Function,
    },
}

#[derive(Debug, Default)]
pub struct FetchStorage {
    settings: FetchSettings,
    remote: Remote,
    /// The first ETag seen per location.
    etags: RefCell<HashMap<String, String>>,
    /// Whole bodies of files whose server ignored `Range`.
    bodies: RefCell<HashMap<String, Bytes>>,
    /// Ranges fetched earlier, shared by the engine's HTTP and S3 reads (one cap).
    cache: Rc<RangeCache>,
    /// Per file, held while a HEAD confirms it, so that the reads a scan sends at once wait
    /// for one HEAD instead of each sending their own; the files of a table are confirmed
    /// side by side.
    confirming: RefCell<HashMap<String, Rc<futures::lock::Mutex<()>>>>,
}

/// One request: what it is for (errors name `location` and `range`) and what is sent.
pub(crate) struct Call<'a> {
    pub location: &'a str,
    pub range: Option<Range<u64>>,
    pub method: &'a str,
    pub url: String,
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<Bytes>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    epoch: u64,
    at_ms: f64,
}

/// One answered request.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: web_sys::Headers,
    pub body: Bytes,
    /// The start of an S3 error answer's body (its `<Error>` document), else empty.
    pub error_body: String,
}

/// How much of an error answer's body is kept.
const ERROR_BODY_LIMIT: usize = 4096;

pub(crate) fn io(location: &str, range: Option<Range<u64>>, message: impl Into<String>) -> Error {
    Error::Io {
        location: location.to_string(),
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

pub(crate) async fn sleep(ms: u32) {
    let promise = Promise::new(&mut |resolve, _| {
        let _ = set_timeout(&resolve, ms as i32);
    });
    let _ = JsFuture::from(promise).await;
}

impl FetchStorage {
    pub fn new(settings: FetchSettings, cache: Rc<RangeCache>) -> Self {
        Self {
            settings,
            cache,
            ..Default::default()
        }
    }

    /// The S3 mode: locations `s3://bucket/key` at `endpoint`, requests through `send`.
    pub fn s3(
        settings: FetchSettings,
        endpoint: S3Endpoint,
        send: Function,
        cache: Rc<RangeCache>,
    ) -> Self {
        Self {
            settings,
            remote: Remote::S3 { endpoint, send },
            cache,
            ..Default::default()
        }
    }

    /// The URL a location is fetched at.
    pub(crate) fn url(&self, location: &str) -> Result<String> {
        match &self.remote {
            Remote::Http => Ok(location.to_string()),
            Remote::S3 { endpoint, .. } => {
                let (bucket, key) = s3_protocol::split(location).ok_or_else(|| {
                    Error::Spec(format!(
                        "`{location}` names no bucket: write s3://BUCKET/KEY"
                    ))
                })?;
                Ok(endpoint.url(bucket, key))
            }
        }
    }

    /// One request with retries: 5xx answers and network errors are tried again after an
    /// exponential backoff, as is S3's 409 `ConditionalRequestConflict` (two conditional
    /// writes of one key at once), which asks for a retry.
    pub(crate) async fn request(&self, call: &Call<'_>) -> Result<Answer> {
        let mut attempt = 0;
        loop {
            let result = self.request_once(call).await;
            let retryable = match &result {
                Ok(a) => {
                    a.status >= 500
                        || (a.status == 409 && a.error_body.contains("ConditionalRequestConflict"))
                }
                Err(_) => true,
            };
            if !retryable || attempt >= self.settings.retries {
                let attempts = attempt + 1;
                return match result {
                    Ok(a) if a.status >= 500 => Err(io(
                        call.location,
                        call.range.clone(),
                        format!(
                            "HTTP {}{} after {attempts} attempt(s)",
                            a.status,
                            s3_detail(&a.error_body)
                        ),
                    )),
                    Ok(a) => Ok(a),
                    Err(message) => Err(io(
                        call.location,
                        call.range.clone(),
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

    async fn request_once(&self, call: &Call<'_>) -> std::result::Result<Answer, String> {
        let init = RequestInit::new();
        init.set_method(call.method);
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
        // A plain object: every runtime's fetch takes one, and so does a signer.
        let headers = js_sys::Object::new();
        for (name, value) in &call.headers {
            js_sys::Reflect::set(&headers, &(*name).into(), &value.as_str().into())
                .map_err(|e| js_message(&e))?;
        }
        init.set_headers(&headers);
        if let Some(body) = &call.body {
            init.set_body(&Uint8Array::from(body.as_ref()));
        }
        let promise = match &self.remote {
            Remote::Http => global_fetch(&call.url, &init),
            Remote::S3 { send, .. } => {
                let value = send
                    .call2(&JsValue::NULL, &call.url.as_str().into(), &init)
                    .map_err(|e| js_message(&e))?;
                Promise::resolve(&value)
            }
        };
        let response: Response = JsFuture::from(promise)
            .await
            .map_err(|e| js_message(&e))?
            .dyn_into()
            .map_err(|_| "fetch did not return a Response".to_string())?;
        let status = response.status();
        let headers = response.headers();
        let mut body = Bytes::new();
        let mut error_body = String::new();
        if call.method != "HEAD" && status < 400 {
            let buffer = response.array_buffer().map_err(|e| js_message(&e))?;
            let buffer = JsFuture::from(buffer).await.map_err(|e| js_message(&e))?;
            body = Bytes::from(Uint8Array::new(&buffer).to_vec());
        } else if call.method != "HEAD" && matches!(self.remote, Remote::S3 { .. }) {
            // S3 says what went wrong in an <Error> document: NoSuchBucket, AccessDenied...
            let text = response.text().map_err(|e| js_message(&e))?;
            let text = JsFuture::from(text).await.map_err(|e| js_message(&e))?;
            error_body = text.as_string().unwrap_or_default();
            if error_body.len() > ERROR_BODY_LIMIT {
                let mut end = ERROR_BODY_LIMIT;
                while !error_body.is_char_boundary(end) {
                    end -= 1;
                }
                error_body.truncate(end);
            }
        }
        Ok(Answer {
            status,
            headers,
            body,
            error_body,
        })
    }

    fn header(answer: &Answer, name: &str) -> Option<String> {
        answer.headers.get(name).ok().flatten()
    }

    /// Fails if the file's ETag differs from the first one seen.
    fn check_etag(&self, location: &str, answer: &Answer, range: Option<Range<u64>>) -> Result<()> {
        self.check_tag(location, Self::header(answer, "ETag"), range)
    }

    fn check_tag(
        &self,
        location: &str,
        tag: Option<String>,
        range: Option<Range<u64>>,
    ) -> Result<()> {
        let Some(tag) = tag else {
            return Ok(());
        };
        let mut etags = self.etags.borrow_mut();
        match etags.get(location) {
            Some(first) if *first != tag => Err(io(
                location,
                range,
                format!(
                    "the file changed since this engine first read it (ETag {first} became {tag}); register the table again to read the new version"
                ),
            )),
            Some(_) => Ok(()),
            None => {
                etags.insert(location.to_string(), tag);
                Ok(())
            }
        }
    }

    /// Forgets what was seen of a location that this engine wrote or deleted.
    pub(crate) fn forget(&self, location: &str) {
        self.unpin(location);
        self.cache.forget(location);
    }

    /// Accepts a new version of the file from now on (a table registered again): later reads
    /// must agree with the next ETag seen, not the first. Cached ranges stay, for the cache
    /// compares versions itself.
    pub(crate) fn unpin(&self, location: &str) {
        self.etags.borrow_mut().remove(location);
        self.bodies.borrow_mut().remove(location);
    }

    /// The version an answer describes; `size` when the caller knows it from the answer.
    fn version(answer: &Answer, size: Option<u64>) -> Version {
        Version::new(
            Self::header(answer, "ETag"),
            Self::header(answer, "Last-Modified"),
            size,
        )
    }

    /// When a request is sent: the cache's epoch, and the clock its freshness is counted from.
    fn sent(&self) -> Sent {
        Sent {
            epoch: self.cache.epoch(),
            at_ms: js_sys::Date::now(),
        }
    }

    /// Tells the cache what `answer` (to a request sent at `sent`) said of the file.
    fn observe(&self, location: &str, version: Version, sent: Sent, answer: &Answer) {
        let fresh_until = range_cache::fresh_until(
            Self::header(answer, "Cache-Control").as_deref(),
            Self::header(answer, "Age").as_deref(),
            sent.at_ms,
        );
        self.cache
            .observe(location, version, sent.epoch, fresh_until);
    }

    /// `range` from the cache, confirming the file first (one HEAD) if this call has not
    /// seen it yet. `None`: not held, or the file changed (then the caller's GET sees how).
    async fn cached(
        &self,
        location: &str,
        range: impl Fn(&RangeCache) -> Option<Range<u64>>,
    ) -> Result<Option<(Bytes, Version)>> {
        let Some(r) = range(&self.cache) else {
            return Ok(None);
        };
        let (bytes, version) = match self.cache.lookup(location, &r, js_sys::Date::now()) {
            Lookup::Hit(bytes, version) => (bytes, version),
            Lookup::Miss => return Ok(None),
            Lookup::Unconfirmed => {
                let lock = self
                    .confirming
                    .borrow_mut()
                    .entry(location.to_string())
                    .or_default()
                    .clone();
                let confirmed = async {
                    let _one_at_a_time = lock.lock().await;
                    if self.cache.lookup(location, &r, js_sys::Date::now()) == Lookup::Unconfirmed {
                        self.confirm(location, &r).await?;
                    }
                    Ok::<(), Error>(())
                }
                .await;
                // The last read waiting on this file removes its lock (the map holds one).
                if Rc::strong_count(&lock) == 2 {
                    self.confirming.borrow_mut().remove(location);
                }
                confirmed?;
                let Some(r) = range(&self.cache) else {
                    return Ok(None);
                };
                match self.cache.lookup(location, &r, js_sys::Date::now()) {
                    Lookup::Hit(bytes, version) => (bytes, version),
                    _ => return Ok(None),
                }
            }
        };
        // Later reads that miss must come from the same version as these bytes.
        self.check_tag(location, version.etag.clone(), Some(r))?;
        Ok(Some((bytes, version)))
    }

    /// One HEAD, whose validator confirms (or replaces) the cached version of the file;
    /// its errors name `range`, the read it was sent for.
    async fn confirm(&self, location: &str, range: &Range<u64>) -> Result<()> {
        let sent = self.sent();
        self.cache.count_revalidation();
        let answer = self
            .request(&self.call("HEAD", location, None, Some(range.clone()))?)
            .await?;
        if !(200..300).contains(&answer.status) {
            // Gone or refused: nothing cached may be served; the GET that follows says why.
            self.cache.forget(location);
            return Ok(());
        }
        let size = Self::header(&answer, "Content-Length").and_then(|v| v.trim().parse().ok());
        self.observe(location, Self::version(&answer, size), sent, &answer);
        // A new version under a table read as the old one: say so now, rather than after
        // reading the new file's bytes at the old footer's offsets.
        self.check_etag(location, &answer, Some(range.clone()))
    }

    /// `Ok` for 2xx; else the error that says what the answer means.
    pub(crate) fn check_status(
        &self,
        location: &str,
        answer: &Answer,
        range: Option<Range<u64>>,
    ) -> Result<()> {
        match (&self.remote, answer.status) {
            (_, 200..=299) => Ok(()),
            (Remote::S3 { endpoint, .. }, status) => Err(crate::s3_storage::status_error(
                endpoint,
                location,
                range,
                status,
                &answer.error_body,
            )),
            (Remote::Http, 404 | 410) => Err(Error::NotFound {
                location: location.to_string(),
            }),
            (Remote::Http, 416) => Err(io(
                location,
                range,
                "HTTP 416: the range is outside the file",
            )),
            (Remote::Http, s) => Err(io(location, range, format!("HTTP {s}"))),
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
        location: &str,
        answer: Answer,
        range: Option<Range<u64>>,
    ) -> Result<Bytes> {
        let size = answer.body.len() as u64;
        if size > self.settings.max_full_body {
            return Err(io(
                location,
                range,
                format!(
                    "the server ignores Range and sent the whole file ({size} bytes, more than the {} byte limit for whole-body reads)",
                    self.settings.max_full_body
                ),
            ));
        }
        self.bodies
            .borrow_mut()
            .insert(location.to_string(), answer.body.clone());
        Ok(answer.body)
    }

    fn slice_of(location: &str, body: &Bytes, range: Range<u64>) -> Result<Bytes> {
        if range.end > body.len() as u64 {
            return Err(io(
                location,
                Some(range),
                format!("beyond the end of the file ({} bytes)", body.len()),
            ));
        }
        Ok(body.slice(range.start as usize..range.end as usize))
    }

    fn meta(&self, location: &str, size: u64, answer: &Answer) -> ObjectMeta {
        self.meta_of(
            location,
            size,
            &Self::version(answer, Some(size)),
            Self::header(answer, "ETag"),
        )
    }

    /// `etag` as the server sent it (weak ones included), the rest from `version`.
    fn meta_of(
        &self,
        location: &str,
        size: u64,
        version: &Version,
        etag: Option<String>,
    ) -> ObjectMeta {
        // An object store's modification time is when a commit was made (Delta time travel
        // reads it, as a listing gives it); a web server's says less, and is not used.
        let last_modified_ms = match self.remote {
            Remote::S3 { .. } => version
                .last_modified
                .as_ref()
                .and_then(|t| chrono::DateTime::parse_from_rfc2822(t).ok())
                .map(|t| t.timestamp_millis()),
            Remote::Http => None,
        };
        ObjectMeta {
            location: location.to_string(),
            size,
            last_modified_ms,
            etag,
        }
    }

    /// A GET (or HEAD) of a location, with a `Range` header value if given.
    fn call<'a>(
        &self,
        method: &'a str,
        location: &'a str,
        range_header: Option<String>,
        range: Option<Range<u64>>,
    ) -> Result<Call<'a>> {
        Ok(Call {
            location,
            range,
            method,
            url: self.url(location)?,
            headers: range_header.map(|r| vec![("Range", r)]).unwrap_or_default(),
            body: None,
        })
    }
}

/// ` (Code: Message)` of an S3 error body, or nothing.
pub(crate) fn s3_detail(error_body: &str) -> String {
    match s3_protocol::parse_error(error_body) {
        Some((code, message)) if message.is_empty() => format!(" ({code})"),
        Some((code, message)) => format!(" ({code}: {message})"),
        None => String::new(),
    }
}

#[async_trait::async_trait(?Send)]
impl Storage for FetchStorage {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        if let Some(body) = self.bodies.borrow().get(location) {
            return Ok(ObjectMeta {
                location: location.to_string(),
                size: body.len() as u64,
                last_modified_ms: None,
                etag: None,
            });
        }
        let sent = self.sent();
        let answer = self
            .request(&self.call("HEAD", location, None, None)?)
            .await?;
        self.check_status(location, &answer, None)?;
        self.check_etag(location, &answer, None)?;
        let size = Self::header(&answer, "Content-Length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io(location, None, "the server sent no Content-Length for HEAD"))?;
        self.observe(location, Self::version(&answer, Some(size)), sent, &answer);
        Ok(self.meta(location, size, &answer))
    }

    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        if let Some(body) = self.bodies.borrow().get(location) {
            return Self::slice_of(location, body, range);
        }
        if let Some((bytes, _)) = self.cached(location, |_| Some(range.clone())).await? {
            return Ok(bytes);
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let call = self.call("GET", location, Some(header), Some(range.clone()))?;
        let sent = self.sent();
        let answer = self.request(&call).await?;
        self.check_status(location, &answer, Some(range.clone()))?;
        self.check_etag(location, &answer, Some(range.clone()))?;
        if answer.status == 200 {
            let body = self.keep_full_body(location, answer, Some(range.clone()))?;
            return Self::slice_of(location, &body, range);
        }
        let want = range.end - range.start;
        if answer.body.len() as u64 != want {
            return Err(io(
                location,
                Some(range),
                format!(
                    "the server sent {} bytes for a {want}-byte range",
                    answer.body.len()
                ),
            ));
        }
        let version = Self::version(&answer, Self::total_from_content_range(&answer));
        self.observe(location, version.clone(), sent, &answer);
        self.cache
            .insert(location, &version, range.start, answer.body.clone());
        Ok(answer.body)
    }

    async fn read(&self, location: &str) -> Result<Bytes> {
        if let Some(body) = self.bodies.borrow().get(location) {
            return Ok(body.clone());
        }
        // One plain GET rather than HEAD + ranged GET: whole reads are for small source files
        // and logs, not cached: confirming one would cost the same request as reading it.
        let sent = self.sent();
        let answer = self
            .request(&self.call("GET", location, None, None)?)
            .await?;
        self.check_status(location, &answer, None)?;
        let size = Some(answer.body.len() as u64);
        self.observe(location, Self::version(&answer, size), sent, &answer);
        // One response cannot mix two versions: its tag is the one later reads must match.
        if let Some(tag) = Self::header(&answer, "ETag") {
            self.etags.borrow_mut().insert(location.to_string(), tag);
        }
        Ok(answer.body)
    }

    async fn read_suffix(&self, location: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        if let Some(body) = self.bodies.borrow().get(location).cloned() {
            let size = body.len() as u64;
            let tail = body.slice((size.saturating_sub(n)) as usize..);
            return Ok((tail, self.cached_meta(location, size)));
        }
        let suffix = |c: &RangeCache| c.size(location).map(|size| size.saturating_sub(n)..size);
        if let Some((bytes, version)) = self.cached(location, suffix).await? {
            if let Some(size) = version.size {
                let etag = self.etags.borrow().get(location).cloned();
                return Ok((bytes, self.meta_of(location, size, &version, etag)));
            }
        }
        let header = format!("bytes=-{n}");
        let sent = self.sent();
        let answer = self
            .request(&self.call("GET", location, Some(header), None)?)
            .await?;
        self.check_status(location, &answer, None)?;
        self.check_etag(location, &answer, None)?;
        if answer.status == 200 {
            let meta = self.meta(location, answer.body.len() as u64, &answer);
            let body = self.keep_full_body(location, answer, None)?;
            let size = body.len() as u64;
            return Ok((body.slice((size.saturating_sub(n)) as usize..), meta));
        }
        let size = match Self::total_from_content_range(&answer) {
            Some(size) => size,
            // Cross-origin servers must list Content-Range in Access-Control-Expose-Headers;
            // when they do not, one HEAD tells the size.
            None => self.head(location).await?.size,
        };
        if answer.body.len() as u64 != n.min(size) {
            return Err(io(
                location,
                Some(size.saturating_sub(n)..size),
                format!(
                    "the server sent {} bytes for the last {} bytes of the file",
                    answer.body.len(),
                    n.min(size)
                ),
            ));
        }
        let meta = self.meta(location, size, &answer);
        let version = Self::version(&answer, Some(size));
        self.observe(location, version.clone(), sent, &answer);
        self.cache.insert(
            location,
            &version,
            size - answer.body.len() as u64,
            answer.body.clone(),
        );
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

    fn note_immutable(&self, location: &str, size: u64) {
        self.cache.mark_immutable(location, size);
    }
}

impl FetchStorage {
    fn cached_meta(&self, location: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            location: location.to_string(),
            size,
            last_modified_ms: None,
            etag: self.etags.borrow().get(location).cloned(),
        }
    }
}

fn read_only(location: &str) -> Error {
    io(
        location,
        None,
        "http(s) URLs are read-only; write tables to an s3:// lake (the `s3` option) or to the in-memory lake",
    )
}
