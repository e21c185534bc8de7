//! One query split across instances that share nothing but the tables: wasm guests have one
//! thread each, so a query in one instance uses one core however many the machine has.
//!
//! Every instance plans the same SQL for `parts` partitions (the plan is a function of the
//! SQL and the tables, so the plans agree; [`QueryParts::fingerprint`] checks it). The plan's
//! *cuts* are its largest subtrees in which partition `i` reads only partition `i` of the
//! files below it: scans, filters, projections, partial aggregates, per-partition sorts. Part
//! `i` runs partition `i` of every cut ([`QueryParts::run_part`]); one instance then runs the
//! rest of the plan over those outputs ([`QueryParts::finish`]): the final aggregates, merges
//! and joins, usually small next to the scans.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
#[allow(deprecated)]
use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;

use crate::error::{Context, Error, Result};
use crate::query::{collect_plan, new_context, plan_sql, session_config, EngineOptions};

/// A session that plans for `parts` partitions, one per instance.
pub fn context(opts: EngineOptions, parts: usize) -> SessionContext {
    let ctx = new_context(EngineOptions {
        target_partitions: parts.max(1),
        ..opts
    });
    in_parts(ctx.state_ref().write().config_mut());
    ctx
}

/// [`context`] over the tables, object stores, memory pool and rules of `ctx`, a session made
/// by [`new_context`] from `opts` that already holds its tables (as the npm package's engine
/// does). `ctx` is left as it was.
pub fn context_from(ctx: &SessionContext, opts: EngineOptions, parts: usize) -> SessionContext {
    let mut config = session_config(EngineOptions {
        target_partitions: parts.max(1),
        ..opts
    })
    // The catalogs are `ctx`'s: a new default catalog would replace its tables, in both.
    .with_create_default_catalog_and_schema(false);
    in_parts(&mut config);
    let state = SessionStateBuilder::new_from_existing(ctx.state())
        .with_config(config)
        .build();
    SessionContext::new_with_state(state)
}

/// Partitions do not steal each other's files: a part runs alone, and would read them all.
/// Dynamic filters stay on: one whose operator runs in another instance is never tightened,
/// and keeps every row.
fn in_parts(config: &mut SessionConfig) {
    config
        .options_mut()
        .execution
        .enable_file_stream_work_stealing = false;
}

/// Whether `plan`'s scans read enough for splitting them to pay: at least DataFusion's floor
/// for splitting a file. Below it, more instances cost more than they save. A plan for one
/// partition answers as well as one for many, so a query can be asked before it is planned
/// in parts.
pub fn worth_splitting(ctx: &SessionContext, plan: &Arc<dyn ExecutionPlan>) -> bool {
    scanned_bytes(plan) >= split_floor(ctx)
}

fn split_floor(ctx: &SessionContext) -> u64 {
    ctx.state()
        .config()
        .options()
        .optimizer
        .repartition_file_min_size as u64
}

/// A query's plan for `parts` partitions, and the subtrees its parts run.
pub struct QueryParts {
    plan: Arc<dyn ExecutionPlan>,
    cuts: Vec<Arc<dyn ExecutionPlan>>,
    parts: usize,
}

impl QueryParts {
    /// Plans `sql` in `ctx` (from [`context`]). `None` when no subtree reading files has
    /// more than one partition (small tables, no files), or its scans will read less than
    /// DataFusion's floor for splitting a file (a point lookup): the query is best run whole.
    pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<Option<Self>> {
        let parts = ctx.state().config().target_partitions();
        let plan = plan_sql(ctx, "query", sql).await?;
        let mut cuts = Vec::new();
        if parts > 1 {
            find_cuts(&plan, parts, &mut cuts);
        }
        let scanned: u64 = cuts.iter().map(scanned_bytes).sum();
        Ok((!cuts.is_empty() && scanned >= split_floor(ctx)).then_some(Self { plan, cuts, parts }))
    }

