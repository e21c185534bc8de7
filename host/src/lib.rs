//! medallion-host as a library: the native runtime of the core (local files, HTTP, the
//! system clock), the wasmtime runner of the core as a sandboxed guest ([`guest`]), the
//! alerts of streaming runs ([`alerts`]), the Ballista scheduler, executors and client session
//! (`cluster`, with the cargo feature `cluster`), and the retail demo generator, shared by the
//! CLI and the tests.

pub mod alerts;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod guest;
pub mod http;
pub mod local_fs;
pub mod native_storage;
pub mod postgres;
pub mod retail_data;
pub mod s3;
pub mod serve;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The system clock, handed to the core (which never reads one itself).
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl medallion_core::clock::Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
    fn monotonic_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }
}

/// A run id unique on this machine: time and process id, readable in file names.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{ms:x}-{:x}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}
