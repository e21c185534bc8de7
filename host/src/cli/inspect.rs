//! `medallion inspect`.

use medallion_core::inspect::inspect as summarize;
use medallion_core::report::human_bytes;
use std::sync::Arc;

use medallion_core::storage::{CountingStorage, Storage};
use medallion_host::local_fs::absolute;

pub async fn inspect(path: &str, json: bool, storage: Arc<CountingStorage>) -> anyhow::Result<()> {
    let storage: Arc<dyn Storage> = storage;
    let s = summarize(&storage, &absolute(path)?).await?;
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