    /// The number of parts (partitions of every cut).
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// The output schema of each cut, in order.
    pub fn schemas(&self) -> Vec<SchemaRef> {
        self.cuts.iter().map(|c| c.schema()).collect()
    }

    /// A digest of the cuts, the files and byte ranges each partition reads included: equal
    /// in two instances only if their parts are the same work. A table that changed between
    /// two instances' planning (a new Delta version) changes it. Take it before running: a
    /// dynamic filter tightened by the run shows in the plan.
    pub fn fingerprint(&self) -> String {
        let mut hasher = std::hash::DefaultHasher::new();
        self.parts.hash(&mut hasher);
        for cut in &self.cuts {
            DisplayableExecutionPlan::new(cut.as_ref())
                .indent(true)
                .to_string()
                .hash(&mut hasher);
            cut.schema().hash(&mut hasher);
        }
        format!("{:016x}", hasher.finish())
    }

    /// Runs partition `part` of every cut: one list of batches per cut.
    pub async fn run_part(
        &self,
        ctx: &SessionContext,
        part: usize,
    ) -> Result<Vec<Vec<RecordBatch>>> {
        if part >= self.parts {
            return Err(Error::Format {
                location: format!("query part {part}"),
                message: format!("asked of a query planned in {} parts", self.parts),
            });
        }
        let mut out = Vec::with_capacity(self.cuts.len());
        for cut in &self.cuts {
            let batches: Vec<RecordBatch> = cut
                .execute(part, ctx.task_ctx())
                .context(|| format!("query: running part {part}"))?
                .try_collect()
                .await
                .context(|| format!("query: running part {part}"))?;
            out.push(batches);
        }
        Ok(out)
    }

    /// A part's output as bytes: one Arrow IPC stream per cut, and the length of each.
    pub fn encode_part(&self, outputs: &[Vec<RecordBatch>]) -> Result<(Vec<usize>, Vec<u8>)> {
        let mut lengths = Vec::with_capacity(outputs.len());
        let mut bytes = Vec::new();
        for (schema, batches) in self.schemas().iter().zip(outputs) {
            let start = bytes.len();
            let mut writer = StreamWriter::try_new(&mut bytes, schema).context(encoding)?;
            for batch in batches {
                writer.write(batch).context(encoding)?;
            }
            writer.finish().context(encoding)?;
            drop(writer);
            lengths.push(bytes.len() - start);
        }
        Ok((lengths, bytes))
    }

    /// Part `part`'s output from what [`QueryParts::encode_part`] made of it in another
    /// instance: `bytes` holds one stream per cut, of `lengths`.
    pub fn decode_part(
        &self,
        part: usize,
        lengths: &[usize],
        bytes: &[u8],
    ) -> Result<Vec<Vec<RecordBatch>>> {
        let bad = |message: String| Error::Format {
            location: format!("the result of query part {part}"),
            message,
        };
        if lengths.len() != self.cuts.len() {
            return Err(bad(format!(
                "{} streams, where the plan has {} cuts",
                lengths.len(),
                self.cuts.len()
            )));
        }
        let total = lengths
            .iter()
            .try_fold(0usize, |sum, &l| sum.checked_add(l));
        if total != Some(bytes.len()) {
            return Err(bad(format!(
                "{} bytes, where its stream lengths {lengths:?} add up to another size",
                bytes.len()
            )));
        }
        let mut at = 0;
        let mut out = Vec::with_capacity(lengths.len());
        for (cut, &len) in lengths.iter().enumerate() {
            // In range: the lengths add up to `bytes.len()`.
            let stream = &bytes[at..at + len];
            let context = || {
                format!(
                    "the result of query part {part}, cut {cut} (bytes {at}..{})",
                    at + len
                )
            };
            let batches = StreamReader::try_new(std::io::Cursor::new(stream), None)
                .context(context)?
                .collect::<std::result::Result<Vec<_>, _>>()
                .context(context)?;
            if let Some(b) = batches.first() {
                if b.schema() != self.cuts[cut].schema() {
                    return Err(bad(format!(
                        "cut {cut} has another schema than this plan's"
                    )));
                }
            }
            out.push(batches);
            at += len;
        }
        Ok(out)
    }

