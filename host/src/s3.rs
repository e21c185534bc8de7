//! The core's [`Storage`] in S3 and S3-compatible buckets (MinIO, R2, Ceph, moto), through
//! object_store's S3 client: SigV4 signing, credentials and endpoint from the environment the
//! way AWS tools take them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, `AWS_SKIP_SIGNATURE`
//! for public buckets), and the same retry settings as HTTP reads.
//!
//! `put_if_absent` is a conditional PUT (`If-None-Match: *`), so two writers cannot both
//! create one Delta log entry. A store that does not honour it answers 501 or ignores the
//! header. The first is an error naming the risk unless `MEDALLION_S3_SINGLE_WRITER=1` says no
//! one else writes (then a HEAD stands in for the check); the second cannot be told from here.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use medallion_core::storage::{ObjectMeta, Storage};
use medallion_core::{Error, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, RetryConfig, WriteMultipart,
};

use crate::http::HttpSettings;

/// Objects larger than this go up in parts: a failed part is retried alone, and parts travel
/// in parallel.
const MULTIPART_ABOVE: usize = 32 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Debug)]
pub struct S3Storage {
    settings: HttpSettings,
    /// One client per bucket (object_store binds a client to its bucket).
    buckets: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

/// `s3://bucket/key` → (bucket, key).
fn split(location: &str) -> Result<(&str, &str)> {
    let rest = location.strip_prefix("s3://").unwrap_or(location);
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::Location {
            location: location.to_string(),
            message: "names no bucket: write s3://BUCKET/PREFIX".into(),
        });
    }
    Ok((bucket, key.trim_matches('/')))
}

/// The object_store path of a key, taken as it is: Delta file names are stored decoded, and
/// `Path::from` would percent-encode a `%` in a partition folder a second time.
fn key_path(location: &str, key: &str) -> Result<Path> {
    Path::parse(key).map_err(|e| Error::Spec(format!("`{location}` is not a valid S3 key: {e}")))
}

fn io(location: &str, range: Option<Range<u64>>, message: impl Into<String>) -> Error {
    Error::Io {
        location: location.to_string(),
        range,
        message: message.into(),
    }
}

/// What went wrong, in terms a user can act on. The source's text carries the S3 error code
/// (`NoSuchBucket`, `SlowDown`, …) and the HTTP status, never the credentials.
fn error(location: &str, range: Option<Range<u64>>, e: object_store::Error) -> Error {
    let bucket = split(location).map(|(b, _)| b).unwrap_or("?");
    let text = e.to_string();
    match e {
        _ if text.contains("NoSuchBucket") => Error::Location {
            location: location.to_string(),
            message: format!("the bucket `{bucket}` does not exist at {}", endpoint()),
        },
        object_store::Error::NotFound { .. } => Error::NotFound {
            location: location.to_string(),
        },
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            Error::AlreadyExists {
                location: location.to_string(),
            }
        }
        _ if denied(&text) => io(
            location,
            range,
            format!(
                "access denied (HTTP 403) to bucket `{bucket}`: the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are wrong or not allowed this; {text}"
            ),
        ),
        object_store::Error::Unauthenticated { .. } => io(
            location,
            range,
            format!("not authenticated (HTTP 401) for bucket `{bucket}`: {text}"),
        ),
        _ => io(location, range, text),
    }
}

/// Whether the store refused the credentials. object_store reports a refused listing as a
/// generic error, so the status and S3's codes are looked for in its text.
fn denied(text: &str) -> bool {
    [
        "403 Forbidden",
        "AccessDenied",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
    ]
    .iter()
    .any(|code| text.contains(code))
}

/// Whether a failed request may be sent again: not a client error (4xx) or a known answer.
fn transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    let text = e.to_string();
    !matches!(
        e,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::NotImplemented { .. }
            | E::NotSupported { .. }
    ) && !text.contains("Client error")
        && !denied(&text)
        && !no_conditional_writes(e)
}

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .unwrap_or_else(|_| "AWS S3 (set AWS_ENDPOINT_URL for another store)".into())
}

fn meta(bucket: &str, m: object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        location: format!("s3://{bucket}/{}", m.location),
        size: m.size,
        last_modified_ms: Some(m.last_modified.timestamp_millis()),
        etag: m.e_tag,
    }
}

impl S3Storage {
    pub fn new(settings: HttpSettings) -> Self {
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, location: &str) -> Result<(Arc<AmazonS3>, String, Path)> {
        let (bucket, key) = split(location)?;
        let path = key_path(location, key)?;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = buckets.get(bucket) {
            return Ok((c.clone(), bucket.to_string(), path));
        }
        let s = self.settings;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: s.backoff,
                max_backoff: s.backoff * 2u32.saturating_pow(s.retries.min(16)),
                base: 2.0,
            },
            max_retries: s.retries as usize,
            retry_timeout: s.timeout * (s.retries + 1),
        };
        // An endpoint the user gave as http:// (a local MinIO or moto) is meant, not a mistake.
        let plain_http = endpoint().starts_with("http://");
        let client = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(s.timeout)
                    .with_connect_timeout(s.timeout.min(std::time::Duration::from_secs(10)))
                    .with_allow_http(plain_http),
            )
            .build()
            .map_err(|e| io(location, None, format!("cannot set up S3 access: {e}")))?;
        let client = Arc::new(client);
        buckets.insert(bucket.to_string(), client.clone());
        Ok((client, bucket.to_string(), path))
    }

    /// Uploads a large object in parts. S3 completes a multipart upload unconditionally in
    /// object_store, so `put_if_absent` of a large object checks for it first: such objects
    /// are data files under fresh random (UUID) names, which no other writer picks.
    async fn put_parts(&self, location: &str, bytes: Bytes) -> Result<()> {
        let (client, _, path) = self.client(location)?;
        let upload = client
            .put_multipart(&path)
            .await
            .map_err(|e| error(location, None, e))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        parts.put(bytes);
        parts.finish().await.map_err(|e| error(location, None, e))?;
        Ok(())
    }
}

