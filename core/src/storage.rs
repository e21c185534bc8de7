//! The one I/O interface of the core. A runtime implements [`Storage`] over whatever it has —
//! the local file system, `fetch` with a Range header, host calls from a wasm guest — and the
//! core does everything else. Locations are plain strings: absolute paths or URLs, joined
//! with `/`.
//!
//! The trait's futures are `Send` on native targets and not on wasm32, where JS promises are
//! `!Send` and everything runs on one thread; see [`MaybeSend`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::{Error, Result};

/// `Send + Sync` on native targets, nothing on wasm32 (whose JS handles are neither).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync + ?Sized> MaybeSend for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// What a listing or `head` says of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub location: String,
    pub size: u64,
    /// Milliseconds since the epoch, where the store knows it.
    pub last_modified_ms: Option<i64>,
    /// An opaque version tag (HTTP ETag); a changed tag means changed bytes.
    pub etag: Option<String>,
}

/// Byte-range reads, listings and writes: everything the core needs from the outside world.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Storage: MaybeSend + std::fmt::Debug {
    /// Size and version of one object; [`Error::NotFound`] if it does not exist.
    async fn head(&self, location: &str) -> Result<ObjectMeta>;

    /// The bytes in `range` of an object. Implementations must return exactly that many bytes
    /// or an error naming the location and range.
    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes>;

    /// A whole object.
    async fn read(&self, location: &str) -> Result<Bytes> {
        let meta = self.head(location).await?;
        self.read_range(location, 0..meta.size).await
    }

    /// The last `n` bytes of an object (all of it if smaller) and what it is. A runtime that
    /// can do this in one request (HTTP `Range: bytes=-n`) should: Parquet footers are read so.
    async fn read_suffix(&self, location: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        let meta = self.head(location).await?;
        let bytes = self
            .read_range(location, meta.size.saturating_sub(n)..meta.size)
            .await?;
        Ok((bytes, meta))
    }

    /// Every object below the directory `prefix` (recursively), in no particular order.
    /// A missing directory lists as empty.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Writes an object, replacing any previous one; readers see the old or the new bytes,
    /// never a mix.
    async fn put(&self, location: &str, bytes: Bytes) -> Result<()>;

    /// Writes an object only if none exists, atomically: of two concurrent writers exactly one
    /// succeeds, the other gets [`Error::AlreadyExists`]. Delta commits rely on this.
    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()>;

    /// Removes an object; a missing one is not an error.
    async fn delete(&self, location: &str) -> Result<()>;

    /// Tells the storage that `location` is a data file of a Delta table, `size` bytes long
    /// as its log says. The protocol never rewrites one (a new version is a new file), so
    /// bytes read from it stay valid for as long as it exists, and a storage that caches may
    /// serve them again without asking the server whether it changed. Storages without a
    /// cache ignore it.
    fn note_immutable(&self, _location: &str, _size: u64) {}
}

