//! Per-file statistics for `add` actions (`numRecords`, `nullCount`, `minValues`,
//! `maxValues`), which let readers skip files. Written for top-level columns whose values
//! order simply; bounds are widened where they are rounded (timestamps to milliseconds,
//! long strings are left out) so a reader never skips a file that holds a match.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, max, max_string, min, min_string};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int64Type, TimestampMicrosecondType,
};
use serde_json::{json, Map, Value};

const MAX_STRING_STAT: usize = 32;

/// Statistics of the batches of one data file, as the JSON string an `add` carries.
pub fn file_stats(batches: &[RecordBatch]) -> String {
    let Some(first) = batches.first() else {
        return json!({ "numRecords": 0 }).to_string();
    };
    let schema = first.schema();
    let num_records: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut nulls = Map::new();
    let mut mins = Map::new();
    let mut maxs = Map::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let columns: Vec<&ArrayRef> = batches.iter().map(|b| b.column(i)).collect();
        let null_count: usize = columns.iter().map(|c| c.null_count()).sum();
        if matches!(
            field.data_type(),
            DataType::Struct(_) | DataType::List(_) | DataType::Map(_, _)
        ) {
            continue;
        }
        nulls.insert(field.name().clone(), json!(null_count));
        if let Some((lo, hi)) = bounds(field.data_type(), &columns) {
            mins.insert(field.name().clone(), lo);
            maxs.insert(field.name().clone(), hi);
        }
    }
    json!({
        "numRecords": num_records,
        "minValues": mins,
        "maxValues": maxs,
        "nullCount": nulls,
    })
    .to_string()
}

fn bounds(dt: &DataType, columns: &[&ArrayRef]) -> Option<(Value, Value)> {
    let mut lo: Option<Value> = None;
    let mut hi: Option<Value> = None;
    for col in columns {
        let (l, h) = column_bounds(dt, col)?;
        lo = Some(match lo {
            Some(cur) if !less(&l, &cur) => cur,
            _ => l,
        });
        hi = Some(match hi {
            Some(cur) if !less(&cur, &h) => cur,
            _ => h,
        });
    }
    Some((lo?, hi?))
}

fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(f64::NAN) < y.as_f64().unwrap_or(f64::NAN)
        }
        (Value::String(x), Value::String(y)) => x < y,
        _ => false,
    }
}

fn column_bounds(dt: &DataType, col: &ArrayRef) -> Option<(Value, Value)> {
    if col.null_count() == col.len() {
        return None;
    }
    match dt {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let c = cast(col, &DataType::Int64).ok()?;
            let c = c.as_primitive::<Int64Type>();
            Some((json!(min(c)?), json!(max(c)?)))
        }
        DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            let c = cast(col, &DataType::Float64).ok()?;
            let c = c.as_primitive::<Float64Type>();
            let (lo, hi) = (min(c)?, max(c)?);
            if lo.is_nan() || hi.is_nan() {
                return None;
            }
            Some((json!(lo), json!(hi)))
        }
        DataType::Date32 => {
            let c = col.as_primitive::<Date32Type>();
            let day = |d: i32| {
                chrono::DateTime::from_timestamp(d as i64 * 86_400, 0)
                    .map(|t| t.format("%Y-%m-%d").to_string())
            };
            Some((json!(day(min(c)?)?), json!(day(max(c)?)?)))
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
            Some((json!(ms(min(c)?, false)?), json!(ms(max(c)?, true)?)))
        }
        DataType::Utf8 => {
            let c = col.as_string::<i32>();
            let (lo, hi) = (min_string(c)?, max_string(c)?);
            if lo.chars().count() > MAX_STRING_STAT || hi.chars().count() > MAX_STRING_STAT {
                return None;
            }
            Some((json!(lo), json!(hi)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
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
}
