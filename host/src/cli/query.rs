//! `medallion query`.

use std::sync::Arc;

use anyhow::{bail, Context};
use medallion_core::query::{collect_sql, new_context, register_location, EngineOptions};
use medallion_core::storage::{CountingStorage, IoCounts, Storage};
use medallion_host::local_fs::absolute;

use super::output::print_batches;
use super::{Engine, Format, GuestArgs};
use medallion_host::guest::{
    self,
    grants::{Access, Grants},
};

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
    guest: GuestArgs,
) -> anyhow::Result<()> {
    if guest.engine == Engine::Guest {
        return query_in_guest(q, counting, engine, guest).await;
    }
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
        let (name, path, prefix, location) = table_arg(t)?;
        let location = format!("{prefix}{location}");
        register_location(&ctx, &storage, name, &location)
            .await
            .with_context(|| format!("table `{name}` ({path})"))?;
    }
    let (_, batches) = collect_sql(&ctx, "query", sql).await?;
    print_batches(&batches, format, max_rows)?;
    if q.stats {
        print_stats(io.counts(), started, format, None);
    }
    Ok(())
}

/// `medallion query --cluster`: the same tables, registered on the cluster as lists of files,
/// the SQL run there and its result printed here.
#[cfg(feature = "cluster")]
pub async fn query_on_cluster(
    q: Query<'_>,
    url: &str,
    counting: Arc<CountingStorage>,
    engine: EngineOptions,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let io = counting.stats();
    let storage: Arc<dyn Storage> = counting;
    let session =
        medallion_host::cluster::session::ClusterSession::connect(url, storage.clone(), engine)
            .await?;
    if let Some(lake) = q.lake {
        let found = lake_tables(&storage, lake).await?;
        if found.is_empty() {
            bail!("the lake {lake} holds no tables (expected folders like {lake}/gold/<table>/_delta_log)");
        }
        for (name, location) in &found {
            session
                .register_location(name, &format!("delta:{location}"))
                .await
                .with_context(|| format!("table {location}"))?;
        }
    }
    for t in q.tables {
        let (name, path, prefix, location) = table_arg(t)?;
        session
            .register_location(name, &format!("{prefix}{location}"))
            .await
            .with_context(|| format!("table `{name}` ({path})"))?;
    }
    let (_, batches) = session.collect("query", q.sql).await?;
    print_batches(&batches, q.format, q.max_rows)?;
    if q.stats {
        // This process's reads only (logs, footers); the executors' are not counted.
        print_stats(io.counts(), started, q.format, None);
    }
    Ok(())
}

#[cfg(not(feature = "cluster"))]
pub async fn query_on_cluster(
    _q: Query<'_>,
    _url: &str,
    _counting: Arc<CountingStorage>,
    _engine: EngineOptions,
) -> anyhow::Result<()> {
    bail!("this medallion was built without the `cluster` feature")
}

/// `--table NAME=PATH`: the name, the path as given, `delta:` if it was forced, and the
/// absolute location.
fn table_arg(t: &str) -> anyhow::Result<(&str, &str, &'static str, String)> {
    let Some((name, path)) = t.split_once('=') else {
        bail!("--table `{t}`: expected NAME=PATH, for example --table orders=data/orders.parquet");
    };
    let (prefix, path) = match path.strip_prefix("delta:") {
        Some(p) => ("delta:", p),
        None => ("", path),
    };
    Ok((name, path, prefix, absolute(path)?))
}

/// The folder or file a `--table` location reads, without a time-travel suffix (`@3`,
/// `@2026-11-30T12:00:00Z`): what the guest must be granted.
fn grant_location(location: &str) -> anyhow::Result<&str> {
    Ok(medallion_core::query::split_time_travel(location)?.0)
}

