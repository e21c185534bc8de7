//! What is inside a Parquet file — schema, row groups, column chunks, statistics — read from
//! its footer alone, with one suffix read (two if the footer is larger than the hint).

use std::sync::Arc;

use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::file::statistics::Statistics;
use serde::Serialize;

use crate::bridge::parquet_reader::{load_metadata, ParquetReading};
use crate::error::Result;
use crate::storage::Storage;

#[derive(Debug, Serialize)]
pub struct FileSummary {
    pub location: String,
    pub size: u64,
    pub num_rows: i64,
    pub created_by: Option<String>,
    /// `name: type` per column, as Arrow sees them.
    pub schema: Vec<String>,
    pub row_groups: Vec<RowGroupSummary>,
}

#[derive(Debug, Serialize)]
pub struct RowGroupSummary {
    pub num_rows: i64,
    pub compressed_bytes: i64,
    pub uncompressed_bytes: i64,
    pub columns: Vec<ColumnChunkSummary>,
}

#[derive(Debug, Serialize)]
pub struct ColumnChunkSummary {
    pub path: String,
    pub compression: String,
    pub compressed_bytes: i64,
    pub null_count: Option<u64>,
    pub min: Option<String>,
    pub max: Option<String>,
}

/// A summary of the Parquet file at `location`.
pub async fn inspect(storage: &Arc<dyn Storage>, location: &str) -> Result<FileSummary> {
    let (meta, object) = load_metadata(storage, location, None, &ParquetReading::default()).await?;
    let size = object.size;
    let file = meta.file_metadata();
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map(|s| {
            s.fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("(no Arrow schema: {e})")]);
    let row_groups = meta
        .row_groups()
        .iter()
        .map(|rg| RowGroupSummary {
            num_rows: rg.num_rows(),
            compressed_bytes: rg.compressed_size(),
            uncompressed_bytes: rg.total_byte_size(),
            columns: rg
                .columns()
                .iter()
                .map(|c| {
                    let (min, max) = c.statistics().map(stat_bounds).unwrap_or((None, None));
                    ColumnChunkSummary {
                        path: c.column_path().string(),
                        compression: format!("{:?}", c.compression()),
                        compressed_bytes: c.compressed_size(),
                        null_count: c.statistics().and_then(|s| s.null_count_opt()),
                        min,
                        max,
                    }
                })
                .collect(),
        })
        .collect();
    Ok(FileSummary {
        location: location.to_string(),
        size,
        num_rows: file.num_rows(),
        created_by: file.created_by().map(str::to_string),
        schema,
        row_groups,
    })
}

fn stat_bounds(s: &Statistics) -> (Option<String>, Option<String>) {
    fn text(b: &[u8]) -> String {
        match std::str::from_utf8(b) {
            Ok(s) if s.chars().count() <= 40 => s.to_string(),
            Ok(s) => format!("{}…", s.chars().take(40).collect::<String>()),
            Err(_) => format!(
                "0x{}",
                b.iter()
                    .take(16)
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
            ),
        }
    }
    match s {
        Statistics::Boolean(v) => (
            v.min_opt().map(|x| x.to_string()),
            v.max_opt().map(|x| x.to_string()),
        ),
        Statistics::Int32(v) => (
            v.min_opt().map(|x| x.to_string()),
            v.max_opt().map(|x| x.to_string()),
        ),
        Statistics::Int64(v) => (
            v.min_opt().map(|x| x.to_string()),
            v.max_opt().map(|x| x.to_string()),
        ),
        Statistics::Float(v) => (
            v.min_opt().map(|x| x.to_string()),
            v.max_opt().map(|x| x.to_string()),
        ),
        Statistics::Double(v) => (
            v.min_opt().map(|x| x.to_string()),
            v.max_opt().map(|x| x.to_string()),
        ),
        Statistics::ByteArray(v) => (
            v.min_opt().map(|x| text(x.data())),
            v.max_opt().map(|x| text(x.data())),
        ),
        Statistics::FixedLenByteArray(v) => (
            v.min_opt().map(|x| text(x.data())),
            v.max_opt().map(|x| text(x.data())),
        ),
        Statistics::Int96(_) => (None, None),
    }
}
