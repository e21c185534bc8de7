//! # medallion-wasm — Medallion for JavaScript
//!
//! The core compiled to `wasm32-unknown-unknown` with wasm-bindgen. It reads Parquet and
//! Delta tables by URL with HTTP Range requests through the global `fetch` (browsers, Node,
//! Deno, workerd), reads and writes lakes in S3(-compatible) buckets with requests signed in
//! JavaScript, runs SQL and whole pipelines on one partition (no threads, no tokio), and hands
//! results to JavaScript as plain objects or Arrow IPC. The JavaScript API people use is the
//! wrapper in `wasm/js/index.js`; this crate is what it wraps.
//!
//! - [`engine`]: `Engine` — register tables, `sql`, `runPipeline`, `stats`.
//! - [`result`]: `QueryResult` — rows as JSON text or an Arrow IPC stream.
//! - [`fetch_storage`]: the core's storage over `fetch` with Range headers (and its S3 mode).
//! - [`s3_storage`]: listing and (conditional) writes in a bucket, on top of it.
//! - [`s3_protocol`]: endpoint URLs, ListObjectsV2 and error documents, as data (no I/O).
//! - [`range_cache`]: byte ranges already fetched, reused by later calls while the file is
//!   unchanged (`cacheBytes`).
//! - [`js_storage`]: URLs to `fetch`, `s3://` to the bucket, other paths to an in-memory lake.
//! - [`trap`]: turning a panic into a rejected promise instead of a hang.
//!
//! Only [`s3_protocol`] and [`range_cache`] are built on other targets, so that their tests run
//! natively.
// Storage handles are `Arc`s on every target; here they are deliberately not `Send`.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

#[cfg(target_arch = "wasm32")]
pub mod engine;
#[cfg(target_arch = "wasm32")]
pub mod fetch_storage;
#[cfg(target_arch = "wasm32")]
pub mod js_storage;
pub mod range_cache;
#[cfg(target_arch = "wasm32")]
pub mod result;
pub mod s3_protocol;
#[cfg(target_arch = "wasm32")]
pub mod s3_storage;
#[cfg(target_arch = "wasm32")]
pub mod trap;

/// The crate's version, for `Medallion.version`.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
