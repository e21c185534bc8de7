//! Medallion's Parquet reader over a [`Storage`]: what DataFusion's scans read through, and
//! what decides how many requests a remote query costs.
//!
//! - The footer comes from one suffix read of [`ReadSettings::footer_hint`] bytes (which also
//!   tells the file's size: no HEAD), plus one more read only if the footer is larger; the page
//!   index is served from the same bytes when it lies inside them.
//! - Parsed footers are cached per (location, size, ETag), so planning and executing a query,
//!   or querying a file again, read the footer once.
//! - A footer whose row count disagrees with its row groups' takes theirs: a file is read by
//!   its row groups, as pyarrow and DuckDB read it, never as empty.
//! - The column chunks a row group needs are coalesced when the gap between them is at most
//!   [`ReadSettings::coalesce_gap`], and up to [`ReadSettings::max_in_flight`] requests run at
//!   once.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetFileReaderFactory;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::{AsyncFileReader, MetadataFetch};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{
    FileMetaData, PageIndexPolicy, ParquetMetaData, ParquetMetaDataBuilder, ParquetMetaDataReader,
};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{seam, share, unshare, Shared};
use crate::error::{Error, Result};
use crate::storage::{ObjectMeta, Storage};

/// How remote Parquet is read. The defaults suit browsers (6 connections per host) and
/// object stores alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ReadSettings {
    /// Bytes of the first footer read, from the end of the file.
    pub footer_hint: u64,
    /// Ranges closer than this are fetched as one request.
    pub coalesce_gap: u64,
    /// Requests in flight at once for one file.
    pub max_in_flight: usize,
    /// Read the page index (for page pruning) with the footer.
    pub page_index: bool,
    /// Once a scan reads two row groups in a row, fetch the same columns of this many next
    /// row groups along with the current one, so that latency is paid once per batch of row
    /// groups instead of once per row group.
    pub prefetch_row_groups: usize,
    /// When a scan reads its filter's columns first and the other columns only where rows
    /// pass (late materialisation).
    pub filter_pushdown: FilterPushdown,
}

/// When a scan decodes its filter's columns before the others (see [`ReadSettings`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterPushdown {
    /// For a filter with an equality (`col = v`, `col IN (…)`) whose columns hold at most a
    /// quarter of the bytes the scan reads: a point lookup. A range filter that keeps most
    /// rows, or one over most of the bytes, would read twice for little.
    #[default]
    Auto,
    Always,
    Never,
}

impl Default for ReadSettings {
    fn default() -> Self {
        Self {
            footer_hint: 512 * 1024,
            // Column chunks of a wide table are a few hundred kB each: a larger gap would
            // fetch the unused columns between the ones a query needs.
            coalesce_gap: 16 * 1024,
            max_in_flight: 6,
            page_index: true,
            prefetch_row_groups: 8,
            filter_pushdown: FilterPushdown::Auto,
        }
    }
}

/// Location, size and ETag: what identifies one version of a file.
type FileVersion = (String, u64, Option<String>);

/// Parsed footers by file version.
#[derive(Debug, Default)]
pub struct MetadataCache {
    entries: Mutex<HashMap<FileVersion, Arc<ParquetMetaData>>>,
}

const CACHE_ENTRIES: usize = 512;

impl MetadataCache {
    fn get(
        &self,
        location: &str,
        size: u64,
        etag: &Option<String>,
    ) -> Option<Arc<ParquetMetaData>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&(location.to_string(), size, etag.clone()))
            // A file whose size came from a Delta log has no ETag yet; any version of that
            // size read in this session is the one.
            .or_else(|| {
                etag.is_none()
                    .then(|| {
                        entries
                            .iter()
                            .find(|((l, s, _), _)| l == location && *s == size)
                            .map(|(_, v)| v)
                    })
                    .flatten()
            })
            .cloned()
    }

    fn put(&self, location: &str, size: u64, etag: Option<String>, meta: Arc<ParquetMetaData>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert((location.to_string(), size, etag), meta);
    }
}

/// Settings and footer cache of one session, kept as a DataFusion config extension.
#[derive(Debug, Default)]
pub struct ParquetReading {
    pub settings: ReadSettings,
    pub cache: MetadataCache,
}

fn format_err(location: &str, message: String) -> Error {
    Error::Format {
        location: location.to_string(),
        message,
    }
}

