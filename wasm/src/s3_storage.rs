//! The core's [`Storage`] in an S3(-compatible) bucket, from browsers, Node and edge workers:
//! `s3://bucket/key` read, listed and written with the S3 REST API over `fetch`.
//!
//! Reads are [`FetchStorage`]'s, in its S3 mode (ranged and suffix GETs, one retry policy,
//! ETag checks); this module adds what only a bucket can do, with the same requests:
//! - `list`: ListObjectsV2, page by page (`continuation-token`), parsed by
//!   [`crate::s3_protocol`];
//! - `put`; `put_if_absent` as a conditional PUT (`If-None-Match: *`): 412 is
//!   [`Error::AlreadyExists`], so of two writers of one Delta log version exactly one wins. A
//!   store that answers 501 cannot promise that, and the error says so, unless the caller
//!   declared itself the only writer (`singleWriter`: a HEAD then stands in for the check);
//! - `delete` (a missing object is not an error).
//!
//! Requests are signed in JavaScript (wasm/js/index.js): SigV4 with keys in Node and edge
//! workers, the app's own signer (presigned URLs or signed headers) in browser pages, or none
//! for a public bucket. Errors name the `s3://` location; 403 names bucket and key, a missing
//! bucket says so.

use std::ops::Range;
use std::rc::Rc;

use bytes::Bytes;
use js_sys::Function;
use medallion_core::storage::{ObjectMeta, Storage};
use medallion_core::{Error, Result};

use crate::fetch_storage::{io, s3_detail, Call, FetchSettings, FetchStorage};
use crate::range_cache::RangeCache;
use crate::s3_protocol::{self, parse_error, parse_list, S3Endpoint};

#[derive(Debug)]
pub struct S3Storage {
    /// In S3 mode: locations are `s3://` and requests go through the JS signer.
    fetch: FetchStorage,
    /// The same endpoint, for listing URLs and messages.
    endpoint: S3Endpoint,
    /// The caller promised that no one else writes to the lake at the same time.
    single_writer: bool,
}

/// What an S3 error answer means, in terms a user can act on.
pub(crate) fn status_error(
    endpoint: &S3Endpoint,
    location: &str,
    range: Option<Range<u64>>,
    status: u16,
    error_body: &str,
) -> Error {
    let (bucket, key) = s3_protocol::split(location).unwrap_or(("?", ""));
    let code = parse_error(error_body).map(|(code, _)| code);
    let detail = s3_detail(error_body);
    match (status, code.as_deref()) {
        (_, Some("NoSuchBucket")) => io(
            location,
            range,
            format!(
                "the bucket `{bucket}` does not exist at {}",
                endpoint.describe()
            ),
        ),
        (404 | 410, _) => Error::NotFound {
            location: location.to_string(),
        },
        (403, _) => io(
            location,
            range,
            format!(
                "access denied (HTTP 403{detail}) to bucket `{bucket}`, key `{key}`: the signature is not accepted (wrong keys, region or clock, or an expired presigned URL) or the credentials do not allow this request"
            ),
        ),
        (301, _) | (400, Some("AuthorizationHeaderMalformed")) => io(
            location,
            range,
            format!(
                "HTTP {status}{detail}: the bucket `{bucket}` is not in region `{}` at {}; give its region",
                endpoint.region,
                endpoint.describe()
            ),
        ),
        (416, _) => io(location, range, "HTTP 416: the range is outside the file"),
        (s, _) => io(location, range, format!("HTTP {s}{detail}")),
    }
}

impl S3Storage {
    pub fn new(
        settings: FetchSettings,
        endpoint: S3Endpoint,
        send: Function,
        single_writer: bool,
        cache: Rc<RangeCache>,
    ) -> Self {
        Self {
            fetch: FetchStorage::s3(settings, endpoint.clone(), send, cache),
            endpoint,
            single_writer,
        }
    }

    /// See [`FetchStorage::unpin`].
    pub(crate) fn unpin(&self, location: &str) {
        self.fetch.unpin(location);
    }

