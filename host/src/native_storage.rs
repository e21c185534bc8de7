//! The storage the native CLI hands the core: local paths go to [`LocalFs`], `http(s)://`
//! URLs to [`HttpStorage`], `s3://` locations to [`S3Storage`]; any other scheme is refused.

use std::ops::Range;

use bytes::Bytes;
use medallion_core::storage::{check_location, is_http, is_s3, ObjectMeta, Storage};
use medallion_core::Result;

use crate::http::{HttpSettings, HttpStorage};
use crate::local_fs::LocalFs;
use crate::s3::S3Storage;

#[derive(Debug)]
pub struct NativeStorage {
    local: LocalFs,
    http: HttpStorage,
    s3: S3Storage,
}

impl NativeStorage {
    pub fn new(http: HttpSettings) -> Self {
        Self {
            local: LocalFs,
            http: HttpStorage::new(http),
            s3: S3Storage::new(http),
        }
    }

    fn pick(&self, location: &str) -> Result<&dyn Storage> {
        check_location(location)?;
        Ok(if is_http(location) {
            &self.http
        } else if is_s3(location) {
            &self.s3
        } else {
            &self.local
        })
    }
}

#[async_trait::async_trait]
impl Storage for NativeStorage {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        self.pick(location)?.head(location).await
    }
    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        self.pick(location)?.read_range(location, range).await
    }
    async fn read_suffix(&self, location: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        self.pick(location)?.read_suffix(location, n).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.pick(prefix)?.list(prefix).await
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
}
