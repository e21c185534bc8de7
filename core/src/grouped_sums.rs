//! Grouped `sum` and `avg` of 128-bit decimals, added up in 64-bit lanes while the groups
//! are few.
//!
//! DataFusion's accumulators add each row into its group's `i128` sum. With few groups (TPC-H
//! Q1 has 4, the retail gold tables a handful of regions or segments) rows of one group follow
//! one another, so each addition waits for the store of the one before it; in WebAssembly a
//! 128-bit addition is also five instructions with a carry between them. Money columns hold
//! far less than 64 bits, so while a batch's values cannot take a partial sum out of `i64`
//! (bounded by `decimal_arithmetic`'s `magnitude`), its rows are added into `i64` partial
//! sums, row `i` into lane `i % 4` of its group so that neighbouring rows do not wait for one
//! another. Before DataFusion's accumulator is asked for anything, the partial sums (and
//! counts) are handed to it as partial state through its `merge_batch`: values, types, nulls
//! and overflow stay DataFusion's; only the order of exact integer additions changes, which
//! wrapping `i128` addition does not see.
//!
//! [`GroupedSums`] is a logical optimizer rule that gives such aggregates [`LaneSums`], which
//! wraps DataFusion's own function under its own name (the plan's column names do not change).

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, FieldRef, UInt64Type};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::functions_aggregate::average::Avg;
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, Expr, ExprSchemable,
    GroupsAccumulator, LogicalPlan, Operator, ReversedUDAF, SetMonotonicity, Signature,
    StatisticsArgs,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::decimal_arithmetic::magnitude;

/// Rows added in lanes: row `i` into lane `i % LANES` of its group.
const LANES: usize = 4;

/// Lanes are kept for at most this many groups (128 KiB of partial sums); past it the
/// aggregate is DataFusion's alone: many groups do not follow one another, and the lanes
/// would cost memory per group.
const MAX_GROUPS: usize = 4096;

/// A batch goes into lanes only if its rows can add up to at most this much, so that the
/// partial sums need folding into DataFusion's at most once per 256 such batches.
const BATCH_BUDGET: u64 = i64::MAX as u64 / 256;

/// DataFusion's `sum` or `avg` (`inner`), whose accumulator per group adds up 128-bit
/// decimals in 64-bit lanes first (see the module's comment).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LaneSums {
    inner: Arc<AggregateUDF>,
}

impl LaneSums {
    fn inner(&self) -> &dyn AggregateUDFImpl {
        self.inner.inner().as_ref()
    }

    /// The wrapped function's partial state for `args`, if lanes can go before its
    /// accumulator: one `Decimal128` argument, not DISTINCT, and a state that is a sum (and a
    /// count).
    fn lane_state(&self, args: &AccumulatorArgs) -> Result<Option<(State, Vec<FieldRef>)>> {
        let input_is_decimal = matches!(
            args.expr_fields,
            [f] if matches!(f.data_type(), DataType::Decimal128(..))
        );
        if !input_is_decimal || args.is_distinct {
            return Ok(None);
        }
        let state = self.inner().state_fields(StateFieldsArgs {
            name: args.name,
            input_fields: args.expr_fields,
            return_field: Arc::clone(&args.return_field),
            ordering_fields: &[],
            is_distinct: args.is_distinct,
        })?;
        Ok(state_kind(&state).map(|kind| (kind, state)))
    }
}

/// What a wrapped function's partial state is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// `[sum]`, as `sum` has.
    Sum,
    /// `[count, sum]`, as `avg` has.
    CountSum,
}

fn state_kind(fields: &[FieldRef]) -> Option<State> {
    match fields
        .iter()
        .map(|f| f.data_type())
        .collect::<Vec<_>>()
        .as_slice()
    {
        [DataType::Decimal128(..)] => Some(State::Sum),
        [DataType::UInt64, DataType::Decimal128(..)] => Some(State::CountSum),
        _ => None,
    }
}

impl AggregateUDFImpl for LaneSums {
    fn name(&self) -> &str {
        self.inner().name()
    }

