//! `+`, `-` and `*` of 128-bit decimals in 64-bit integers when no value can overflow them.
//!
//! Arrow computes decimal arithmetic in `i128` with an overflow check per value, and rescales
//! an operand of another scale by a checked multiplication per value (`1 - l_discount` is two
//! of them). WebAssembly has no 128-bit instructions: each checked product is a call to
//! compiler-rt's `__muloti4`, which was 9% of TPC-H Q1 in the browser. Money columns hold far
//! less than 64 bits, so for each batch this module bounds both operands' magnitudes and, when
//! the result cannot leave `i64`, computes it there; the values, type, nulls and errors are
//! Arrow's (otherwise Arrow's kernel runs, unchanged).
//!
//! [`DecimalArithmetic`] is a logical optimizer rule that replaces such a `BinaryExpr` by a
//! call of [`DecimalOp`], whose column name is the expression's own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Datum, PrimitiveArray};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef};
use datafusion::arrow::error::ArrowError;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// An Arrow arithmetic kernel.
type Kernel = fn(&dyn Datum, &dyn Datum) -> std::result::Result<ArrayRef, ArrowError>;

/// Arrow's kernel for each operator computed here.
fn kernel(op: Operator) -> Option<Kernel> {
    // The wrapping variants are what DataFusion's BinaryExpr calls; for decimals Arrow
    // checks overflow in them too.
    match op {
        Operator::Plus => Some(numeric::add_wrapping),
        Operator::Minus => Some(numeric::sub_wrapping),
        Operator::Multiply => Some(numeric::mul_wrapping),
        _ => None,
    }
}

/// `left op right` over two `Decimal128` values (see the module's comment).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DecimalOp {
    op: Operator,
    name: &'static str,
    signature: Signature,
}

