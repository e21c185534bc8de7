//! Whether a Parquet scan should decode its filter's columns first and the other columns
//! only where rows pass ([`FilterPushdown::Auto`]).
//!
//! Late materialisation pays when few rows pass and the filter's columns are a small part of
//! what the scan reads: a point lookup (`WHERE id = 42`) then reads ~one column instead of
//! every column of the row groups its statistics could not rule out. It costs when most rows
//! pass (TPC-H Q1's date range) or when the filter's columns are most of the bytes (Q6): each
//! row group is then read in two rounds of requests for the same bytes. Selectivity is not
//! known before reading, so the rule takes an equality as the sign of a selective filter and
//! the footer's column chunk sizes for the bytes.

use std::collections::HashSet;

use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::parquet::file::metadata::ParquetMetaData;

use crate::bridge::parquet_reader::FilterPushdown;

/// At most this share of the scanned bytes may be the filter's for `Auto` to push it down.
const FILTER_SHARE: (u64, u64) = (1, 4);

/// Whether `filters` of a scan reading `columns` (the projection; the filter's own columns
/// are added) should be evaluated while decoding, given the footer of one of its files.
pub fn push_down(
    mode: FilterPushdown,
    filters: &[Expr],
    columns: &[&str],
    footer: Option<&ParquetMetaData>,
) -> bool {
    match mode {
        FilterPushdown::Always => !filters.is_empty(),
        FilterPushdown::Never => false,
        FilterPushdown::Auto => {
            let Some(footer) = footer else {
                return false;
            };
            has_equality(filters) && filter_bytes_are_few(filters, columns, footer)
        }
    }
}

/// Whether some conjunct is `column = literal`, `column IN (literals)`, or an OR of those
/// (DataFusion writes a short IN list as one).
pub fn has_equality(filters: &[Expr]) -> bool {
    filters.iter().flat_map(split_conjunction).any(is_equality)
}

fn is_equality(e: &Expr) -> bool {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => (is_column(left) && is_literal(right)) || (is_literal(left) && is_column(right)),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => is_equality(left) && is_equality(right),
        Expr::InList(list) => {
            !list.negated && is_column(&list.expr) && list.list.iter().all(is_literal)
        }
        _ => false,
    }
}

fn is_column(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Cast(c) => is_column(&c.expr),
        Expr::TryCast(c) => is_column(&c.expr),
        _ => false,
    }
}

fn is_literal(e: &Expr) -> bool {
    match e {
        Expr::Literal(..) => true,
        Expr::Cast(c) => is_literal(&c.expr),
        Expr::TryCast(c) => is_literal(&c.expr),
        _ => false,
    }
}

/// Whether the filter's columns hold at most [`FILTER_SHARE`] of the compressed bytes of all
/// the columns the scan reads, over the footer's row groups.
fn filter_bytes_are_few(filters: &[Expr], columns: &[&str], footer: &ParquetMetaData) -> bool {
    let filtered: HashSet<String> = filters
        .iter()
        .flat_map(|f| f.column_refs())
        .map(|c| c.name.clone())
        .collect();
    let read: HashSet<&str> = columns
        .iter()
        .copied()
        .chain(filtered.iter().map(String::as_str))
        .collect();
    let (mut filter_bytes, mut read_bytes) = (0u64, 0u64);
    for row_group in footer.row_groups() {
        for chunk in row_group.columns() {
            // A nested column's leaves all count for its top-level name.
            let Some(root) = chunk.column_descr().path().parts().first() else {
                continue;
            };
            let bytes = chunk.compressed_size().max(0) as u64;
            if read.contains(root.as_str()) {
                read_bytes += bytes;
            }
            if filtered.contains(root) {
                filter_bytes += bytes;
            }
        }
    }
    filter_bytes > 0 && filter_bytes * FILTER_SHARE.1 <= read_bytes * FILTER_SHARE.0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    use datafusion::prelude::{col, lit};

    use super::*;

    /// A footer of a file with a small `id` column and a large `text` column.
    fn footer() -> ParquetMetaData {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("kind", DataType::Int64, false),
            Field::new("text", DataType::Utf8, false),
        ]));
        let n = 10_000;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 3))),
                Arc::new(StringArray::from_iter_values((0..n).map(|i| {
                    format!("row {i} with a long and varied text {}", i * 7919)
                }))),
            ],
        )
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        SerializedFileReader::new(bytes::Bytes::from(bytes))
            .unwrap()
            .metadata()
            .clone()
    }

    #[test]
    fn auto_pushes_down_a_point_lookup_over_few_bytes_only() {
        let footer = footer();
        let all = ["id", "kind", "text"];
        let auto = |filters: &[Expr], columns: &[&str]| {
            push_down(FilterPushdown::Auto, filters, columns, Some(&footer))
        };
        assert!(auto(&[col("id").eq(lit(42i64))], &all));
        assert!(auto(&[lit(42i64).eq(col("id"))], &all));
        assert!(auto(
            &[col("id").in_list(vec![lit(1i64), lit(2i64)], false)],
            &all
        ));
        assert!(auto(
            &[col("id").eq(lit(1i64)).and(col("kind").gt(lit(0i64)))],
            &all
        ));
        assert!(auto(
            &[col("id").eq(lit(1i64)).or(col("id").eq(lit(2i64)))],
            &all
        ));
        assert!(!auto(
            &[col("id").eq(lit(1i64)).or(col("id").gt(lit(2i64)))],
            &all
        ));
        // A range, a negated list, a comparison of two columns: no sign of selectivity.
        assert!(!auto(&[col("id").lt_eq(lit(42i64))], &all));
        assert!(!auto(&[col("id").in_list(vec![lit(1i64)], true)], &all));
        assert!(!auto(&[col("id").eq(col("kind"))], &all));
        // The filter's column is most of what the scan reads.
        assert!(!auto(&[col("text").eq(lit("x"))], &all));
        assert!(!auto(&[col("id").eq(lit(42i64))], &["id", "kind"]));
        // No footer, no filter.
        assert!(!push_down(
            FilterPushdown::Auto,
            &[col("id").eq(lit(1i64))],
            &all,
            None
        ));
        assert!(!auto(&[], &all));
        assert!(push_down(
            FilterPushdown::Always,
            &[col("text").eq(lit("x"))],
            &all,
            None
        ));
        assert!(!push_down(
            FilterPushdown::Never,
            &[col("id").eq(lit(1i64))],
            &all,
            Some(&footer)
        ));
    }
}