/// Joins a location and a relative path with exactly one `/`.
pub fn join(base: &str, rel: &str) -> String {
    if base.is_empty() {
        return rel.to_string();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

/// Whether a location is a URL (`http(s)://` or `s3://`) rather than a local path.
pub fn is_url(location: &str) -> bool {
    is_http(location) || is_s3(location)
}

/// Whether a location is read over plain HTTP(S), which cannot list a folder.
pub fn is_http(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// The part of a location that names the file: an http(s) URL without its query and
/// fragment, any other location whole. In a URL, `?` starts the query (a presigned URL's
/// signature, a cache-busting version) and says nothing about the file's name.
pub fn file_part(location: &str) -> &str {
    if is_http(location) {
        let end = location.find(['?', '#']).unwrap_or(location.len());
        &location[..end]
    } else {
        location
    }
}

/// Where a location's first wildcard (`*`, `?`, `[`, `{`) is, if it is a glob; an http(s)
/// URL's query is not looked at ([`file_part`]).
pub fn wildcard_at(location: &str) -> Option<usize> {
    file_part(location).find(['*', '?', '[', '{'])
}

/// Whether a location can only be a file, not a Delta table's folder: its name ends in
/// `.parquet` (in any case), or it is a URL with a query, under which no `_delta_log/` could
/// be found (a presigned URL signs one object).
pub fn names_one_file(location: &str) -> bool {
    let name = file_part(location);
    name.len() != location.len() || name.to_ascii_lowercase().ends_with(".parquet")
}

/// Whether a location is in an S3(-compatible) bucket: `s3://bucket/key`.
pub fn is_s3(location: &str) -> bool {
    location.starts_with("s3://")
}

/// What Medallion can do with each kind of location, for error messages.
pub const SUPPORTED_LOCATIONS: &str = "local paths and s3://bucket/prefix (read and write), \
     http(s):// URLs (read)";

/// Refuses a location whose scheme Medallion does not speak (`gs://`, `az://`, `file://` …),
/// so that it is never taken for a relative local path: `s3:/shop/lake` written to a local
/// folder looks like success to a user who meant a bucket.
pub fn check_location(location: &str) -> Result<()> {
    let Some((scheme, _)) = location.split_once("://") else {
        return Ok(());
    };
    if is_url(location) {
        if is_s3(location) && location["s3://".len()..].split('/').next() == Some("") {
            return Err(Error::Location {
                location: location.to_string(),
                message: "names no bucket: write s3://BUCKET/PREFIX".into(),
            });
        }
        return Ok(());
    }
    let plain = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !plain {
        return Ok(());
    }
    Err(Error::Location {
        location: location.to_string(),
        message: format!("Medallion does not speak `{scheme}://`; it takes {SUPPORTED_LOCATIONS}"),
    })
}

/// A store held in memory: for tests, and for runtimes that return written tables to their
/// caller instead of persisting them.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every object, for handing written tables back to a caller.
    pub fn snapshot(&self) -> BTreeMap<String, Bytes> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A poisoned lock only means another thread panicked mid-insert of a whole value;
        // the map itself is still consistent.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Storage for MemoryStorage {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        let objects = self.lock();
        let bytes = objects.get(location).ok_or_else(|| Error::NotFound {
            location: location.to_string(),
        })?;
        Ok(ObjectMeta {
            location: location.to_string(),
            size: bytes.len() as u64,
            last_modified_ms: None,
            etag: None,
        })
    }

    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        let objects = self.lock();
        let bytes = objects.get(location).ok_or_else(|| Error::NotFound {
            location: location.to_string(),
        })?;
        if range.start > range.end || range.end > bytes.len() as u64 {
            return Err(Error::Io {
                location: location.to_string(),
                range: Some(range),
                message: format!("out of bounds: the object has {} bytes", bytes.len()),
            });
        }
        Ok(bytes.slice(range.start as usize..range.end as usize))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        Ok(self
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with(&dir))
            .map(|(k, v)| ObjectMeta {
                location: k.clone(),
                size: v.len() as u64,
                last_modified_ms: None,
                etag: None,
            })
            .collect())
    }

    async fn put(&self, location: &str, bytes: Bytes) -> Result<()> {
        self.lock().insert(location.to_string(), bytes);
        Ok(())
    }

    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()> {
        let mut objects = self.lock();
        if objects.contains_key(location) {
            return Err(Error::AlreadyExists {
                location: location.to_string(),
            });
        }
        objects.insert(location.to_string(), bytes);
        Ok(())
    }

    async fn delete(&self, location: &str) -> Result<()> {
        self.lock().remove(location);
        Ok(())
    }
}

/// Counts requests and bytes that pass through to another store, for run reports and
/// benchmarks.
#[derive(Debug)]
pub struct CountingStorage {
    inner: Arc<dyn Storage>,
    stats: Arc<IoStats>,
}

/// Requests and bytes seen by a [`CountingStorage`].
#[derive(Debug, Default)]
pub struct IoStats {
    pub read_requests: AtomicU64,
    pub bytes_read: AtomicU64,
    pub write_requests: AtomicU64,
    pub bytes_written: AtomicU64,
    pub list_requests: AtomicU64,
}

/// A plain copy of [`IoStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoCounts {
    pub read_requests: u64,
    pub bytes_read: u64,
    pub write_requests: u64,
    pub bytes_written: u64,
    pub list_requests: u64,
}

