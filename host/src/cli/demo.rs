//! `medallion demo`: the retail example end to end.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use medallion_core::query::{collect_sql, new_context, EngineOptions};
use medallion_core::storage::{CountingStorage, Storage};
use medallion_host::retail_data::RetailData;

use super::output::print_batches;
use super::Format;

/// The retail pipeline, compiled in so that the demo works from any folder.
pub const RETAIL_SPEC: &str = include_str!("../../../examples/retail/pipeline.toml");
/// Days of data the demo starts with.
const INITIAL_BATCHES: usize = 3;

#[allow(clippy::too_many_arguments)]
pub async fn demo(
    dir: &Path,
    lake: &str,
    scale: f64,
    more: bool,
    json: bool,
    storage: Arc<CountingStorage>,
    engine: EngineOptions,
    guest: super::GuestArgs,
) -> anyhow::Result<()> {
    let data = dir.join("data");
    let generator = RetailData { scale, seed: 42 };
    if !data.join("customers.csv").exists() {
        eprintln!(
            "generating retail demo data (scale {scale}) in {} …",
            data.display()
        );
        let g = generator
            .write_initial(&data, INITIAL_BATCHES)
            .with_context(|| format!("writing demo data to {}", data.display()))?;
        eprintln!(
            "  {} files, {}",
            g.files.len(),
            medallion_core::report::human_bytes(g.bytes)
        );
    } else if more {
        let next = std::fs::read_dir(data.join("orders"))
            .map(|d| d.count())
            .unwrap_or(0);
        let g = generator
            .write_batch(&data, next)
            .with_context(|| format!("writing demo batch {next} to {}", data.display()))?;
        eprintln!(
            "added day {next}: {} files, {}",
            g.files.len(),
            medallion_core::report::human_bytes(g.bytes)
        );
    }
    let spec = dir.join("pipeline.toml");
    if !spec.exists() {
        std::fs::write(&spec, RETAIL_SPEC)
            .with_context(|| format!("writing {}", spec.display()))?;
    }

    let report =
        super::run::run_spec(&spec, lake, !json, storage.clone(), engine, guest, None).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    out!("{}", report.summary())?;

    let storage: Arc<dyn Storage> = storage;
    let ctx = new_context(engine);
    super::query::register_lake(&ctx, &storage, lake).await?;
    for (title, sql) in [
        ("sales by region and day (latest 10)", "SELECT * FROM sales_by_region_day ORDER BY day DESC, region LIMIT 10"),
        ("customer segments", "SELECT segment, count(*) AS customers, round(sum(monetary), 2) AS revenue, round(avg(frequency), 2) AS avg_orders FROM customer_segments GROUP BY segment ORDER BY revenue DESC"),
        ("low-stock alerts (top 10 of the latest snapshot)", "SELECT * FROM low_stock_alerts ORDER BY shortfall DESC, product_id, warehouse LIMIT 10"),
    ] {
        outln!("\n── gold: {title}")?;
        let (_, batches) = collect_sql(&ctx, title, sql).await?;
        print_batches(&batches, Format::Table, 10)?;
    }
    outln!("\nquery the lake:  medallion query \"SELECT * FROM customer_segments LIMIT 5\" --lake {lake}")?;
    Ok(())
}