impl DecimalOp {
    fn new(op: Operator) -> Self {
        let name = match op {
            Operator::Plus => "decimal_add",
            Operator::Minus => "decimal_subtract",
            _ => "decimal_multiply",
        };
        Self {
            op,
            name,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// The type Arrow's kernel gives `left op right`, if it computes it.
fn result_type(op: Operator, left: &DataType, right: &DataType) -> Option<DataType> {
    let kernel = kernel(op)?;
    let (l, r) = (
        datafusion::arrow::array::new_empty_array(left),
        datafusion::arrow::array::new_empty_array(right),
    );
    kernel(&l, &r).ok().map(|a| a.data_type().clone())
}

impl ScalarUDFImpl for DecimalOp {
    fn name(&self) -> &str {
        self.name
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        // The column keeps the name the expression had: `a * b`.
        match args {
            [l, r] => Ok(Expr::BinaryExpr(BinaryExpr::new(
                Box::new(l.clone()),
                self.op,
                Box::new(r.clone()),
            ))
            .schema_name()
            .to_string()),
            _ => Ok(self.name.to_string()),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [l, r] => result_type(self.op, l, r).ok_or_else(|| {
                datafusion::error::DataFusionError::Plan(format!(
                    "{}: no decimal result for {l} and {r}",
                    self.name
                ))
            }),
            _ => datafusion::common::plan_err!("{} takes two arguments", self.name),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name,
            self.return_type(&types)?,
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [l, r] = args.args.as_slice() else {
            return datafusion::common::exec_err!("{} takes two arguments", self.name);
        };
        let out_type = args.return_field.data_type();
        // A literal side (`1 - l_discount`) is used as one value, not made a column first.
        if let Some(out) = fast(self.op, Side::of(l), Side::of(r), out_type)? {
            return Ok(ColumnarValue::Array(out));
        }
        let scalar = matches!((l, r), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let (la, ra) = (l.to_array(rows)?, r.to_array(rows)?);
        let out = match kernel(self.op) {
            Some(kernel) => kernel(&la, &ra)?,
            None => return datafusion::common::exec_err!("{}: no kernel", self.name),
        };
        Ok(match scalar {
            true => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
            false => ColumnarValue::Array(out),
        })
    }
}

/// One operand: a column, or one (non-null) value with its scale for every row of the other.
#[derive(Clone, Copy)]
enum Side<'a> {
    Column(&'a ArrayRef),
    Value(i128, i8),
    /// Neither (a null literal, two literals): Arrow's kernel takes it.
    Other,
}

impl<'a> Side<'a> {
    fn of(v: &'a ColumnarValue) -> Self {
        match v {
            ColumnarValue::Array(a) => Side::Column(a),
            ColumnarValue::Scalar(ScalarValue::Decimal128(Some(v), _, s)) => Side::Value(*v, *s),
            ColumnarValue::Scalar(_) => Side::Other,
        }
    }

    fn scale(&self) -> Option<i8> {
        match self {
            Side::Column(a) => match a.data_type() {
                DataType::Decimal128(_, s) => Some(*s),
                _ => None,
            },
            Side::Value(_, s) => Some(*s),
            Side::Other => None,
        }
    }

    /// The largest magnitude, null slots included, if every value fits in `i64`.
    fn magnitude(&self) -> Option<u64> {
        match self {
            Side::Column(a) => magnitude(a.as_primitive::<Decimal128Type>()),
            Side::Value(v, _) => i64::try_from(*v).ok().map(i64::unsigned_abs),
            Side::Other => None,
        }
    }
}

/// `f` of each row's pair of values, each known to fit in `i64`; `None` for two literals.
fn combine(a: Side, b: Side, f: impl Fn(i64, i64) -> i64) -> Option<ScalarBuffer<i128>> {
    let values = |c: &ArrayRef| c.as_primitive::<Decimal128Type>().values().clone();
    Some(match (a, b) {
        (Side::Column(x), Side::Column(y)) => values(x)
            .iter()
            .zip(values(y).iter())
            .map(|(&x, &y)| f(x as i64, y as i64) as i128)
            .collect(),
        (Side::Column(x), Side::Value(y, _)) => values(x)
            .iter()
            .map(|&x| f(x as i64, y as i64) as i128)
            .collect(),
        (Side::Value(x, _), Side::Column(y)) => values(y)
            .iter()
            .map(|&y| f(x as i64, y as i64) as i128)
            .collect(),
        _ => return None,
    })
}

/// The largest magnitude in `a`, null slots included, if every value fits in `i64`: known if
/// this module computed `a` (see [`BOUNDS`]), else scanned.
pub(crate) fn magnitude(a: &PrimitiveArray<Decimal128Type>) -> Option<u64> {
    if let Some(bound) = remembered(a.values()) {
        return Some(bound);
    }
    let (mut max, mut wide) = (0u64, 0u64);
    for &v in a.values().iter() {
        let low = v as i64;
        // `v` fits in i64 if its high half is its low half's sign; without a branch per value,
        // which Q1 scans millions of.
        wide |= ((v >> 64) as i64 ^ (low >> 63)) as u64;
        max = max.max(low.unsigned_abs());
    }
    (wide == 0).then_some(max)
}

/// Bounds on the magnitudes of arrays [`fast`] computed, for the operations that read them
/// next (TPC-H Q1's `disc_price * (1 + l_tax)` reads two), which then need not scan them.
/// An entry holds its values buffer: while it does, that memory keeps those values (a shared
/// Arrow buffer is never changed in place) and is not reused for others. The last few only.
static BOUNDS: Mutex<VecDeque<(ScalarBuffer<i128>, u64)>> = Mutex::new(VecDeque::new());
const BOUNDS_KEPT: usize = 8;

fn remembered(values: &ScalarBuffer<i128>) -> Option<u64> {
    let bounds = BOUNDS.lock().ok()?;
    bounds
        .iter()
        .find(|(kept, _)| kept.ptr_eq(values))
        .map(|(_, bound)| *bound)
}

fn remember(values: &ScalarBuffer<i128>, bound: u64) {
    if let Ok(mut bounds) = BOUNDS.lock() {
        if bounds.len() == BOUNDS_KEPT {
            bounds.pop_front();
        }
        bounds.push_back((values.clone(), bound));
    }
}

/// `l op r` in `i64` as `out_type` (Arrow's type for it, see [`result_type`]), if no value of
/// the result (rescaled operands included) can leave `i64`.
fn fast(op: Operator, l: Side, r: Side, out_type: &DataType) -> Result<Option<ArrayRef>> {
    let (Some(s1), Some(s2)) = (l.scale(), r.scale()) else {
        return Ok(None);
    };
    let &DataType::Decimal128(p, s) = out_type else {
        return Ok(None);
    };
    let (Some(ma), Some(mb)) = (l.magnitude(), r.magnitude()) else {
        return Ok(None);
    };
    let limit = i64::MAX as u64;
    let (values, bound) = match op {
        Operator::Multiply => {
            let Some(bound) = ma.checked_mul(mb).filter(|m| *m <= limit) else {
                return Ok(None);
            };
            (combine(l, r, |x, y| x.wrapping_mul(y)), bound)
        }
        Operator::Plus | Operator::Minus => {
            // Both sides at the result's scale, as Arrow rescales them.
            let pow = |from: i8| 10u64.checked_pow(u32::try_from(s - from).ok()?);
            let (Some(fa), Some(fb)) = (pow(s1), pow(s2)) else {
                return Ok(None);
            };
            let Some(bound) = ma
                .checked_mul(fa)
                .zip(mb.checked_mul(fb))
                .and_then(|(x, y)| x.checked_add(y))
                .filter(|m| *m <= limit)
            else {
                return Ok(None);
            };
            let (fa, fb) = (fa as i64, fb as i64);
            let sign = if op == Operator::Minus { -1 } else { 1 };
            (
                combine(l, r, |x, y| x.wrapping_mul(fa) + sign * y.wrapping_mul(fb)),
                bound,
            )
        }
        _ => return Ok(None),
    };
    let Some(values) = values else {
        return Ok(None);
    };
    // Every value computed, null slots too, is within the bound.
    remember(&values, bound);
    let nulls = |side: Side| match side {
        Side::Column(c) => c.nulls().cloned(),
        _ => None,
    };
    let nulls = NullBuffer::union(nulls(l).as_ref(), nulls(r).as_ref());
    let out =
        PrimitiveArray::<Decimal128Type>::new(values, nulls).with_precision_and_scale(p, s)?;
    Ok(Some(Arc::new(out)))
}

/// Replaces `+`, `-` and `*` of two `Decimal128` operands by [`DecimalOp`] in the
/// expressions of plan nodes with one input (projections, filters, aggregates, sorts,
/// windows), when Arrow's result type is the plan's.
#[derive(Debug, Default)]
pub struct DecimalArithmetic;

impl OptimizerRule for DecimalArithmetic {
    fn name(&self) -> &str {
        "medallion_decimal_arithmetic"
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
            let schema = match node.inputs().as_slice() {
                [input] if !matches!(node, LogicalPlan::Extension(_)) => Arc::clone(input.schema()),
                _ => return Ok(Transformed::no(node)),
            };
            node.map_expressions(|e| rewrite_expr(e, &schema))
        })
    }
}

fn rewrite_expr(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    expr.transform_up(|e| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
            return Ok(Transformed::no(e));
        };
        if kernel(*op).is_none() {
            return Ok(Transformed::no(e));
        }
        let (Ok(lt), Ok(rt), Ok(t)) = (
            left.get_type(schema),
            right.get_type(schema),
            e.get_type(schema),
        ) else {
            return Ok(Transformed::no(e));
        };
        let decimals = matches!(
            (&lt, &rt),
            (DataType::Decimal128(..), DataType::Decimal128(..))
        );
        if !decimals || result_type(*op, &lt, &rt).as_ref() != Some(&t) {
            return Ok(Transformed::no(e));
        }
        let udf = Arc::new(ScalarUDF::new_from_impl(DecimalOp::new(*op)));
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(udf, vec![(**left).clone(), (**right).clone()]),
        )))
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Decimal128Array;

