//! Silver's declarative cleaning, applied to a table's SQL result in this order:
//! 1. casts — a value that does not convert sends its row to quarantine;
//! 2. expectations — `warn` counts, `drop` quarantines the row, `fail` stops the run;
//! 3. dedupe — one row per key, the latest by the ordering column; or apply_changes — change
//!    events applied by key in sequence order (current state or history).
//!
//! Expectations run before dedupe so that a bad late update does not hide the last good
//! version of a row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::error::{Context, Error, Result};
use crate::report::ExpectationReport;
use crate::spec::{ApplyChanges, Dedupe, OnViolation, SilverTable};
use crate::types::parse_type_name;

/// The column quarantined rows carry to say why they were set aside.
pub const REASON_COLUMN: &str = "_quarantine_reason";

/// The result of cleaning one silver table.
#[derive(Debug)]
pub struct Cleaned {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Rows set aside, with their values before casting and a [`REASON_COLUMN`].
    pub quarantine: Vec<RecordBatch>,
    pub expectations: Vec<ExpectationReport>,
    pub dropped: u64,
    pub deduplicated: u64,
}

/// Applies a silver table's casts, expectations and dedupe to its SQL result.
pub async fn clean(
    ctx: &SessionContext,
    table: &str,
    spec: &SilverTable,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Cleaned> {
    let table_err = |message: String| Error::Table {
        table: table.to_string(),
        message,
    };
    for col in spec.casts.keys() {
        if schema.field_with_name(col).is_err() {
            return Err(table_err(format!(
                "cast of unknown column `{col}`; the SQL returns: {}",
                column_list(&schema)
            )));
        }
    }
    let cast_schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(
                |f| match spec.casts.get(f.name()).and_then(|t| parse_type_name(t)) {
                    Some(dt) => Field::new(f.name(), dt, true),
                    None => f.as_ref().clone(),
                },
            )
            .collect::<Vec<_>>(),
    ));
    let df_schema =
        DFSchema::try_from(cast_schema.clone()).context(|| format!("table `{table}`"))?;
    let conditions = spec
        .expect
        .iter()
        .map(|e| {
            let expr = ctx
                .parse_sql_expr(&e.condition, &df_schema)
                .map_err(|err| {
                    table_err(format!(
                        "expectation `{}`: `{}` is not a valid condition: {err}",
                        e.name, e.condition
                    ))
                })?;
            ctx.create_physical_expr(expr, &df_schema).map_err(|err| {
                table_err(format!(
                    "expectation `{}`: `{}`: {err}",
                    e.name, e.condition
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let mut reports: Vec<ExpectationReport> = spec
        .expect
        .iter()
        .map(|e| ExpectationReport {
            name: e.name.clone(),
            condition: e.condition.clone(),
            on_violation: e.on_violation,
            violations: 0,
        })
        .collect();
    let mut kept = Vec::new();
    let mut quarantine = Vec::new();
    let mut dropped = 0u64;
    let mut first_failure: Option<(String, String)> = None;
    for batch in &batches {
        let n = batch.num_rows();
        let mut reasons: Vec<Option<String>> = vec![None; n];
        // 1. casts
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        for (i, field) in cast_schema.fields().iter().enumerate() {
            let original = batch.column(i);
            if original.data_type() == field.data_type() {
                columns.push(original.clone());
                continue;
            }
            let converted = cast_with_options(original, field.data_type(), &CastOptions::default())
                .context(|| format!("table `{table}`: cast of `{}`", field.name()))?;
            for (r, reason) in reasons.iter_mut().enumerate() {
                if reason.is_none() && original.is_valid(r) && converted.is_null(r) {
                    *reason = Some(format!(
                        "cast of `{}` to {} failed",
                        field.name(),
                        field.data_type()
                    ));
                }
            }
            columns.push(converted);
        }
        let casted = RecordBatch::try_new(cast_schema.clone(), columns)
            .context(|| format!("table `{table}`"))?;
        // 2. expectations
        for ((exp, cond), report) in spec.expect.iter().zip(&conditions).zip(reports.iter_mut()) {
            let result = cond
                .evaluate(&casted)
                .and_then(|v| v.into_array(n))
                .context(|| format!("table `{table}`: expectation `{}`", exp.name))?;
            let Some(passed) = result.as_any().downcast_ref::<BooleanArray>() else {
                return Err(table_err(format!(
                    "expectation `{}`: `{}` is {}, not a boolean condition",
                    exp.name,
                    exp.condition,
                    result.data_type()
                )));
            };
            // NULL counts as a violation: `quantity > 0` must not let a missing quantity through.
            // (Arrow's `or`/`not` propagate NULL, and `true_count` skips it, so build the mask
            // row by row.)
            let violated: BooleanArray = (0..passed.len())
                .map(|r| Some(!(passed.is_valid(r) && passed.value(r))))
                .collect();
            let count = violated.true_count() as u64;
            report.violations += count;
            if count == 0 {
                continue;
            }
            match exp.on_violation {
                OnViolation::Warn => {}
                OnViolation::Fail => {
                    // Count every batch before failing, so the error gives the whole count.
                    if first_failure.is_none() {
                        let first = (0..n).find(|&r| violated.value(r)).unwrap_or(0);
                        first_failure = Some((report.name.clone(), describe_row(&casted, first)));
                    }
                }
                OnViolation::Drop => {
                    for (r, reason) in reasons.iter_mut().enumerate() {
                        if reason.is_none() && violated.value(r) {
                            *reason = Some(format!(
                                "expectation `{}` violated: {}",
                                exp.name, exp.condition
                            ));
                        }
                    }
                }
            }
        }
        let bad: BooleanArray = reasons.iter().map(|r| Some(r.is_some())).collect();
        if bad.true_count() > 0 {
            dropped += bad.true_count() as u64;
            let q = filter_record_batch(batch, &bad).context(|| format!("table `{table}`"))?;
            let why: StringArray = reasons.iter().flatten().map(|s| Some(s.as_str())).collect();
            quarantine.push(
                with_column(&q, REASON_COLUMN, Arc::new(why))
                    .context(|| format!("table `{table}`"))?,
            );
        }
        let good = not(&bad).context(|| format!("table `{table}`"))?;
        kept.push(filter_record_batch(&casted, &good).context(|| format!("table `{table}`"))?);
    }
    if let Some((expectation, sample)) = first_failure {
        let violations = reports
            .iter()
            .find(|r| r.name == expectation)
            .map(|r| r.violations)
            .unwrap_or(0);
        return Err(Error::ExpectationFailed {
            table: table.to_string(),
            expectation,
            violations,
            sample,
        });
    }

    let rows_before: usize = kept.iter().map(|b| b.num_rows()).sum();
    let (schema, kept) = match (&spec.dedupe, &spec.apply_changes) {
        (Some(d), _) => dedupe(ctx, table, d, cast_schema.clone(), kept).await?,
        (None, Some(a)) => apply_changes(ctx, table, a, cast_schema.clone(), kept).await?,
        (None, None) => (cast_schema.clone(), kept),
    };
    let rows_after: usize = kept.iter().map(|b| b.num_rows()).sum();
    Ok(Cleaned {
        schema,
        batches: kept,
        quarantine,
        expectations: reports,
        dropped,
        deduplicated: (rows_before - rows_after) as u64,
    })
}

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn with_column(
    batch: &RecordBatch,
    name: &str,
    col: ArrayRef,
) -> std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(name, DataType::Utf8, true));
    let mut cols = batch.columns().to_vec();
    cols.push(col);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
}

/// One row as `{col: value, …}`, for error messages.
pub fn describe_row(batch: &RecordBatch, row: usize) -> String {
    let options = datafusion::arrow::util::display::FormatOptions::default().with_null("NULL");
    let parts: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            let value =
                datafusion::arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options)
                    .map(|fmt| fmt.value(row).to_string())
                    .unwrap_or_else(|_| "?".into());
            format!("{}: {}", f.name(), value)
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Keeps, for each key, the row with the greatest `order_by`. Ties are broken by the other
/// columns so that every runtime keeps the same row.
async fn dedupe(
    ctx: &SessionContext,
    table: &str,
    d: &Dedupe,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    for col in d.key.iter().chain(std::iter::once(&d.order_by)) {
        if schema.field_with_name(col).is_err() {
            return Err(Error::Table {
                table: table.to_string(),
                message: format!(
                    "dedupe names unknown column `{col}`; the table has: {}",
                    column_list(&schema)
                ),
            });
        }
    }
    const INPUT: &str = "__medallion_dedupe_input";
    let mem = MemTable::try_new(schema.clone(), vec![batches])
        .context(|| format!("table `{table}`: dedupe"))?;
    ctx.register_table(INPUT, Arc::new(mem))
        .context(|| format!("table `{table}`: dedupe"))?;
    let tiebreak: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| !d.key.contains(f.name()) && *f.name() != d.order_by)
        .filter(|f| {
            f.data_type().is_primitive()
                || matches!(f.data_type(), DataType::Utf8 | DataType::Boolean)
        })
        .map(|f| format!("{} ASC NULLS LAST", quote(f.name())))
        .collect();
    let mut order = vec![format!("{} DESC NULLS LAST", quote(&d.order_by))];
    order.extend(tiebreak);
    let sql = format!(
        "SELECT * EXCLUDE (__medallion_rn) FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {}) AS __medallion_rn FROM {INPUT}) WHERE __medallion_rn = 1",
        d.key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", "),
        order.join(", "),
    );
    let result = crate::query::collect_sql(ctx, &format!("table `{table}`: dedupe"), &sql).await;
    let _ = ctx.deregister_table(INPUT);
    let (_, batches) = result?;
    Ok((schema, batches))
}

/// Applies change events by key. For each key the events are ordered by `sequence_by`
/// (events with the same key and sequence are one event delivered twice: one is kept). SCD 1
/// keeps the last event of each key unless it is a delete; SCD 2 keeps every event that is not
/// a delete, from its sequence (`__start_at`) to the next event's (`__end_at`, NULL while
/// current), so a delete closes the version before it.
async fn apply_changes(
    ctx: &SessionContext,
    table: &str,
    a: &ApplyChanges,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let what = format!("table `{table}`: apply_changes");
    for col in a
        .keys
        .iter()
        .chain(std::iter::once(&a.sequence_by))
        .chain(&a.except_columns)
    {
        if schema.field_with_name(col).is_err() {
            return Err(Error::Table {
                table: table.to_string(),
                message: format!(
                    "apply_changes names unknown column `{col}`; the table has: {}",
                    column_list(&schema)
                ),
            });
        }
    }
    const INPUT: &str = "__medallion_changes_input";
    let mem = MemTable::try_new(schema.clone(), vec![batches]).context(|| what.clone())?;
    ctx.register_table(INPUT, Arc::new(mem))
        .context(|| what.clone())?;
    let keys = a
        .keys
        .iter()
        .map(|k| quote(k))
        .collect::<Vec<_>>()
        .join(", ");
    let seq = quote(&a.sequence_by);
    let deleted = match &a.delete_when {
        Some(cond) => format!("(({cond}) IS TRUE)"),
        None => "false".to_string(),
    };
    let kept: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| !a.except_columns.contains(n))
        .map(|n| quote(n))
        .collect();
    let kept = kept.join(", ");
    // A duplicate delivery of an event has the same key and sequence; keep one, preferring
    // the delete so that a redelivered delete is never undone by its twin.
    let events = format!(
        "SELECT * FROM (SELECT *, {deleted} AS __medallion_deleted, row_number() OVER (PARTITION BY {keys}, {seq} ORDER BY {deleted} DESC) AS __medallion_dup FROM {INPUT}) WHERE __medallion_dup = 1"
    );
    let sql = match a.scd {
        1 => format!(
            "SELECT {kept} FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY {seq} DESC) AS __medallion_rn FROM ({events})) WHERE __medallion_rn = 1 AND NOT __medallion_deleted"
        ),
        _ => format!(
            "SELECT {kept}, {seq} AS __start_at, __medallion_next AS __end_at FROM (SELECT *, lead({seq}) OVER (PARTITION BY {keys} ORDER BY {seq}) AS __medallion_next FROM ({events})) WHERE NOT __medallion_deleted"
        ),
    };
    let result = crate::query::collect_sql(ctx, &what, &sql).await;
    let _ = ctx.deregister_table(INPUT);
    let (schema, batches) = result?;
    Ok((schema, batches))
}
