//! Partitioned tables: rows split by the values of the partition columns into one folder per
//! value (`region=North/…`, Hive-style), the values recorded as strings in each `add`, and
//! read back as typed columns that scans can prune on.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;

use crate::error::{Context, Error, Result};

/// The folder name Hive, Spark and delta-rs use for a NULL partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Types a partition column may have in tables Medallion writes: those whose string form in
/// the log is unambiguous.
fn partitionable(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Date32
    )
}

/// Checks that `columns` can partition a table of `schema`, naming the first that cannot.
pub fn check_partition_columns(table: &str, schema: &Schema, columns: &[String]) -> Result<()> {
    for c in columns {
        let field = schema.field_with_name(c).map_err(|_| Error::Table {
            table: table.to_string(),
            message: format!("partition column `{c}` is not a column of the table"),
        })?;
        if !partitionable(field.data_type()) {
            return Err(Error::Table {
                table: table.to_string(),
                message: format!(
                    "partition column `{c}` is {}; partition by a string, integer, boolean or date column",
                    field.data_type()
                ),
            });
        }
    }
    if columns.len() == schema.fields().len() && !columns.is_empty() {
        return Err(Error::Table {
            table: table.to_string(),
            message: "every column is a partition column; data files need at least one other"
                .into(),
        });
    }
    Ok(())
}

/// Escapes a value for a folder name the way Hive does (`/`, `=`, `%`, `:` … as `%XX`).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let needs = c.is_ascii_control()
            || matches!(
                c,
                '"' | '#'
                    | '%'
                    | '\''
                    | '*'
                    | '/'
                    | ':'
                    | '='
                    | '?'
                    | '\\'
                    | '\x7f'
                    | '{'
                    | '['
                    | ']'
                    | '^'
            );
        if needs {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `a=1/b=x%2Fy/`: the folder of one partition (empty for an unpartitioned table).
pub fn partition_dir(columns: &[String], values: &[Option<String>]) -> String {
    columns
        .iter()
        .zip(values)
        .map(|(c, v)| {
            let v = match v {
                Some(v) if !v.is_empty() => escape(v),
                _ => NULL_PARTITION.to_string(),
            };
            format!("{}={v}/", escape(c))
        })
        .collect()
}

/// Rows of one partition: its values and the batches without the partition columns.
pub type PartitionRows = (Vec<Option<String>>, Vec<RecordBatch>);

/// Splits `batches` (of `schema`) by the values of `columns`, in the order values first appear.
/// Unpartitioned tables get one group holding the batches as they are.
pub fn split(
    table: &str,
    schema: &SchemaRef,
    columns: &[String],
    batches: &[RecordBatch],
) -> Result<Vec<PartitionRows>> {
    if columns.is_empty() {
        return Ok(vec![(vec![], batches.to_vec())]);
    }
    let indices: Vec<usize> = columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<_, _>>()
        .context(|| format!("table `{table}`: partition columns"))?;
    let data_fields: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !indices.contains(i))
        .collect();
    let data_schema = Arc::new(
        schema
            .project(&data_fields)
            .context(|| format!("table `{table}`"))?,
    );
    let mut order: Vec<Vec<Option<String>>> = Vec::new();
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<RecordBatch>> = BTreeMap::new();
    for batch in batches {
        let strings: Vec<ArrayRef> = indices
            .iter()
            .map(|i| cast(batch.column(*i), &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()
            .context(|| format!("table `{table}`: partition values"))?;
        let strings: Vec<&StringArray> = strings
            .iter()
            .map(|a| a.as_any().downcast_ref::<StringArray>())
            .collect::<Option<_>>()
            .ok_or_else(|| Error::Table {
                table: table.to_string(),
                message: "partition values did not convert to strings".into(),
            })?;
        let mut rows: BTreeMap<Vec<Option<String>>, Vec<u32>> = BTreeMap::new();
        for r in 0..batch.num_rows() {
            let key: Vec<Option<String>> = strings
                .iter()
                .map(|s| (!s.is_null(r)).then(|| s.value(r).to_string()))
                .collect();
            rows.entry(key).or_default().push(r as u32);
        }
        for (key, rows) in rows {
            let idx = UInt32Array::from(rows);
            let columns = data_fields
                .iter()
                .map(|i| take(batch.column(*i), &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()
                .context(|| format!("table `{table}`: splitting by partition"))?;
            let part = RecordBatch::try_new(data_schema.clone(), columns)
                .context(|| format!("table `{table}`: splitting by partition"))?;
            if !groups.contains_key(&key) {
                order.push(key.clone());
            }
            groups.entry(key).or_default().push(part);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let b = groups.remove(&k).unwrap_or_default();
            (k, b)
        })
        .collect())
}

/// A partition value from the log as a typed scalar of `field`'s type (NULL for `None`).
pub fn typed_value(field: &Field, value: Option<&str>, location: &str) -> Result<ScalarValue> {
    let Some(v) = value else {
        return ScalarValue::try_from(field.data_type())
            .context(|| format!("{location}: partition column `{}`", field.name()));
    };
    let s = StringArray::from(vec![v]);
    let typed = cast(&s, field.data_type())
        .ok()
        .filter(|a| !a.is_null(0))
        .ok_or_else(|| Error::Format {
            location: location.to_string(),
            message: format!(
                "partition value `{v}` of column `{}` is not a valid {}",
                field.name(),
                field.data_type()
            ),
        })?;
    ScalarValue::try_from_array(&typed, 0)
        .context(|| format!("{location}: partition column `{}`", field.name()))
}

/// The schema of a table's data files: its schema without the partition columns.
pub fn file_schema(schema: &Schema, columns: &[String]) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !columns.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn folders_escape_awkward_values() {
        let cols = vec!["region".to_string(), "n".to_string()];
        assert_eq!(
            partition_dir(&cols, &[Some("a/b=c%".into()), None]),
            "region=a%2Fb%3Dc%25/n=__HIVE_DEFAULT_PARTITION__/"
        );
        assert_eq!(
            partition_dir(&cols[..1], &[Some("São Paulo".into())]),
            "region=São Paulo/"
        );
    }

    #[test]
    fn split_groups_rows_and_drops_partition_columns() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Utf8, true),
            Field::new("x", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("b"),
                    None,
                    Some("b"),
                    Some("a"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let parts = split("t", &schema, &["p".into()], &[batch]).unwrap();
        let summary: Vec<(Option<String>, usize, usize)> = parts
            .iter()
            .map(|(k, b)| (k[0].clone(), b[0].num_rows(), b[0].num_columns()))
            .collect();
        assert_eq!(summary.len(), 3);
        assert!(summary.contains(&(Some("b".into()), 2, 1)));
        assert!(summary.contains(&(None, 1, 1)));
        assert!(summary.contains(&(Some("a".into()), 1, 1)));
    }

    #[test]
    fn typed_values_parse_or_name_the_column() {
        let f = Field::new("d", DataType::Date32, true);
        assert!(typed_value(&f, Some("2024-02-29"), "t").is_ok());
        assert!(typed_value(&f, None, "t").unwrap().is_null());
        let err = typed_value(&f, Some("yesterday"), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`d`") && err.contains("yesterday"), "{err}");
    }
}
