//! Medallion on a DataFusion Ballista cluster (cargo feature `cluster`).
//!
//! The same `medallion` binary is a Ballista scheduler ([`scheduler`]), an executor
//! ([`executor`]), or a client that sends SQL to them ([`session`]). The lake stays
//! Medallion's: executors only run query plans, reading data files through the same storage
//! the CLI uses ([`stores`]); results come back to the client, which writes the data files
//! and commits the Delta log exactly as a local run does.
//!
//! - [`stores`]: the object-store registry of every cluster process: local files, and
//!   Medallion's HTTP and S3 storage for any `http(s)://` or `s3://` location.
//! - [`tables`]: a table version as a plain list of Parquet files (a `ListingTable`), which
//!   Ballista's stock codecs serialise to the scheduler and executors.
//! - [`session`]: a client session on the cluster, tables registered from Delta snapshots
//!   and Parquet locations, and the pipeline's [`SqlEngine`](medallion_core::pipeline::SqlEngine).
//! - [`scheduler`], [`executor`]: the two server roles, started in-process.

pub mod executor;
pub mod logging;
pub mod scheduler;
pub mod session;
pub mod stores;
pub mod tables;

use std::sync::Arc;

use medallion_core::storage::Storage;

/// Adds what was being done (to which table, on which cluster) to a DataFusion error, as the
/// core's errors carry it.
pub(crate) trait Context<T> {
    fn context(self, context: impl FnOnce() -> String) -> medallion_core::Result<T>;
}

impl<T> Context<T> for Result<T, medallion_core::datafusion::error::DataFusionError> {
    fn context(self, context: impl FnOnce() -> String) -> medallion_core::Result<T> {
        self.map_err(|source| medallion_core::Error::DataFusion {
            context: context(),
            source,
        })
    }
}

/// What a cluster process reads the lake through: local files, HTTP(S) and S3 as the CLI
/// reads them (credentials for S3 from this process's environment).
pub fn native_storage() -> Result<Arc<dyn Storage>, medallion_core::Error> {
    let native = crate::native_storage::NativeStorage::new(crate::http::HttpSettings::default());
    Ok(Arc::new(native))
}

/// A scheduler address given as `df://HOST:PORT` (or `HOST:PORT`): (host, port).
pub fn parse_scheduler(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("df://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let bad = || format!("`{url}` is not a scheduler address like df://127.0.0.1:50050");
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses() {
        assert_eq!(
            parse_scheduler("df://127.0.0.1:50050").unwrap(),
            ("127.0.0.1".to_string(), 50050)
        );
        assert_eq!(
            parse_scheduler("node-1:7000").unwrap(),
            ("node-1".to_string(), 7000)
        );
        assert!(parse_scheduler("df://host").is_err());
        assert!(parse_scheduler("df://:50050").is_err());
        assert!(parse_scheduler("df://h:port").is_err());
    }
}
