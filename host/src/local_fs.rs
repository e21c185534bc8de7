//! The core's [`Storage`] over the local file system, for the native CLI and tests.
//! Locations are absolute paths. Writes go to a temporary file first, so readers never see
//! half a file; put-if-absent publishes with `link(2)`, which fails if the name exists —
//! atomic on every POSIX file system. Each step is made durable before the next: the temporary
//! file is synced before it is published, and a folder is synced after a name in it is
//! created (a new folder, a renamed or linked file), so that a committed log entry survives a
//! power loss.

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
    create_dirs(dir).map_err(|e| io_err(location, None, e))?;
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

/// Creates `dir` and its missing parents, syncing the parent of each folder created.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(d) = next {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d);
        next = d.parent();
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            // Another writer made it first; it syncs its parent.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            Err(e) => return Err(e),
        }
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Makes the names in a folder durable (the entries, not the files' contents).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)?.sync_all()
}

/// Folders cannot be opened for syncing here; their entries are as durable as the OS makes
/// them.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// A failed sync of the folder `location` was published in.
fn sync_err(location: &str, e: std::io::Error) -> Error {
    Error::Io {
        location: location.to_string(),
        range: None,
        message: format!("written, but its folder could not be synced: {e}"),
    }
}

/// The folder `location` is in.
fn parent_of(location: &str) -> &Path {
    Path::new(location).parent().unwrap_or(Path::new("."))
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
                    // A link's size is its target's (a dangling one keeps its own, and reading
                    // it fails naming it); links to folders are not followed, so no cycles.
                    let m = fs::metadata(&location).unwrap_or(m);
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
        })?;
        sync_dir(parent_of(location)).map_err(|e| sync_err(location, e))
    }

    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()> {
        let tmp = write_temp(location, &bytes)?;
        let linked = fs::hard_link(&tmp, location);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => match sync_dir(parent_of(location)) {
                Ok(()) => Ok(()),
                // Not durable, so not committed: withdraw it rather than answer an error for
                // an entry that stays (its data files would then be removed under it).
                Err(e) => {
                    let _ = fs::remove_file(location);
                    Err(sync_err(location, e))
                }
            },
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

/// An absolute form of a user-given path (the core wants absolute locations). URLs stay as
/// they are; a scheme Medallion does not speak is refused rather than taken for a folder.
pub fn absolute(path: &str) -> std::io::Result<String> {
    medallion_core::storage::check_location(path)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    if medallion_core::storage::is_url(path) {
        return Ok(path.trim_end_matches('/').to_string());
    }
    let p = std::path::absolute(path)?;
    Ok(p.to_string_lossy().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_into_new_nested_folders() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("lake/silver/orders");
        let data = table.join("part-0.parquet");
        let log = table.join("_delta_log/00000000000000000000.json");
        let (data, log) = (data.to_str().unwrap(), log.to_str().unwrap());

        LocalFs.put(data, Bytes::from_static(b"a")).await.unwrap();
        LocalFs.put(data, Bytes::from_static(b"b")).await.unwrap();
        assert_eq!(std::fs::read(data).unwrap(), b"b");
        LocalFs
            .put_if_absent(log, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(log).unwrap(), b"{}");

        match LocalFs.put_if_absent(log, Bytes::from_static(b"x")).await {
            Err(Error::AlreadyExists { location }) => assert_eq!(location, log),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(std::fs::read(log).unwrap(), b"{}");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(table.join("_delta_log"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[tokio::test]
    async fn a_file_where_a_folder_should_be_names_the_location() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lake"), b"").unwrap();
        let location = dir.path().join("lake/t/part-0.parquet");
        let location = location.to_str().unwrap();
        let err = LocalFs
            .put(location, Bytes::from_static(b"a"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(location), "{err}");
    }
}
