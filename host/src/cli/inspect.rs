//! `medallion inspect`.

use medallion_core::inspect::inspect as summarize;
use medallion_core::report::human_bytes;
use std::sync::Arc;

use medallion_core::storage::{CountingStorage, Storage};
use medallion_host::local_fs::absolute;

pub async fn inspect(path: &str, json: bool, storage: Arc<CountingStorage>) -> anyhow::Result<()> {
    let storage: Arc<dyn Storage> = storage;
    let location = absolute(path)?;
    if !medallion_core::storage::names_one_file(&location)
        && medallion_core::delta::is_delta_table(storage.as_ref(), &location).await?
    {
        return history(&storage, &location, json).await;
    }
    let s = summarize(&storage, &location).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&s)?)?;
        return Ok(());
    }
    outln!("{}", s.location)?;
    outln!("  size        {} ({} bytes)", human_bytes(s.size), s.size)?;
    outln!("  rows        {}", s.num_rows)?;
    outln!("  row groups  {}", s.row_groups.len())?;
    if let Some(c) = &s.created_by {
        outln!("  created by  {c}")?;
    }
    outln!("schema:")?;
    for f in &s.schema {
        outln!("  {f}")?;
    }
    for (i, rg) in s.row_groups.iter().enumerate() {
        outln!(
            "row group {i}: {} rows, {} compressed ({} uncompressed)",
            rg.num_rows,
            human_bytes(rg.compressed_bytes.max(0) as u64),
            human_bytes(rg.uncompressed_bytes.max(0) as u64)
        )?;
        for c in &rg.columns {
            outln!(
                "  {:<28} {:>10} {:<8} nulls {:<6} min {:<20} max {}",
                c.path,
                human_bytes(c.compressed_bytes.max(0) as u64),
                c.compression,
                c.null_count
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
                c.min.as_deref().unwrap_or("-"),
                c.max.as_deref().unwrap_or("-"),
            )?;
        }
    }
    Ok(())
}

/// A Delta table's versions, oldest first.
async fn history(storage: &Arc<dyn Storage>, location: &str, json: bool) -> anyhow::Result<()> {
    let entries = medallion_core::delta::history(storage.as_ref(), location).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(());
    }
    let snapshot = medallion_core::delta::Snapshot::load(storage.as_ref(), location).await?;
    outln!("{location}")?;
    outln!(
        "  version {} · {} live files · {} rows · partitioned by {}",
        snapshot.version,
        snapshot.files.len(),
        snapshot
            .num_records()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into()),
        if snapshot.metadata.partition_columns.is_empty() {
            "nothing".to_string()
        } else {
            snapshot.metadata.partition_columns.join(", ")
        }
    )?;
    outln!(
        "{:>7}  {:<24} {:<24} {:>12} {:>12}  transactions",
        "version",
        "committed",
        "operation",
        "rows +",
        "rows -"
    )?;
    let rows = |n: Option<u64>, files: u64| match n {
        Some(n) => format!("{n} ({files}f)"),
        None => format!("? ({files}f)"),
    };
    for e in &entries {
        let when = medallion_core::delta::At::Timestamp(e.timestamp_ms).to_string();
        let txns: Vec<String> = e
            .transactions
            .iter()
            .map(|(app, v)| format!("{app}={v}"))
            .collect();
        outln!(
            "{:>7}  {:<24} {:<24} {:>12} {:>12}  {}",
            e.version,
            when,
            e.operation.as_deref().unwrap_or("-"),
            rows(e.rows_added, e.files_added),
            rows(e.rows_removed, e.files_removed),
            txns.join(" ")
        )?;
    }
    Ok(())
}
