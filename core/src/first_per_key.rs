//! The first row of each run of equal keys in a stream sorted by those keys: how a dedupe
//! keeps one row per key.
//!
//! `row_number() OVER (PARTITION BY key ORDER BY …) = 1` gives the same rows, but DataFusion's
//! streaming window keeps a state per partition keyed by `ScalarValue`s, which for a key that
//! is nearly unique (an event id) cost more than the sort itself: the clicks dedupe of the
//! retail pipeline took twice as long. Here each batch's keys become Arrow's row format, and
//! a row is kept when its key bytes differ from the row before (across batches too).

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::error::Result;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

/// Keeps the first row of each run of equal values of the columns `keys` (NULLs equal to
/// each other, as in PARTITION BY) in `sorted`, which must be sorted by them.
pub fn first_per_key(
    sorted: SendableRecordBatchStream,
    keys: &[usize],
) -> Result<SendableRecordBatchStream> {
    let schema = sorted.schema();
    let converter = RowConverter::new(
        keys.iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?;
    let keys = keys.to_vec();
    let mut last: Option<OwnedRow> = None;
    let kept = sorted.map(move |batch| {
        let batch = batch?;
        let n = batch.num_rows();
        if n == 0 {
            return Ok(batch);
        }
        let columns: Vec<ArrayRef> = keys.iter().map(|&i| batch.column(i).clone()).collect();
        let rows = converter.convert_columns(&columns)?;
        let first = |i: usize| match i {
            0 => last.as_ref().is_none_or(|l| l.row() != rows.row(0)),
            _ => rows.row(i) != rows.row(i - 1),
        };
        let keep = BooleanArray::new(BooleanBuffer::collect_bool(n, first), None);
        last = Some(rows.row(n - 1).owned());
        Ok(filter_record_batch(&batch, &keep)?)
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, kept)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn keeps_the_first_row_of_each_key_across_batches() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("j", DataType::Int64, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = |k: Vec<Option<&str>>, j: Vec<Option<i64>>, v: Vec<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(k)),
                    Arc::new(Int64Array::from(j)),
                    Arc::new(Int64Array::from(v)),
                ],
            )
            .unwrap()
        };
        let batches = vec![
            batch(
                vec![None, None, Some("a"), Some("a")],
                vec![Some(1), Some(1), Some(1), Some(2)],
                vec![1, 2, 3, 4],
            ),
            batch(vec![Some("a")], vec![Some(2)], vec![5]),
            batch(vec![], vec![], vec![]),
            batch(
                vec![Some("a"), Some("b"), Some("b")],
                vec![Some(2), None, None],
                vec![6, 7, 8],
            ),
        ];
        let stream: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ));
        let kept = futures::executor::block_on(async {
            first_per_key(stream, &[0, 1])
                .unwrap()
                .collect::<Vec<_>>()
                .await
        });
        let v: Vec<i64> = kept
            .into_iter()
            .flat_map(|b| {
                b.unwrap()
                    .column(2)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        // (NULL,1), (a,1), (a,2) — which goes on in the next batches —, (b,NULL).
        assert_eq!(v, vec![1, 3, 4, 7]);
    }
}
