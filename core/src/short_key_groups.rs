//! Partial aggregates grouped by short keys: each row's key becomes a few 16-byte words
//! (a string view of up to 12 bytes is its own word; an integer, date or decimal is its
//! bits), found in a small open-addressing table of at most [`MAX_GROUPS`] groups.
//!
//! DataFusion's grouping hashes every key's bytes with ahash and compares them column by
//! column through its generic builders. For few groups of short keys (TPC-H Q1's two
//! one-letter flags, the retail gold's region and segment) that was the costliest step of
//! the scan in wasm: Q1 spent 2.0x as long on group keys in the wasmtime guest as natively.
//! Here a key is a fixed number of words, compared and hashed without a loop over columns
//! or bytes.
//!
//! Only the partial aggregate is replaced (a single-phase one is first split into DataFusion's
//! two phases), so its output (keys, then each aggregate's state from DataFusion's own
//! accumulators) is exactly what DataFusion's final aggregate merges. When a batch has a
//! longer string, the groups would pass [`MAX_GROUPS`] or the memory pool refuses more, the
//! groups so far are emitted as a partial result and DataFusion's own partial aggregate takes
//! over the rest of the stream: the final aggregate merges partial results of a group either
//! way.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    make_array, Array, ArrayData, ArrayRef, AsArray, RecordBatch, StringViewArray,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::Statistics;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// Groups one partition holds before DataFusion's aggregate takes over: past a few thousand,
/// a key is more likely to be an id than a category, and DataFusion's table (with its memory
/// accounting and spilling) is the one for that.
pub const MAX_GROUPS: usize = 4096;
/// Twice [`MAX_GROUPS`], a power of two: the table is never more than half full.
const SLOTS: usize = 2 * MAX_GROUPS;
const EMPTY: u32 = u32::MAX;
const RECOMPUTE: ReplaceChildrenOptions =
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
/// Key columns at most, each a word.
const MAX_KEYS: usize = 4;

/// Replaces each partial [`AggregateExec`] that [`ShortKeyAggregateExec`] can run; a
/// single-phase one (one partition, or input already partitioned by its keys) becomes a
/// [`ShortKeyAggregateExec`] under DataFusion's final aggregate, as DataFusion plans two
/// phases: the final phase merges a few groups, and takes the rest of the stream if this one
/// hands it over.
#[derive(Debug)]
pub struct ShortKeyGroups;

impl PhysicalOptimizerRule for ShortKeyGroups {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let any: &dyn ExecutionPlan = node.as_ref();
            let Some(agg) = any.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(kinds) = key_kinds(agg) else {
                return Ok(Transformed::no(node));
            };
            let last = match agg.mode() {
                AggregateMode::Partial => return Ok(Transformed::yes(short(node, kinds))),
                AggregateMode::Single => AggregateMode::Final,
                AggregateMode::SinglePartitioned => AggregateMode::FinalPartitioned,
                _ => return Ok(Transformed::no(node)),
            };
            let partial = AggregateExec::try_new(
                AggregateMode::Partial,
                agg.group_expr().clone(),
                agg.aggr_expr().to_vec(),
                agg.filter_expr().to_vec(),
                Arc::clone(agg.input()),
                agg.input_schema(),
            )?;
            let last = AggregateExec::try_new(
                last,
                agg.group_expr().as_final(),
                agg.aggr_expr().to_vec(),
                vec![None; agg.aggr_expr().len()],
                short(Arc::new(partial), kinds),
                agg.input_schema(),
            )?;
            Ok(Transformed::yes(Arc::new(last) as _))
        })
        .data()
    }

    fn name(&self) -> &str {
        "short_key_groups"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// How one key column becomes a word.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyKind {
    /// A string view: a word when the string has at most 12 bytes.
    View,
    /// A fixed-width value of this many bytes (1 to 8), its bits.
    Fixed(usize),
}

/// `partial` run by a [`ShortKeyAggregateExec`].
fn short(partial: Arc<dyn ExecutionPlan>, kinds: Vec<KeyKind>) -> Arc<dyn ExecutionPlan> {
    Arc::new(ShortKeyAggregateExec {
        properties: partial.properties().clone(),
        aggregate: partial,
        kinds,
    })
}

