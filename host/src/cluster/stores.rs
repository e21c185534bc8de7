//! The object stores every cluster process plans and reads with. The scheduler lists and
//! reads footers of a query's files while planning; executors read them while running it;
//! both find the store of any location here: local files through DataFusion's own store,
//! `http(s)://` and `s3://` locations through Medallion's storage (its retries, Range reads,
//! S3 signing), created on first use per server or bucket, so no location has to be
//! registered in advance.

use std::sync::Arc;

use medallion_core::bridge::object_store::StorageObjectStore;
use medallion_core::datafusion::common::{DataFusionError, Result};
use medallion_core::datafusion::execution::object_store::{
    DefaultObjectStoreRegistry, ObjectStoreRegistry,
};
use medallion_core::storage::Storage;
use object_store::ObjectStore;
use url::Url;

/// Local files, and Medallion's storage for remote locations.
#[derive(Debug)]
pub struct LakeStores {
    registered: DefaultObjectStoreRegistry,
    storage: Arc<dyn Storage>,
}

impl LakeStores {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            registered: DefaultObjectStoreRegistry::new(),
            storage,
        }
    }
}

impl ObjectStoreRegistry for LakeStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.registered.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.registered.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.registered.get_store(url) {
            return Ok(store);
        }
        match url.scheme() {
            "http" | "https" | "s3" => {
                // Object paths are relative to the server or bucket (see core's `route`).
                let base = format!("{}://{}/", url.scheme(), url.authority());
                let store: Arc<dyn ObjectStore> =
                    Arc::new(StorageObjectStore::new(self.storage.clone(), base));
                self.registered.register_store(url, store.clone());
                Ok(store)
            }
            other => Err(DataFusionError::Configuration(format!(
                "{url}: Medallion's cluster reads local files, http(s):// and s3:// locations, not {other}://"
            ))),
        }
    }
}
