//! A Parquet file's footer, read from the end of the file with as few requests as it takes:
//! for source files read a row group at a time, and for data files other writers made.

use std::sync::Arc;

use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::ParquetMetaDataReader;

use crate::error::Result;
use crate::storage::Storage;

/// A Parquet file's footer, read from its end; `Ok(Err)` when it is not one.
pub(crate) async fn read(
    storage: &dyn Storage,
    location: &str,
    size: u64,
) -> Result<Result<ArrowReaderMetadata, String>> {
    let mut want = 64 * 1024;
    loop {
        let (tail, _) = storage.read_suffix(location, want).await?;
        let mut reader = ParquetMetaDataReader::new();
        match reader.try_parse_sized(&tail, size) {
            Ok(()) => {}
            Err(ParquetError::NeedMoreData(needed)) if (needed as u64) > want => {
                want = needed as u64;
                continue;
            }
            Err(e) => return Ok(Err(e.to_string())),
        }
        let metadata = reader.finish().map_err(|e| e.to_string());
        return Ok(metadata.and_then(|m| {
            ArrowReaderMetadata::try_new(Arc::new(m), ArrowReaderOptions::default())
                .map_err(|e| e.to_string())
        }));
    }
}