    /// Whether the rest of the plan, past the cuts, reads nothing: then finishing needs no
    /// storage, only the parts' outputs.
    pub fn finishes_in_memory(&self) -> bool {
        fn in_memory(node: &Arc<dyn ExecutionPlan>, cuts: &[Arc<dyn ExecutionPlan>]) -> bool {
            if cuts.iter().any(|c| Arc::ptr_eq(c, node)) {
                return true;
            }
            let children = node.children();
            if children.is_empty() {
                let any: &dyn ExecutionPlan = node.as_ref();
                return any.is::<EmptyExec>()
                    || any.is::<PlaceholderRowExec>()
                    || any.downcast_ref::<DataSourceExec>().is_some_and(|d| {
                        d.data_source()
                            .downcast_ref::<MemorySourceConfig>()
                            .is_some()
                    });
            }
            children.into_iter().all(|c| in_memory(c, cuts))
        }
        in_memory(&self.plan, &self.cuts)
    }

    /// The object stores (`scheme://host/`) whose files the cuts read.
    pub fn stores(&self) -> Vec<String> {
        fn collect_stores(node: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
            if let Some(scan) = file_scan(node) {
                let url = scan.object_store_url.as_str().to_string();
                if !out.contains(&url) {
                    out.push(url);
                }
            }
            for child in node.children() {
                collect_stores(child, out);
            }
        }
        let mut out = Vec::new();
        for cut in &self.cuts {
            collect_stores(cut, &mut out);
        }
        out
    }

    /// Runs the rest of the plan over the parts' outputs, `outputs[part][cut]`, and answers
    /// the query's rows, strings as plain `Utf8`. DataFusion merges partitions in tasks, so
    /// in wasm this needs a (single-threaded) tokio runtime around it.
    pub async fn finish(
        self,
        ctx: &SessionContext,
        outputs: Vec<Vec<Vec<RecordBatch>>>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        if outputs.len() != self.parts || outputs.iter().any(|o| o.len() != self.cuts.len()) {
            return Err(Error::Format {
                location: "query parts".into(),
                message: format!(
                    "expected {} parts' outputs of {} cuts each",
                    self.parts,
                    self.cuts.len()
                ),
            });
        }
        // By cut: each cut's source has one partition per part.
        let mut by_cut: Vec<Vec<Vec<RecordBatch>>> =
            vec![Vec::with_capacity(self.parts); self.cuts.len()];
        for part in outputs {
            for (cut, batches) in part.into_iter().enumerate() {
                by_cut[cut].push(batches);
            }
        }
        let mut sources = Vec::with_capacity(self.cuts.len());
        for (cut, parts) in self.cuts.iter().zip(by_cut) {
            let source = MemorySourceConfig::try_new_exec(&parts, cut.schema(), None)
                .context(|| "query: gathering the parts' results".to_string())?;
            sources.push((Arc::clone(cut), source as Arc<dyn ExecutionPlan>));
        }
        collect_plan(ctx, "query", substitute(&self.plan, &sources)?).await
    }
}

fn encoding() -> String {
    "query: encoding a part's results as Arrow IPC".to_string()
}

/// The largest subtrees with `parts` partitions whose partitions are independent.
fn find_cuts(node: &Arc<dyn ExecutionPlan>, parts: usize, cuts: &mut Vec<Arc<dyn ExecutionPlan>>) {
    if node.output_partitioning().partition_count() == parts
        && independent(node)
        && reads_files(node)
    {
        cuts.push(Arc::clone(node));
        return;
    }
    for child in node.children() {
        find_cuts(child, parts, cuts);
    }
}

