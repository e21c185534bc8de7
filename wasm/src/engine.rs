//! The engine JavaScript talks to: tables registered by URL or `s3://` location, SQL,
//! pipelines into an in-memory lake or a bucket, and I/O statistics. Async methods return `Promise`s built from futures
//! that own what they use (`Rc` clones), so concurrent calls on one engine never trip over a
//! borrowed `self`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Function, Promise, Uint8Array};
use medallion_core::bridge::parquet_reader::{FilterPushdown, ReadSettings};
use medallion_core::clock::Clock;
use medallion_core::datafusion::prelude::SessionContext;
use medallion_core::delta::At;
use medallion_core::pipeline::{self, quarantine_location, table_location, Progress, RunOptions};
use medallion_core::query::{
    collect_plan, new_context, plan_sql, register_location, register_location_at, EngineOptions,
    TableKind,
};
use medallion_core::query_parts::{self, QueryParts};
use medallion_core::spec::PipelineSpec;
use medallion_core::storage::{CountingStorage, IoCounts, IoStats, Storage};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

use crate::fetch_storage::{FetchSettings, FetchStorage};
use crate::js_storage::{no_s3, JsStorage};
use crate::range_cache::{CacheCounts, RangeCache};
use crate::result::QueryResult;
use crate::s3_protocol::S3Endpoint;
use crate::s3_storage::S3Storage;

/// `Medallion.create(options)`; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateOptions {
    batch_size: Option<usize>,
    footer_hint: Option<u64>,
    coalesce_gap: Option<u64>,
    max_in_flight: Option<usize>,
    prefetch_row_groups: Option<usize>,
    timeout_ms: Option<u32>,
    retries: Option<u32>,
    max_full_body: Option<u64>,
    cache_bytes: Option<u64>,
    memory_limit: Option<usize>,
    pushdown_filters: Option<bool>,
    s3: Option<S3Options>,
}

/// Bytes of fetched ranges kept for later calls unless `cacheBytes` says otherwise: a few
/// queries' worth of column chunks of a large table (TPC-H SF1's Q1 reads 54 MB).
const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// The first footer read, unless `footerHint` says otherwise. Smaller than the core's default:
/// in a browser every byte crosses the user's link, and a footer larger than this costs one
/// more request, sized exactly from the footer's length (TPC-H SF1 lineitem's is 80 kB).
const FOOTER_HINT: u64 = 64 * 1024;

/// The `s3` option, less what signs (keys or a `sign` callback stay in JavaScript, which
/// passes the signing `fetch` to [`Engine::new`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct S3Options {
    endpoint: Option<String>,
    region: String,
    path_style: Option<bool>,
    single_writer: Option<bool>,
}

/// `runPipeline(spec, options)`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PipelineOptions {
    /// Where tables go: a path in the in-memory lake, or `s3://bucket/prefix`.
    lake: Option<String>,
    /// The folder (URL) relative source paths start from.
    base: Option<String>,
    /// Source URLs that globs in the spec may match (HTTP cannot list).
    files: Option<Vec<String>>,
    run_id: Option<String>,
    /// Fixed `now` in ms since the epoch, for reproducible `_ingested_at` values.
    now_ms: Option<f64>,
}

/// What `register` found: the kind, and a Delta table's version (the one its queries read,
/// which the page's Web Workers then register too).
#[derive(Serialize)]
struct Registered {
    kind: &'static str,
    version: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    /// Requests sent (HEADs confirming cached files included; cache hits not).
    requests: u64,
    /// Bytes received.
    bytes: u64,
    list_requests: u64,
    write_requests: u64,
    bytes_written: u64,
    /// Reads answered from the range cache, and the bytes they returned.
    cache_hits: u64,
    bytes_from_cache: u64,
    /// HEADs sent to confirm a cached file unchanged (part of `requests`).
    revalidations: u64,
    /// Bytes the cache holds now.
    cached_bytes: u64,
}

