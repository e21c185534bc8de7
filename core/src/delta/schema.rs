//! Arrow schemas ↔ Delta `schemaString`, and the casts that make any Arrow batch storable in
//! a Delta table (Delta has no unsigned integers, string views or naive timestamps without a
//! table feature, so those are widened or normalised before writing).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use serde_json::{json, Value};

use crate::error::{Context, Error, Result};
use crate::types::timestamp_type;

/// The Arrow type Medallion stores for `dt`.
fn storable(dt: &DataType) -> Result<DataType, String> {
    use DataType::*;
    Ok(match dt {
        Null | Utf8View | LargeUtf8 | Utf8 => Utf8,
        Time32(_) | Time64(_) => Utf8,
        BinaryView | LargeBinary | Binary | FixedSizeBinary(_) => Binary,
        Boolean | Int8 | Int16 | Int32 | Int64 | Float32 | Float64 | Date32 => dt.clone(),
        UInt8 => Int16,
        UInt16 => Int32,
        UInt32 | UInt64 => Int64,
        Float16 => Float32,
        Date64 => Date32,
        Timestamp(_, _) => timestamp_type(),
        Duration(_) => Int64,
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) => Decimal128(*p, *s),
        Decimal256(p, s) if *p <= 38 => Decimal128(*p, *s),
        Dictionary(_, value) => storable(value)?,
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) | FixedSizeList(f, _) => {
            // Delta names the element `element`, as Parquet's list spec does.
            List(Arc::new(Field::new(
                "element",
                storable(f.data_type())?,
                true,
            )))
        }
        Struct(fields) => Struct(
            fields
                .iter()
                .map(|f| storable_field(f))
                .collect::<Result<Fields, String>>()?,
        ),
        Map(f, sorted) => Map(Arc::new(storable_field(f)?), *sorted),
        other => return Err(format!("type {other} cannot be stored in a Delta table")),
    })
}

fn storable_field(f: &Field) -> Result<Field, String> {
    Ok(Field::new(f.name(), storable(f.data_type())?, true))
}

/// The schema a batch of `schema` has once made storable; every column nullable.
pub fn delta_compatible_schema(schema: &Schema) -> Result<SchemaRef, String> {
    Ok(Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| storable_field(f).map_err(|m| format!("column `{}`: {m}", f.name())))
            .collect::<Result<Vec<_>, String>>()?,
    )))
}

/// Casts a batch to its storable schema (see [`delta_compatible_schema`]).
pub fn delta_compatible_batch(batch: &RecordBatch, table: &str) -> Result<RecordBatch> {
    let target = delta_compatible_schema(&batch.schema()).map_err(|message| Error::Table {
        table: table.to_string(),
        message,
    })?;
    cast_batch(batch, &target, table)
}

