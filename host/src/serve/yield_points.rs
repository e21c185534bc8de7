//! Yield points above every `RepartitionExec`, so that a query the server stops
//! ([`super::time_limit`]) stops working at once.
//!
//! Dropping a query's stream aborts its tasks, but tokio can stop a task only when it yields.
//! The operator reading a `RepartitionExec` (an aggregate, a join) yields only once the channel
//! in between is empty: DataFusion 55's repartition channels spend none of tokio's cooperative
//! budget, and they buffer without bound while one consumer lags (apache/datafusion#22090).
//! A `count(DISTINCT …)` over `generate_series` stopped by `--query-timeout` kept a core busy
//! for up to 0.4 s after its client had the error, inserting buffered batches into its hash
//! table. Adding DataFusion's `CooperativeExec` above each `RepartitionExec` (which declares
//! itself cooperative, so DataFusion adds none) did not stop that: it yields after tokio's
//! budget of 128 batches, and 128 batches of inserts into a table of a
//! million groups took as long. [`YieldEvery`] yields once its reader has been busy for
//! [`BUSY_BEFORE_YIELD`] without waiting; a yield costs a reschedule, microseconds. After the
//! change the server burned 0-40 ms after such a stop instead of 40-390 ms (8 stops each); an
//! aggregate over 20 and 50 million rows through the server took the same time with and
//! without the yields (medians of 7 interleaved runs 0.94-1.05x, the runs' own spread ±30%).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use medallion_core::datafusion::arrow::datatypes::SchemaRef;
use medallion_core::datafusion::arrow::record_batch::RecordBatch;
use medallion_core::datafusion::common::tree_node::{
    Transformed, TransformedResult, TreeNode, TreeNodeRecursion,
};
use medallion_core::datafusion::common::Statistics;
use medallion_core::datafusion::config::ConfigOptions;
use medallion_core::datafusion::error::{DataFusionError, Result};
use medallion_core::datafusion::execution::{SessionStateBuilder, TaskContext};
use medallion_core::datafusion::physical_expr::PhysicalExpr;
use medallion_core::datafusion::physical_optimizer::PhysicalOptimizerRule;
use medallion_core::datafusion::physical_plan::execution_plan::CardinalityEffect;
use medallion_core::datafusion::physical_plan::repartition::RepartitionExec;
use medallion_core::datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use medallion_core::datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
    SendableRecordBatchStream,
};
use medallion_core::datafusion::prelude::SessionContext;

/// How long the reader of a [`YieldEvery`] may be busy (its batches ready one after another)
/// before it yields once: a stopped query goes on working about this long per task, plus the
/// batch in hand (checked between batches).
const BUSY_BEFORE_YIELD: Duration = Duration::from_millis(10);

/// `ctx` with [`YieldAfterRepartition`] as its last physical optimizer rule.
pub fn with_yield_points(ctx: SessionContext) -> SessionContext {
    let state = SessionStateBuilder::new_from_existing(ctx.state())
        .with_physical_optimizer_rule(Arc::new(YieldAfterRepartition))
        .build();
    SessionContext::new_with_state(state)
}

/// Puts a [`YieldEvery`] above each `RepartitionExec` of a physical plan.
#[derive(Debug)]
pub struct YieldAfterRepartition;

impl PhysicalOptimizerRule for YieldAfterRepartition {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match node.is::<RepartitionExec>() {
                true => Transformed::yes(Arc::new(YieldEvery::new(node)) as _),
                false => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "yield_after_repartition"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Its input's batches unchanged, with a yield to the runtime whenever its reader has been
/// busy for [`BUSY_BEFORE_YIELD`].
#[derive(Debug)]
pub struct YieldEvery {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl YieldEvery {
    fn new(input: Arc<dyn ExecutionPlan>) -> YieldEvery {
        YieldEvery {
            properties: input.properties().clone(),
            input,
        }
    }
}

impl DisplayAs for YieldEvery {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "YieldEvery: busy={BUSY_BEFORE_YIELD:?}")
    }
}

impl ExecutionPlan for YieldEvery {
    fn name(&self) -> &str {
        "YieldEvery"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(YieldEvery::new(input))),
            _ => Err(DataFusionError::Internal(
                "YieldEvery takes exactly one input".into(),
            )),
        }
    }

    // Statistics pass through, as in DataFusion's CooperativeExec: without these, every node
    // above this one shows unknown statistics in EXPLAIN.
    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        match input_stats.first() {
            Some(stats) => Ok(Arc::clone(stats)),
            None => Err(DataFusionError::Internal(
                "YieldEvery takes exactly one input".into(),
            )),
        }
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(Yielding {
            input: self.input.execute(partition, context)?,
            busy_since: None,
        }))
    }
}

struct Yielding {
    input: SendableRecordBatchStream,
    /// The first poll since the input last returned Pending, the stream last yielded, or the
    /// stream began: when the reader's busy stretch started.
    busy_since: Option<Instant>,
}

impl Stream for Yielding {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let now = Instant::now();
        let since = *self.busy_since.get_or_insert(now);
        if now.duration_since(since) >= BUSY_BEFORE_YIELD {
            self.busy_since = None;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = self.input.as_mut().poll_next(cx);
        if !matches!(next, Poll::Ready(Some(_))) {
            // Waiting yields already; an ended input has nothing more to hand out.
            self.busy_since = None;
        }
        next
    }
}

impl RecordBatchStream for Yielding {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medallion_core::datafusion::arrow::array::Int64Array;
    use medallion_core::datafusion::physical_plan::displayable;
    use medallion_core::query::{new_context, EngineOptions};

    /// Every RepartitionExec of a two-partition plan is read through a YieldEvery, and the
    /// answer is the one a plan without them gives.
    #[tokio::test]
    async fn each_repartition_is_read_through_a_yield_point() {
        let opts = EngineOptions {
            target_partitions: 2,
            ..EngineOptions::default()
        };
        let sql = "SELECT count(DISTINCT value % 7919) AS n FROM generate_series(1, 200000)";
        let ctx = with_yield_points(new_context(opts));
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(false).to_string();
        let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
        let repartitions: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].starts_with("RepartitionExec"))
            .collect();
        assert!(!repartitions.is_empty(), "no RepartitionExec in\n{text}");
        for i in repartitions {
            assert!(
                i > 0 && lines[i - 1].starts_with("YieldEvery"),
                "a RepartitionExec without a YieldEvery above it in\n{text}"
            );
        }
        let count = |batches: Vec<RecordBatch>| {
            let n = batches[0].column(0).as_any().downcast_ref::<Int64Array>();
            n.map(|n| n.value(0))
        };
        let without = new_context(opts).sql(sql).await.unwrap();
        assert_eq!(
            count(df.collect().await.unwrap()),
            count(without.collect().await.unwrap())
        );
        assert_eq!(
            count(ctx.sql(sql).await.unwrap().collect().await.unwrap()),
            Some(7919)
        );
    }
}