/// The same query in a guest instance, which may read only the query's tables and the lake.
async fn query_in_guest(
    q: Query<'_>,
    counting: Arc<CountingStorage>,
    engine: EngineOptions,
    guest: GuestArgs,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let storage: Arc<dyn Storage> = counting;
    let mut grants = Grants::new();
    let mut tables: Vec<(String, String)> = Vec::new();
    if let Some(lake) = q.lake {
        let found = lake_tables(&storage, lake).await?;
        if found.is_empty() {
            bail!("the lake {lake} holds no tables (expected folders like {lake}/gold/<table>/_delta_log)");
        }
        grants.allow(&absolute(lake)?, Access::Read);
        tables.extend(found.into_iter().map(|(n, l)| (n, format!("delta:{l}"))));
    }
    for t in q.tables {
        let (name, _, prefix, location) = table_arg(t)?;
        grants.allow_pattern(grant_location(&location)?, Access::Read);
        tables.push((name.to_string(), format!("{prefix}{location}")));
    }
    let ctx = guest::Context {
        storage,
        grants: Arc::new(grants),
        limits: guest.limits(),
        started,
        runtime: tokio::runtime::Handle::current(),
        progress: Arc::new(|_| {}),
    };
    let sql = q.sql.to_string();
    let engine = guest.engine_options(engine);
    let instances = guest.instances();
    let (result, load) = tokio::task::spawn_blocking(move || {
        let module = super::load_guest(&ctx.limits)?;
        let result = guest::job::run_query(&module, &ctx, &sql, &tables, engine, instances)?;
        anyhow::Ok((result, module.load))
    })
    .await??;
    print_batches(&result.batches, q.format, q.max_rows)?;
    if q.stats {
        print_stats(result.io, started, q.format, Some((&load, result.parts)));
    }
    Ok(())
}

/// `--stats`: requests (listings and reads, as a store bills them), bytes and time, on stderr.
fn print_stats(
    c: IoCounts,
    started: std::time::Instant,
    format: Format,
    guest: Option<(&guest::LoadInfo, usize)>,
) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let requests = c.read_requests + c.list_requests;
    if format == Format::Json {
        let mut j = serde_json::json!({ "requests": requests, "reads": c.read_requests,
            "listings": c.list_requests, "bytes": c.bytes_read, "ms": ms });
        if let Some((load, parts)) = guest {
            j["module_ms"] = load.ms.into();
            j["module"] = if load.cached { "cached" } else { "compiled" }.into();
            j["parts"] = parts.into();
        }
        eprintln!("{j}");
        return;
    }
    let module = guest
        .map(|(load, parts)| {
            let how = if load.cached { "cached" } else { "compiled" };
            let split = match parts {
                1 => String::new(),
                n => format!("; in {n} parts, each its own instance, and one more to finish"),
            };
            format!(" (guest module {how} in {:.0} ms{split})", load.ms)
        })
        .unwrap_or_default();
    eprintln!(
        "{requests} requests ({} listings, {} reads), {} read, {ms:.0} ms{module}",
        c.list_requests,
        c.read_requests,
        medallion_core::report::human_bytes(c.bytes_read)
    );
}

/// Registers every Delta table of a lake under its name; quarantines as `<name>_quarantine`.
pub async fn register_lake(
    ctx: &medallion_core::datafusion::prelude::SessionContext,
    storage: &Arc<dyn Storage>,
    lake: &str,
) -> anyhow::Result<usize> {
    let tables = lake_tables(storage, lake).await?;
    for (table, location) in &tables {
        register_location(ctx, storage, table, &format!("delta:{location}"))
            .await
            .with_context(|| format!("table {location}"))?;
    }
    Ok(tables.len())
}

/// Every Delta table of a lake: (name, location); quarantines as `<name>_quarantine`.
pub async fn lake_tables(
    storage: &Arc<dyn Storage>,
    lake: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let lake = absolute(lake)?;
    Ok(
        medallion_core::pipeline::lake_tables(storage.as_ref(), &lake)
            .await?
            .into_iter()
            .map(|t| match t.layer {
                "quarantine" => (format!("{}_quarantine", t.name), t.location),
                _ => (t.name, t.location),
            })
            .collect(),
    )
}