    /// A request with a body to an object (not a bucket).
    fn write_call<'a>(
        &self,
        method: &'a str,
        location: &'a str,
        headers: Vec<(&'a str, String)>,
        body: Option<Bytes>,
    ) -> Result<Call<'a>> {
        match s3_protocol::split(location) {
            Some((_, key)) if !key.is_empty() => {}
            _ => {
                return Err(Error::Spec(format!(
                    "`{location}` names no object: write s3://BUCKET/KEY"
                )))
            }
        }
        Ok(Call {
            location,
            range: None,
            method,
            url: self.fetch.url(location)?,
            headers,
            body,
        })
    }

    async fn send(&self, call: &Call<'_>) -> Result<u16> {
        let answer = self.fetch.request(call).await?;
        self.fetch.forget(call.location);
        match answer.status {
            200..=299 => Ok(answer.status),
            // Said by put_if_absent's caller: the condition failed, or the store cannot check it.
            412 | 501 if call.headers.iter().any(|(h, _)| *h == "If-None-Match") => {
                Ok(answer.status)
            }
            _ if call.method == "DELETE" && answer.status == 404 => Ok(404),
            _ => Err(self
                .fetch
                .check_status(call.location, &answer, None)
                .err()
                .unwrap_or_else(|| io(call.location, None, "unexpected answer"))),
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Storage for S3Storage {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        self.fetch.head(location).await
    }

    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        self.fetch.read_range(location, range).await
    }

    async fn read(&self, location: &str) -> Result<Bytes> {
        self.fetch.read(location).await
    }

    async fn read_suffix(&self, location: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        self.fetch.read_suffix(location, n).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let (bucket, key) = s3_protocol::split(prefix).ok_or_else(|| {
            Error::Spec(format!(
                "`{prefix}` names no bucket: write s3://BUCKET/PREFIX"
            ))
        })?;
        // Everything below the folder `key/`, not `key2/` too.
        let dir = match key.trim_end_matches('/') {
            "" => String::new(),
            k => format!("{k}/"),
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let call = Call {
                location: prefix,
                range: None,
                method: "GET",
                url: self.endpoint.list_url(bucket, &dir, token.as_deref()),
                headers: vec![],
                body: None,
            };
            let answer = self.fetch.request(&call).await?;
            self.fetch.check_status(prefix, &answer, None)?;
            let page = std::str::from_utf8(&answer.body)
                .map_err(|e| e.to_string())
                .and_then(|xml| parse_list(xml).map_err(|e| e.to_string()))
                .map_err(|e| io(prefix, None, format!("listing the bucket: {e}")))?;
            out.extend(page.objects.into_iter().map(|o| ObjectMeta {
                location: format!("s3://{bucket}/{}", o.key),
                size: o.size,
                last_modified_ms: o.last_modified_ms,
                etag: o.etag,
            }));
            match page.next {
                Some(next) if token.as_deref() == Some(next.as_str()) => {
                    return Err(io(
                        prefix,
                        None,
                        "listing the bucket: the store sent the same continuation token twice",
                    ))
                }
                Some(next) => token = Some(next),
                None => return Ok(out),
            }
        }
    }

    async fn put(&self, location: &str, bytes: Bytes) -> Result<()> {
        self.send(&self.write_call("PUT", location, vec![], Some(bytes))?)
            .await?;
        Ok(())
    }

    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()> {
        let call = self.write_call(
            "PUT",
            location,
            vec![("If-None-Match", "*".to_string())],
            Some(bytes.clone()),
        )?;
        match self.send(&call).await? {
            412 => Err(Error::AlreadyExists {
                location: location.to_string(),
            }),
            501 if self.single_writer => {
                // The caller's promise that no one else writes stands in for the store's check.
                match self.head(location).await {
                    Ok(_) => Err(Error::AlreadyExists {
                        location: location.to_string(),
                    }),
                    Err(Error::NotFound { .. }) => self.put(location, bytes).await,
                    Err(e) => Err(e),
                }
            }
            501 => Err(io(
                location,
                None,
                format!(
                    "{} does not support conditional writes (If-None-Match: *), so two writers could both commit one table version and one's data would be lost; \
                     set `singleWriter: true` in the s3 option only if no other process ever writes to this lake at the same time",
                    self.endpoint.describe()
                ),
            )),
            _ => Ok(()),
        }
    }

    async fn delete(&self, location: &str) -> Result<()> {
        self.send(&self.write_call("DELETE", location, vec![], None)?)
            .await?;
        Ok(())
    }

    fn note_immutable(&self, location: &str, size: u64) {
        self.fetch.note_immutable(location, size);
    }
}