/// Serves footer reads from bytes already fetched; reads the rest from storage.
struct Prefetched {
    storage: Shared,
    location: String,
    start: u64,
    bytes: Bytes,
}

impl MetadataFetch for Prefetched {
    fn fetch(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        let end = self.start + self.bytes.len() as u64;
        if range.start >= self.start && range.end <= end {
            let slice = self
                .bytes
                .slice((range.start - self.start) as usize..(range.end - self.start) as usize);
            return futures::future::ready(Ok(slice)).boxed();
        }
        let storage = unshare(&self.storage);
        let location = self.location.clone();
        seam(async move {
            storage
                .read_range(&location, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
        .boxed()
    }
}

/// The footer of the Parquet file at `location`, from the cache or with one suffix read
/// (two if the footer is larger than the hint). `size` is passed when known (from a Delta
/// log or a listing); otherwise the suffix read tells it.
pub async fn load_metadata(
    storage: &Arc<dyn Storage>,
    location: &str,
    size: Option<u64>,
    reading: &ParquetReading,
) -> Result<(Arc<ParquetMetaData>, ObjectMeta)> {
    let hint = reading.settings.footer_hint.max(8);
    if let Some(size) = size {
        if let Some(m) = reading.cache.get(location, size, &None) {
            return Ok((
                m,
                ObjectMeta {
                    location: location.to_string(),
                    size,
                    last_modified_ms: None,
                    etag: None,
                },
            ));
        }
    }
    let (mut tail, meta) = match size {
        Some(size) => {
            let start = size.saturating_sub(hint);
            let bytes = storage.read_range(location, start..size).await?;
            (
                bytes,
                ObjectMeta {
                    location: location.to_string(),
                    size,
                    last_modified_ms: None,
                    etag: None,
                },
            )
        }
        None => storage.read_suffix(location, hint).await?,
    };
    if let Some(m) = reading.cache.get(location, meta.size, &meta.etag) {
        return Ok((m, meta));
    }
    let size = meta.size;
    if size < 12 || tail.len() < 8 {
        return Err(format_err(
            location,
            format!("{size} bytes is too small to be a Parquet file"),
        ));
    }
    let n = tail.len();
    match &tail[n - 4..] {
        b"PAR1" => {}
        b"PARE" => {
            return Err(format_err(
                location,
                "is encrypted (encrypted footer); Medallion cannot read encrypted Parquet files"
                    .into(),
            ))
        }
        _ => {
            return Err(format_err(
                location,
                "is not a Parquet file (no PAR1 magic at its end)".into(),
            ))
        }
    }
    let footer_len =
        u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as u64 + 8;
    if footer_len > size - 4 {
        return Err(format_err(
            location,
            format!("footer claims {footer_len} bytes but the file has {size}"),
        ));
    }
    if footer_len > n as u64 {
        let missing = storage
            .read_range(location, size - footer_len..size - n as u64)
            .await?;
        let mut joined = BytesMut::with_capacity(footer_len as usize);
        joined.extend_from_slice(&missing);
        joined.extend_from_slice(&tail);
        tail = joined.freeze();
    }
    let start = size - tail.len() as u64;
    let fetch = |bytes: &Bytes| Prefetched {
        storage: share(storage.clone()),
        location: location.to_string(),
        start,
        bytes: bytes.clone(),
    };
    let parse = |policy: PageIndexPolicy, fetch: Prefetched| {
        ParquetMetaDataReader::new()
            .with_page_index_policy(policy)
            .with_prefetch_hint(Some(tail.len()))
            .load_and_finish(fetch, size)
    };
    let parsed = match reading.settings.page_index {
        true => match parse(PageIndexPolicy::Optional, fetch(&tail)).await {
            Ok(m) => Ok(m),
            // The page index is an optimisation: a malformed one must not make the file
            // unreadable, so fall back to the footer alone.
            Err(_) => parse(PageIndexPolicy::Skip, fetch(&tail)).await,
        },
        false => parse(PageIndexPolicy::Skip, fetch(&tail)).await,
    };
    let parsed = parsed.map_err(|e| {
        format_err(
            location,
            format!("unreadable Parquet footer: {}", unwrap_external(e)),
        )
    })?;
    let parsed = Arc::new(counted_by_row_groups(parsed));
    reading
        .cache
        .put(location, size, meta.etag.clone(), parsed.clone());
    Ok((parsed, meta))
}

/// The footer with its row count replaced by the sum of its row groups' when the two disagree.
///
/// Some writers (parquet-rs 0.3 among them) left the footer's count at 0. pyarrow and DuckDB
/// read such a file by its row groups; the parquet crate caps its batch size at the footer's
/// count, so it would read the file as empty, and DataFusion would take that count as exact.
fn counted_by_row_groups(meta: ParquetMetaData) -> ParquetMetaData {
    let rows = meta
        .row_groups()
        .iter()
        .fold(0i64, |sum, rg| sum.saturating_add(rg.num_rows()));
    let file = meta.file_metadata();
    if file.num_rows() == rows {
        return meta;
    }
    let file = FileMetaData::new(
        file.version(),
        rows,
        file.created_by().map(str::to_string),
        file.key_value_metadata().cloned(),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let mut old = meta.into_builder();
    ParquetMetaDataBuilder::new(file)
        .set_row_groups(old.take_row_groups())
        .set_column_index(old.take_column_index())
        .set_offset_index(old.take_offset_index())
        .build()
}

fn unwrap_external(e: ParquetError) -> String {
    match e {
        ParquetError::External(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// Merges ranges whose gap is at most `gap`; returns the merged ranges, sorted.
pub fn coalesce_ranges(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Fetches `ranges` of one object: coalesced, several requests at once, returned in the
/// order asked.
pub async fn fetch_ranges(
    storage: &Arc<dyn Storage>,
    location: &str,
    ranges: &[Range<u64>],
    settings: &ReadSettings,
) -> Result<Vec<Bytes>> {
    let merged = coalesce_ranges(ranges, settings.coalesce_gap);
    let fetched: Vec<Bytes> = stream::iter(merged.iter().cloned())
        .map(|r| {
            let storage = storage.clone();
            async move { storage.read_range(location, r).await }
        })
        .buffered(settings.max_in_flight.max(1))
        .try_collect()
        .await?;
    ranges
        .iter()
        .map(|r| {
            if r.start >= r.end {
                return Ok(Bytes::new());
            }
            let i = merged
                .partition_point(|m| m.start <= r.start)
                .saturating_sub(1);
            let (m, bytes) = (&merged[i], &fetched[i]);
            let (from, to) = ((r.start - m.start) as usize, (r.end - m.start) as usize);
            if to > bytes.len() {
                return Err(Error::Io {
                    location: location.to_string(),
                    range: Some(r.clone()),
                    message: format!(
                        "the server returned {} bytes for bytes {}-{}",
                        bytes.len(),
                        m.start,
                        m.end - 1
                    ),
                });
            }
            Ok(bytes.slice(from..to))
        })
        .collect()
}

/// Creates a [`StorageParquetReader`] per file for DataFusion's Parquet scans.
#[derive(Debug)]
pub struct StorageReaderFactory {
    storage: Shared,
    /// Maps DataFusion's object path back to our location.
    prefix: String,
    reading: Arc<ParquetReading>,
}

impl StorageReaderFactory {
    pub fn new(storage: Arc<dyn Storage>, prefix: String, reading: Arc<ParquetReading>) -> Self {
        Self {
            storage: share(storage),
            prefix,
            reading,
        }
    }
}

impl ParquetFileReaderFactory for StorageReaderFactory {
    fn create_reader(
        &self,
        _partition_index: usize,
        file: PartitionedFile,
        _metadata_size_hint: Option<usize>,
        _metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        Ok(Box::new(StorageParquetReader {
            storage: share(unshare(&self.storage)),
            location: crate::storage::join(&self.prefix, file.object_meta.location.as_ref()),
            size: file.object_meta.size,
            reading: self.reading.clone(),
            // Row groups whose middle lies in this range belong to this partition.
            assigned: file.range.as_ref().map(|r| r.start as u64..r.end as u64),
            metadata: None,
            last_read: None,
            prefetched: Vec::new(),
        }))
    }
}

/// An `AsyncFileReader` for one Parquet file in a [`Storage`]. DataFusion makes one per file
/// and partition, and reads row groups through it in order.
pub struct StorageParquetReader {
    storage: Shared,
    location: String,
    size: u64,
    reading: Arc<ParquetReading>,
    /// The byte range of the file this reader's partition scans, if split.
    assigned: Option<Range<u64>>,
    metadata: Option<Arc<ParquetMetaData>>,
    /// The row group and columns of the last whole-column-chunk read.
    last_read: Option<(usize, Vec<usize>)>,
    /// Column chunks fetched ahead of their row group.
    prefetched: Vec<(Range<u64>, Bytes)>,
}

/// The row group and column indices whose column chunks are exactly `ranges`, if they are.
fn whole_chunks(meta: &ParquetMetaData, ranges: &[Range<u64>]) -> Option<(usize, Vec<usize>)> {
    let is_chunk = |c: &datafusion::parquet::file::metadata::ColumnChunkMetaData,
                    r: &Range<u64>| {
        let (start, len) = c.byte_range();
        start == r.start && start + len == r.end
    };
    let first = ranges.first()?;
    let (rg_index, rg) = meta
        .row_groups()
        .iter()
        .enumerate()
        .find(|(_, rg)| rg.columns().iter().any(|c| is_chunk(c, first)))?;
    let columns = ranges
        .iter()
        .map(|r| rg.columns().iter().position(|c| is_chunk(c, r)))
        .collect::<Option<Vec<_>>>()?;
    Some((rg_index, columns))
}

impl StorageParquetReader {
    /// Ranges to fetch ahead: the same columns of the next row groups, once reads are
    /// sequential.
    fn plan_prefetch(&mut self, ranges: &[Range<u64>]) -> Vec<Range<u64>> {
        let depth = self.reading.settings.prefetch_row_groups;
        // DataFusion may hand decoding to a fresh reader that never loaded the footer itself
        // (after reading bloom filters with another); the session cache has it.
        if self.metadata.is_none() {
            self.metadata = self.reading.cache.get(&self.location, self.size, &None);
        }
        let Some(meta) = self.metadata.clone() else {
            return vec![];
        };
        let Some((rg, columns)) = whole_chunks(&meta, ranges) else {
            self.last_read = None;
            return vec![];
        };
        let sequential =
            matches!(&self.last_read, Some((prev, cols)) if prev + 1 == rg && *cols == columns);
        self.last_read = Some((rg, columns.clone()));
        if !sequential || depth == 0 {
            return vec![];
        }
        let mut ahead = Vec::new();
        for next in rg + 1..(rg + 1 + depth).min(meta.num_row_groups()) {
            let group = meta.row_group(next);
            let first = group
                .columns()
                .first()
                .map(|c| c.byte_range().0)
                .unwrap_or(0);
            let middle = first + group.compressed_size().max(0) as u64 / 2;
            if self.assigned.as_ref().is_some_and(|a| !a.contains(&middle)) {
                break;
            }
            for &c in &columns {
                let (start, len) = meta.row_group(next).column(c).byte_range();
                let r = start..start + len;
                if !self
                    .prefetched
                    .iter()
                    .any(|(p, _)| p.start <= r.start && r.end <= p.end)
                {
                    ahead.push(r);
                }
            }
        }
        ahead
    }

    fn prefetched_slices(&self, ranges: &[Range<u64>]) -> Option<Vec<Bytes>> {
        ranges
            .iter()
            .map(|r| {
                self.prefetched
                    .iter()
                    .find(|(p, _)| p.start <= r.start && r.end <= p.end)
                    .map(|(p, b)| b.slice((r.start - p.start) as usize..(r.end - p.start) as usize))
            })
            .collect()
    }
}

fn to_parquet(e: Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StorageParquetReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        let storage = unshare(&self.storage);
        seam(async move {
            storage
                .read_range(&self.location, range)
                .await
                .map_err(to_parquet)
        })
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
        let storage = unshare(&self.storage);
        let ahead = self.plan_prefetch(&ranges);
        let cached = self.prefetched_slices(&ranges);
        if let (Some(hit), true) = (&cached, ahead.is_empty()) {
            return futures::future::ready(Ok(hit.clone())).boxed();
        }
        seam(async move {
            let mut fetch: Vec<Range<u64>> = match cached {
                Some(_) => Vec::new(),
                None => ranges.clone(),
            };
            fetch.extend(ahead.iter().cloned());
            let mut fetched =
                fetch_ranges(&storage, &self.location, &fetch, &self.reading.settings)
                    .await
                    .map_err(to_parquet)?;
            let now = match cached {
                Some(hit) => hit,
                None => {
                    let later = fetched.split_off(ranges.len());
                    std::mem::replace(&mut fetched, later)
                }
            };
            // Keep only what lies ahead of this read; what was served is not needed again.
            let consumed_to = ranges.iter().map(|r| r.end).max().unwrap_or(0);
            self.prefetched.retain(|(r, _)| r.start >= consumed_to);
            self.prefetched.extend(ahead.into_iter().zip(fetched));
            Ok(now)
        })
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        let storage = unshare(&self.storage);
        seam(async move {
            let (metadata, _) =
                load_metadata(&storage, &self.location, Some(self.size), &self.reading)
                    .await
                    .map_err(to_parquet)?;
            self.metadata = Some(metadata.clone());
            Ok(metadata)
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_merges_close_ranges_only() {
        assert_eq!(
            coalesce_ranges(&[10..20, 0..5, 25..30, 100..110], 5),
            vec![0..30, 100..110]
        );
        assert_eq!(coalesce_ranges(&[0..5, 5..5], 0), vec![0..5]);
    }

    /// Three rows in one row group, with a footer that says the file has none (as
    /// parquet-rs 0.3 wrote `repeated_no_annotation.parquet` of apache/parquet-testing).
    fn file_whose_footer_counts_no_rows() -> Bytes {
        use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch};
        use datafusion::parquet::arrow::ArrowWriter;
        let x: ArrayRef = Arc::new(Int32Array::from(vec![7, 8, 9]));
        let batch = RecordBatch::try_from_iter([("x", x)]).unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        let mut bytes = writer.into_inner().unwrap();
        // The footer's num_rows is Thrift field 3 (i64) of FileMetaData, after the schema:
        // compact-protocol header 0x16, then zigzag(3) = 0x06. Zero is 0x00, the same length.
        let n = bytes.len();
        let footer_len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
        let footer = n - 8 - footer_len..n - 8;
        let at = bytes[footer.clone()]
            .windows(2)
            .position(|w| w == [0x16, 0x06])
            .unwrap();
        bytes[footer.start + at + 1] = 0x00;
        let bytes = Bytes::from(bytes);
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .unwrap();
        assert_eq!(
            meta.file_metadata().num_rows(),
            0,
            "patched the footer's count"
        );
        assert_eq!(
            meta.row_group(0).num_rows(),
            3,
            "left the row group's count"
        );
        bytes
    }

    #[test]
    fn a_footer_count_that_disagrees_with_the_row_groups_is_replaced_by_theirs() {
        futures::executor::block_on(async {
            let mem = crate::storage::MemoryStorage::new();
            mem.put("/zero.parquet", file_whose_footer_counts_no_rows())
                .await
                .unwrap();
            let storage: Arc<dyn Storage> = Arc::new(mem);
            let (meta, _) =
                load_metadata(&storage, "/zero.parquet", None, &ParquetReading::default())
                    .await
                    .unwrap();
            assert_eq!(meta.file_metadata().num_rows(), 3);

            let ctx = crate::query::new_context(Default::default());
            crate::query::register_location(&ctx, &storage, "t", "/zero.parquet")
                .await
                .unwrap();
            let rows = |sql: &'static str| {
                let ctx = ctx.clone();
                async move {
                    let (_, batches) = crate::query::collect_sql(&ctx, "test", sql).await.unwrap();
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                        .unwrap()
                        .to_string()
                }
            };
            assert!(rows("SELECT count(*) AS n FROM t").await.contains("| 3 |"));
            let all = rows("SELECT x FROM t").await;
            assert!(
                ["| 7 |", "| 8 |", "| 9 |"].iter().all(|v| all.contains(v)),
                "{all}"
            );
        });
    }

    #[test]
    fn fetched_ranges_come_back_in_the_order_asked() {
        futures::executor::block_on(async {
            let mem = crate::storage::MemoryStorage::new();
            mem.put("/f", Bytes::from_static(b"0123456789abcdef"))
                .await
                .unwrap();
            let counting = Arc::new(crate::storage::CountingStorage::new(Arc::new(mem)));
            let stats = counting.stats();
            let storage: Arc<dyn Storage> = counting;
            let got = fetch_ranges(
                &storage,
                "/f",
                &[10..12, 0..2, 3..4],
                &ReadSettings {
                    coalesce_gap: 2,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert_eq!(
                got,
                vec![
                    Bytes::from_static(b"ab"),
                    Bytes::from_static(b"01"),
                    Bytes::from_static(b"3")
                ]
            );
            assert_eq!(stats.counts().read_requests, 2, "0..2 and 3..4 coalesce");
        });
    }
}
