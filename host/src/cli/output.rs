//! Printing query results as a table, CSV or JSON.

use medallion_core::arrow::array::{Array, RecordBatch};
use medallion_core::arrow::util::pretty::pretty_format_batches;

use super::Format;

/// Writes `batches` to stdout in `format`; the table format stops after `max_rows` rows and
/// says how many it left out.
pub fn print_batches(
    batches: &[RecordBatch],
    format: Format,
    max_rows: usize,
) -> anyhow::Result<()> {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    match format {
        Format::Table => {
            let mut shown = Vec::new();
            let mut left = max_rows;
            for b in batches {
                if left == 0 {
                    break;
                }
                let take = b.num_rows().min(left);
                shown.push(b.slice(0, take));
                left -= take;
            }
            outln!("{}", pretty_format_batches(&shown)?)?;
            if total > max_rows {
                outln!("({total} rows, first {max_rows} shown; --max-rows to see more, --format csv for all)")?;
            } else {
                outln!("({total} row{})", if total == 1 { "" } else { "s" })?;
            }
        }
        Format::Csv => {
            let mut w = medallion_core::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(std::io::stdout());
            for b in batches {
                w.write(&nested_as_text(b)?)?;
            }
        }
        Format::Json => {
            let mut w = medallion_core::arrow::json::ArrayWriter::new(std::io::stdout());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            outln!()?;
        }
    }
    Ok(())
}

/// CSV has no lists, maps or structs: such columns are written as their display text
/// (`[1, 2]`, `{a: 1}`).
fn nested_as_text(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    use medallion_core::arrow::array::{ArrayRef, StringArray};
    use medallion_core::arrow::datatypes::{DataType, Field, Schema};
    use medallion_core::arrow::util::display::{ArrayFormatter, FormatOptions};
    let nested =
        |dt: &DataType| dt.is_nested() || matches!(dt, DataType::Dictionary(_, v) if v.is_nested());
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| nested(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if nested(f.data_type()) {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &options)?;
            let text: StringArray = (0..c.len())
                .map(|i| c.is_valid(i).then(|| fmt.value(i).to_string()))
                .collect();
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            columns.push(std::sync::Arc::new(text));
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        columns,
    )?)
}