    use super::*;

    fn dec(values: &[Option<i128>], p: u8, s: i8) -> ArrayRef {
        Arc::new(
            Decimal128Array::from(values.to_vec())
                .with_precision_and_scale(p, s)
                .unwrap(),
        )
    }

    /// The fast path gives Arrow's array exactly, or declines.
    #[test]
    fn fast_path_equals_arrow_or_declines() {
        let big = i64::MAX as i128;
        let cases: Vec<(ArrayRef, ArrayRef)> = vec![
            (
                dec(&[Some(1049495), Some(-20), None, Some(0)], 15, 2),
                dec(&[Some(93), Some(100), Some(7), None], 16, 2),
            ),
            (
                dec(&[Some(1), Some(1), Some(1), Some(1)], 20, 0),
                dec(&[Some(4), Some(-5), None, Some(99)], 15, 2),
            ),
            (
                dec(&[Some(big), Some(3), Some(-3), Some(0)], 38, 0),
                dec(&[Some(2), Some(big), Some(1), Some(1)], 38, 0),
            ),
            (
                dec(&[Some(big * 4), Some(1), Some(2), Some(3)], 38, 2),
                dec(&[Some(1), Some(1), Some(1), Some(1)], 38, 2),
            ),
            (
                dec(
                    &[Some(3_037_000_499), Some(-3_037_000_499), Some(1), None],
                    20,
                    3,
                ),
                dec(
                    &[Some(3_037_000_499), Some(3_037_000_499), Some(1), None],
                    20,
                    1,
                ),
            ),
        ];
        // Each case as two columns, and with a literal (the other side's first value) on
        // either side, which Arrow's kernel takes as a `Scalar`.
        let literal = |a: &ArrayRef| {
            let v = a.as_primitive::<Decimal128Type>();
            v.is_valid(0).then(|| (v.value(0), a.slice(0, 1)))
        };
        let mut fast_taken = [0; 3];
        for (l, r) in &cases {
            for op in [Operator::Plus, Operator::Minus, Operator::Multiply] {
                let Some(out_type) = result_type(op, l.data_type(), r.data_type()) else {
                    continue;
                };
                let scale = |a: &ArrayRef| match a.data_type() {
                    DataType::Decimal128(_, s) => *s,
                    _ => unreachable!(),
                };
                let mut forms = vec![(
                    kernel(op).unwrap()(l, r),
                    fast(op, Side::Column(l), Side::Column(r), &out_type).unwrap(),
                )];
                if let Some((v, one)) = literal(l) {
                    let scalar = datafusion::arrow::array::Scalar::new(one);
                    forms.push((
                        kernel(op).unwrap()(&scalar, r),
                        fast(op, Side::Value(v, scale(l)), Side::Column(r), &out_type).unwrap(),
                    ));
                }
                if let Some((v, one)) = literal(r) {
                    let scalar = datafusion::arrow::array::Scalar::new(one);
                    forms.push((
                        kernel(op).unwrap()(l, &scalar),
                        fast(op, Side::Column(l), Side::Value(v, scale(r)), &out_type).unwrap(),
                    ));
                }
                for (form, (arrow, got)) in forms.into_iter().enumerate() {
                    // Declined (None): the values may leave i64; Arrow's kernel computes them.
                    let Some(got) = got else { continue };
                    fast_taken[form] += 1;
                    let arrow = arrow.unwrap();
                    assert_eq!(got.data_type(), arrow.data_type(), "{op} {l:?} {r:?}");
                    assert_eq!(got.nulls(), arrow.nulls(), "{op} form {form}");
                    let (g, w) = (
                        got.as_primitive::<Decimal128Type>(),
                        arrow.as_primitive::<Decimal128Type>(),
                    );
                    for i in 0..g.len() {
                        if g.is_valid(i) {
                            assert_eq!(g.value(i), w.value(i), "{op} form {form} row {i}");
                        }
                    }
                }
            }
        }
        assert!(
            fast_taken.iter().all(|n| *n >= 6),
            "the fast path ran {fast_taken:?} times"
        );
        // Overflowing i64 but not i128: declined, and Arrow's answer stands.
        let (l, r) = (&cases[2].0, &cases[2].1);
        for op in [Operator::Multiply, Operator::Plus] {
            let out_type = result_type(op, l.data_type(), r.data_type()).unwrap();
            assert!(fast(op, Side::Column(l), Side::Column(r), &out_type)
                .unwrap()
                .is_none());
            assert!(fast(
                op,
                Side::Value(i64::MAX as i128 * 4, 2),
                Side::Column(r),
                &out_type
            )
            .unwrap()
            .is_none());
        }
    }

