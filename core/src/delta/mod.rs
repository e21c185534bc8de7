//! The subset of the Delta Lake protocol Medallion reads and writes: JSON commits with
//! `protocol`, `metaData`, `add` (with statistics), `remove` and `commitInfo`, written with
//! put-if-absent so that each commit is atomic and a concurrent writer gets a conflict.
//!
//! delta-kernel-rs does not build for wasm32 today, hence this small implementation; the
//! `deltalake` and `duckdb` Python packages read what it writes (tested in `tests/`).

mod actions;
mod commit;
mod schema;
mod snapshot;
mod stats;

pub use actions::{Action, Add, Metadata, Protocol, Remove};
pub use commit::{encode_parquet, CommitRequest, DataFile, TableWrite, WriteMode};
pub use schema::{
    arrow_schema_from_delta, delta_compatible_batch, delta_compatible_schema, delta_schema_string,
};
pub use snapshot::{commit_versions, is_delta_table, Snapshot};

/// `<table>/_delta_log/`.
pub fn log_dir(table: &str) -> String {
    crate::storage::join(table, "_delta_log")
}

/// `<table>/_delta_log/00000000000000000042.json`.
pub fn commit_location(table: &str, version: u64) -> String {
    crate::storage::join(&log_dir(table), &format!("{version:020}.json"))
}