/// Whether partition `i` of `node` needs only partition `i` of each of its inputs, all the
/// way down: no operator that gathers or exchanges partitions.
fn independent(node: &Arc<dyn ExecutionPlan>) -> bool {
    let any: &dyn ExecutionPlan = node.as_ref();
    #[allow(deprecated)] // still planned by DataFusion 55
    let coalesce = any.is::<CoalesceBatchesExec>();
    let local = any.is::<DataSourceExec>()
        || any.is::<FilterExec>()
        || any.is::<ProjectionExec>()
        || coalesce
        || any.is::<CooperativeExec>()
        || any.is::<LocalLimitExec>()
        || any
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| *a.mode() == AggregateMode::Partial)
        || any.is::<crate::short_key_groups::ShortKeyAggregateExec>()
        || any
            .downcast_ref::<SortExec>()
            .is_some_and(|s| s.preserve_partitioning());
    local
        && node.children().iter().all(|c| {
            c.output_partitioning().partition_count()
                == node.output_partitioning().partition_count()
                && independent(c)
        })
}

/// Whether a subtree scans files: only then is splitting it worth an instance.
fn reads_files(node: &Arc<dyn ExecutionPlan>) -> bool {
    file_scan(node).is_some() || node.children().into_iter().any(reads_files)
}

/// The bytes of files (or of their byte ranges) a subtree's scans cover, but for scans that
/// read their filter's columns first (late materialisation, which the engine chooses for point
/// lookups): those read little of their ranges, and in parts would pay each part's requests
/// for the same few pages.
fn scanned_bytes(node: &Arc<dyn ExecutionPlan>) -> u64 {
    let own: u64 = file_scan(node)
        .filter(|scan| !late_materialised(scan))
        .map_or(0, |scan| {
            scan.file_groups
                .iter()
                .flat_map(|g| g.iter())
                .map(|f| match &f.range {
                    Some(r) => (r.end - r.start).max(0) as u64,
                    None => f.object_meta.size,
                })
                .sum()
        });
    own + node.children().into_iter().map(scanned_bytes).sum::<u64>()
}

fn late_materialised(scan: &FileScanConfig) -> bool {
    let source: &dyn std::any::Any = scan.file_source().as_ref();
    source
        .downcast_ref::<ParquetSource>()
        .is_some_and(|p| p.table_parquet_options().global.pushdown_filters)
}