    fn aliases(&self) -> &[String] {
        self.inner().aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner().return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner().return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner().is_nullable()
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner().accumulator(args)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner().state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let inner = self.inner().create_groups_accumulator(args.clone())?;
        Ok(match self.lane_state(&args)? {
            Some((kind, state)) => Box::new(Lanes::new(inner, kind, state)),
            None => inner,
        })
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner().create_sliding_accumulator(args)
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner().order_sensitivity()
    }

    fn simplify_expr_op_literal(
        &self,
        agg_function: &AggregateFunction,
        arg: &Expr,
        op: Operator,
        lit: &Expr,
        arg_is_left: bool,
    ) -> Result<Option<Expr>> {
        self.inner()
            .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner().reverse_expr()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner().coerce_types(arg_types)
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner().is_descending()
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner().value_from_stats(statistics_args)
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner().default_value(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner().documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner().set_monotonicity(data_type)
    }
}

/// The accumulator of [`LaneSums`]: `sums[g * LANES + lane]` (and `counts` for `avg`) hold
/// what was added since the last [`Lanes::fold`] into `inner`, DataFusion's accumulator.
struct Lanes {
    inner: Box<dyn GroupsAccumulator>,
    kind: State,
    /// The partial state's fields (their types are the arrays' handed to `inner`).
    state: Vec<FieldRef>,
    sums: Vec<i64>,
    counts: Vec<u64>,
    /// Groups the lanes hold (`sums.len() / LANES`).
    groups: usize,
    /// The groups there are (`total_num_groups` of the last batch): a fold must not tell
    /// `inner` of fewer, or it would drop the others.
    total: usize,
    /// The most any partial sum can have reached since the last fold: the rows of each batch
    /// added into lanes times their largest magnitude, summed.
    spent: u64,
    /// Whether batches may still go into lanes: every batch so far had no nulls and no filter
    /// (so every group has a value, and a group folded with nothing added stays as it was),
    /// none was merged, and the groups are few.
    on: bool,
    /// Batches added in lanes.
    batches: usize,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("kind", &self.kind)
            .field("groups", &self.groups)
            .field("on", &self.on)
            .field("batches", &self.batches)
            .finish_non_exhaustive()
    }
}

impl Lanes {
    fn new(inner: Box<dyn GroupsAccumulator>, kind: State, state: Vec<FieldRef>) -> Self {
        Self {
            inner,
            kind,
            state,
            sums: Vec::new(),
            counts: Vec::new(),
            groups: 0,
            total: 0,
            spent: 0,
            on: true,
            batches: 0,
        }
    }

    /// Hands what the lanes hold to `inner` as partial state of every group, and empties them.
    fn fold(&mut self) -> Result<()> {
        if self.groups == 0 {
            return Ok(());
        }
        let per_group = |lanes: &[i64]| lanes.iter().map(|&v| v as i128).sum::<i128>();
        let sums: Vec<i128> = self.sums.chunks_exact(LANES).map(per_group).collect();
        let sum_type = self.state[self.state.len() - 1].data_type().clone();
        let sums: ArrayRef = Arc::new(
            PrimitiveArray::<Decimal128Type>::new(sums.into(), None).with_data_type(sum_type),
        );
        let state = match self.kind {
            State::Sum => vec![sums],
            State::CountSum => {
                let counts: Vec<u64> = self
                    .counts
                    .chunks_exact(LANES)
                    .map(|c| c.iter().sum())
                    .collect();
                vec![
                    Arc::new(PrimitiveArray::<UInt64Type>::from(counts)) as ArrayRef,
                    sums,
                ]
            }
        };
        let groups: Vec<usize> = (0..self.groups).collect();
        self.inner
            .merge_batch(&state, &groups, self.total.max(self.groups))?;
        self.sums.clear();
        self.counts.clear();
        self.groups = 0;
        self.spent = 0;
        Ok(())
    }

    /// Stops adding in lanes: what they hold goes to `inner`, and so does every later batch.
    fn off(&mut self) -> Result<()> {
        self.fold()?;
        self.on = false;
        self.sums = Vec::new();
        self.counts = Vec::new();
        Ok(())
    }