/// Casts every column of `batch` to the type of the same-named field of `target`;
/// columns missing from the batch become nulls.
pub fn cast_batch(batch: &RecordBatch, target: &SchemaRef, table: &str) -> Result<RecordBatch> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns = target
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(col) if col.data_type() == f.data_type() => Ok(col.clone()),
            Some(col) => cast_with_options(col, f.data_type(), &options)
                .context(|| format!("table `{table}`: column `{}`", f.name())),
            None => Ok(datafusion::arrow::array::new_null_array(
                f.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(target.clone(), columns)
        .context(|| format!("table `{table}`: assembling a batch"))
}

fn delta_type(dt: &DataType) -> Result<Value, String> {
    use DataType::*;
    Ok(match dt {
        Utf8 => json!("string"),
        Binary => json!("binary"),
        Boolean => json!("boolean"),
        Int8 => json!("byte"),
        Int16 => json!("short"),
        Int32 => json!("integer"),
        Int64 => json!("long"),
        Float32 => json!("float"),
        Float64 => json!("double"),
        Date32 => json!("date"),
        Timestamp(_, Some(_)) => json!("timestamp"),
        Timestamp(_, None) => json!("timestamp_ntz"),
        Decimal128(p, s) => json!(format!("decimal({p},{s})")),
        List(f) => json!({
            "type": "array",
            "elementType": delta_type(f.data_type())?,
            "containsNull": true,
        }),
        Struct(fields) => struct_type(fields)?,
        Map(f, _) => match f.data_type() {
            Struct(kv) if kv.len() == 2 => json!({
                "type": "map",
                "keyType": delta_type(kv[0].data_type())?,
                "valueType": delta_type(kv[1].data_type())?,
                "valueContainsNull": true,
            }),
            other => return Err(format!("map entries of type {other}")),
        },
        other => return Err(format!("type {other} has no Delta equivalent")),
    })
}

fn struct_type(fields: &Fields) -> Result<Value, String> {
    let fields = fields
        .iter()
        .map(|f| {
            Ok(json!({
                "name": f.name(),
                "type": delta_type(f.data_type())?,
                "nullable": f.is_nullable(),
                "metadata": {},
            }))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(json!({ "type": "struct", "fields": fields }))
}

/// The `schemaString` of a storable schema.
pub fn delta_schema_string(schema: &Schema) -> Result<String, String> {
    Ok(struct_type(schema.fields())?.to_string())
}

fn arrow_type(v: &Value) -> Result<DataType, String> {
    if let Some(name) = v.as_str() {
        return Ok(match name {
            "string" => DataType::Utf8,
            "binary" => DataType::Binary,
            "boolean" => DataType::Boolean,
            "byte" => DataType::Int8,
            "short" => DataType::Int16,
            "integer" => DataType::Int32,
            "long" => DataType::Int64,
            "float" => DataType::Float32,
            "double" => DataType::Float64,
            "date" => DataType::Date32,
            "timestamp" => timestamp_type(),
            "timestamp_ntz" => {
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None)
            }
            other => {
                let inner = other
                    .strip_prefix("decimal(")
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(|| format!("unknown Delta type `{other}`"))?;
                let (p, s) = inner
                    .split_once(',')
                    .ok_or_else(|| format!("bad decimal type `{other}`"))?;
                DataType::Decimal128(
                    p.trim()
                        .parse()
                        .map_err(|_| format!("bad decimal `{other}`"))?,
                    s.trim()
                        .parse()
                        .map_err(|_| format!("bad decimal `{other}`"))?,
                )
            }
        });
    }
    match v.get("type").and_then(Value::as_str) {
        Some("struct") => Ok(DataType::Struct(struct_fields(v)?)),
        Some("array") => Ok(DataType::List(Arc::new(Field::new(
            "element",
            arrow_type(&v["elementType"])?,
            true,
        )))),
        Some("map") => Ok(DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(&v["keyType"])?, false),
                    Field::new("value", arrow_type(&v["valueType"])?, true),
                ])),
                false,
            )),
            false,
        )),
        _ => Err(format!("unknown Delta type {v}")),
    }
}

fn struct_fields(v: &Value) -> Result<Fields, String> {
    let fields = v["fields"]
        .as_array()
        .ok_or_else(|| "struct without fields".to_string())?;
    fields
        .iter()
        .map(|f| {
            let name = f["name"]
                .as_str()
                .ok_or_else(|| "field without a name".to_string())?;
            let nullable = f["nullable"].as_bool().unwrap_or(true);
            Ok(Field::new(name, arrow_type(&f["type"])?, nullable))
        })
        .collect()
}

/// The Arrow schema of a Delta `schemaString`.
pub fn arrow_schema_from_delta(schema_string: &str) -> Result<Schema, String> {
    let v: Value = serde_json::from_str(schema_string)
        .map_err(|e| format!("schemaString is not JSON: {e}"))?;
    Ok(Schema::new(struct_fields(&v)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    #[test]
    fn schema_round_trips_through_delta() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::UInt32, false),
            Field::new("name", DataType::Utf8View, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ]);
        let stored = delta_compatible_schema(&schema).unwrap();
        let text = delta_schema_string(&stored).unwrap();
        assert!(text.contains(r#""type":"long""#), "{text}");
        assert!(text.contains(r#""type":"timestamp""#), "{text}");
        let back = arrow_schema_from_delta(&text).unwrap();
        assert_eq!(back.field(0).data_type(), &DataType::Int64);
        assert_eq!(back.field(2).data_type(), &timestamp_type());
        assert_eq!(back.field(3).data_type(), &DataType::Decimal128(10, 2));
    }
}
