//! An `ObjectStore` over a [`Storage`], which DataFusion's file scans require to be
//! registered (Medallion's own Parquet reader factory does the actual reads).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::{seam, share, unshare, Shared};
use crate::error::Error;
use crate::storage::{self, Storage};

/// An `ObjectStore` whose object paths are locations below `prefix` in a [`Storage`].
pub struct StorageObjectStore {
    storage: Shared,
    prefix: String,
}

impl StorageObjectStore {
    /// `prefix` is what object paths are relative to: `/` for local paths,
    /// `http://host:port/` for a web server.
    pub fn new(storage: Arc<dyn Storage>, prefix: impl Into<String>) -> Self {
        Self {
            storage: share(storage),
            prefix: prefix.into(),
        }
    }

    fn location(&self, path: &Path) -> String {
        storage::join(&self.prefix, path.as_ref())
    }

    fn storage(&self) -> Arc<dyn Storage> {
        unshare(&self.storage)
    }
}

fn to_meta(prefix: &str, m: storage::ObjectMeta) -> object_store::Result<ObjectMeta> {
    {
        let rel = m
            .location
            .strip_prefix(prefix.trim_end_matches('/'))
            .unwrap_or(&m.location)
            .trim_start_matches('/');
        Ok(ObjectMeta {
            location: Path::parse(rel).map_err(|e| object_store::Error::Generic {
                store: "medallion",
                source: Box::new(e),
            })?,
            last_modified: m
                .last_modified_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
                .unwrap_or_default(),
            size: m.size,
            e_tag: m.etag,
            version: None,
        })
    }
}

/// Where DataFusion should look for a location, and the object-store URL and prefix that
/// serve it: `/a/b.parquet` → (`file:///`, `/`, path `a/b.parquet`);
/// `http://h:1/a/b.parquet` → (`http://h:1/`, `http://h:1/`, `a/b.parquet`).
pub fn route(location: &str) -> crate::Result<(ObjectStoreUrl, String, String)> {
    let (base, rest) = if storage::is_url(location) {
        let scheme_end = location.find("://").map(|i| i + 3).unwrap_or(0);
        let host_end = location[scheme_end..]
            .find('/')
            .map(|i| scheme_end + i)
            .unwrap_or(location.len());
        (
            format!("{}/", &location[..host_end]),
            location[host_end..].trim_start_matches('/').to_string(),
        )
    } else if location.starts_with('/') {
        (
            "file:///".to_string(),
            location.trim_start_matches('/').to_string(),
        )
    } else {
        return Err(Error::Spec(format!(
            "location `{location}` must be an absolute path, an s3:// location or an http(s) URL"
        )));
    };
    let url = ObjectStoreUrl::parse(&base).map_err(|e| Error::DataFusion {
        context: format!("location {location}"),
        source: e,
    })?;
    let prefix = if base == "file:///" {
        "/".to_string()
    } else {
        base
    };
    Ok((url, prefix, rest))
}

fn to_os_error(e: Error) -> object_store::Error {
    match e {
        Error::NotFound { location } => object_store::Error::NotFound {
            path: location.clone(),
            source: Box::new(Error::NotFound { location }),
        },
        Error::AlreadyExists { location } => object_store::Error::AlreadyExists {
            path: location.clone(),
            source: Box::new(Error::AlreadyExists { location }),
        },
        other => object_store::Error::Generic {
            store: "medallion",
            source: Box::new(other),
        },
    }
}

fn not_supported(what: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("medallion storage does not support {what}").into(),
    }
}

impl fmt::Debug for StorageObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageObjectStore({})", self.prefix)
    }
}

impl fmt::Display for StorageObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "medallion storage at {}", self.prefix)
    }
}

#[async_trait]
impl ObjectStore for StorageObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let loc = self.location(location);
        let storage = self.storage();
        let bytes: Bytes = payload.into();
        seam(async move {
            match opts.mode {
                PutMode::Create => storage.put_if_absent(&loc, bytes).await,
                PutMode::Overwrite => storage.put(&loc, bytes).await,
                PutMode::Update(_) => return Err(not_supported("conditional updates")),
            }
            .map_err(to_os_error)?;
            Ok(PutResult {
                e_tag: None,
                version: None,
            })
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(not_supported("multipart uploads"))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let loc = self.location(location);
        let storage = self.storage();
        let (meta, range, bytes) = seam(async move {
            // A bounded range needs no HEAD: DataFusion knows sizes from listings and logs.
            if let (Some(GetRange::Bounded(r)), false) = (&options.range, options.head) {
                let bytes = storage
                    .read_range(&loc, r.clone())
                    .await
                    .map_err(to_os_error)?;
                let meta = storage::ObjectMeta {
                    location: loc.clone(),
                    size: r.end,
                    last_modified_ms: None,
                    etag: None,
                };
                return Ok((meta, r.clone(), bytes));
            }
            let meta = storage.head(&loc).await.map_err(to_os_error)?;
            let range: Range<u64> = match options.range {
                None => 0..meta.size,
                Some(GetRange::Bounded(r)) => r.start..r.end.min(meta.size),
                Some(GetRange::Offset(o)) => o..meta.size,
                Some(GetRange::Suffix(n)) => meta.size.saturating_sub(n)..meta.size,
            };
            if options.head {
                return Ok((meta, range, Bytes::new()));
            }
            let bytes = storage
                .read_range(&loc, range.clone())
                .await
                .map_err(to_os_error)?;
            Ok::<_, object_store::Error>((meta, range, bytes))
        })
        .await?;
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed()),
            meta: to_meta(&self.prefix, meta)?,
            range,
            attributes: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations
            .map(|_| Err(not_supported("deleting through DataFusion")))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let dir = match prefix {
            Some(p) => self.location(p),
            None => self.prefix.clone(),
        };
        let storage = self.storage();
        let prefix = self.prefix.clone();
        let listed = seam(async move { storage.list(&dir).await.map_err(to_os_error) });
        stream::once(listed)
            .map(move |listed| {
                let metas: Vec<_> = match listed {
                    Ok(items) => items.into_iter().map(|m| to_meta(&prefix, m)).collect(),
                    Err(e) => vec![Err(e)],
                };
                stream::iter(metas)
            })
            .flatten()
            .boxed()
    }

    async fn list_with_delimiter(
        &self,
        _prefix: Option<&Path>,
    ) -> object_store::Result<ListResult> {
        Err(not_supported("delimited listings"))
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(not_supported("copies"))
    }
}

/// Registers the object store that serves `location` with a DataFusion context, and returns
/// the URL under which DataFusion finds it plus the object path of the location.
pub fn register_for(
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    storage: &Arc<dyn Storage>,
    location: &str,
) -> crate::Result<(ObjectStoreUrl, Path)> {
    let (url, prefix, rest) = route(location)?;
    // Register once per URL; a store someone else registered there is replaced by ours.
    if !registered_by_us(runtime, &url) {
        runtime.register_object_store(
            url.as_ref(),
            Arc::new(StorageObjectStore::new(storage.clone(), prefix)),
        );
    }
    let path = Path::parse(&rest).map_err(|e| Error::Spec(format!("location {location}: {e}")))?;
    Ok((url, path))
}

fn registered_by_us(
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    url: &ObjectStoreUrl,
) -> bool {
    runtime
        .object_store(url)
        .map(|s| s.to_string().starts_with("medallion storage"))
        .unwrap_or(false)
}