    /// Adds `values` into the lanes if they can be (see [`Lanes::on`] and [`BATCH_BUDGET`]);
    /// false if `inner` must take them.
    fn add(&mut self, values: &ArrayRef, group_indices: &[usize], total: usize) -> Result<bool> {
        let Some(values) = values.as_primitive_opt::<Decimal128Type>() else {
            return Ok(false);
        };
        let Some(budget) = magnitude(values).and_then(|m| m.checked_mul(values.len() as u64))
        else {
            return Ok(false);
        };
        if budget > BATCH_BUDGET {
            return Ok(false);
        }
        if self.spent + budget > i64::MAX as u64 {
            self.fold()?;
        }
        self.spent += budget;
        if total > self.groups {
            self.sums.resize(total * LANES, 0);
            if self.kind == State::CountSum {
                self.counts.resize(total * LANES, 0);
            }
            self.groups = total;
        }
        add_in_lanes(&mut self.sums, group_indices, values.values());
        if self.kind == State::CountSum {
            count_in_lanes(&mut self.counts, group_indices);
        }
        self.batches += 1;
        Ok(true)
    }
}

/// `sums[g * LANES + i % LANES] += values[i]` for each row `i` of group `g`, in `i64`: the
/// caller made sure that neither the values nor the sums leave it.
fn add_in_lanes(sums: &mut [i64], groups: &[usize], values: &[i128]) {
    let (mut g, mut v) = (groups.chunks_exact(LANES), values.chunks_exact(LANES));
    for (g, v) in (&mut g).zip(&mut v) {
        for lane in 0..LANES {
            let s = &mut sums[g[lane] * LANES + lane];
            *s = s.wrapping_add(v[lane] as i64);
        }
    }
    for (lane, (&g, &v)) in g.remainder().iter().zip(v.remainder()).enumerate() {
        let s = &mut sums[g * LANES + lane];
        *s = s.wrapping_add(v as i64);
    }
}

/// `counts[g * LANES + i % LANES] += 1` for each row `i` of group `g`.
fn count_in_lanes(counts: &mut [u64], groups: &[usize]) {
    let mut g = groups.chunks_exact(LANES);
    for g in &mut g {
        for lane in 0..LANES {
            counts[g[lane] * LANES + lane] += 1;
        }
    }
    for (lane, &g) in g.remainder().iter().enumerate() {
        counts[g * LANES + lane] += 1;
    }
}

impl GroupsAccumulator for Lanes {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.total = total_num_groups;
        if self.on {
            let plain = match values {
                [v] => opt_filter.is_none() && v.null_count() == 0,
                _ => false,
            };
            if !plain || total_num_groups > MAX_GROUPS {
                self.off()?;
            } else if self.add(&values[0], group_indices, total_num_groups)? {
                return Ok(());
            }
        }
        self.inner
            .update_batch(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.fold()?;
        self.inner.evaluate(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.fold()?;
        self.inner.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        // Merged state may hold groups without a value, which a fold must not give one.
        self.off()?;
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.inner.convert_to_state(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size()
            + self.sums.capacity() * size_of::<i64>()
            + self.counts.capacity() * size_of::<u64>()
    }
}

/// Gives `sum` and `avg` of a `Decimal128` column in an aggregate [`LaneSums`].
#[derive(Debug, Default)]
pub struct GroupedSums;

impl OptimizerRule for GroupedSums {
    fn name(&self) -> &str {
        "medallion_grouped_sums"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::Aggregate(aggregate) = &node else {
                return Ok(Transformed::no(node));
            };
            let schema = Arc::clone(aggregate.input.schema());
            node.map_expressions(|e| e.transform_up(|e| rewrite_expr(e, &schema)))
        })
    }
}

