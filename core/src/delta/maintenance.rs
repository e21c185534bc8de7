//! Keeping a table small and fast to open: `optimize` compacts small files into large ones in
//! one commit that readers do not notice (same rows, `dataChange: false`), and `vacuum`
//! removes data files that no version within the retention period references.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;
use serde_json::json;

use super::actions::{Action, Add};
use super::commit::{
    checkpoint_if_due, checkpoint_interval, log_bytes, publish, remove_all, remove_of, NewFile,
};
use super::partition::file_schema;
use super::schema::cast_batch;
use super::snapshot::{retention_ms, Snapshot, DELETED_FILE_RETENTION_KEY};
use crate::error::{Context, Error, Result};
use crate::storage::Storage;

/// What [`vacuum`] found, and removed unless it was a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct VacuumReport {
    pub table: String,
    pub version: u64,
    pub retention_hours: f64,
    /// Files no version within the retention references, with their sizes.
    pub files: Vec<(String, u64)>,
    pub bytes: u64,
    /// Whether the files were removed (false: a dry run).
    pub deleted: bool,
}

/// Removes (or with `dry_run`, lists) the data files under the table that no version within
/// `retention_ms` references: neither live now nor removed less than `retention_ms` ago.
/// Files younger than the retention are kept even if unreferenced — they may belong to a
/// commit in progress. A retention shorter than the table's own
/// (`delta.deletedFileRetentionDuration`, 7 days by default) is refused unless `force`,
/// since it breaks time travel and concurrent readers of older versions.
pub async fn vacuum(
    storage: &dyn Storage,
    location: &str,
    retention: Option<i64>,
    force: bool,
    now_ms: i64,
    dry_run: bool,
) -> Result<VacuumReport> {
    let snapshot = Snapshot::load(storage, location).await?;
    let table_retention = retention_ms(snapshot.property(DELETED_FILE_RETENTION_KEY));
    let retention = retention.unwrap_or(table_retention);
    if retention < table_retention && !force {
        return Err(Error::Delta {
            location: location.to_string(),
            message: format!(
                "a retention of {:.1} hours is shorter than the table's ({:.1} hours, {DELETED_FILE_RETENTION_KEY}): \
                 readers of older versions and writers in progress could lose files. Pass --force to vacuum anyway",
                retention as f64 / 3.6e6,
                table_retention as f64 / 3.6e6
            ),
        });
    }
    let cutoff = now_ms - retention;
    let mut referenced: BTreeSet<String> = snapshot
        .files
        .keys()
        .map(|p| snapshot.file_location(p))
        .collect();
    referenced.extend(
        snapshot
            .tombstones
            .iter()
            .filter(|(_, r)| r.deletion_timestamp.unwrap_or(i64::MAX) > cutoff)
            .map(|(p, _)| snapshot.file_location(p)),
    );
    let prefix = format!("{}/", location.trim_end_matches('/'));
    let mut files = Vec::new();
    for meta in storage.list(location).await? {
        let Some(relative) = meta.location.strip_prefix(&prefix) else {
            continue;
        };
        // The log, and folders other tools keep beside the data (`_change_data`, `.tmp`…).
        if relative
            .split('/')
            .any(|seg| seg.starts_with('_') && !seg.contains('=') || seg.starts_with('.'))
        {
            continue;
        }
        let old_enough = meta.last_modified_ms.is_some_and(|t| t < cutoff);
        if !referenced.contains(&meta.location) && old_enough {
            files.push((meta.location.clone(), meta.size));
        }
    }
    files.sort();
    if !dry_run {
        for (f, _) in &files {
            storage.delete(f).await?;
        }
    }
    Ok(VacuumReport {
        table: location.to_string(),
        version: snapshot.version,
        retention_hours: retention as f64 / 3.6e6,
        bytes: files.iter().map(|(_, s)| s).sum(),
        files,
        deleted: !dry_run,
    })
}

/// What [`optimize`] did.
#[derive(Debug, Clone, Serialize)]
pub struct OptimizeReport {
    pub table: String,
    /// The version it committed; `None` if there was nothing to compact.
    pub version: Option<u64>,
    pub files_removed: u64,
    pub files_added: u64,
    pub bytes_removed: u64,
    pub bytes_added: u64,
    pub rows: u64,
}

