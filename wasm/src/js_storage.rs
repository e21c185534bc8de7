//! What the JS engine hands the core: URLs are read with `fetch`, everything else is an
//! in-memory lake (a pipeline's tables live there for the life of the engine, can be queried,
//! and can be taken out as files).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use medallion_core::storage::{is_url, MemoryStorage, ObjectMeta, Storage};
use medallion_core::Result;

use crate::fetch_storage::FetchStorage;

#[derive(Debug)]
pub struct JsStorage {
    pub fetch: FetchStorage,
    pub memory: Arc<MemoryStorage>,
    /// URLs the caller said exist, with their sizes when known: plain HTTP cannot list, so a
    /// glob over URLs is answered from this list.
    pub known_urls: std::cell::RefCell<Vec<String>>,
}

impl JsStorage {
    pub fn new(fetch: FetchStorage) -> Self {
        Self {
            fetch,
            memory: Arc::new(MemoryStorage::new()),
            known_urls: Default::default(),
        }
    }

    fn pick(&self, location: &str) -> &dyn Storage {
        if is_url(location) {
            &self.fetch
        } else {
            self.memory.as_ref()
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Storage for JsStorage {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        self.pick(location).head(location).await
    }
    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        self.pick(location).read_range(location, range).await
    }
    async fn read(&self, location: &str) -> Result<Bytes> {
        self.pick(location).read(location).await
    }
    async fn read_suffix(&self, location: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        self.pick(location).read_suffix(location, n).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        if !is_url(prefix) {
            return self.memory.list(prefix).await;
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
        self.pick(location).put(location, bytes).await
    }
    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()> {
        self.pick(location).put_if_absent(location, bytes).await
    }
    async fn delete(&self, location: &str) -> Result<()> {
        self.pick(location).delete(location).await
    }
}