/// The key kinds of `agg`'s group columns, if [`ShortKeyAggregateExec`] can run its first
/// phase: unordered input, one grouping set of up to [`MAX_KEYS`] columns whose values
/// compare by their bits, aggregates with groups accumulators and no order.
fn key_kinds(agg: &AggregateExec) -> Option<Vec<KeyKind>> {
    let group_by = agg.group_expr();
    let plain = group_by.is_single()
        && !group_by.has_grouping_set()
        && agg.limit_options().is_none()
        && *agg.input_order_mode() == InputOrderMode::Linear
        && agg.aggr_expr().iter().all(|a| {
            a.groups_accumulator_supported() && a.order_bys().is_empty() && !a.is_distinct()
        });
    if !plain || group_by.expr().is_empty() || group_by.expr().len() > MAX_KEYS {
        return None;
    }
    let input = agg.input().schema();
    group_by
        .expr()
        .iter()
        .map(|(e, _)| {
            use DataType::*;
            Some(match e.data_type(&input).ok()? {
                Utf8View => KeyKind::View,
                // Floats are left out: DataFusion groups -0.0 apart from 0.0 and NaNs by
                // value, which their bits would not do the same way.
                // At most 8 bytes, so that a word's top half is free for `NULL`.
                t @ (Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Date32
                | Date64 | Time32(_) | Time64(_) | Timestamp(..) | Duration(_)
                | Decimal32(..) | Decimal64(..)) => KeyKind::Fixed(t.primitive_width()?),
                _ => return None,
            })
        })
        .collect()
}

/// A partial [`AggregateExec`] run with short keys; see the module's documentation.
#[derive(Debug)]
pub struct ShortKeyAggregateExec {
    /// The partial `AggregateExec` this one runs: its expressions, its schema, and the plan
    /// that takes over a stream this one cannot finish.
    aggregate: Arc<dyn ExecutionPlan>,
    kinds: Vec<KeyKind>,
    properties: Arc<PlanProperties>,
}

impl ShortKeyAggregateExec {
    fn aggregate(&self) -> Result<&AggregateExec> {
        let any: &dyn ExecutionPlan = self.aggregate.as_ref();
        any.downcast_ref::<AggregateExec>().ok_or_else(|| {
            DataFusionError::Internal("ShortKeyAggregateExec wraps an AggregateExec".into())
        })
    }
}

impl DisplayAs for ShortKeyAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShortKeyAggregateExec: max_groups={MAX_GROUPS}, ")?;
        self.aggregate.fmt_as(t, f)
    }
}