struct Inner {
    ctx: SessionContext,
    storage: Arc<JsStorage>,
    counting: Arc<dyn Storage>,
    io: Arc<IoStats>,
    /// What `stats()` counts from (`resetStats()` moves it).
    baseline: Cell<IoCounts>,
    cache: Rc<RangeCache>,
    cache_baseline: Cell<CacheCounts>,
    engine: EngineOptions,
}

impl Inner {
    /// Each call JavaScript makes is one epoch of the range cache: what it serves was confirmed
    /// unchanged during the call.
    fn begin_call(&self) {
        self.cache.begin_call();
    }
}

/// A Medallion engine: one DataFusion session, one partition (there are no threads here).
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<Inner>,
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// A failed run's error, with `committed` (`[table, version][]`), `notCommitted` (table
/// names) and `changedNothing` so a caller can tell what the lake now holds without parsing
/// the message.
fn run_error(e: medallion_core::Error) -> JsValue {
    let error = js_sys::Error::new(&e.to_string());
    let (committed, not_committed) = match &e {
        medallion_core::Error::PartialCommit {
            committed,
            not_committed,
            ..
        } => (committed.clone(), not_committed.clone()),
        _ => (vec![], vec![]),
    };
    let set = |key: &str, value: JsValue| {
        let _ = js_sys::Reflect::set(&error, &key.into(), &value);
    };
    set(
        "committed",
        serde_wasm_bindgen::to_value(&committed).unwrap_or(JsValue::NULL),
    );
    set(
        "notCommitted",
        serde_wasm_bindgen::to_value(&not_committed).unwrap_or(JsValue::NULL),
    );
    set("changedNothing", JsValue::from_bool(e.changed_nothing()));
    error.into()
}

const CREATE_OPTIONS: &[&str] = &[
    "batchSize",
    "footerHint",
    "coalesceGap",
    "maxInFlight",
    "prefetchRowGroups",
    "timeoutMs",
    "retries",
    "maxFullBody",
    "cacheBytes",
    "memoryLimit",
    "pushdownFilters",
    "s3",
];
const PIPELINE_OPTIONS: &[&str] = &["lake", "base", "files", "runId", "nowMs"];

/// Reads an options object. serde-wasm-bindgen looks up only the fields it knows, so a
/// misspelt option would be silently ignored: unknown keys are checked here.
fn options<T: for<'de> Deserialize<'de> + Default>(
    value: JsValue,
    known: &[&str],
    what: &str,
) -> Result<T, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    if let Some(object) = value.dyn_ref::<js_sys::Object>() {
        for key in js_sys::Object::keys(object).iter() {
            let key = key.as_string().unwrap_or_default();
            if !known.contains(&key.as_str()) {
                return Err(js_error(format!(
                    "{what}: unknown field `{key}`, expected one of {}",
                    known.join(", ")
                )));
            }
        }
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| js_error(format!("{what}: {e}")))
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_error)
}

