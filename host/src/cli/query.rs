//! `medallion query`.

use std::sync::Arc;

use anyhow::{bail, Context};
use medallion_core::pipeline::{quarantine_location, table_location};
use medallion_core::query::{collect_sql, new_context, register_location, EngineOptions};
use medallion_core::spec::Layer;
use medallion_core::storage::{CountingStorage, Storage};
use medallion_host::local_fs::absolute;

use super::output::print_batches;
use super::Format;

/// What `medallion query` was asked.
pub struct Query<'a> {
    pub sql: &'a str,
    pub tables: &'a [String],
    pub lake: Option<&'a str>,
    pub format: Format,
    pub max_rows: usize,
    pub stats: bool,
}

pub async fn query(
    q: Query<'_>,
    counting: Arc<CountingStorage>,
    engine: EngineOptions,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let io = counting.stats();
    let storage: Arc<dyn Storage> = counting;
    let ctx = new_context(engine);
    let (sql, tables, lake, format, max_rows) = (q.sql, q.tables, q.lake, q.format, q.max_rows);
    if let Some(lake) = lake {
        let n = register_lake(&ctx, &storage, lake).await?;
        if n == 0 {
            bail!("the lake {lake} holds no tables (expected folders like {lake}/gold/<table>/_delta_log)");
        }
    }
    for t in tables {
        let Some((name, path)) = t.split_once('=') else {
            bail!(
                "--table `{t}`: expected NAME=PATH, for example --table orders=data/orders.parquet"
            );
        };
        let (prefix, path) = match path.strip_prefix("delta:") {
            Some(p) => ("delta:", p),
            None => ("", path),
        };
        let location = format!("{prefix}{}", absolute(path)?);
        register_location(&ctx, &storage, name, &location)
            .await
            .with_context(|| format!("table `{name}` ({path})"))?;
    }
    let (_, batches) = collect_sql(&ctx, "query", sql).await?;
    print_batches(&batches, format, max_rows)?;
    if q.stats {
        let c = io.counts();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if format == Format::Json {
            eprintln!(
                "{}",
                serde_json::json!({ "requests": c.read_requests, "bytes": c.bytes_read, "ms": ms })
            );
        } else {
            eprintln!(
                "{} requests, {} read, {ms:.0} ms",
                c.read_requests,
                medallion_core::report::human_bytes(c.bytes_read)
            );
        }
    }
    Ok(())
}

/// Registers every Delta table of a lake under its name; quarantines as `<name>_quarantine`.
pub async fn register_lake(
    ctx: &medallion_core::datafusion::prelude::SessionContext,
    storage: &Arc<dyn Storage>,
    lake: &str,
) -> anyhow::Result<usize> {
    let lake = absolute(lake)?;
    let mut n = 0;
    for layer in ["bronze", "silver", "gold", "quarantine"] {
        let dir = std::path::Path::new(&lake).join(layer);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        for name in names {
            let location = match layer {
                "quarantine" => quarantine_location(&lake, &name),
                "bronze" => table_location(&lake, Layer::Bronze, &name),
                "silver" => table_location(&lake, Layer::Silver, &name),
                _ => table_location(&lake, Layer::Gold, &name),
            };
            if !medallion_core::delta::is_delta_table(storage.as_ref(), &location).await? {
                continue;
            }
            let table = if layer == "quarantine" {
                format!("{name}_quarantine")
            } else {
                name
            };
            register_location(ctx, storage, &table, &format!("delta:{location}"))
                .await
                .with_context(|| format!("table {location}"))?;
            n += 1;
        }
    }
    Ok(n)
}
