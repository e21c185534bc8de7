//! Per-file statistics for `add` actions (`numRecords`, `nullCount`, `minValues`,
//! `maxValues`), which let readers skip files. Bounds are exact or absent: integers and
//! decimals are written digit for digit (never through f64, which rounds 64-bit integers and
//! decimals and could make a reader skip a file holding a match); timestamps, which the
//! protocol writes in milliseconds, are widened outwards; long strings and types without a
//! simple order get no bounds.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat, max, max_string, min, min_string};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, DecimalType, Float64Type, Int64Type,
    TimestampMicrosecondType,
};
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::file::metadata::ParquetMetaData;
use serde::Serialize;
use serde_json::value::RawValue;

const MAX_STRING_STAT: usize = 32;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    num_records: usize,
    min_values: BTreeMap<String, Box<RawValue>>,
    max_values: BTreeMap<String, Box<RawValue>>,
    null_count: BTreeMap<String, usize>,
}

/// Statistics of the batches of one data file, as the JSON string an `add` carries.
pub fn file_stats(batches: &[RecordBatch]) -> String {
    let mut stats = Stats {
        num_records: batches.iter().map(|b| b.num_rows()).sum(),
        min_values: BTreeMap::new(),
        max_values: BTreeMap::new(),
        null_count: BTreeMap::new(),
    };
    if let Some(first) = batches.first() {
        let schema = first.schema();
        for (i, field) in schema.fields().iter().enumerate() {
            if matches!(
                field.data_type(),
                DataType::Struct(_) | DataType::List(_) | DataType::Map(_, _)
            ) {
                continue;
            }
            let chunks: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            let Ok(column) = concat(&chunks) else {
                continue;
            };
            stats
                .null_count
                .insert(field.name().clone(), column.null_count());
            if let Some((lo, hi)) = bounds(field.data_type(), &column) {
                stats.min_values.insert(field.name().clone(), lo);
                stats.max_values.insert(field.name().clone(), hi);
            }
        }
    }
    serde_json::to_string(&stats)
        .unwrap_or_else(|_| format!("{{\"numRecords\":{}}}", stats.num_records))
}

/// Statistics of a Parquet data file another writer made (a cluster's executors), from its
/// footer alone: the row count, and per column the null count and bounds where every row
/// group records them exactly; what the footer does not say is left out.
pub fn footer_stats(metadata: &ParquetMetaData, schema: &Schema) -> String {
    let groups = metadata.row_groups();
    let mut stats = Stats {
        num_records: groups.iter().map(|g| g.num_rows().max(0) as usize).sum(),
        min_values: BTreeMap::new(),
        max_values: BTreeMap::new(),
        null_count: BTreeMap::new(),
    };
    let parquet_schema = metadata.file_metadata().schema_descr();
    for field in schema.fields() {
        if matches!(
            field.data_type(),
            DataType::Struct(_) | DataType::List(_) | DataType::Map(_, _)
        ) {
            continue;
        }
        let Ok(converter) = StatisticsConverter::try_new(field.name(), schema, parquet_schema)
        else {
            continue;
        };
        let converter = converter.with_missing_null_counts_as_zero(false);
        let Ok(nulls) = converter.row_group_null_counts(groups) else {
            continue;
        };
        if nulls.null_count() > 0 {
            continue;
        }
        let nulls: Vec<u64> = nulls.values().to_vec();
        stats
            .null_count
            .insert(field.name().clone(), nulls.iter().sum::<u64>() as usize);
        let (Ok(mins), Ok(maxes), Ok(min_exact), Ok(max_exact)) = (
            converter.row_group_mins(groups),
            converter.row_group_maxes(groups),
            converter.row_group_is_min_value_exact(groups),
            converter.row_group_is_max_value_exact(groups),
        ) else {
            continue;
        };
        // A group without a bound must hold only nulls, and every bound must be exact;
        // otherwise the file's bounds are unknown.
        let known = (0..groups.len()).all(|i| {
            let all_null = nulls[i] == groups[i].num_rows().max(0) as u64;
            all_null
                || (mins.is_valid(i)
                    && maxes.is_valid(i)
                    && min_exact.is_valid(i)
                    && min_exact.value(i)
                    && max_exact.is_valid(i)
                    && max_exact.value(i))
        });
        if !known {
            continue;
        }
        if let (Some((lo, _)), Some((_, hi))) = (
            bounds(field.data_type(), &mins),
            bounds(field.data_type(), &maxes),
        ) {
            stats.min_values.insert(field.name().clone(), lo);
            stats.max_values.insert(field.name().clone(), hi);
        }
    }
    serde_json::to_string(&stats)
        .unwrap_or_else(|_| format!("{{\"numRecords\":{}}}", stats.num_records))
}

