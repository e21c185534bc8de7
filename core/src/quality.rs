//! Silver's declarative cleaning, applied to a table's SQL result in this order:
//! 1. casts — a value that does not convert sends its row to quarantine;
//! 2. expectations — `warn` counts, `drop` quarantines the row, `fail` stops the run;
//! 3. dedupe — one row per key, the latest by the ordering column; or apply_changes — change
//!    events applied by key in sequence order (current state or history).
//!
//! Expectations run before dedupe so that a bad late update does not hide the last good
//! version of a row.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::DFSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::error::{Context, Error, Result};
use crate::first_per_key::first_per_key;
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

/// Applies a silver table's casts, expectations and dedupe to its SQL result, all in memory.
pub async fn clean(
    ctx: &SessionContext,
    table: &str,
    spec: &SilverTable,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Cleaned> {
    let input: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(batches.into_iter().map(Ok)),
    ));
    let cleaning = clean_stream(ctx, table, spec, input).await?;
    let schema = cleaning.stream.schema();
    let mut batches = Vec::new();
    let mut stream = cleaning.stream;
    while let Some(batch) = stream.next().await {
        match batch {
            Ok(b) => batches.push(b),
            Err(e) => return Err(cleaning.checks.error_for(e, table)),
        }
    }
    let rows_out: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let checked = cleaning.checks.finish()?;
    Ok(Cleaned {
        schema,
        batches,
        deduplicated: checked.rows_kept - rows_out,
        quarantine: checked.quarantine,
        expectations: checked.expectations,
        dropped: checked.dropped,
    })
}

/// A silver table's rows being cleaned as they stream: `stream` yields the clean rows (after
/// dedupe or apply_changes, which sort and may spill under a memory limit), `checks` holds
/// what the row checks found once the stream has ended.
pub struct Cleaning {
    pub stream: SendableRecordBatchStream,
    pub checks: SharedChecks,
}

/// Streams a silver table's casts, expectations and dedupe over its SQL result.
pub async fn clean_stream(
    ctx: &SessionContext,
    table: &str,
    spec: &SilverTable,
    input: SendableRecordBatchStream,
) -> Result<Cleaning> {
    let checks = RowChecks::new(ctx, table, spec, &input.schema())?;
    let cast_schema = checks.cast_schema.clone();
    let checks = SharedChecks(Arc::new(Mutex::new(checks)));
    let applying = checks.clone();
    let checked = input.map(move |batch| {
        let batch = batch?;
        applying.apply(&batch)
    });
    let checked: SendableRecordBatchStream =
        Box::pin(RecordBatchStreamAdapter::new(cast_schema.clone(), checked));
    let (what, sql, keys) = match (&spec.dedupe, &spec.apply_changes) {
        (Some(d), _) => {
            // Only sorts that spill need the window (see `dedupe_sql`); where there is no
            // disk (browsers, the guest), either form holds all rows in memory.
            let runtime = ctx.runtime_env();
            let bounded = !matches!(runtime.memory_pool.memory_limit(), MemoryLimit::Infinite)
                && runtime.disk_manager.tmp_files_enabled();
            let (sql, keys) = dedupe_sql(table, d, &cast_schema, bounded)?;
            (format!("table `{table}`: dedupe"), sql, keys)
        }
        (None, Some(a)) => (
            format!("table `{table}`: apply_changes"),
            apply_changes_sql(table, a, &cast_schema)?,
            None,
        ),
        (None, None) => {
            return Ok(Cleaning {
                stream: checked,
                checks,
            })
        }
    };
    let source = StreamingTable::try_new(
        cast_schema.clone(),
        vec![Arc::new(OneShot {
            schema: cast_schema,
            stream: Mutex::new(Some(checked)),
        })],
    )
    .context(|| what.clone())?;
    ctx.register_table(INPUT, Arc::new(source))
        .context(|| what.clone())?;
    let stream = crate::query::stream_sql(ctx, &what, &sql).await;
    // The plan holds the source now; the name is free for the next table.
    let _ = ctx.deregister_table(INPUT);
    let stream = match keys {
        Some(keys) => first_per_key(stream?, &keys).context(|| what.clone())?,
        None => stream?,
    };
    Ok(Cleaning { stream, checks })
}

