//! Strings are scanned as Arrow string views and answered as plain strings.
//!
//! A view is 16 bytes holding the length and, for up to 12 bytes, the string itself: a
//! dictionary page decodes into views that point into the dictionary instead of copying
//! every value, and grouping or comparing short strings compares views instead of bytes
//! through offsets. In wasm, where those byte loops cost the most, TPC-H Q1 (grouped by two
//! one-letter columns) went from ~740 to ~450 ms warm in Node. Results, Delta files and
//! everything a user reads keep plain `Utf8`: Delta stores strings, most Arrow readers
//! expect them, and only queries need the views.

use std::sync::Arc;

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

/// `schema` with its top-level `Utf8` columns read as `Utf8View`.
pub fn read_as_views(schema: &Schema) -> Schema {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View)),
            _ => f.clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// `dt` with every view type, nested ones too (a list aggregated from a view column),
/// replaced by its plain counterpart.
fn plain(dt: &DataType) -> DataType {
    use DataType::*;
    let field = |f: &FieldRef| Arc::new(f.as_ref().clone().with_data_type(plain(f.data_type())));
    match dt {
        Utf8View => Utf8,
        BinaryView => Binary,
        List(f) => List(field(f)),
        LargeList(f) => LargeList(field(f)),
        FixedSizeList(f, n) => FixedSizeList(field(f), *n),
        Struct(fs) => Struct(fs.iter().map(field).collect::<Fields>()),
        Map(f, sorted) => Map(field(f), *sorted),
        Dictionary(k, v) => Dictionary(k.clone(), Box::new(plain(v))),
        other => other.clone(),
    }
}

/// `schema` without view types (see [`plain`]).
pub fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| plain(f.data_type()) != *f.data_type())
    {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(plain(f.data_type())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` cast to `schema`, its [`plain_schema`].
pub fn plain_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(c.clone()),
            false => cast(c, f.data_type()),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `stream` without view types.
pub fn plain_stream(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = plain_schema(&stream.schema());
    if schema == stream.schema() {
        return stream;
    }
    let out = schema.clone();
    let plain = stream.map(move |b| plain_batch(&b?, &out));
    Box::pin(RecordBatchStreamAdapter::new(schema, plain))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        Array, AsArray, Int64Array, ListArray, StringViewArray, StructArray,
    };
    use datafusion::arrow::datatypes::Int32Type;

    use super::*;

    #[test]
    fn views_become_plain_strings_nested_ones_too() {
        let views = Arc::new(StringViewArray::from(vec![
            Some("a"),
            None,
            Some("a string longer than twelve bytes"),
        ]));
        let list = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1)]),
            None,
            Some(vec![]),
        ]));
        let nested = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("s", DataType::Utf8View, true)),
            views.clone() as _,
        )]));
        let batch = RecordBatch::try_from_iter(vec![
            ("v", views as _),
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
            ("l", list as _),
            ("st", nested as _),
        ])
        .unwrap();
        let schema = plain_schema(batch.schema_ref());
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert_eq!(
            schema.field(3).data_type(),
            &DataType::Struct(vec![Field::new("s", DataType::Utf8, true)].into())
        );
        let out = plain_batch(&batch, &schema).unwrap();
        let s = out.column(0).as_string::<i32>();
        assert_eq!(s.value(0), "a");
        assert!(s.is_null(1));
        assert_eq!(s.value(2), "a string longer than twelve bytes");
        let inner = out
            .column(3)
            .as_struct()
            .column(0)
            .as_string::<i32>()
            .clone();
        assert_eq!(inner.value(2), "a string longer than twelve bytes");
        // Columns that were plain already are the same arrays, not copies.
        assert!(Arc::ptr_eq(out.column(1), batch.column(1)));
    }

    #[test]
    fn read_as_views_changes_only_top_level_strings() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("i", DataType::Int64, false),
            Field::new_list("l", Field::new_list_field(DataType::Utf8, true), true),
        ]);
        let views = read_as_views(&schema);
        assert_eq!(views.field(0).data_type(), &DataType::Utf8View);
        assert_eq!(views.field(1).data_type(), &DataType::Int64);
        assert_eq!(views.field(2).data_type(), schema.field(2).data_type());
        assert_eq!(plain_schema(&Arc::new(views)).as_ref(), &schema);
    }
}
