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
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
#[allow(deprecated)]
use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{collect, ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use crate::error::{Context, Error, Result};
use crate::query::{new_context, EngineOptions};
use crate::string_views;

/// A session that plans for `parts` partitions, one per instance. Partitions do not steal
/// each other's files: a part runs alone, and would read them all. Dynamic filters stay on:
/// one whose operator runs in another instance is never tightened, and keeps every row.
pub fn context(opts: EngineOptions, parts: usize) -> SessionContext {
    let ctx = new_context(EngineOptions {
        target_partitions: parts.max(1),
        ..opts
    });
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        options.execution.enable_file_stream_work_stealing = false;
    }
    ctx
}

/// A query's plan for `parts` partitions, and the subtrees its parts run.
pub struct QueryParts {
    plan: Arc<dyn ExecutionPlan>,
    cuts: Vec<Arc<dyn ExecutionPlan>>,
    parts: usize,
}

impl QueryParts {
    /// Plans `sql` in `ctx` (from [`context`]). `None` when no subtree reading files has
    /// more than one partition (small tables, no files): the query is best run whole.
    pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<Option<Self>> {
        let parts = ctx.state().config().target_partitions();
        let plan = ctx
            .sql(sql)
            .await
            .context(|| "query: planning SQL".to_string())?
            .create_physical_plan()
            .await
            .context(|| "query: planning SQL".to_string())?;
        let mut cuts = Vec::new();
        if parts > 1 {
            find_cuts(&plan, parts, &mut cuts);
        }
        // Below DataFusion's own floor for splitting a file, more instances cost more than
        // they save.
        let floor = ctx
            .state()
            .config()
            .options()
            .optimizer
            .repartition_file_min_size as u64;
        let scanned: u64 = cuts.iter().map(scanned_bytes).sum();
        Ok((!cuts.is_empty() && scanned >= floor).then_some(Self { plan, cuts, parts }))
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
            return Err(Error::Spec(format!(
                "query part {part} asked of a query planned in {} parts",
                self.parts
            )));
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

    /// Runs the rest of the plan over the parts' outputs, `outputs[cut][part]`, and answers
    /// the query's rows, strings as plain `Utf8`. DataFusion merges partitions in tasks, so
    /// in wasm this needs a (single-threaded) tokio runtime around it.
    pub async fn finish(
        self,
        ctx: &SessionContext,
        outputs: Vec<Vec<Vec<RecordBatch>>>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        if outputs.len() != self.cuts.len() || outputs.iter().any(|o| o.len() != self.parts) {
            return Err(Error::Spec(format!(
                "query parts: expected {} outputs of {} parts each",
                self.cuts.len(),
                self.parts
            )));
        }
        let mut sources = Vec::with_capacity(self.cuts.len());
        for (cut, parts) in self.cuts.iter().zip(outputs) {
            let source = MemorySourceConfig::try_new_exec(&parts, cut.schema(), None)
                .context(|| "query: gathering the parts' results".to_string())?;
            sources.push((Arc::clone(cut), source as Arc<dyn ExecutionPlan>));
        }
        let plan = substitute(&self.plan, &sources)?;
        let schema = string_views::plain_schema(&plan.schema());
        let batches = collect(plan, ctx.task_ctx())
            .await
            .and_then(|b| {
                b.iter()
                    .map(|b| string_views::plain_batch(b, &schema))
                    .collect()
            })
            .context(|| "query: running SQL".to_string())?;
        Ok((schema, batches))
    }
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

/// The bytes of files (or of their byte ranges) a subtree's scans cover.
fn scanned_bytes(node: &Arc<dyn ExecutionPlan>) -> u64 {
    let own: u64 = file_scan(node).map_or(0, |scan| {
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

    async fn split_context(storage: &Arc<dyn Storage>, parts: usize) -> SessionContext {
        let ctx = context(EngineOptions::default(), parts);
        // The test file is small: split it anyway.
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .optimizer
            .repartition_file_min_size = 0;
        register_location(&ctx, storage, "t", "/t/a.parquet")
            .await
            .unwrap();
        ctx
    }

    async fn in_parts(sql: &str, parts: usize) -> String {
        let storage = storage().await;
        let ctx = split_context(&storage, parts).await;
        let split = QueryParts::plan(&ctx, sql).await.unwrap().expect("splits");
        // Each part in a session of its own, as in separate instances.
        let mut outputs = vec![Vec::new(); split.schemas().len()];
        for part in 0..parts {
            let own = split_context(&storage, parts).await;
            let mine = QueryParts::plan(&own, sql).await.unwrap().unwrap();
            assert_eq!(mine.fingerprint(), split.fingerprint());
            for (cut, batches) in mine
                .run_part(&own, part)
                .await
                .unwrap()
                .into_iter()
                .enumerate()
            {
                outputs[cut].push(batches);
            }
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