#[wasm_bindgen]
impl Engine {
    /// `s3_send(url, init)` is `fetch` that signs first, given with the `s3` option.
    #[wasm_bindgen(constructor)]
    pub fn new(options_value: JsValue, s3_send: Option<Function>) -> Result<Engine, JsValue> {
        let o: CreateOptions = options(options_value, CREATE_OPTIONS, "Medallion.create options")?;
        let defaults = ReadSettings::default();
        let reading = ReadSettings {
            footer_hint: o.footer_hint.unwrap_or(FOOTER_HINT),
            coalesce_gap: o.coalesce_gap.unwrap_or(defaults.coalesce_gap),
            max_in_flight: o.max_in_flight.unwrap_or(defaults.max_in_flight).max(1),
            prefetch_row_groups: o
                .prefetch_row_groups
                .unwrap_or(defaults.prefetch_row_groups),
            filter_pushdown: match o.pushdown_filters {
                None => FilterPushdown::Auto,
                Some(true) => FilterPushdown::Always,
                Some(false) => FilterPushdown::Never,
            },
            ..defaults
        };
        let engine = EngineOptions {
            // DataFusion merges partitions on spawned tokio tasks; there is no tokio here.
            target_partitions: 1,
            batch_size: o.batch_size.unwrap_or(8192).max(1),
            reading,
            // No disk to spill to here: a query over the limit fails, naming its table.
            memory_limit: o.memory_limit.filter(|&n| n > 0),
        };
        let fetch_defaults = FetchSettings::default();
        let settings = FetchSettings {
            retries: o.retries.unwrap_or(fetch_defaults.retries),
            timeout_ms: o.timeout_ms.unwrap_or(fetch_defaults.timeout_ms),
            max_full_body: o.max_full_body.unwrap_or(fetch_defaults.max_full_body),
            ..fetch_defaults
        };
        let cache = Rc::new(RangeCache::new(
            o.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES),
        ));
        let s3 =
            match (o.s3, s3_send) {
                (Some(s3), Some(send)) => Some(S3Storage::new(
                    settings,
                    S3Endpoint::new(s3.endpoint, s3.region, s3.path_style),
                    send,
                    s3.single_writer.unwrap_or(false),
                    cache.clone(),
                )),
                (None, None) => None,
                _ => return Err(js_error(
                    "Medallion.create options: the s3 option and its signing fetch come together",
                )),
            };
        let storage = Arc::new(JsStorage::new(
            FetchStorage::new(settings, cache.clone()),
            s3,
        ));
        let counting = Arc::new(CountingStorage::new(storage.clone()));
        let io = counting.stats();
        let ctx = new_context(engine);
        Ok(Engine {
            inner: Rc::new(Inner {
                ctx,
                storage,
                counting,
                io,
                baseline: Default::default(),
                cache,
                cache_baseline: Default::default(),
                engine,
            }),
        })
    }

    /// Registers a table: `kind` is "parquet", "delta" or "auto" (a `.parquet` URL is
    /// Parquet, a folder with `_delta_log/` is Delta). A Delta table can be read as of a
    /// `version` or a `timestamp` (RFC 3339). Resolves to `{ kind, version }`: the kind found
    /// and, for Delta, the version read.
    pub fn register(
        &self,
        name: String,
        location: String,
        kind: String,
        version: Option<f64>,
        timestamp: Option<String>,
    ) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let at = match (version, timestamp) {
                (Some(_), Some(_)) => {
                    return Err(js_error(format!(
                        "table `{name}`: give a version or a timestamp, not both"
                    )))
                }
                (Some(v), None) if v >= 0.0 && v.fract() == 0.0 => At::Version(v as u64),
                (Some(v), None) => {
                    return Err(js_error(format!(
                        "table `{name}`: version {v} is not a whole number ≥ 0"
                    )))
                }
                (None, Some(t)) => At::from_rfc3339(&t)
                    .map_err(|e| js_error(format!("table `{name}`: timestamp {e}")))?,
                (None, None) => At::Latest,
            };
            let target = match kind.as_str() {
                "delta" if !location.starts_with("delta:") => format!("delta:{location}"),
                "parquet" | "delta" | "auto" => location.clone(),
                other => {
                    return Err(js_error(format!(
                        "table `{name}`: unknown kind `{other}` (parquet, delta or auto)"
                    )))
                }
            };
            inner.begin_call();
            // Registering again means "read the table as it is now", even if it changed.
            inner.storage.unpin(&location);
            let _ = inner.ctx.deregister_table(name.as_str());
            let found = register_location_at(&inner.ctx, &inner.counting, &name, &target, at)
                .await
                .map_err(|e| js_error(format!("table `{name}` ({location}): {e}")))?;
            if kind == "parquet" && found != TableKind::Parquet {
                return Err(js_error(format!(
                    "table `{name}`: {location} is not a Parquet file"
                )));
            }
            let (kind, version) = match found {
                TableKind::Delta { version } => ("delta", Some(version)),
                TableKind::Parquet => ("parquet", None),
            };
            to_js(&Registered { kind, version })
        })
    }

    /// Runs SQL; resolves to a [`QueryResult`].
    pub fn sql(&self, query: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            inner.begin_call();
            Ok(run_query(&inner, &query, None).await?.into())
        })
    }

    /// Runs SQL with its scans split into `parts` parts, each run by another engine that holds
    /// the same tables (a Web Worker): `run_parts(fingerprint)` resolves to their `queryPart`
    /// answers, in part order. This engine plans, then finishes the query over the parts'
    /// results. The query runs here whole if its scans read too little to split, if it reads
    /// anything but HTTP(S) files or, with the `s3` option, a bucket (the workers fetch by
    /// URL, asking the page to sign; finishing must not read), or if a part planned other
    /// work or none (a table changed in between, or a worker does not hold it).
    #[wasm_bindgen(js_name = sqlInParts)]
    pub fn sql_in_parts(&self, query: String, parts: usize, run_parts: Function) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            inner.begin_call();
            Ok(run_query(&inner, &query, Some((parts, &run_parts)))
                .await?
                .into())
        })
    }

    /// Part `part` of `query` planned in `parts` parts (see `sqlInParts`): resolves to
    /// `{ fingerprint, lengths, bytes }` (one Arrow IPC stream per cut in `bytes`), or
    /// `{ fingerprint: null }` if the query does not split here or cannot be planned here.
    #[wasm_bindgen(js_name = queryPart)]
    pub fn query_part(&self, query: String, parts: usize, part: usize) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            inner.begin_call();
            let ctx = query_parts::context_from(&inner.ctx, inner.engine, parts);
            let answer = js_sys::Object::new();
            let set = |key: &str, value: &JsValue| {
                js_sys::Reflect::set(&answer, &JsValue::from_str(key), value).map(|_| ())
            };
            // The page planned this query; if this engine cannot (a table the page holds and
            // it does not, such as a lake `runPipeline` registered), the query runs whole there.
            let Ok(Some(split)) = QueryParts::plan(&ctx, &query).await else {
                set("fingerprint", &JsValue::NULL)?;
                return Ok(answer.into());
            };
            // Before running: running tightens dynamic filters, which show in the plan.
            let fingerprint = split.fingerprint();
            let outputs = split.run_part(&ctx, part).await.map_err(js_error)?;
            let (lengths, bytes) = split.encode_part(&outputs).map_err(js_error)?;
            drop(outputs);
            set("fingerprint", &JsValue::from_str(&fingerprint))?;
            set("lengths", &to_js(&lengths)?)?;
            set("bytes", &Uint8Array::from(bytes.as_slice()).into())?;
            Ok(answer.into())
        })
    }

    /// Runs a pipeline spec (TOML) into the lake (in memory, or `s3://bucket/prefix`), then
    /// registers every table it holds by name (quarantines as `<name>_quarantine`). Resolves
    /// to the run report.
    #[wasm_bindgen(js_name = runPipeline)]
    pub fn run_pipeline(
        &self,
        spec: String,
        options_value: JsValue,
        on_progress: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            inner.begin_call();
            let o: PipelineOptions =
                options(options_value, PIPELINE_OPTIONS, "runPipeline options")?;
            let spec = PipelineSpec::from_toml(&spec).map_err(js_error)?;
            let lake = o.lake.unwrap_or_else(|| "/lake".into());
            medallion_core::storage::check_location(&lake).map_err(js_error)?;
            if medallion_core::storage::is_http(&lake) {
                return Err(js_error(format!(
                    "lake {lake}: http(s) URLs are read-only; use s3://bucket/prefix (with the s3 option) or a path such as /lake (kept in memory)"
                )));
            }
            if medallion_core::storage::is_s3(&lake) && inner.storage.s3.is_none() {
                return Err(js_error(format!("runPipeline: lake {}", no_s3(&lake))));
            }
            if let Some(files) = o.files {
                inner.storage.known_urls.borrow_mut().extend(files);
            }
            let clock = JsClock {
                fixed_now: o.now_ms,
            };
            let run_id = o.run_id.unwrap_or_else(new_run_id);
            let opts = RunOptions {
                lake: lake.clone(),
                base: o.base.unwrap_or_default(),
                run_id,
                engine: inner.engine,
                max_files_per_table: None,
                max_bytes_per_table: None,
            };
            let callback = on_progress.dyn_into::<Function>().ok();
            let progress = |p: Progress| {
                if let Some(f) = &callback {
                    if let Ok(event) = progress_event(&p) {
                        let _ = f.call1(&JsValue::NULL, &event);
                    }
                }
            };
            let storage: Arc<dyn Storage> = inner.counting.clone();
            let report = pipeline::run(&spec, storage, &clock, &opts, &progress)
                .await
                .map_err(run_error)?;
            register_lake(&inner, &spec, &lake).await?;
            to_js(&report)
        })
    }

    /// Requests, bytes fetched and written since the engine started (or `resetStats`).
    pub fn stats(&self) -> Result<JsValue, JsValue> {
        let c = self.inner.io.counts() - self.inner.baseline.get();
        let k = self.inner.cache.counts() - self.inner.cache_baseline.get();
        // The core counts every read it asks for; those the cache answered never left.
        to_js(&Stats {
            requests: c.read_requests.saturating_sub(k.hits) + k.revalidations,
            bytes: c.bytes_read.saturating_sub(k.hit_bytes),
            list_requests: c.list_requests,
            write_requests: c.write_requests,
            bytes_written: c.bytes_written,
            cache_hits: k.hits,
            bytes_from_cache: k.hit_bytes,
            revalidations: k.revalidations,
            cached_bytes: k.cached_bytes,
        })
    }

    #[wasm_bindgen(js_name = resetStats)]
    pub fn reset_stats(&self) {
        self.inner.baseline.set(self.inner.io.counts());
        self.inner.cache_baseline.set(self.inner.cache.counts());
    }

    /// Every file of the in-memory lake: `[path, bytes][]`.
    #[wasm_bindgen(js_name = lakeFiles)]
    pub fn lake_files(&self) -> js_sys::Array {
        let out = js_sys::Array::new();
        for (path, bytes) in self.inner.storage.memory.snapshot() {
            let pair = js_sys::Array::new();
            pair.push(&JsValue::from_str(&path));
            pair.push(&Uint8Array::from(bytes.as_ref()).into());
            out.push(&pair.into());
        }
        out
    }
}