    #[test]
    fn magnitude_is_none_when_a_value_leaves_i64() {
        let m = |v: Vec<i128>| {
            magnitude(
                &PrimitiveArray::<Decimal128Type>::from(v)
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
            )
        };
        let (min, max) = (i64::MIN as i128, i64::MAX as i128);
        assert_eq!(m(vec![]), Some(0));
        assert_eq!(m(vec![3, -7, 5]), Some(7));
        assert_eq!(m(vec![0, min]), Some(1 << 63));
        assert_eq!(m(vec![max, -max]), Some(max as u64));
        assert_eq!(m(vec![1, max + 1]), None);
        assert_eq!(m(vec![min - 1, 1]), None);
        assert_eq!(m(vec![1 << 100, 0]), None);
        assert_eq!(m(vec![-(1 << 100)]), None);
    }

    /// An array computed here is not scanned again: its bound is remembered, holds every value,
    /// and still makes the next operation decline when that could leave i64.
    #[test]
    fn computed_arrays_carry_their_bound() {
        let (l, r) = (
            dec(&[Some(3_037_000_499), Some(-2), None], 20, 0),
            dec(&[Some(3_037_000_499), Some(1), Some(5)], 20, 0),
        );
        let t = result_type(Operator::Multiply, l.data_type(), r.data_type()).unwrap();
        let x = fast(Operator::Multiply, Side::Column(&l), Side::Column(&r), &t)
            .unwrap()
            .expect("fits i64");
        let values = x.as_primitive::<Decimal128Type>().values();
        let bound = remembered(values).expect("remembered");
        assert!(values.iter().all(|v| v.unsigned_abs() <= bound as u128));
        assert_eq!(magnitude(x.as_primitive::<Decimal128Type>()), Some(bound));
        let two = dec(&[Some(2), Some(2), Some(2)], 20, 0);
        let t2 = result_type(Operator::Multiply, x.data_type(), two.data_type()).unwrap();
        assert!(fast(
            Operator::Multiply,
            Side::Column(&x),
            Side::Column(&two),
            &t2
        )
        .unwrap()
        .is_none());
    }