/// The name the rows being deduplicated or applied are read under.
const INPUT: &str = "__medallion_clean_input";

/// A stream that can be scanned once: the checked rows of the table being cleaned.
struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneShot")
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self
            .stream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        taken.unwrap_or_else(|| {
            // The cleaning SQL reads its input once; a second scan is a bug, said as one.
            Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async {
                    Err(DataFusionError::Internal(
                        "the rows being cleaned were read twice".into(),
                    ))
                }),
            ))
        })
    }
}

/// What the row checks found, once every row went through them.
#[derive(Debug)]
pub struct Checked {
    /// Rows set aside, with their values before casting and a [`REASON_COLUMN`].
    pub quarantine: Vec<RecordBatch>,
    pub expectations: Vec<ExpectationReport>,
    pub dropped: u64,
    /// Rows the SQL returned.
    pub rows_in: u64,
    /// Rows that passed the checks (before dedupe or apply_changes).
    pub rows_kept: u64,
}

/// [`RowChecks`] shared between the stream that applies them and the code that reads the
/// outcome when the stream ends.
#[derive(Clone)]
pub struct SharedChecks(Arc<Mutex<RowChecks>>);

impl SharedChecks {
    fn lock(&self) -> std::sync::MutexGuard<'_, RowChecks> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn apply(&self, batch: &RecordBatch) -> datafusion::error::Result<RecordBatch> {
        let mut checks = self.lock();
        match checks.apply(batch) {
            Ok(kept) => Ok(kept),
            Err(e) => {
                let message = e.to_string();
                checks.error = Some(e);
                Err(DataFusionError::Execution(message))
            }
        }
    }

    /// The error to report for a failed stream: the row checks' own if they failed (it names
    /// the table and column), else the engine's, in the table's context.
    pub fn error_for(&self, e: DataFusionError, table: &str) -> Error {
        match self.lock().error.take() {
            Some(own) => own,
            None => Error::datafusion(format!("table `{table}`: running SQL"), e),
        }
    }

    /// The outcome, or the error of an expectation with `on_violation = "fail"` (with the
    /// count of every violating row) or of a check that could not run.
    pub fn finish(&self) -> Result<Checked> {
        let mut checks = self.lock();
        if let Some(e) = checks.error.take() {
            return Err(e);
        }
        if let Some((expectation, sample)) = checks.first_failure.take() {
            let violations = checks
                .reports
                .iter()
                .find(|r| r.name == expectation)
                .map(|r| r.violations)
                .unwrap_or(0);
            return Err(Error::ExpectationFailed {
                table: checks.table.clone(),
                expectation,
                violations,
                sample,
            });
        }
        Ok(Checked {
            quarantine: std::mem::take(&mut checks.quarantine),
            expectations: std::mem::take(&mut checks.reports),
            dropped: checks.dropped,
            rows_in: checks.rows_in,
            rows_kept: checks.rows_kept,
        })
    }
}

/// Casts and expectations, applied batch by batch.
pub struct RowChecks {
    table: String,
    spec: SilverTable,
    cast_schema: SchemaRef,
    conditions: Vec<Arc<dyn PhysicalExpr>>,
    reports: Vec<ExpectationReport>,
    quarantine: Vec<RecordBatch>,
    dropped: u64,
    rows_in: u64,
    rows_kept: u64,
    first_failure: Option<(String, String)>,
    error: Option<Error>,
}