/// Runs `query` whole, or split as [`Engine::sql_in_parts`] says when `in_parts` is given.
/// It is planned once for this engine first: a query whose scans read too little to split
/// (a point lookup, a constant) runs that plan and costs no planning in parts.
async fn run_query(
    inner: &Inner,
    query: &str,
    in_parts: Option<(usize, &Function)>,
) -> Result<QueryResult, JsValue> {
    let whole = plan_sql(&inner.ctx, "query", query)
        .await
        .map_err(js_error)?;
    if let Some((parts, run_parts)) = in_parts {
        if parts >= 2 && query_parts::worth_splitting(&inner.ctx, &whole) {
            if let Some(result) = split(inner, query, parts, run_parts).await? {
                return Ok(result);
            }
        }
    }
    let (schema, batches) = collect_plan(&inner.ctx, "query", whole)
        .await
        .map_err(js_error)?;
    Ok(QueryResult::new(schema, batches))
}

/// `query` run in `parts` parts, or `None` if it is to run whole.
async fn split(
    inner: &Inner,
    query: &str,
    parts: usize,
    run_parts: &Function,
) -> Result<Option<QueryResult>, JsValue> {
    let ctx = query_parts::context_from(&inner.ctx, inner.engine, parts);
    let Some(split) = QueryParts::plan(&ctx, query).await.map_err(js_error)? else {
        return Ok(None);
    };
    // Workers read HTTP(S) by URL, and a bucket when the page can sign for them.
    let s3 = inner.storage.s3.is_some();
    let remote = |store: &String| {
        store.starts_with("http://")
            || store.starts_with("https://")
            || (s3 && store.starts_with("s3://"))
    };
    if !split.finishes_in_memory() || !split.stores().iter().all(remote) {
        return Ok(None);
    }
    let fingerprint = split.fingerprint();
    let answers = run_parts.call1(&JsValue::NULL, &JsValue::from_str(&fingerprint))?;
    let answers = JsFuture::from(Promise::resolve(&answers)).await?;
    let answers: js_sys::Array = answers
        .dyn_into()
        .map_err(|_| js_error("query parts: the workers' answers are not an array"))?;
    if answers.length() as usize != parts {
        return Err(js_error(format!(
            "query parts: {} answers for {parts} parts",
            answers.length()
        )));
    }
    let get = |answer: &JsValue, key: &str| js_sys::Reflect::get(answer, &JsValue::from_str(key));
    let mut outputs = Vec::with_capacity(parts);
    for (part, answer) in answers.iter().enumerate() {
        if get(&answer, "fingerprint")?.as_string().as_deref() != Some(fingerprint.as_str()) {
            return Ok(None);
        }
        let lengths: Vec<usize> = serde_wasm_bindgen::from_value(get(&answer, "lengths")?)
            .map_err(|e| js_error(format!("query part {part}: lengths: {e}")))?;
        let bytes = Uint8Array::new(&get(&answer, "bytes")?).to_vec();
        outputs.push(
            split
                .decode_part(part, &lengths, &bytes)
                .map_err(js_error)?,
        );
    }
    // DataFusion merges the parts' partitions in tasks: a runtime on this thread runs them.
    // Nothing in them waits on I/O (`finishes_in_memory`), so it never has to block.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| js_error(format!("query parts: starting a task runtime: {e}")))?;
    let (schema, batches) = runtime
        .block_on(split.finish(&ctx, outputs))
        .map_err(js_error)?;
    Ok(Some(QueryResult::new(schema, batches).in_parts(parts)))
}