/// A JSON value as raw text.
fn raw(v: impl Serialize) -> Option<Box<RawValue>> {
    serde_json::to_string(&v)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok())
}

/// A JSON number written exactly as `digits` (already a valid JSON number).
fn number(digits: String) -> Option<Box<RawValue>> {
    RawValue::from_string(digits).ok()
}

fn bounds(dt: &DataType, col: &ArrayRef) -> Option<(Box<RawValue>, Box<RawValue>)> {
    if col.null_count() == col.len() {
        return None;
    }
    match dt {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let c = cast(col, &DataType::Int64).ok()?;
            let c = c.as_primitive::<Int64Type>();
            Some((raw(min(c)?)?, raw(max(c)?)?))
        }
        DataType::Float32 | DataType::Float64 => {
            // f32 → f64 is exact; serde_json prints the shortest text that reads back as the
            // same f64.
            let c = cast(col, &DataType::Float64).ok()?;
            let c = c.as_primitive::<Float64Type>();
            let (lo, hi) = (min(c)?, max(c)?);
            if !lo.is_finite() || !hi.is_finite() || c.values().iter().any(|v| v.is_nan()) {
                return None;
            }
            Some((raw(lo)?, raw(hi)?))
        }
        DataType::Decimal128(p, s) => {
            let c = col.as_primitive::<Decimal128Type>();
            let text = |v: i128| number(Decimal128Type::format_decimal(v, *p, *s));
            Some((text(min(c)?)?, text(max(c)?)?))
        }
        DataType::Date32 => {
            let c = col.as_primitive::<Date32Type>();
            let day = |d: i32| {
                chrono::DateTime::from_timestamp(d as i64 * 86_400, 0)
                    .map(|t| t.format("%Y-%m-%d").to_string())
            };
            Some((raw(day(min(c)?)?)?, raw(day(max(c)?)?)?))
        }
        DataType::Timestamp(_, _) => {
            let c = cast(
                col,
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
            )
            .ok()?;
            let c = c.as_primitive::<TimestampMicrosecondType>();
            let ms = |us: i64, up: bool| {
                let m = if up {
                    us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0)
                } else {
                    us.div_euclid(1000)
                };
                chrono::DateTime::from_timestamp_millis(m)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            };
            Some((raw(ms(min(c)?, false)?)?, raw(ms(max(c)?, true)?)?))
        }
        DataType::Utf8 => {
            let c = col.as_string::<i32>();
            let (lo, hi) = (min_string(c)?, max_string(c)?);
            if lo.chars().count() > MAX_STRING_STAT || hi.chars().count() > MAX_STRING_STAT {
                return None;
            }
            Some((raw(lo)?, raw(hi)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use serde_json::Value;
    use std::sync::Arc;

    #[test]
    fn stats_span_batches_and_count_nulls() {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("n", DataType::Int32, true),
            datafusion::arrow::datatypes::Field::new("s", DataType::Utf8, true),
        ]));
        let b1 = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![Some(5), None])),
                Arc::new(StringArray::from(vec!["m", "z"])),
            ],
        )
        .unwrap();
        let b2 = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(-3)])),
                Arc::new(StringArray::from(vec!["a"])),
            ],
        )
        .unwrap();
        let v: Value = serde_json::from_str(&file_stats(&[b1, b2])).unwrap();
        assert_eq!(v["numRecords"], 3);
        assert_eq!(v["minValues"]["n"], -3);
        assert_eq!(v["maxValues"]["n"], 5);
        assert_eq!(v["nullCount"]["n"], 1);
        assert_eq!(v["minValues"]["s"], "a");
        assert_eq!(v["maxValues"]["s"], "z");
    }

    #[test]
    fn big_integers_and_decimals_are_exact() {
        use datafusion::arrow::array::{Decimal128Array, Int64Array};
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("i", DataType::Int64, true),
            datafusion::arrow::datatypes::Field::new("d", DataType::Decimal128(38, 10), true),
        ]));
        let big = 9_007_199_254_740_993_i64; // 2^53 + 1: not an f64
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![big, big - 1])),
                Arc::new(
                    Decimal128Array::from(vec![12_345_678_901_234_567_890_123_456_789_i128, -1])
                        .with_precision_and_scale(38, 10)
                        .unwrap(),
                ),
            ],
        )
        .unwrap();
        let text = file_stats(&[batch]);
        assert!(text.contains("\"i\":9007199254740993"), "{text}");
        assert!(text.contains("\"i\":9007199254740992"), "{text}");
        assert!(
            text.contains("\"d\":1234567890123456789.0123456789"),
            "{text}"
        );
        assert!(text.contains("\"d\":-0.0000000001"), "{text}");
    }
}