fn rewrite_expr(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let inner: &dyn Any = func.inner().as_ref();
    let wrapped = inner.is::<Sum>() || inner.is::<Avg>();
    let AggregateFunctionParams { args, distinct, .. } = params;
    let decimal = match args.as_slice() {
        [arg] => matches!(arg.get_type(schema), Ok(DataType::Decimal128(..))),
        _ => false,
    };
    if !wrapped || *distinct || !decimal {
        return Ok(Transformed::no(expr));
    }
    let func = Arc::new(AggregateUDF::new_from_impl(LaneSums {
        inner: Arc::clone(func),
    }));
    Ok(Transformed::yes(Expr::AggregateFunction(
        AggregateFunction {
            func,
            params: params.clone(),
        },
    )))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Decimal128Array;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::functions_aggregate::average::avg_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_expr::PhysicalExpr;

    use super::*;

    /// DataFusion's groups accumulator of `func` over one `Decimal128(25, 2)` column, and
    /// [`LaneSums`]'s.
    fn accumulators(func: &Arc<AggregateUDF>) -> (Box<dyn GroupsAccumulator>, Lanes) {
        let field: FieldRef = Arc::new(Field::new("v", DataType::Decimal128(25, 2), true));
        let schema = Schema::new(vec![Arc::clone(&field)]);
        let out = func.return_type(&[field.data_type().clone()]).unwrap();
        let expr: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 0));
        let args = AccumulatorArgs {
            return_field: Arc::new(Field::new("out", out, true)),
            schema: &schema,
            ignore_nulls: false,
            order_bys: &[],
            is_reversed: false,
            name: "f(v)",
            is_distinct: false,
            exprs: &[expr],
            expr_fields: &[field],
        };
        let lanes = LaneSums {
            inner: Arc::clone(func),
        };
        let inner = func
            .inner()
            .create_groups_accumulator(args.clone())
            .unwrap();
        let Some((kind, state)) = lanes.lane_state(&args).unwrap() else {
            panic!("no lanes for {}", func.name())
        };
        let ours = Lanes::new(inner, kind, state);
        (func.inner().create_groups_accumulator(args).unwrap(), ours)
    }

    /// Deterministic pseudo-random numbers (no dependency for the tests' data).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 17
        }
    }

    #[derive(Clone)]
    enum Step {
        /// Rows of `groups` groups with magnitudes below `max` (`positive`: just below it);
        /// `nulls`: every 7th is null; `filter`: every 3rd is filtered out.
        Batch {
            rows: usize,
            groups: usize,
            max: i128,
            positive: bool,
            nulls: bool,
            filter: bool,
        },
        Emit(EmitTo),
        State(EmitTo),
        Merge,
    }

    /// Runs `steps` through DataFusion's accumulator of `func` and through [`LaneSums`]'s, and
    /// asserts that every result and state they give is the same; returns how many batches
    /// the lanes took. For `sum`, also checks the final sums against `i128` sums made here.
    fn same_as_datafusion(func: Arc<AggregateUDF>, steps: &[Step]) -> usize {
        let (mut theirs, mut ours) = accumulators(&func);
        let mut rng = Rng(7);
        let (mut total, mut reference) = (0usize, Vec::<Option<i128>>::new());
        for (at, step) in steps.iter().enumerate() {
            match step {
                Step::Batch {
                    rows,
                    groups,
                    max,
                    positive,
                    nulls,
                    filter,
                } => {
                    total = total.max(*groups);
                    reference.resize(total, None);
                    let values: Vec<Option<i128>> = (0..*rows)
                        .map(|i| {
                            let v = (rng.next() as i128 * rng.next() as i128) % max;
                            let v = match (positive, rng.next() % 2) {
                                (true, _) => max - 1 - v % 1000,
                                (false, 0) => v,
                                (false, _) => -v,
                            };
                            (!(*nulls && i % 7 == 3)).then_some(v)
                        })
                        .collect();
                    // Every group has a row, as groups made by a scan do.
                    let group_indices: Vec<usize> = (0..*rows)
                        .map(|i| match i % 5 {
                            _ if i < *groups => i,
                            // Runs of one group, as a few groups in a scan give.
                            0..=2 => (i / 64) % groups,
                            _ => rng.next() as usize % groups,
                        })
                        .collect();
                    let keep: Option<BooleanArray> =
                        filter.then(|| (0..*rows).map(|i| Some(i % 3 != 0)).collect());
                    for (i, (&g, v)) in group_indices.iter().zip(&values).enumerate() {
                        if let (Some(v), true) = (v, keep.as_ref().is_none_or(|k| k.value(i))) {
                            reference[g] = Some(reference[g].unwrap_or(0).wrapping_add(*v));
                        }
                    }
                    let array: ArrayRef = Arc::new(
                        Decimal128Array::from(values)
                            .with_precision_and_scale(25, 2)
                            .unwrap(),
                    );
                    let values = [array];
                    for acc in [theirs.as_mut(), &mut ours as &mut dyn GroupsAccumulator] {
                        acc.update_batch(&values, &group_indices, keep.as_ref(), total)
                            .unwrap();
                    }
                }
                Step::Emit(emit) | Step::State(emit) => {
                    let (a, b) = match step {
                        Step::Emit(_) => (
                            vec![theirs.evaluate(*emit).unwrap()],
                            vec![ours.evaluate(*emit).unwrap()],
                        ),
                        _ => (theirs.state(*emit).unwrap(), ours.state(*emit).unwrap()),
                    };
                    assert_eq!(a, b, "step {at}");
                    if func.name() == "sum" && matches!(step, Step::Emit(_)) {
                        let n = match emit {
                            EmitTo::All => total,
                            EmitTo::First(n) => *n,
                        };
                        let got: Vec<Option<i128>> =
                            b[0].as_primitive::<Decimal128Type>().iter().collect();
                        assert_eq!(got, reference[..n], "step {at}: sums");
                    }
                    let n = match emit {
                        EmitTo::All => total,
                        EmitTo::First(n) => *n,
                    };
                    reference.drain(..n);
                    total -= n;
                }
                Step::Merge => {
                    // Another partition's state: every group gets its own state back.
                    let state = theirs.state(EmitTo::All).unwrap();
                    let mine = ours.state(EmitTo::All).unwrap();
                    assert_eq!(state, mine, "step {at}");
                    let groups: Vec<usize> = (0..total).collect();
                    for acc in [theirs.as_mut(), &mut ours as &mut dyn GroupsAccumulator] {
                        acc.merge_batch(&state, &groups, total).unwrap();
                        acc.merge_batch(&state, &groups, total).unwrap();
                    }
                    for r in reference.iter_mut() {
                        *r = r.map(|v| v.wrapping_mul(2));
                    }
                }
            }
        }
        ours.batches
    }

    fn batch(rows: usize, groups: usize, max: i128) -> Step {
        Step::Batch {
            rows,
            groups,
            max,
            positive: false,
            nulls: false,
            filter: false,
        }
    }

    /// Money-sized values go into lanes, and give DataFusion's sums and averages exactly,
    /// through partial emits, groups that appear late and batches that are not a multiple
    /// of the lanes.
    #[test]
    fn lanes_give_datafusions_results() {
        for func in [sum_udaf(), avg_udaf()] {
            let steps = [
                batch(8192, 4, 10_000_000),
                batch(8191, 6, 100_000_000_000),
                Step::Emit(EmitTo::First(2)),
                batch(9, 9, 1_000),
                batch(1000, 9, 1),
                Step::Emit(EmitTo::All),
                batch(5000, 3, 50),
                Step::Emit(EmitTo::All),
            ];
            assert_eq!(same_as_datafusion(func, &steps), 5);
        }
    }

    /// Values that leave `i64`, or batches that could take a sum out of it, go to DataFusion's
    /// accumulator beside the lanes; sums folded when the budget runs out stay exact.
    #[test]
    fn large_values_go_around_the_lanes() {
        let huge = i64::MAX as i128 * 1000;
        // A row per lane at the most a batch of 4 may hold: 1100 of them would take each
        // lane's sum past i64::MAX, unless folded into DataFusion's on the way.
        let at_budget = Step::Batch {
            rows: LANES,
            groups: 1,
            max: (BATCH_BUDGET / LANES as u64) as i128,
            positive: true,
            nulls: false,
            filter: false,
        };
        for func in [sum_udaf(), avg_udaf()] {
            let mut steps = vec![batch(8192, 4, 1_000), batch(100, 4, huge)];
            steps.extend((0..1100).map(|_| at_budget.clone()));
            steps.extend([
                batch(8192, 5, i64::MAX as i128),
                batch(10, 5, 10),
                Step::State(EmitTo::First(1)),
                batch(10, 5, 10),
                // New groups that only DataFusion's accumulator has when the lanes fold.
                batch(100, 7, huge),
                Step::Emit(EmitTo::All),
            ]);
            assert_eq!(same_as_datafusion(func, &steps), 1103);
        }
    }

    /// Nulls, filters, merged state or many groups hand every later batch to DataFusion,
    /// after what the lanes held.
    #[test]
    fn nulls_filters_merges_and_many_groups_end_the_lanes() {
        let with = |nulls, filter| Step::Batch {
            rows: 4000,
            groups: 7,
            max: 1_000_000,
            positive: false,
            nulls,
            filter,
        };
        for func in [sum_udaf(), avg_udaf()] {
            for end in [
                with(true, false),
                with(false, true),
                Step::Merge,
                batch(9000, MAX_GROUPS + 1, 99),
            ] {
                let steps = [
                    batch(4000, 7, 1_000_000),
                    end,
                    batch(4000, 7, 1_000_000),
                    Step::Emit(EmitTo::All),
                ];
                assert_eq!(same_as_datafusion(Arc::clone(&func), &steps), 1);
            }
        }
    }

    /// Through SQL: the rule gives `sum` and `avg` of a decimal column lanes (and nothing
    /// else), the sums are the ones added up here, and the averages, names and types are
    /// DataFusion's without the rule.
    #[test]
    fn sql_sums_are_exact_and_the_rest_is_datafusions() {
        use datafusion::arrow::array::{RecordBatch, StringArray};
        use datafusion::datasource::MemTable;
        use datafusion::prelude::{SessionConfig, SessionContext};

        let mut rng = Rng(11);
        let rows = 20_000;
        let regions = ["north", "south", "east", "west", "online"];
        let g: Vec<&str> = (0..rows).map(|i| regions[(i / 100 + i % 3) % 5]).collect();
        let d: Vec<i128> = (0..rows)
            .map(|_| (rng.next() % 20_000_000) as i128 - 5_000_000)
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("d", DataType::Decimal128(15, 2), false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(g.clone())),
                Arc::new(
                    Decimal128Array::from(d.clone())
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap();
        let sql = "SELECT g, sum(d) AS s, avg(d), sum(d * 3), count(*), max(d) FROM t GROUP BY g ORDER BY g";
        let run = |ctx: SessionContext| {
            let table = MemTable::try_new(Arc::clone(&schema), vec![vec![batch.clone()]]).unwrap();
            async move {
                ctx.register_table("t", Arc::new(table)).unwrap();
                let df = ctx.sql(sql).await.unwrap();
                let mut wrapped = Vec::new();
                df.clone()
                    .into_optimized_plan()
                    .unwrap()
                    .apply(|node| {
                        if let LogicalPlan::Aggregate(a) = node {
                            for e in &a.aggr_expr {
                                e.apply(|e| {
                                    if let Expr::AggregateFunction(f) = e {
                                        let inner: &dyn Any = f.func.inner().as_ref();
                                        wrapped.push((
                                            f.func.name().to_string(),
                                            inner.is::<LaneSums>(),
                                        ));
                                    }
                                    Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                                })?;
                            }
                        }
                        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                    })
                    .unwrap();
                (wrapped, df.collect().await.unwrap())
            }
        };
        futures::executor::block_on(async {
            let (wrapped, got) = run(crate::query::new_context(Default::default())).await;
            let without =
                SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
            let (_, want) = run(without).await;
            let names = |w: &[(String, bool)]| {
                w.iter()
                    .filter(|(_, l)| *l)
                    .map(|(n, _)| n.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&wrapped), ["sum", "avg", "sum"], "{wrapped:?}");
            assert_eq!(got, want);
            let mut sums = std::collections::BTreeMap::<&str, i128>::new();
            for (g, d) in g.iter().zip(&d) {
                *sums.entry(g).or_default() += d;
            }
            let got_sums: Vec<i128> = got
                .iter()
                .flat_map(|b| {
                    b.column(1)
                        .as_primitive::<Decimal128Type>()
                        .values()
                        .to_vec()
                })
                .collect();
            assert_eq!(got_sums, sums.into_values().collect::<Vec<_>>());
        });
    }
}