impl ExecutionPlan for ShortKeyAggregateExec {
    fn name(&self) -> &str {
        "ShortKeyAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.aggregate.children()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let aggregate = Arc::clone(&self.aggregate).replace_children(children, RECOMPUTE)?;
        Ok(Arc::new(ShortKeyAggregateExec {
            properties: aggregate.properties().clone(),
            aggregate,
            kinds: self.kinds.clone(),
        }))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.aggregate.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.aggregate.statistics_from_inputs(input_stats, args)
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        self.aggregate.cardinality_effect()
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let agg = self.aggregate()?;
        let input = agg.input().execute(partition, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("ShortKeyAggregateExec[{partition}]"))
            .register(context.memory_pool());
        let groups = Grouping::new(agg, &self.kinds, reservation)?;
        let schema = agg.schema();
        let aggregate = Arc::clone(&self.aggregate);
        let phase = Phase::Ours {
            input,
            groups: Box::new(groups),
        };
        let stream = futures::stream::unfold(Some(phase), move |phase| {
            let (aggregate, context) = (Arc::clone(&aggregate), Arc::clone(&context));
            async move {
                let (item, next) = step(phase?, &aggregate, context).await;
                Some((item, next))
            }
        })
        .filter_map(|item| async move { item.transpose() });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Where a partition's stream is.
enum Phase {
    Ours {
        input: SendableRecordBatchStream,
        groups: Box<Grouping>,
    },
    /// DataFusion's partial aggregate over the rest of the input.
    Theirs(SendableRecordBatchStream),
}

/// The next item of the stream (`None`: nothing to hand out this step) and the phase after
/// it (`None`: the stream has ended).
async fn step(
    phase: Phase,
    aggregate: &Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> (Result<Option<RecordBatch>>, Option<Phase>) {
    match phase {
        Phase::Theirs(mut stream) => match stream.next().await {
            Some(item) => (item.map(Some), Some(Phase::Theirs(stream))),
            None => (Ok(None), None),
        },
        Phase::Ours {
            mut input,
            mut groups,
        } => loop {
            let batch = match input.next().await {
                None => return (groups.emit(), None),
                Some(Err(e)) => return (Err(e), None),
                Some(Ok(batch)) => batch,
            };
            let rest: SendableRecordBatchStream = match groups.update(&batch) {
                Err(e) => return (Err(e), None),
                Ok(Taken::Yes) => continue,
                Ok(Taken::YesAndFull) => input,
                Ok(Taken::No) => {
                    let head = futures::stream::iter([Ok(batch)]);
                    let schema = input.schema();
                    Box::pin(RecordBatchStreamAdapter::new(schema, head.chain(input)))
                }
            };
            // The rest goes to DataFusion's aggregate.
            let emitted = groups.emit();
            return match theirs(aggregate, rest, context) {
                Ok(stream) => (emitted, Some(Phase::Theirs(stream))),
                Err(e) => (Err(e), None),
            };
        },
    }
}

/// `aggregate` (DataFusion's own) over the stream `rest`.
fn theirs(
    aggregate: &Arc<dyn ExecutionPlan>,
    rest: SendableRecordBatchStream,
    context: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    let schema = rest.schema();
    let once: Arc<dyn PartitionStream> = Arc::new(Once {
        schema: Arc::clone(&schema),
        stream: Mutex::new(Some(rest)),
    });
    let source = StreamingTableExec::try_new(schema, vec![once], None, [], false, None)?;
    Arc::clone(aggregate)
        .replace_children(vec![Arc::new(source)], RECOMPUTE)?
        .execute(0, context)
}

/// A stream that was already started, as a plan's only partition.
struct Once {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl fmt::Debug for Once {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Once")
    }
}

impl PartitionStream for Once {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        taken.unwrap_or_else(|| {
            let gone = DataFusionError::Internal("the rest of a partition was read twice".into());
            let schema = Arc::clone(&self.schema);
            Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::iter([Err(gone)]),
            ))
        })
    }
}

/// What [`Grouping::update`] did with a batch.
enum Taken {
    Yes,
    /// Taken, but the accumulators now hold more memory than the pool grants.
    YesAndFull,
    /// Not taken (the groups are as they were): a string key is longer than a word holds, or
    /// the batch would bring the groups past [`MAX_GROUPS`].
    No,
}

/// One partition's groups and their accumulators.
struct Grouping {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    kinds: Vec<KeyKind>,
    args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    schema: SchemaRef,
    /// Each group's key, `kinds.len()` words per group.
    words: Vec<u128>,
    /// Group indices, [`EMPTY`] where none.
    slots: Vec<u32>,
    /// The batch at hand: each row's key (as `words`) and group.
    batch_words: Vec<u128>,
    indices: Vec<usize>,
    /// The memory the groups and accumulators hold, from the session's pool: few groups
    /// can still hold much (`string_agg`, `array_agg`).
    reservation: MemoryReservation,
}

/// The word of a null key, which no value's word equals: a view's length field (its low 32
/// bits) is at most 12, and a fixed-width value of at most 8 bytes leaves the top half zero.
const NULL: u128 = u128::MAX;

impl Grouping {
    fn new(
        agg: &AggregateExec,
        kinds: &[KeyKind],
        reservation: MemoryReservation,
    ) -> Result<Grouping> {
        Ok(Grouping {
            keys: agg.group_expr().input_exprs(),
            kinds: kinds.to_vec(),
            args: agg.aggr_expr().iter().map(|a| a.expressions()).collect(),
            filters: agg.filter_expr().to_vec(),
            accumulators: agg
                .aggr_expr()
                .iter()
                .map(|a| a.create_groups_accumulator())
                .collect::<Result<_>>()?,
            schema: agg.schema(),
            words: Vec::new(),
            slots: vec![EMPTY; SLOTS],
            batch_words: Vec::new(),
            indices: Vec::new(),
            reservation,
        })
    }

