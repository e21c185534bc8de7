//! The core's [`Storage`] and [`Clock`] over the host's imported functions (see [`crate::abi`]).
//! Every call is synchronous underneath: the host does the I/O while the guest waits, so the
//! futures are ready when first polled.

use std::ops::Range;

use bytes::Bytes;
use medallion_core::clock::Clock;
use medallion_core::storage::{ObjectMeta, Storage};
use medallion_core::{Error, Result};
use serde::Deserialize;

use crate::abi::{self, status};

/// Storage answered by the host, for exactly the paths and URLs the job granted.
#[derive(Debug, Default)]
pub struct HostStorage;

/// `ObjectMeta` as the host sends it.
#[derive(Deserialize)]
struct Meta {
    location: String,
    size: u64,
    last_modified_ms: Option<i64>,
    etag: Option<String>,
}

impl From<Meta> for ObjectMeta {
    fn from(m: Meta) -> Self {
        ObjectMeta {
            location: m.location,
            size: m.size,
            last_modified_ms: m.last_modified_ms,
            etag: m.etag,
        }
    }
}

/// The error a status stands for; the host's message (if any) is taken now.
fn error(code: i64, location: &str, range: Option<Range<u64>>) -> Error {
    match code {
        status::NOT_FOUND => Error::NotFound {
            location: location.to_string(),
        },
        status::ALREADY_EXISTS => Error::AlreadyExists {
            location: location.to_string(),
        },
        _ => Error::Io {
            location: location.to_string(),
            range,
            message: String::from_utf8_lossy(&abi::take_pending()).into_owned(),
        },
    }
}

fn json<T: serde::de::DeserializeOwned>(location: &str) -> Result<T> {
    serde_json::from_slice(&abi::take_pending()).map_err(|e| Error::Io {
        location: location.to_string(),
        range: None,
        message: format!("the host's answer is not valid: {e}"),
    })
}

/// Reads into a fresh buffer of `cap` bytes through `fill`, which returns how many it wrote.
fn read_into(cap: u64, location: &str, fill: impl FnOnce(*mut u8) -> i64) -> Result<Vec<u8>> {
    let cap = usize::try_from(cap).map_err(|_| Error::Io {
        location: location.to_string(),
        range: None,
        message: format!("{cap} bytes do not fit in a 32-bit guest"),
    })?;
    let mut buf: Vec<u8> = Vec::with_capacity(cap);
    let n = fill(buf.as_mut_ptr());
    if n < 0 {
        return Err(error(n, location, None));
    }
    // SAFETY: the host wrote `n` ≤ `cap` bytes at the start of `buf`.
    unsafe { buf.set_len((n as usize).min(cap)) };
    Ok(buf)
}

#[async_trait::async_trait(?Send)]
impl Storage for HostStorage {
    async fn head(&self, location: &str) -> Result<ObjectMeta> {
        // SAFETY: the location is a valid buffer for the duration of the call.
        let n = unsafe { abi::head(location.as_ptr(), location.len() as u32) };
        if n < 0 {
            return Err(error(n, location, None));
        }
        Ok(json::<Meta>(location)?.into())
    }

    async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start > range.end {
            return Err(Error::Io {
                location: location.to_string(),
                range: Some(range),
                message: "the range ends before it starts".into(),
            });
        }
        let want = range.end - range.start;
        let buf = read_into(want, location, |dst| unsafe {
            // SAFETY: `dst` has room for `want` bytes.
            abi::read_range(
                location.as_ptr(),
                location.len() as u32,
                range.start,
                range.end,
                dst,
            )
        })
        .map_err(|e| match e {
            Error::Io {
                location, message, ..
            } => Error::Io {
                location,
                range: Some(range.clone()),
                message,
            },
            other => other,
        })?;
        if buf.len() as u64 != want {
            return Err(Error::Io {
                location: location.to_string(),
                range: Some(range),
                message: format!("the host returned {} bytes", buf.len()),
            });
        }
        Ok(Bytes::from(buf))
    }

    async fn read_suffix(&self, location: &str, n: u64) -> Result<(Bytes, ObjectMeta)> {
        let buf = read_into(n, location, |dst| unsafe {
            // SAFETY: `dst` has room for `n` bytes.
            abi::read_suffix(location.as_ptr(), location.len() as u32, n, dst)
        })?;
        let meta: Meta = json(location)?;
        Ok((Bytes::from(buf), meta.into()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // SAFETY: the prefix is a valid buffer for the duration of the call.
        let n = unsafe { abi::list(prefix.as_ptr(), prefix.len() as u32) };
        if n < 0 {
            return Err(error(n, prefix, None));
        }
        let metas: Vec<Meta> = json(prefix)?;
        Ok(metas.into_iter().map(Into::into).collect())
    }

    async fn put(&self, location: &str, bytes: Bytes) -> Result<()> {
        // SAFETY: both buffers are valid for the duration of the call.
        let n = unsafe {
            abi::put(
                location.as_ptr(),
                location.len() as u32,
                bytes.as_ptr(),
                bytes.len() as u32,
            )
        };
        if n < 0 {
            return Err(error(n, location, None));
        }
        Ok(())
    }

    async fn put_if_absent(&self, location: &str, bytes: Bytes) -> Result<()> {
        // SAFETY: both buffers are valid for the duration of the call.
        let n = unsafe {
            abi::put_if_absent(
                location.as_ptr(),
                location.len() as u32,
                bytes.as_ptr(),
                bytes.len() as u32,
            )
        };
        if n < 0 {
            return Err(error(n, location, None));
        }
        Ok(())
    }

    async fn delete(&self, location: &str) -> Result<()> {
        // SAFETY: the location is a valid buffer for the duration of the call.
        let n = unsafe { abi::delete(location.as_ptr(), location.len() as u32) };
        if n < 0 {
            return Err(error(n, location, None));
        }
        Ok(())
    }
}

/// The host's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostClock;

impl Clock for HostClock {
    fn now_ms(&self) -> i64 {
        // SAFETY: no arguments.
        unsafe { abi::now_ms() }
    }
    fn monotonic_ms(&self) -> f64 {
        // SAFETY: no arguments.
        unsafe { abi::monotonic_ms() }
    }
}
