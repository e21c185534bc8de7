//! # medallion-wasm — Medallion for JavaScript
//!
//! The core compiled to `wasm32-unknown-unknown` with wasm-bindgen. It reads Parquet and
//! Delta tables by URL with HTTP Range requests through the global `fetch` (browsers, Node,
//! Deno, workerd), runs SQL and whole pipelines on one partition (no threads, no tokio),
//! and hands results to JavaScript as plain objects or Arrow IPC. The JavaScript API people
//! use is the wrapper in `wasm/js/index.js`; this crate is what it wraps.
//!
//! - [`engine`]: `Engine` — register tables, `sql`, `runPipeline`, `stats`.
//! - [`result`]: `QueryResult` — rows as JSON text or an Arrow IPC stream.
//! - [`fetch_storage`]: the core's storage over `fetch` with Range headers.
//! - [`js_storage`]: URLs to `fetch`, other paths to an in-memory lake.
//! - [`trap`]: turning a panic into a rejected promise instead of a hang.
#![cfg(target_arch = "wasm32")]
// Storage handles are `Arc`s on every target; here they are deliberately not `Send`.
#![allow(clippy::arc_with_non_send_sync)]

pub mod engine;
pub mod fetch_storage;
pub mod js_storage;
pub mod result;
pub mod trap;

/// The crate's version, for `Medallion.version`.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