impl RowChecks {
    fn new(ctx: &SessionContext, table: &str, spec: &SilverTable, schema: &Schema) -> Result<Self> {
        let table_err = |message: String| Error::Table {
            table: table.to_string(),
            message,
        };
        for col in spec.casts.keys() {
            if schema.field_with_name(col).is_err() {
                return Err(table_err(format!(
                    "cast of unknown column `{col}`; the SQL returns: {}",
                    column_list(schema)
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
        let reports = spec
            .expect
            .iter()
            .map(|e| ExpectationReport {
                name: e.name.clone(),
                condition: e.condition.clone(),
                on_violation: e.on_violation,
                violations: 0,
            })
            .collect();
        Ok(RowChecks {
            table: table.to_string(),
            spec: spec.clone(),
            cast_schema,
            conditions,
            reports,
            quarantine: Vec::new(),
            dropped: 0,
            rows_in: 0,
            rows_kept: 0,
            first_failure: None,
            error: None,
        })
    }

    /// The rows of `batch` that pass, cast; the others go to the quarantine with their reason.
    fn apply(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let table = self.table.as_str();
        let table_err = |message: String| Error::Table {
            table: table.to_string(),
            message,
        };
        let n = batch.num_rows();
        self.rows_in += n as u64;
        let mut reasons: Vec<Option<String>> = vec![None; n];
        // 1. casts
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        for (i, field) in self.cast_schema.fields().iter().enumerate() {
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
        let casted = RecordBatch::try_new(self.cast_schema.clone(), columns)
            .context(|| format!("table `{table}`"))?;
        // 2. expectations
        for ((exp, cond), report) in self
            .spec
            .expect
            .iter()
            .zip(&self.conditions)
            .zip(self.reports.iter_mut())
        {
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
                    if self.first_failure.is_none() {
                        let first = (0..n).find(|&r| violated.value(r)).unwrap_or(0);
                        self.first_failure =
                            Some((report.name.clone(), describe_row(&casted, first)));
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
            self.dropped += bad.true_count() as u64;
            let q = filter_record_batch(batch, &bad).context(|| format!("table `{table}`"))?;
            let why: StringArray = reasons.iter().flatten().map(|s| Some(s.as_str())).collect();
            self.quarantine.push(
                with_column(&q, REASON_COLUMN, Arc::new(why))
                    .context(|| format!("table `{table}`"))?,
            );
        }
        let good = not(&bad).context(|| format!("table `{table}`"))?;
        let kept = filter_record_batch(&casted, &good).context(|| format!("table `{table}`"))?;
        self.rows_kept += kept.num_rows() as u64;
        Ok(kept)
    }
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

/// A SQL identifier for a column name, quoted so any name (case, spaces, quotes) survives.
pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Keeps, for each key, the row with the greatest `order_by`. Ties are broken by the other
/// columns so that every runtime keeps the same row. Unless its sorts spill (`bounded`), the
/// SQL only sorts, and [`first_per_key`] keeps the rows of the key columns returned.
fn dedupe_sql(
    table: &str,
    d: &Dedupe,
    schema: &Schema,
    bounded: bool,
) -> Result<(String, Option<Vec<usize>>)> {
    for col in d.key.iter().chain(std::iter::once(&d.order_by)) {
        if schema.field_with_name(col).is_err() {
            return Err(Error::Table {
                table: table.to_string(),
                message: format!(
                    "dedupe names unknown column `{col}`; the table has: {}",
                    column_list(schema)
                ),
            });
        }
    }
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
    if bounded {
        // Under a memory limit with a disk to spill to, the window: DataFusion repartitions
        // it by key, and each partition's sort merges its own spills. The merge of one sort's
        // spills over all rows did not fit a 128 MiB limit (tests/memory.py).
        let sql = format!(
            "SELECT * EXCLUDE (__medallion_rn) FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {}) AS __medallion_rn FROM {INPUT}) WHERE __medallion_rn = 1",
            d.key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", "),
            order.join(", "),
        );
        return Ok((sql, None));
    }
    // Sorted by key, then best first: [`first_per_key`] keeps the first row of each key, the
    // one the window keeps. The key columns were checked above.
    let keys = d
        .key
        .iter()
        .filter_map(|k| schema.index_of(k).ok())
        .collect();
    let by_key = d.key.iter().map(|k| format!("{} ASC", quote(k)));
    let order: Vec<String> = by_key.chain(order).collect();
    let sql = format!("SELECT * FROM {INPUT} ORDER BY {}", order.join(", "));
    Ok((sql, Some(keys)))
}

/// Applies change events by key. For each key the events are ordered by `sequence_by`
/// (events with the same key and sequence are one event delivered twice: one is kept). SCD 1
/// keeps the last event of each key unless it is a delete; SCD 2 keeps every event that is not
/// a delete, from its sequence (`__start_at`) to the next event's (`__end_at`, NULL while
/// current), so a delete closes the version before it.
fn apply_changes_sql(table: &str, a: &ApplyChanges, schema: &Schema) -> Result<String> {
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
                    column_list(schema)
                ),
            });
        }
    }
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
    Ok(sql)
}