    fn len(&self) -> usize {
        self.words.len() / self.kinds.len()
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<Taken> {
        let n = batch.num_rows();
        let width = self.kinds.len();
        self.batch_words.clear();
        self.batch_words.resize(n * width, 0);
        for j in 0..width {
            let column = self.keys[j].evaluate(batch)?.into_array(n)?;
            if !self.encode(j, &column) {
                return Ok(Taken::No);
            }
        }
        let before = self.len();
        let interned = match width {
            1 => self.intern::<1>(),
            2 => self.intern::<2>(),
            3 => self.intern::<3>(),
            _ => self.intern::<4>(),
        };
        if !interned {
            self.forget_from(before);
            return Ok(Taken::No);
        }
        let total = self.len();
        for (i, accumulator) in self.accumulators.iter_mut().enumerate() {
            let values = self.args[i]
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(n))
                .collect::<Result<Vec<_>>>()?;
            let filter = match &self.filters[i] {
                Some(f) => Some(f.evaluate(batch)?.into_array(n)?),
                None => None,
            };
            let filter = match &filter {
                Some(f) => Some(f.as_boolean_opt().ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "an aggregate's filter gave {}",
                        f.data_type()
                    ))
                })?),
                None => None,
            };
            accumulator.update_batch(&values, &self.indices, filter, total)?;
        }
        use std::mem::size_of;
        let held = self.slots.capacity() * size_of::<u32>()
            + self.indices.capacity() * size_of::<usize>()
            + (self.words.capacity() + self.batch_words.capacity()) * size_of::<u128>()
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>();
        Ok(match self.reservation.try_resize(held) {
            Ok(()) => Taken::Yes,
            Err(_) => Taken::YesAndFull,
        })
    }

    /// Key column `j` of the batch into the rows' words; `false` if a string is longer than
    /// 12 bytes.
    fn encode(&mut self, j: usize, column: &ArrayRef) -> bool {
        let width = self.kinds.len();
        let rows = self.batch_words.iter_mut().skip(j).step_by(width);
        match self.kinds[j] {
            KeyKind::View => {
                let Some(strings) = column.as_string_view_opt() else {
                    return false;
                };
                let mut long = false;
                // Arrow pads an inlined string's view with zeros, so equal strings of up to
                // 12 bytes have equal views (DataFusion's grouping compares them so too).
                for (word, &view) in rows.zip(strings.views().iter()) {
                    long |= view as u32 > 12;
                    *word = view;
                }
                if long {
                    return false;
                }
            }
            KeyKind::Fixed(size) => {
                let data = column.to_data();
                let Some(values) = data.buffers().first() else {
                    return false;
                };
                let start = data.offset() * size;
                let Some(bytes) = values.as_slice().get(start..start + data.len() * size) else {
                    return false;
                };
                for (word, value) in rows.zip(bytes.chunks_exact(size)) {
                    let mut le = [0u8; 16];
                    le[..size].copy_from_slice(value);
                    *word = u128::from_le_bytes(le);
                }
            }
        }
        if let Some(nulls) = column.nulls().filter(|n| n.null_count() > 0) {
            let rows = self.batch_words.iter_mut().skip(j).step_by(width);
            for (word, valid) in rows.zip(nulls.iter()) {
                if !valid {
                    *word = NULL;
                }
            }
        }
        true
    }

    /// Each row's group into `indices`, adding groups as they appear; `false` as soon as a
    /// group would be one more than [`MAX_GROUPS`] (the groups this batch added stay, for
    /// [`Grouping::forget_from`]). `W` is the number of key columns: with it known, a key is
    /// an array the compiler compares and hashes without a loop.
    fn intern<const W: usize>(&mut self) -> bool {
        let mut words = std::mem::take(&mut self.words);
        let (rows, _) = self.batch_words.as_chunks::<W>();
        let slots = &mut self.slots;
        self.indices.clear();
        self.indices.reserve(rows.len());
        let mut full = false;
        for row in rows {
            let mut slot = home(row);
            let group = loop {
                let g = slots[slot];
                if g == EMPTY {
                    let g = words.len() / W;
                    if g == MAX_GROUPS {
                        full = true;
                        break g;
                    }
                    words.extend_from_slice(row);
                    slots[slot] = g as u32;
                    break g;
                }
                let g = g as usize;
                if words[g * W..g * W + W] == row[..] {
                    break g;
                }
                slot = (slot + 1) & (SLOTS - 1);
            };
            if full {
                break;
            }
            self.indices.push(group);
        }
        self.words = words;
        !full
    }

    /// Drops the groups from `first` on, which no accumulator has seen. Removing entries
    /// from linear probing would break the chains of those after them, so the table is
    /// placed again (once per partition at most).
    fn forget_from(&mut self, first: usize) {
        let width = self.kinds.len();
        self.words.truncate(first * width);
        self.slots.fill(EMPTY);
        for (g, key) in self.words.chunks_exact(width).enumerate() {
            let mut slot = home(key);
            while self.slots[slot] != EMPTY {
                slot = (slot + 1) & (SLOTS - 1);
            }
            self.slots[slot] = g as u32;
        }
    }

    /// The groups so far and their accumulators' states, as a batch of the partial
    /// aggregate's schema; the groups start again from none.
    fn emit(&mut self) -> Result<Option<RecordBatch>> {
        let count = self.len();
        if count == 0 {
            return Ok(None);
        }
        let width = self.kinds.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (j, kind) in self.kinds.iter().enumerate() {
            let words = || self.words.iter().skip(j).step_by(width);
            let nulls = NullBuffer::from_iter(words().map(|&w| w != NULL));
            let nulls = (nulls.null_count() > 0).then_some(nulls);
            let values = words().map(|&w| if w == NULL { 0 } else { w });
            columns.push(match kind {
                KeyKind::View => {
                    let views: ScalarBuffer<u128> = values.collect();
                    Arc::new(StringViewArray::try_new(views, vec![], nulls)?)
                }
                KeyKind::Fixed(size) => {
                    let mut bytes = Vec::with_capacity(count * size);
                    for v in values {
                        bytes.extend_from_slice(&v.to_le_bytes()[..*size]);
                    }
                    let data = ArrayData::try_new(
                        self.schema.field(j).data_type().clone(),
                        count,
                        nulls.map(|n| n.into_inner().into_inner()),
                        0,
                        vec![Buffer::from_vec(bytes)],
                        vec![],
                    )?;
                    make_array(data)
                }
            });
        }
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        self.words.clear();
        self.slots.fill(EMPTY);
        self.reservation.free();
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?))
    }
}

