//! Printing query results as a table, CSV or JSON.

use medallion_core::arrow::array::RecordBatch;
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
            println!("{}", pretty_format_batches(&shown)?);
            if total > max_rows {
                println!("({total} rows, first {max_rows} shown; --max-rows to see more, --format csv for all)");
            } else {
                println!("({total} row{})", if total == 1 { "" } else { "s" });
            }
        }
        Format::Csv => {
            let mut w = medallion_core::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(std::io::stdout());
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = medallion_core::arrow::json::ArrayWriter::new(std::io::stdout());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            println!();
        }
    }
    Ok(())
}