async fn register_lake(inner: &Inner, spec: &PipelineSpec, lake: &str) -> Result<(), JsValue> {
    let mut tables: Vec<(String, String)> = spec
        .tables()
        .map(|(name, layer)| (name.to_string(), table_location(lake, layer, name)))
        .collect();
    for name in spec.bronze.keys().chain(spec.silver.keys()) {
        tables.push((
            format!("{name}_quarantine"),
            quarantine_location(lake, name),
        ));
    }
    for (name, location) in tables {
        let exists = medallion_core::delta::is_delta_table(inner.counting.as_ref(), &location)
            .await
            .map_err(js_error)?;
        if !exists {
            continue;
        }
        let _ = inner.ctx.deregister_table(name.as_str());
        register_location(
            &inner.ctx,
            &inner.counting,
            &name,
            &format!("delta:{location}"),
        )
        .await
        .map_err(|e| js_error(format!("table `{name}`: {e}")))?;
    }
    Ok(())
}

fn progress_event(p: &Progress) -> Result<JsValue, JsValue> {
    let value = match p {
        Progress::Planned { tables } => serde_json::json!({"event": "planned", "tables": tables}),
        Progress::TableStarted { table, layer } => {
            serde_json::json!({"event": "tableStarted", "table": table, "layer": layer.as_str()})
        }
        Progress::FileIngested { table, file, bytes } => {
            serde_json::json!({"event": "fileIngested", "table": table, "file": file, "bytes": bytes})
        }
        Progress::TableFinished {
            table,
            rows,
            skipped,
        } => {
            serde_json::json!({"event": "tableFinished", "table": table, "rows": rows, "skipped": skipped})
        }
        Progress::Committing { tables } => {
            serde_json::json!({"event": "committing", "tables": tables})
        }
    };
    to_js(&value)
}

/// `Date.now()` and `performance.now()`, from whatever global the runtime has.
struct JsClock {
    fixed_now: Option<f64>,
}

impl Clock for JsClock {
    fn now_ms(&self) -> i64 {
        self.fixed_now.unwrap_or_else(js_sys::Date::now) as i64
    }
    fn monotonic_ms(&self) -> f64 {
        let performance = js_sys::Reflect::get(&js_sys::global(), &"performance".into())
            .ok()
            .filter(|p| !p.is_undefined());
        performance
            .and_then(|p| {
                let now = js_sys::Reflect::get(&p, &"now".into()).ok()?;
                now.dyn_into::<Function>().ok()?.call0(&p).ok()?.as_f64()
            })
            .unwrap_or_else(js_sys::Date::now)
    }
}

fn new_run_id() -> String {
    format!(
        "{:x}-{:08x}",
        js_sys::Date::now() as u64,
        (js_sys::Math::random() * f64::from(u32::MAX)) as u32
    )
}
