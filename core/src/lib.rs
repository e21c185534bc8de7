//! # medallion-core — the portable engine
//!
//! Runs the medallion architecture (bronze → silver → gold) over DataFusion, with no I/O,
//! threads, runtime or clock of its own. Every byte it reads or writes goes through the
//! [`storage::Storage`] trait, which each runtime (native CLI, browser, wasmtime guest)
//! implements in a few dozen lines; the time is passed in through [`clock::Clock`].
//!
//! A map of the crate:
//! - [`storage`]: the byte-range I/O trait, an in-memory implementation, request counting.
//! - [`bridge`]: the one place where the `!Send` storage crosses into DataFusion's `Send`
//!   world: an `ObjectStore` and a Parquet reader with range coalescing and a footer cache.
//! - [`spec`]: the pipeline spec (TOML) and its validation.
//! - [`dag`]: table dependencies read from each table's SQL, in run order.
//! - [`extract`]: bronze tables fed by a host-side database connector, batch by batch, in one
//!   commit (with the incremental watermark recorded atomically).
//! - [`source`]: bronze ingestion of CSV, NDJSON and Parquet with rescued rows.
//! - [`quality`]: silver casts, expectations (warn / drop / fail) and deduplication.
//! - [`delta`]: the subset of the Delta Lake protocol Medallion reads and writes.
//! - [`pipeline`]: one run of a spec against a lake, returning a [`report::RunReport`].
//! - [`query`]: ad-hoc SQL over Parquet files and Delta tables.
//! - [`query_parts`]: one query split across instances that share nothing (wasm guests).
//! - [`inspect`]: what is inside a Parquet file, read from its footer.

// Storage handles are shared with `Arc` on every target so one code path serves all; on
// wasm32 they are deliberately not `Send` (JS values, one thread), which this lint flags.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

pub use datafusion;
pub use datafusion::arrow;
pub use datafusion::parquet;

pub mod bridge;
pub mod clock;
pub mod dag;
pub mod decimal_arithmetic;
pub mod delta;
pub mod error;
pub mod extract;
pub mod first_per_key;
pub mod grouped_sums;
pub mod incremental;
pub mod inspect;
pub mod late_materialisation;
pub mod latest_table;
mod parquet_footer;
pub mod pipeline;
pub mod quality;
pub mod query;
pub mod query_parts;
pub mod report;
pub mod short_key_groups;
pub mod source;
pub mod spec;
pub mod storage;
pub mod string_views;
mod types;

pub use error::{Error, Result};