    /// Through SQL: the same answers, names and types as DataFusion without the rule, which
    /// did run (the plan shows the functions).
    #[test]
    fn sql_answers_names_and_types_are_datafusions() {
        let sql = "SELECT a * (1 - b) AS x, a + b, a - 1.5, sum(a * b), CAST(a AS DECIMAL(38,2)) * 3
                   FROM (VALUES (CAST(10.25 AS DECIMAL(15,2)), CAST(0.06 AS DECIMAL(15,2))),
                                (CAST(-3.10 AS DECIMAL(15,2)), NULL),
                                (CAST(99999999.99 AS DECIMAL(15,2)), CAST(0.10 AS DECIMAL(15,2)))) t(a, b)
                   GROUP BY a, b ORDER BY a";
        futures::executor::block_on(async {
            let with = crate::query::new_context(Default::default());
            let without = datafusion::prelude::SessionContext::new_with_config(
                datafusion::prelude::SessionConfig::new().with_target_partitions(1),
            );
            let run = |ctx: datafusion::prelude::SessionContext| async move {
                let df = ctx.sql(sql).await.unwrap();
                let plan = format!(
                    "{}",
                    df.clone().into_optimized_plan().unwrap().display_indent()
                );
                let batches = df.collect().await.unwrap();
                (
                    plan,
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                        .unwrap()
                        .to_string(),
                    batches[0].schema(),
                )
            };
            let (plan, got, schema) = run(with).await;
            let (_, want, want_schema) = run(without).await;
            assert!(plan.contains("decimal_multiply"), "{plan}");
            assert!(plan.contains("decimal_subtract"), "{plan}");
            assert_eq!(got, want);
            assert_eq!(
                schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect::<Vec<_>>(),
                want_schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect::<Vec<_>>()
            );
        });
    }
}
