//! The core's [`Storage`] over the local file system, for the native CLI and tests.
//! Locations are absolute paths. Writes go to a temporary file first, so readers never see
//! half a file; put-if-absent publishes with `link(2)`, which fails if the name exists —
//! atomic on every POSIX file system.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use medallion_core::storage::{ObjectMeta, Storage};
use medallion_core::{Error, Result};

#[derive(Debug, Default, Clone)]
pub struct LocalFs;

fn io_err(location: &str, range: Option<Range<u64>>, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        return Error::NotFound {
            location: location.to_string(),
        };
    }
    Error::Io {
        location: location.to_string(),
        range,
        message: e.to_string(),
    }
}

fn meta(location: &str, m: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        location: location.to_string(),
        size: m.len(),
        last_modified_ms: m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64),
        etag: None,
    }
}

/// Writes `bytes` to a fresh temporary file next to `location` and returns its path.
fn write_temp(location: &str, bytes: &[u8]) -> Result<std::path::PathBuf> {
    let path = Path::new(location);
    let dir = path.parent().ok_or_else(|| Error::Io {
        location: location.to_string(),
        range: None,
        message: "has no parent folder".into(),
    })?;
    fs::create_dir_all(dir).map_err(|e| io_err(location, None, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut f = fs::File::create(&tmp).map_err(|e| io_err(location, None, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(location, None, e))?;
    Ok(tmp)
}

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[async_trait::async_trait]
impl Storage for LocalFs {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        let m = fs::metadata(location).map_err(|e| io_err(location, None, e))?;
        if m.is_dir() {
            return Err(Error::Io {
                location: location.to_string(),
                range: None,
                message: "is a folder, not a file".into(),
            });
        }
        Ok(meta(location, &m))
    }

    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        let mut f =
            fs::File::open(location).map_err(|e| io_err(location, Some(range.clone()), e))?;
        let len = range.end.saturating_sub(range.start);
        let size = f
            .metadata()
            .map_err(|e| io_err(location, Some(range.clone()), e))?
            .len();
        if range.end > size || range.start > range.end {
            return Err(Error::Io {
                location: location.to_string(),
                range: Some(range),
                message: format!("out of bounds: the file has {size} bytes"),
            });
        }
        let mut buf = vec![0; len as usize];
        f.seek(SeekFrom::Start(range.start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| io_err(location, Some(range.clone()), e))?;
        Ok(Bytes::from(buf))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut dirs = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                // A missing folder, or a file where a folder was expected, lists as empty.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(io_err(&dir, None, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err(&dir, None, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                // Temporary files of writes in progress are not objects yet.
                if name.starts_with('.') && name.ends_with(".tmp") {
                    continue;
                }
                let location = format!("{dir}/{name}");
                let m = entry.metadata().map_err(|e| io_err(&location, None, e))?;
                if m.is_dir() {
                    dirs.push(location);
                } else {
                    out.push(meta(&location, &m));
                }
            }
        }
        Ok(out)
    }

    async fn put(&self, location: &str, bytes: Bytes) -> Result<()> {
        let tmp = write_temp(location, &bytes)?;
        fs::rename(&tmp, location).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(location, None, e)
        })
    }

    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()> {
        let tmp = write_temp(location, &bytes)?;
        let linked = fs::hard_link(&tmp, location);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
                location: location.to_string(),
            }),
            Err(e) => Err(io_err(location, None, e)),
        }
    }

    async fn delete(&self, location: &str) -> Result<()> {
        match fs::remove_file(location) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(location, None, e)),
        }
    }
}

/// An absolute form of a user-given path (the core wants absolute locations).
pub fn absolute(path: &str) -> std::io::Result<String> {
    if medallion_core::storage::is_url(path) {
        return Ok(path.to_string());
    }
    let p = std::path::absolute(path)?;
    Ok(p.to_string_lossy().trim_end_matches('/').to_string())
}