/// The slot where the search for a key starts: per word, its halves folded, then a rotate,
/// xor and multiply (a 64-bit multiply, which wasm has, where ahash's folded multiply needs
/// 128 bits); the slot is the top bits, which the multiplies mix best. The multiplier is
/// Fibonacci hashing's (2^64 / golden ratio), which gives the integers 0..4096 4096
/// different slots; FxHash's gave them 652, and chains of up to 11 probes.
fn home(key: &[u128]) -> usize {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut hash = 0u64;
    for &w in key {
        let folded = w as u64 ^ ((w >> 64) as u64).rotate_left(32);
        hash = (hash.rotate_left(5) ^ folded).wrapping_mul(K);
    }
    (hash >> (64 - SLOTS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Date32Array, Decimal128Array, Float64Array, Int32Array};
    use datafusion::arrow::array::{Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::query::{new_context, session_config, EngineOptions};

    const LONG: &str = "a string longer than twelve bytes";

    /// Two partitions of 12 batches of 1000 rows. Column `l` has a string too long for a word
    /// from the 7th batch of each partition on; `x % 10000` has more than [`MAX_GROUPS`] values.
    fn table() -> (SchemaRef, Vec<Vec<RecordBatch>>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("l", DataType::Utf8View, true),
            Field::new("k", DataType::Int32, true),
            Field::new("day", DataType::Date32, true),
            Field::new("d", DataType::Decimal128(12, 2), true),
            Field::new("x", DataType::Int64, false),
            Field::new("f", DataType::Float64, true),
        ]));
        let strings = [
            Some(""),
            Some("a"),
            Some("bb"),
            Some("north"),
            Some("twelve bytes"),
            None,
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let partitions = (0..2)
            .map(|_| {
                (0..12)
                    .map(|b| {
                        let rows: Vec<u64> = (0..1000).map(|_| next()).collect();
                        let s = rows.iter().map(|r| strings[(r % 6) as usize]);
                        let l = rows.iter().map(|r| match (b >= 6, r % 4) {
                            (true, 0) => Some(LONG),
                            (_, 1) => None,
                            (_, n) => Some(["x", "y", "z"][n as usize % 3]),
                        });
                        let k = rows
                            .iter()
                            .map(|r| (r % 9 != 0).then_some((r >> 8) as i32 % 7));
                        let day = rows
                            .iter()
                            .map(|r| (r % 11 != 0).then_some(19_000 + (r >> 12) as i32 % 5));
                        let d = rows
                            .iter()
                            .map(|r| (r % 13 != 0).then_some((r >> 20) as i128 % 100_000 - 20_000));
                        let x = rows.iter().map(|r| (r >> 30) as i64 % 1_000_000);
                        let f = rows
                            .iter()
                            .map(|r| (r % 5 != 0).then_some((r >> 40) as f64 / 7.0));
                        RecordBatch::try_new(
                            Arc::clone(&schema),
                            vec![
                                Arc::new(StringViewArray::from_iter(s)),
                                Arc::new(StringViewArray::from_iter(l)),
                                Arc::new(Int32Array::from_iter(k)),
                                Arc::new(Date32Array::from_iter(day)),
                                Arc::new(
                                    Decimal128Array::from_iter(d)
                                        .with_precision_and_scale(12, 2)
                                        .unwrap(),
                                ),
                                Arc::new(Int64Array::from_iter_values(x)),
                                Arc::new(Float64Array::from_iter(f)),
                            ],
                        )
                        .unwrap()
                    })
                    .collect()
            })
            .collect();
        (schema, partitions)
    }

    /// The physical plan's text and the rows (formatted) of `sql` in `ctx`, over [`table`] in
    /// its two partitions or in one.
    async fn run(ctx: SessionContext, sql: &str, one: bool) -> (String, String) {
        let (schema, mut partitions) = table();
        if one {
            partitions = vec![partitions.concat()];
        }
        let table = MemTable::try_new(schema, partitions).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        // A table this small is joined by collecting one side; with no threshold the join
        // is partitioned by its key, so an aggregate by that key above it needs no exchange.
        for knob in [
            "hash_join_single_partition_threshold",
            "hash_join_single_partition_threshold_rows",
        ] {
            let set = format!("SET datafusion.optimizer.{knob} = 0");
            ctx.sql(&set).await.unwrap().collect().await.unwrap();
        }
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let plan = displayable(plan.as_ref()).indent(true).to_string();
        let rows = pretty_format_batches(&df.collect().await.unwrap())
            .unwrap()
            .to_string();
        // Rows in order: only some queries sort them.
        let mut rows: Vec<&str> = rows.lines().collect();
        rows.sort_unstable();
        (plan, rows.join("\n"))
    }

    /// Each query, with the rule and without: the rule replaced the partial aggregate, and
    /// the answers are DataFusion's own. They cover nulls beside empty strings and zeros,
    /// every key kind, filters, keys that are expressions, a column whose long strings make
    /// DataFusion's aggregate take over in the middle of a partition, more groups than
    /// [`MAX_GROUPS`], and both one-phase plans the rule splits: `Single` (one
    /// partition) and `SinglePartitioned` (above a join partitioned by the group key).
    #[tokio::test]
    async fn answers_are_datafusions() {
        let opts = EngineOptions {
            target_partitions: 2,
            batch_size: 1000,
            ..Default::default()
        };
        let queries = [
            "SELECT s, k, count(*), count(k), sum(x), avg(d), min(f), max(s) FROM t GROUP BY s, k ORDER BY s, k",
            "SELECT s, count(*) FILTER (WHERE x % 3 = 0), sum(d) FILTER (WHERE k > 2) FROM t GROUP BY s ORDER BY s",
            "SELECT l, count(*), sum(x), max(s) FROM t GROUP BY l ORDER BY l",
            "SELECT x % 10000 AS b, count(*), sum(d) FROM t GROUP BY b ORDER BY b",
            "SELECT day, x % 7 AS m, k % 3 AS r, count(*), avg(d), min(f) FROM t GROUP BY day, m, r ORDER BY day, m, r",
            "SELECT concat(s, 'z') AS c, count(*) FROM t GROUP BY c ORDER BY c",
        ];
        // One partition: DataFusion plans one phase, which the rule splits in two.
        let single = EngineOptions {
            target_partitions: 1,
            ..opts
        };
        let cases = queries
            .iter()
            .flat_map(|q| [(opts, *q, false), (single, *q, true)])
            .chain([
                (opts, "SELECT a.s, count(*), sum(a.x) FROM t a JOIN (SELECT DISTINCT s FROM t) b ON a.s = b.s GROUP BY a.s ORDER BY a.s", false),
            ]);
        for (opts, sql, one) in cases {
            let (plan, got) = run(new_context(opts), sql, one).await;
            assert!(!plan.contains("mode=Single"), "{plan}");
            assert!(plan.contains("ShortKeyAggregateExec"), "{sql}\n{plan}");
            let (plan, want) = run(
                SessionContext::new_with_config(session_config(opts)),
                sql,
                one,
            )
            .await;
            assert!(!plan.contains("ShortKeyAggregateExec"), "{plan}");
            // The join's output is already partitioned by the group key: DataFusion plans
            // one phase per partition, which the rule splits as it splits `Single`.
            if sql.contains(" JOIN ") {
                assert!(plan.contains("mode=SinglePartitioned"), "{plan}");
            }
            if got != want {
                let first = got.lines().zip(want.lines()).position(|(g, w)| g != w);
                panic!("{sql}: answers differ from line {first:?} on");
            }
        }
    }

    /// When the memory pool refuses the accumulators more, the groups so far are emitted and
    /// DataFusion's partial aggregate counts the rest: each key's partial counts add up to
    /// its rows, and keys appear in both parts.
    #[tokio::test]
    async fn hands_over_when_the_pool_is_full() {
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use datafusion::physical_plan::common::collect;

        let ctx = new_context(EngineOptions {
            target_partitions: 1,
            ..Default::default()
        });
        let (schema, partitions) = table();
        let rows = partitions.concat();
        let mut want = BTreeMap::<i64, i64>::new();
        for batch in &rows {
            let x = batch
                .column(5)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for v in x.values() {
                *want.entry(v % 3000).or_default() += 1;
            }
        }
        let table = MemTable::try_new(schema, vec![rows]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let df = ctx
            .sql("SELECT x % 3000, count(*) FROM t GROUP BY 1")
            .await
            .unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let mut short = None;
        plan.apply(|node| {
            if node.is::<ShortKeyAggregateExec>() {
                short = Some(Arc::clone(node));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        let short = short.expect("the rule replaced the partial aggregate");
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(64 << 10)))
            .build_arc()
            .unwrap();
        let task = Arc::new(TaskContext::default().with_runtime(runtime));
        let batches = collect(short.execute(0, task).unwrap()).await.unwrap();
        let first = batches.first().map(|b| b.num_rows()).unwrap_or(0);
        assert!(
            first > 0 && first < want.len(),
            "ours emitted {first} groups first"
        );
        let mut got = BTreeMap::<i64, i64>::new();
        let mut parts = 0;
        for batch in &batches {
            let b = batch
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let n = batch
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for (b, n) in b.values().iter().zip(n.values()) {
                *got.entry(*b).or_default() += n;
                parts += 1;
            }
        }
        assert_eq!(got, want);
        assert!(parts > want.len(), "no key in both parts");
    }

    /// Counts and sums by `(s, k)` against ones made here from the rows.
    #[tokio::test]
    async fn counts_and_sums_are_the_rows() {
        let ctx = new_context(EngineOptions {
            target_partitions: 2,
            ..Default::default()
        });
        let (schema, partitions) = table();
        let mut want = BTreeMap::<(Option<String>, Option<i32>), (i64, i64)>::new();
        for batch in partitions.iter().flatten() {
            let s = batch.column(0).as_string_view();
            let k = batch
                .column(2)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
            let x = batch
                .column(5)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for i in 0..batch.num_rows() {
                let key = (
                    s.is_valid(i).then(|| s.value(i).to_string()),
                    k.is_valid(i).then(|| k.value(i)),
                );
                let e = want.entry(key).or_default();
                e.0 += 1;
                e.1 += x.value(i);
            }
        }
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(schema, partitions).unwrap()),
        )
        .unwrap();
        let batches = ctx
            .sql("SELECT s, k, count(*), sum(x) FROM t GROUP BY s, k")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut got = BTreeMap::new();
        for batch in &batches {
            let s = batch.column(0).as_string_view();
            let k = batch
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
            let n = batch
                .column(2)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let x = batch
                .column(3)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for i in 0..batch.num_rows() {
                let key = (
                    s.is_valid(i).then(|| s.value(i).to_string()),
                    k.is_valid(i).then(|| k.value(i)),
                );
                assert!(got.insert(key, (n.value(i), x.value(i))).is_none());
            }
        }
        assert_eq!(got, want);
        assert!(want.len() > 30 && want.keys().any(|(s, _)| s.as_deref() == Some("")));
    }
}
