//! `medallion optimize` and `medallion vacuum`: compaction and clean-up of Delta tables.

use std::sync::Arc;

use anyhow::{bail, Context};
use medallion_core::clock::Clock;
use medallion_core::delta;
use medallion_core::report::human_bytes;
use medallion_core::storage::Storage;
use medallion_host::local_fs::absolute;
use medallion_host::native_storage::NativeStorage;
use medallion_host::SystemClock;

use super::query::lake_tables;

/// The tables named, or every table of the lake.
async fn targets(
    storage: &Arc<dyn Storage>,
    tables: &[String],
    lake: Option<&str>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(lake) = lake {
        out.extend(lake_tables(storage, lake).await?);
    }
    for t in tables {
        let location = absolute(t)?;
        if !delta::is_delta_table(storage.as_ref(), &location).await? {
            bail!("{t} is not a Delta table (no commits in {t}/_delta_log/)");
        }
        out.push((t.clone(), location));
    }
    if out.is_empty() {
        bail!("no tables given: name table folders, or --lake LAKE for every table of a lake");
    }
    Ok(out)
}

fn storage() -> anyhow::Result<Arc<dyn Storage>> {
    Ok(Arc::new(NativeStorage::new(Default::default())))
}

pub async fn optimize(
    tables: &[String],
    lake: Option<&str>,
    target_size: u64,
    json: bool,
) -> anyhow::Result<()> {
    let storage = storage()?;
    let clock = SystemClock::new();
    let mut reports = Vec::new();
    for (name, location) in targets(&storage, tables, lake).await? {
        let r = delta::optimize(storage.as_ref(), &location, target_size, clock.now_ms())
            .await
            .with_context(|| format!("optimizing {name} ({location})"))?;
        if !json {
            match r.version {
                Some(v) => outln!(
                    "{name:<28} v{v}: {} files ({}) → {} ({}), {} rows",
                    r.files_removed,
                    human_bytes(r.bytes_removed),
                    r.files_added,
                    human_bytes(r.bytes_added),
                    r.rows
                )?,
                None => outln!("{name:<28} nothing to compact")?,
            }
        }
        reports.push(r);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&reports)?)?;
    }
    Ok(())
}

pub async fn vacuum(
    tables: &[String],
    lake: Option<&str>,
    retention_ms: Option<i64>,
    force: bool,
    apply: bool,
    json: bool,
) -> anyhow::Result<()> {
    let storage = storage()?;
    let clock = SystemClock::new();
    let mut reports = Vec::new();
    for (name, location) in targets(&storage, tables, lake).await? {
        let r = delta::vacuum(
            storage.as_ref(),
            &location,
            retention_ms,
            force,
            clock.now_ms(),
            !apply,
        )
        .await
        .with_context(|| format!("vacuuming {name} ({location})"))?;
        if !json {
            let verb = if r.deleted { "removed" } else { "would remove" };
            outln!(
                "{name:<28} {verb} {} files ({}) unreferenced for {:.0} h",
                r.files.len(),
                human_bytes(r.bytes),
                r.retention_hours
            )?;
        }
        reports.push(r);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&reports)?)?;
    } else if !apply && reports.iter().any(|r| !r.files.is_empty()) {
        outln!("(dry run: pass --apply to delete them)")?;
    }
    Ok(())
}
