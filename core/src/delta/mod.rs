//! The subset of the Delta Lake protocol Medallion reads and writes: JSON commits with
//! `protocol`, `metaData`, `add` (with exact statistics), `remove`, `txn` and `commitInfo`;
//! Parquet checkpoints; partitioned tables; time travel; vacuum and optimize. Each commit is
//! one put-if-absent of the next log entry, so a concurrent writer gets a conflict, never a
//! torn table; data files get UUID names and are never overwritten.
//!
//! delta-kernel-rs does not build for wasm32 today, hence this small implementation; the
//! `deltalake` and `duckdb` Python packages read what it writes, and it reads what they
//! write (tested in `tests/`).

mod actions;
mod checkpoint;
mod commit;
mod history;
mod log;
mod maintenance;
mod partition;
mod schema;
mod snapshot;
mod stats;

pub use actions::{decode_path, encode_path, Action, Add, Metadata, Protocol, Remove, Txn};
pub use checkpoint::{
    checkpoint_schema, decode_checkpoint, encode_checkpoint, write_checkpoint,
    CHECKPOINT_INTERVAL_KEY, DEFAULT_CHECKPOINT_INTERVAL,
};
pub use commit::{
    checkpoint_if_due, checkpoint_interval, encode_parquet, log_bytes, publish, remove_of,
    CommitRequest, DataFile, TableWrite, TableWriter, WriteMode,
};
pub use history::{history, HistoryEntry};
pub(crate) use log::is_log_file;
pub use log::{list_log, LastCheckpoint, LogListing};
pub use maintenance::{optimize, vacuum, OptimizeReport, VacuumReport};
pub use partition::{file_schema, partition_dir, typed_value, NULL_PARTITION};
pub use schema::{
    arrow_schema_from_delta, cast_batch, delta_compatible_batch, delta_compatible_schema,
    delta_schema_string,
};
pub use snapshot::{
    add_num_records, commit_versions, is_delta_table, latest_version, partition_fields,
    retention_ms, At, LiveFile, Snapshot, DELETED_FILE_RETENTION_KEY,
};
pub use stats::file_stats;

/// `<table>/_delta_log/`.
pub fn log_dir(table: &str) -> String {
    crate::storage::join(table, "_delta_log")
}

/// `<table>/_delta_log/00000000000000000042.json`.
pub fn commit_location(table: &str, version: u64) -> String {
    crate::storage::join(&log_dir(table), &format!("{version:020}.json"))
}