impl std::ops::Add for IoCounts {
    type Output = IoCounts;
    fn add(self, o: IoCounts) -> IoCounts {
        IoCounts {
            read_requests: self.read_requests + o.read_requests,
            bytes_read: self.bytes_read + o.bytes_read,
            write_requests: self.write_requests + o.write_requests,
            bytes_written: self.bytes_written + o.bytes_written,
            list_requests: self.list_requests + o.list_requests,
        }
    }
}

impl std::ops::Sub for IoCounts {
    type Output = IoCounts;
    fn sub(self, o: IoCounts) -> IoCounts {
        IoCounts {
            read_requests: self.read_requests - o.read_requests,
            bytes_read: self.bytes_read - o.bytes_read,
            write_requests: self.write_requests - o.write_requests,
            bytes_written: self.bytes_written - o.bytes_written,
            list_requests: self.list_requests - o.list_requests,
        }
    }
}

impl IoStats {
    pub fn counts(&self) -> IoCounts {
        IoCounts {
            read_requests: self.read_requests.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            write_requests: self.write_requests.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            list_requests: self.list_requests.load(Ordering::Relaxed),
        }
    }
}

impl CountingStorage {
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<IoStats> {
        self.stats.clone()
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Storage for CountingStorage {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        self.stats.read_requests.fetch_add(1, Ordering::Relaxed);
        self.inner.head(location).await
    }

    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        self.stats.read_requests.fetch_add(1, Ordering::Relaxed);
        let bytes = self.inner.read_range(location, range).await?;
        self.stats
            .bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    async fn read(&self, location: &str) -> Result<Bytes> {
        // Passed through, not the default HEAD + range: runtimes read whole files in one request.
        self.stats.read_requests.fetch_add(1, Ordering::Relaxed);
        let bytes = self.inner.read(location).await?;
        self.stats
            .bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    async fn read_suffix(&self, location: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        self.stats.read_requests.fetch_add(1, Ordering::Relaxed);
        let (bytes, meta) = self.inner.read_suffix(location, n).await?;
        self.stats
            .bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok((bytes, meta))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.stats.list_requests.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }

    async fn put(&self, location: &str, bytes: Bytes) -> Result<()> {
        self.stats.write_requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.inner.put(location, bytes).await
    }

    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()> {
        self.stats.write_requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.inner.put_if_absent(location, bytes).await
    }

    async fn delete(&self, location: &str) -> Result<()> {
        self.inner.delete(location).await
    }

    fn note_immutable(&self, location: &str, size: u64) {
        self.inner.note_immutable(location, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_if_absent_refuses_the_second_writer() {
        futures::executor::block_on(async {
            let s = MemoryStorage::new();
            s.put_if_absent("/t/a", Bytes::from_static(b"1"))
                .await
                .unwrap();
            let err = s
                .put_if_absent("/t/a", Bytes::from_static(b"2"))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::AlreadyExists { .. }));
            assert_eq!(s.read("/t/a").await.unwrap(), Bytes::from_static(b"1"));
        });
    }

    #[test]
    fn unknown_schemes_are_refused_naming_the_supported_ones() {
        for ok in [
            "/lake",
            "lake/x",
            "s3://shop/lake",
            "https://h/t",
            "C:/x",
            "a:b",
        ] {
            assert!(check_location(ok).is_ok(), "{ok}");
        }
        for bad in [
            "gs://shop/lake",
            "az://c/p",
            "abfss://c@a/p",
            "file:///tmp/x",
            "s3a://b/k",
        ] {
            let err = check_location(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("s3://"), "{err}");
        }
        let err = check_location("s3:///lake").unwrap_err().to_string();
        assert!(err.contains("names no bucket"), "{err}");
    }

    #[test]
    fn out_of_range_reads_name_the_range() {
        futures::executor::block_on(async {
            let s = MemoryStorage::new();
            s.put("/f", Bytes::from_static(b"abc")).await.unwrap();
            let err = s.read_range("/f", 2..10).await.unwrap_err().to_string();
            assert!(err.contains("/f bytes 2-9"), "{err}");
        });
    }

    #[test]
    fn join_uses_one_slash() {
        assert_eq!(join("/lake/", "/bronze/x"), "/lake/bronze/x");
        assert_eq!(join("http://h/a", "b"), "http://h/a/b");
    }
}
