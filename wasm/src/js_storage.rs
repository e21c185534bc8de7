//! What the JS engine hands the core: `http(s)://` URLs are read with `fetch`, `s3://`
//! locations go to the bucket ([`S3Storage`], when `Medallion.create` was given the `s3`
//! option), and everything else is an in-memory lake (a pipeline's tables live there for the
//! life of the engine, can be queried, and can be taken out as files).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use medallion_core::storage::{is_http, is_s3, MemoryStorage, ObjectMeta, Storage};
use medallion_core::{Error, Result};

use crate::fetch_storage::FetchStorage;
use crate::s3_storage::S3Storage;

#[derive(Debug)]
pub struct JsStorage {
    pub fetch: FetchStorage,
    pub s3: Option<S3Storage>,
    pub memory: Arc<MemoryStorage>,
    /// URLs the caller said exist, with their sizes when known: plain HTTP cannot list, so a
    /// glob over URLs is answered from this list.
    pub known_urls: std::cell::RefCell<Vec<String>>,
}

/// What to say of an `s3://` location when the engine was made without the `s3` option.
pub fn no_s3(location: &str) -> String {
    format!(
        "`{location}`: s3:// locations need the `s3` option of Medallion.create: \
         {{ s3: {{ region, accessKeyId, secretAccessKey }} }} in Node and edge workers, \
         {{ s3: {{ region, sign }} }} in a browser page, {{ s3: {{ region, anonymous: true }} }} for a public bucket"
    )
}

impl JsStorage {
    pub fn new(fetch: FetchStorage, s3: Option<S3Storage>) -> Self {
        Self {
            fetch,
            s3,
            memory: Arc::new(MemoryStorage::new()),
            known_urls: Default::default(),
        }
    }

    /// Accepts a new version of the file at `location` from now on (see [`FetchStorage::unpin`]).
    pub fn unpin(&self, location: &str) {
        if is_http(location) {
            self.fetch.unpin(location);
        } else if let (true, Some(s3)) = (is_s3(location), &self.s3) {
            s3.unpin(location);
        }
    }

    fn pick(&self, location: &str) -> Result<&dyn Storage> {
        if is_http(location) {
            Ok(&self.fetch)
        } else if is_s3(location) {
            match &self.s3 {
                Some(s3) => Ok(s3),
                None => Err(Error::Spec(no_s3(location))),
            }
        } else {
            Ok(self.memory.as_ref())
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Storage for JsStorage {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        self.pick(location)?.head(location).await
    }
    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        self.pick(location)?.read_range(location, range).await
    }
    async fn read(&self, location: &str) -> Result<Bytes> {
        self.pick(location)?.read(location).await
    }
    async fn read_suffix(&self, location: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        self.pick(location)?.read_suffix(location, n).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        if !is_http(prefix) {
            return self.pick(prefix)?.list(prefix).await;
        }
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        let urls: Vec<String> = self
            .known_urls
            .borrow()
            .iter()
            .filter(|u| u.starts_with(&dir))
            .cloned()
            .collect();
        if urls.is_empty() {
            return self.fetch.list(prefix).await;
        }
        let mut out = Vec::with_capacity(urls.len());
        for url in urls {
            // Sizes are needed by the scan planner; a HEAD each (sources are few and small).
            out.push(self.fetch.head(&url).await?);
        }
        Ok(out)
    }
    async fn put(&self, location: &str, bytes: Bytes) -> Result<()> {
        self.pick(location)?.put(location, bytes).await
    }
    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()> {
        self.pick(location)?.put_if_absent(location, bytes).await
    }
    async fn delete(&self, location: &str) -> Result<()> {
        self.pick(location)?.delete(location).await
    }
    fn note_immutable(&self, location: &str, size: u64) {
        if let Ok(storage) = self.pick(location) {
            storage.note_immutable(location, size);
        }
    }
}
