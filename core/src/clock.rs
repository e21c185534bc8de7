//! Time, supplied by the runtime: the core never reads a system clock, because
//! `SystemTime::now()` traps on wasm32-unknown-unknown and tests want fixed times.

/// A source of time for one run.
pub trait Clock {
    /// Milliseconds since the Unix epoch, used for `_ingested_at` and Delta commit times.
    fn now_ms(&self) -> i64;
    /// A monotonic reading in milliseconds, used only to measure durations of stages.
    fn monotonic_ms(&self) -> f64;
}

/// A clock that stands still: for tests and reproducible runs.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
    fn monotonic_ms(&self) -> f64 {
        0.0
    }
}