fn file_scan(node: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    (node.as_ref() as &dyn ExecutionPlan)
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// A cut, and what takes its place.
type Replacement = (Arc<dyn ExecutionPlan>, Arc<dyn ExecutionPlan>);

/// `plan` with each cut replaced by its source of gathered results.
fn substitute(
    plan: &Arc<dyn ExecutionPlan>,
    sources: &[Replacement],
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some((_, source)) = sources.iter().find(|(cut, _)| Arc::ptr_eq(cut, plan)) {
        return Ok(Arc::clone(source));
    }
    let children = plan.children();
    if children.is_empty() {
        return Ok(Arc::clone(plan));
    }
    let children = children
        .into_iter()
        .map(|c| substitute(c, sources))
        .collect::<Result<Vec<_>>>()?;
    // The parents keep what they knew of the cuts (partitioning, ordering): the gathered
    // results are the same rows in the same order.
    let keep = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
    Arc::clone(plan)
        .replace_children(children, keep)
        .context(|| "query: gathering the parts' results".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{collect_sql, register_location};
    use crate::storage::{MemoryStorage, Storage};
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;

    /// `row_groups` row groups of 1000 rows: `k` cycles through 7 strings, `v` counts up.
    fn parquet_file(row_groups: i64) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).unwrap();
        for chunk in 0..row_groups {
            let v: Vec<i64> = (chunk * 1000..(chunk + 1) * 1000).collect();
            let k: Vec<String> = v.iter().map(|v| format!("k{}", v % 7)).collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(k)),
                    Arc::new(Int64Array::from(v)),
                ],
            )
            .unwrap();
            w.write(&batch).unwrap();
        }
        w.close().unwrap();
        out
    }

    /// `/t/a.parquet`: 40 row groups.
    async fn storage() -> Arc<dyn Storage> {
        let storage = Arc::new(MemoryStorage::new());
        storage
            .put("/t/a.parquet", parquet_file(40).into())
            .await
            .unwrap();
        storage
    }

    /// The test file is small: split it anyway.
    fn without_floor(ctx: &SessionContext) {
        set_floor(ctx, 0);
    }

    fn set_floor(ctx: &SessionContext, bytes: usize) {
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .optimizer
            .repartition_file_min_size = bytes;
    }

    async fn split_context(storage: &Arc<dyn Storage>, parts: usize) -> SessionContext {
        let ctx = context(EngineOptions::default(), parts);
        without_floor(&ctx);
        register_location(&ctx, storage, "t", "/t/a.parquet")
            .await
            .unwrap();
        ctx
    }

    async fn in_parts(sql: &str, parts: usize) -> String {
        let storage = storage().await;
        let ctx = split_context(&storage, parts).await;
        let split = QueryParts::plan(&ctx, sql).await.unwrap().expect("splits");
        // Each part in a session of its own, as in separate instances, its output passed as
        // bytes.
        let mut outputs = Vec::new();
        for part in 0..parts {
            let own = split_context(&storage, parts).await;
            let mine = QueryParts::plan(&own, sql).await.unwrap().unwrap();
            assert_eq!(mine.fingerprint(), split.fingerprint());
            assert!(mine.finishes_in_memory());
            assert_eq!(mine.stores(), ["file:///"]);
            let output = mine.run_part(&own, part).await.unwrap();
            let (lengths, bytes) = mine.encode_part(&output).unwrap();
            outputs.push(split.decode_part(part, &lengths, &bytes).unwrap());
        }
        let (_, batches) = split.finish(&ctx, outputs).await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    async fn whole(sql: &str) -> String {
        let storage = storage().await;
        let ctx = crate::query::new_context(EngineOptions::default());
        register_location(&ctx, &storage, "t", "/t/a.parquet")
            .await
            .unwrap();
        let (_, batches) = collect_sql(&ctx, "query", sql).await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn parts_give_the_whole_querys_rows() {
        for sql in [
            "SELECT k, count(*) AS n, sum(v) AS s, min(v), max(v) FROM t GROUP BY k ORDER BY k",
            "SELECT count(*), sum(v) FROM t WHERE v % 3 = 0",
            "SELECT v, k FROM t WHERE v % 997 = 1 ORDER BY v DESC LIMIT 5",
            "SELECT a.k, count(*) FROM t a JOIN (SELECT DISTINCT k FROM t WHERE v < 3) b ON a.k = b.k GROUP BY a.k ORDER BY 1",
        ] {
            for parts in [2, 3] {
                assert_eq!(in_parts(sql, parts).await, whole(sql).await, "{sql} in {parts} parts");
            }
        }
    }

    #[tokio::test]
    async fn a_sessions_own_tables_split_and_bad_bytes_name_the_part() {
        let sql = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k ORDER BY k";
        let storage = storage().await;
        // Tables registered in a one-partition session, as the npm package's engine holds them.
        let own = crate::query::new_context(EngineOptions::default());
        register_location(&own, &storage, "t", "/t/a.parquet")
            .await
            .unwrap();
        let ctx = context_from(&own, EngineOptions::default(), 2);
        // The session it came from keeps its table.
        assert!(own.table_exist("t").unwrap());
        without_floor(&ctx);
        let split = QueryParts::plan(&ctx, sql).await.unwrap().expect("splits");
        assert_eq!(
            split.fingerprint(),
            QueryParts::plan(&split_context(&storage, 2).await, sql)
                .await
                .unwrap()
                .unwrap()
                .fingerprint()
        );
        let mut outputs = Vec::new();
        for part in 0..2 {
            let output = split.run_part(&ctx, part).await.unwrap();
            let (lengths, bytes) = split.encode_part(&output).unwrap();
            if part == 1 {
                let cut = bytes.len() - 8;
                let e = split.decode_part(1, &lengths, &bytes[..cut]).unwrap_err();
                assert!(e.to_string().contains("query part 1"), "{e}");
                let mut wrong = lengths.clone();
                wrong[0] = usize::MAX;
                let e = split.decode_part(1, &wrong, &bytes).unwrap_err();
                assert!(e.to_string().contains("query part 1"), "{e}");
            }
            outputs.push(split.decode_part(part, &lengths, &bytes).unwrap());
        }
        let (_, batches) = split.finish(&ctx, outputs).await.unwrap();
        assert_eq!(
            pretty_format_batches(&batches).unwrap().to_string(),
            whole(sql).await
        );
    }

    #[tokio::test]
    async fn a_scan_under_the_floor_runs_whole() {
        let storage = storage().await;
        // The file is ~0.2 MB, under DataFusion's 10 MiB floor for splitting a file.
        let ctx = context(EngineOptions::default(), 2);
        register_location(&ctx, &storage, "t", "/t/a.parquet")
            .await
            .unwrap();
        let split = QueryParts::plan(&ctx, "SELECT k, count(*) FROM t GROUP BY k")
            .await
            .unwrap();
        assert!(split.is_none());
        let nothing = QueryParts::plan(&split_context(&storage, 2).await, "SELECT 42")
            .await
            .unwrap();
        assert!(nothing.is_none());
    }

    #[tokio::test]
    async fn a_scan_that_reads_its_filter_first_runs_whole() {
        use crate::bridge::parquet_reader::{FilterPushdown, ReadSettings};
        let storage = storage().await;
        let opts = EngineOptions {
            reading: ReadSettings {
                filter_pushdown: FilterPushdown::Always,
                ..Default::default()
            },
            ..Default::default()
        };
        let ctx = context(opts, 2);
        register_location(&ctx, &storage, "t", "/t/a.parquet")
            .await
            .unwrap();
        // Any scan that reads a byte counts, but for the late-materialised one.
        set_floor(&ctx, 1);
        let lookup = QueryParts::plan(&ctx, "SELECT * FROM t WHERE v = 4242").await;
        assert!(lookup.unwrap().is_none());
        let scan = QueryParts::plan(&ctx, "SELECT sum(v) FROM t").await;
        assert!(scan.unwrap().is_some());
        // Asked of the one-partition plan a page's engine runs whole, the answers agree.
        let one = crate::query::new_context(opts);
        register_location(&one, &storage, "t", "/t/a.parquet")
            .await
            .unwrap();
        set_floor(&one, 1);
        let worth = |sql: &'static str| {
            let one = one.clone();
            async move { worth_splitting(&one, &plan_sql(&one, "q", sql).await.unwrap()) }
        };
        assert!(!worth("SELECT * FROM t WHERE v = 4242").await);
        assert!(worth("SELECT sum(v) FROM t").await);
        assert!(!worth("SELECT 42").await);
    }

    #[tokio::test]
    async fn a_changed_table_changes_the_fingerprint() {
        let sql = "SELECT k, sum(v) FROM t GROUP BY k";
        let storage = storage().await;
        let before = QueryParts::plan(&split_context(&storage, 2).await, sql)
            .await
            .unwrap()
            .unwrap()
            .fingerprint();
        let again = QueryParts::plan(&split_context(&storage, 2).await, sql)
            .await
            .unwrap()
            .unwrap()
            .fingerprint();
        assert_eq!(before, again);
        // The same path, rewritten one row group shorter: other byte ranges.
        storage
            .put("/t/a.parquet", parquet_file(39).into())
            .await
            .unwrap();
        let after = QueryParts::plan(&split_context(&storage, 2).await, sql)
            .await
            .unwrap()
            .unwrap()
            .fingerprint();
        assert_ne!(before, after);
    }
}