/// Compacts the live files smaller than `target_size` into files of about `target_size`,
/// partition by partition, in one commit (`OPTIMIZE`, `dataChange: false`): readers of any
/// version see the same rows. Tags that differ between the merged files are joined with
/// newlines (bronze's `medallion.source` keeps every source file it records).
pub async fn optimize(
    storage: &dyn Storage,
    location: &str,
    target_size: u64,
    now_ms: i64,
) -> Result<OptimizeReport> {
    let snapshot = Snapshot::load(storage, location).await?;
    snapshot.check_writable(true)?;
    let mut report = OptimizeReport {
        table: location.to_string(),
        version: None,
        files_removed: 0,
        files_added: 0,
        bytes_removed: 0,
        bytes_added: 0,
        rows: 0,
    };
    // Small files by partition, smallest first.
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<(&String, &Add)>> = BTreeMap::new();
    for (path, add) in &snapshot.files {
        if (add.size.max(0) as u64) < target_size {
            let key = snapshot
                .metadata
                .partition_columns
                .iter()
                .map(|c| add.partition_values.get(c).cloned().flatten())
                .collect();
            groups.entry(key).or_default().push((path, add));
        }
    }
    let partition_columns = snapshot.metadata.partition_columns.clone();
    let data_schema = file_schema(&snapshot.schema, &partition_columns);
    let mut actions = vec![Action::CommitInfo(json!({
        "timestamp": now_ms,
        "operation": "OPTIMIZE",
        "operationParameters": { "targetSize": target_size.to_string() },
        "isBlindAppend": false,
        "engineInfo": concat!("medallion/", env!("CARGO_PKG_VERSION")),
    }))];
    let mut written: Vec<String> = Vec::new();
    for (values, mut files) in groups {
        if files.len() < 2 {
            continue;
        }
        files.sort_by_key(|(_, a)| a.size);
        // Bins of about target_size, each becoming one file.
        let mut bins: Vec<Vec<(&String, &Add)>> = vec![Vec::new()];
        let mut bin_size = 0u64;
        for f in files {
            if bin_size >= target_size {
                bins.push(Vec::new());
                bin_size = 0;
            }
            bin_size += f.1.size.max(0) as u64;
            if let Some(b) = bins.last_mut() {
                b.push(f);
            }
        }
        for bin in bins.into_iter().filter(|b| b.len() >= 2) {
            let mut batches: Vec<RecordBatch> = Vec::new();
            let mut tags: HashMap<String, Vec<String>> = HashMap::new();
            for (path, add) in &bin {
                let loc = snapshot.file_location(path);
                let bytes = storage.read(&loc).await?;
                batches.extend(read_parquet(&loc, bytes, &data_schema, location)?);
                for (k, v) in add.tags.iter().flatten() {
                    if let Some(v) = v {
                        let e = tags.entry(k.clone()).or_default();
                        if !e.contains(v) {
                            e.push(v.clone());
                        }
                    }
                }
                actions.push(Action::Remove(remove_of(add, now_ms, false)));
                report.files_removed += 1;
                report.bytes_removed += add.size.max(0) as u64;
            }
            let new_file = NewFile {
                table: location,
                partition_columns: &partition_columns,
                partition_values: values.clone(),
                schema: &data_schema,
                batches: &batches,
                tags: tags
                    .into_iter()
                    .map(|(k, v)| (k, Some(v.join("\n"))))
                    .collect(),
                now_ms,
                data_change: false,
                index: written.len(),
            };
            let (file, add) = match new_file.write(storage).await {
                Ok(w) => w,
                Err(e) => {
                    remove_all(storage, &written).await;
                    return Err(e);
                }
            };
            written.push(file);
            report.files_added += 1;
            report.bytes_added += add.size as u64;
            report.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            actions.push(Action::Add(add));
        }
    }
    if written.is_empty() {
        return Ok(report);
    }
    let version = snapshot.version + 1;
    let entry = log_bytes(location, &actions)?;
    if let Err(e) = publish(storage, location, location, version, entry).await {
        if matches!(e, Error::CommitConflict { .. }) {
            remove_all(storage, &written).await;
        }
        return Err(e);
    }
    let interval = checkpoint_interval(&snapshot.metadata.configuration);
    let _ = checkpoint_if_due(storage, location, version, interval, now_ms).await;
    report.version = Some(version);
    Ok(report)
}

/// The rows of one data file, as the table's current data schema (older files lack columns
/// added since: they read as NULL).
fn read_parquet(
    location: &str,
    bytes: Bytes,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    table: &str,
) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .context(|| format!("{location}: reading Parquet"))?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.context(|| format!("{location}: reading Parquet"))?;
        out.push(cast_batch(&b, schema, table)?);
    }
    Ok(out)
}