/// Whether a store refused `If-None-Match: *` as something it does not implement.
fn no_conditional_writes(e: &object_store::Error) -> bool {
    let text = e.to_string();
    matches!(e, object_store::Error::NotImplemented { .. })
        || text.contains("501")
        || text.contains("NotImplemented")
}

/// Whether the user accepted that this store cannot refuse a second writer of one version.
fn single_writer() -> bool {
    std::env::var("MEDALLION_S3_SINGLE_WRITER").is_ok_and(|v| v == "1" || v == "true")
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        let (client, bucket, path) = self.client(location)?;
        let m = client
            .head(&path)
            .await
            .map_err(|e| error(location, None, e))?;
        Ok(meta(&bucket, m))
    }

    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        let (client, _, path) = self.client(location)?;
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let bytes = client
            .get_range(&path, range.clone())
            .await
            .map_err(|e| error(location, Some(range.clone()), e))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(io(
                location,
                Some(range.clone()),
                format!(
                    "the store returned {} bytes for a range of {}",
                    bytes.len(),
                    range.end - range.start
                ),
            ));
        }
        Ok(bytes)
    }

    async fn read(&self, location: &str) -> Result<Bytes> {
        // One GET, not the trait's HEAD + ranged GET: log entries are read whole.
        let (client, _, path) = self.client(location)?;
        let got = client
            .get(&path)
            .await
            .map_err(|e| error(location, None, e))?;
        got.bytes().await.map_err(|e| error(location, None, e))
    }

    async fn read_suffix(&self, location: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        let (client, bucket, path) = self.client(location)?;
        let got = client
            .get_opts(
                &path,
                GetOptions {
                    range: Some(GetRange::Suffix(n)),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| error(location, None, e))?;
        let m = meta(&bucket, got.meta.clone());
        let bytes = got.bytes().await.map_err(|e| error(location, None, e))?;
        Ok((bytes, m))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let (client, bucket, path) = self.client(prefix)?;
        let prefix_path = (!path.as_ref().is_empty()).then_some(&path);
        client
            .list(prefix_path)
            .map_ok(|m| meta(&bucket, m))
            .try_collect()
            .await
            .map_err(|e| error(prefix, None, e))
    }

    async fn put(&self, location: &str, bytes: Bytes) -> Result<()> {
        if bytes.len() > MULTIPART_ABOVE {
            return self.put_parts(location, bytes).await;
        }
        let (client, _, path) = self.client(location)?;
        client
            .put(&path, bytes.into())
            .await
            .map_err(|e| error(location, None, e))?;
        Ok(())
    }

    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()> {
        if bytes.len() > MULTIPART_ABOVE {
            match self.head(location).await {
                Ok(_) => {
                    return Err(Error::AlreadyExists {
                        location: location.to_string(),
                    })
                }
                Err(Error::NotFound { .. }) => return self.put_parts(location, bytes).await,
                Err(e) => return Err(e),
            }
        }
        let (client, _, path) = self.client(location)?;
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        // object_store does not resend a conditional PUT (it is not idempotent); a dropped
        // connection or a 5xx is resent here. If an earlier attempt did land, the resend is
        // refused as "exists", and reading the object back tells whether it holds our bytes.
        let mut attempt = client.put_opts(&path, bytes.clone().into(), create()).await;
        let mut wait = self.settings.backoff;
        let mut resent = false;
        for _ in 0..self.settings.retries {
            match &attempt {
                Err(e) if transient(e) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    resent = true;
                    attempt = client.put_opts(&path, bytes.clone().into(), create()).await;
                }
                _ => break,
            }
        }
        if resent {
            if let Err(object_store::Error::AlreadyExists { .. }) = &attempt {
                if self.read(location).await.ok().as_ref() == Some(&bytes) {
                    return Ok(());
                }
            }
        }
        match attempt {
            Ok(_) => Ok(()),
            Err(e) if no_conditional_writes(&e) && single_writer() => {
                // The user's promise that no one else writes stands in for the store's check.
                match self.head(location).await {
                    Ok(_) => Err(Error::AlreadyExists {
                        location: location.to_string(),
                    }),
                    Err(Error::NotFound { .. }) => self.put(location, bytes).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) if no_conditional_writes(&e) => Err(io(
                location,
                None,
                format!(
                    "this store does not support conditional writes (If-None-Match: *), so two writers could both commit one table version and one's data would be lost ({e}); \
                     set MEDALLION_S3_SINGLE_WRITER=1 only if no other process ever writes to this lake at the same time"
                ),
            )),
            Err(e) => Err(error(location, None, e)),
        }
    }

    async fn delete(&self, location: &str) -> Result<()> {
        let (client, _, path) = self.client(location)?;
        match client.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(error(location, None, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_into_bucket_and_key() {
        assert_eq!(
            split("s3://shop/lake/gold/t").unwrap(),
            ("shop", "lake/gold/t")
        );
        assert_eq!(split("s3://shop").unwrap(), ("shop", ""));
        assert_eq!(split("s3://shop/").unwrap(), ("shop", ""));
        assert!(split("s3:///x").is_err());
        // Partition folders keep their literal `%`: the key is what the log names, decoded.
        let p = key_path("s3://b/t/k=a%2Fb/f.parquet", "t/k=a%2Fb/f.parquet").unwrap();
        assert_eq!(p.as_ref(), "t/k=a%2Fb/f.parquet");
    }
}
