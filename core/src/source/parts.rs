//! A source file read a part at a time, so that a file larger than memory can be ingested:
//! CSV and NDJSON in ranged reads cut at record ends (a newline outside quotes), Parquet one
//! row group at a time. Rows, types and rescued lines are exactly those of reading the file
//! whole: without a declared schema, a first pass infers the types over every part.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::parquet::file::reader::{ChunkReader, Length};

use super::{
    csv_candidates, csv_fits, csv_records, infer_ndjson, ndjson_rows, parse, parse_csv_part,
    parse_ndjson_part, whole_file_rescue, CsvPart, Parsed, BATCH_ROWS,
};
use crate::error::Result;
use crate::spec::{CsvOptions, Format};
use crate::storage::{ObjectMeta, Storage};

/// The parts of one source file, in order.
pub struct SourceParts<'a> {
    storage: &'a dyn Storage,
    location: String,
    format: Format,
    declared: Option<Schema>,
    csv: CsvOptions,
    state: State,
}

enum State {
    /// Small enough to read whole, exactly as before parts existed.
    Whole,
    /// The file's only part, already known (a schema that cannot be inferred).
    Ready(Parsed),
    Text {
        parts: TextParts,
        schema: Schema,
        /// The CSV header, taken from the first part.
        header: Option<Vec<String>>,
    },
    Parquet {
        metadata: Arc<ArrowReaderMetadata>,
        size: u64,
        next_group: usize,
    },
    Done,
}

impl<'a> SourceParts<'a> {
    /// Opens `file`, reading parts of about `part_bytes`. A file no larger is read whole.
    pub async fn open(
        storage: &'a dyn Storage,
        file: &ObjectMeta,
        format: Format,
        declared: Option<&Schema>,
        csv: &CsvOptions,
        part_bytes: u64,
    ) -> Result<SourceParts<'a>> {
        let location = file.location.clone();
        let part_bytes = part_bytes.max(1);
        let state = if file.size <= part_bytes {
            State::Whole
        } else {
            // Parts stop at the size: take it now, not as listed, which may be older.
            let file = &storage.head(&location).await?;
            match format {
                Format::Parquet => {
                    match crate::parquet_footer::read(storage, &location, file.size).await? {
                        Ok(metadata) => State::Parquet {
                            metadata: Arc::new(metadata),
                            size: file.size,
                            next_group: 0,
                        },
                        Err(e) => State::Ready(whole_file_rescue(
                            &location,
                            format!("unreadable Parquet file: {e}"),
                        )),
                    }
                }
                Format::Csv | Format::Ndjson => {
                    let parts = TextParts::new(&location, file.size, part_bytes, format);
                    let schema = match declared {
                        Some(s) => Ok(s.clone()),
                        None => infer(storage, parts.clone(), format, csv).await?,
                    };
                    match schema {
                        Ok(schema) => State::Text {
                            parts,
                            schema,
                            header: None,
                        },
                        Err(e) => State::Ready(whole_file_rescue(&location, e)),
                    }
                }
            }
        };
        Ok(SourceParts {
            storage,
            location,
            format,
            declared: declared.cloned(),
            csv: csv.clone(),
            state,
        })
    }

    /// The next part's rows and rescued lines; `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Parsed>> {
        let location = self.location.as_str();
        match &mut self.state {
            State::Done => Ok(None),
            State::Whole => {
                self.state = State::Done;
                // One request where the runtime can (an S3 GET), as for any small file.
                let bytes = self.storage.read(location).await?;
                let declared = self.declared.as_ref();
                Ok(Some(parse(
                    location,
                    self.format,
                    &bytes,
                    declared,
                    &self.csv,
                )))
            }
            State::Ready(_) => match std::mem::replace(&mut self.state, State::Done) {
                State::Ready(p) => Ok(Some(p)),
                _ => Ok(None),
            },
            State::Text {
                parts,
                schema,
                header,
            } => {
                let Some((data, lines_before)) = parts.next(self.storage).await? else {
                    self.state = State::Done;
                    return Ok(None);
                };
                Ok(Some(match self.format {
                    Format::Csv => {
                        let part = CsvPart {
                            header: header.clone(),
                            lines_before,
                        };
                        let (parsed, seen) =
                            parse_csv_part(location, &data, Some(schema), &self.csv, &part);
                        if header.is_none() {
                            *header = seen;
                        }
                        parsed
                    }
                    _ => parse_ndjson_part(location, &data, Some(schema), lines_before),
                }))
            }
            State::Parquet {
                metadata,
                size,
                next_group,
            } => {
                let group = *next_group;
                if group >= metadata.metadata().num_row_groups() {
                    self.state = State::Done;
                    return Ok(None);
                }
                *next_group += 1;
                let range = row_group_range(metadata.metadata(), group);
                let bytes = self.storage.read_range(location, range.clone()).await?;
                let reader = RowGroupBytes {
                    start: range.start,
                    bytes,
                    size: *size,
                };
                let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(
                    reader,
                    metadata.as_ref().clone(),
                )
                .with_row_groups(vec![group])
                .with_batch_size(BATCH_ROWS)
                .build()
                .and_then(|r| r.collect::<Result<Vec<_>, _>>().map_err(ParquetError::from));
                Ok(Some(match batches {
                    Ok(batches) => Parsed {
                        batches,
                        rescued: vec![],
                    },
                    // The other row groups' rows are still good: only this one is set aside.
                    Err(e) => whole_file_rescue(
                        location,
                        format!(
                            "unreadable Parquet row group {group} (bytes {}..{}): {e}",
                            range.start, range.end
                        ),
                    ),
                }))
            }
        }
    }
}

/// The types of a CSV or NDJSON file without a declared schema, as reading it whole would
/// infer them; `Err` when it has none (no header, conflicting JSON types).
async fn infer(
    storage: &dyn Storage,
    mut parts: TextParts,
    format: Format,
    csv: &CsvOptions,
) -> Result<Result<Schema, String>> {
    let location = parts.location.clone();
    match format {
        Format::Csv => {
            let mut part = CsvPart::default();
            // Per column: whether it has a value, and which candidate types every value fits.
            let mut seen: Vec<bool> = Vec::new();
            let mut fits: Vec<Vec<bool>> = Vec::new();
            while let Some((data, lines_before)) = parts.next(storage).await? {
                part.lines_before = lines_before;
                let records = match csv_records(&location, &data, None, csv, &part) {
                    Ok(r) => r,
                    Err(p) => {
                        let reason = p.rescued.first().map(|r| r.error.clone());
                        return Ok(Err(reason.unwrap_or_default()));
                    }
                };
                if part.header.is_none() {
                    seen = vec![false; records.header.len()];
                    fits = vec![vec![true; csv_candidates().len()]; records.header.len()];
                    part.header = Some(records.header.clone());
                }
                for (i, raw) in records.columns.iter().enumerate() {
                    seen[i] |= raw.null_count() < raw.len();
                    for (c, candidate) in csv_candidates().iter().enumerate() {
                        fits[i][c] = fits[i][c] && csv_fits(raw, candidate);
                    }
                }
            }
            let header = part.header.unwrap_or_default();
            let fields: Vec<Field> = header
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let t = match seen[i] {
                        false => DataType::Utf8,
                        true => csv_candidates()
                            .into_iter()
                            .zip(&fits[i])
                            .find(|(_, fit)| **fit)
                            .map_or(DataType::Utf8, |(t, _)| t),
                    };
                    Field::new(name, t, true)
                })
                .collect();
            Ok(Ok(Schema::new(fields)))
        }
        _ => {
            // Each part's schema stands for its rows by one representative row: inference
            // joins types (int with float is float, anything with text is text), so joining
            // the parts' representatives gives the whole file's schema.
            // A JSON object's keys come out sorted, so the columns' order (first seen first)
            // is kept apart and put back.
            let mut representatives = Vec::new();
            let mut order = Order::default();
            while let Some((data, lines_before)) = parts.next(storage).await? {
                match ndjson_rows(&location, &data, None, lines_before).schema {
                    Ok(s) => {
                        order.learn(s.fields());
                        representatives.push(representative(s.fields()));
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
            Ok(infer_ndjson(representatives.into_iter())
                .map(|s| Schema::new(order.apply(s.fields()))))
        }
    }
}

/// The order fields were first seen in, and their nested fields'.
#[derive(Default)]
struct Order(Vec<(String, Order)>);

impl Order {
    fn learn(&mut self, fields: &Fields) {
        for f in fields {
            let at = match self.0.iter().position(|(n, _)| n == f.name()) {
                Some(at) => at,
                None => {
                    self.0.push((f.name().clone(), Order::default()));
                    self.0.len() - 1
                }
            };
            if let Some(nested) = struct_fields(f.data_type()) {
                self.0[at].1.learn(nested);
            }
        }
    }

    fn apply(&self, fields: &Fields) -> Fields {
        let rank = |f: &Field| self.0.iter().position(|(n, _)| n == f.name());
        let mut sorted: Vec<Field> = fields
            .iter()
            .map(|f| {
                let nested = self.0.iter().find(|(n, _)| n == f.name()).map(|(_, o)| o);
                let t = match nested {
                    Some(o) => o.reorder(f.data_type()),
                    None => f.data_type().clone(),
                };
                f.as_ref().clone().with_data_type(t)
            })
            .collect();
        sorted.sort_by_key(|f| rank(f));
        sorted.into()
    }

    fn reorder(&self, t: &DataType) -> DataType {
        match t {
            DataType::Struct(inner) => DataType::Struct(self.apply(inner)),
            DataType::List(item) => DataType::List(Arc::new(
                item.as_ref()
                    .clone()
                    .with_data_type(self.reorder(item.data_type())),
            )),
            _ => t.clone(),
        }
    }
}

/// The fields of a struct, or of a list's struct items.
fn struct_fields(t: &DataType) -> Option<&Fields> {
    match t {
        DataType::Struct(fields) => Some(fields),
        DataType::List(item) => struct_fields(item.data_type()),
        _ => None,
    }
}

/// A JSON object whose inferred schema is `fields`.
fn representative(fields: &Fields) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .iter()
            .map(|f| (f.name().clone(), value_of_type(f.data_type())))
            .collect(),
    )
}

fn value_of_type(t: &DataType) -> serde_json::Value {
    use serde_json::Value;
    match t {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(true),
        DataType::Int64 => Value::from(0),
        DataType::Float64 => Value::from(0.5),
        DataType::List(f) => Value::Array(vec![value_of_type(f.data_type())]),
        DataType::Struct(fields) => representative(fields),
        _ => Value::String(String::new()),
    }
}

/// Record-aligned parts of a text file: each ends at a newline outside quotes (CSV) or at a
/// newline (NDJSON), or at the end of the file.
#[derive(Clone)]
struct TextParts {
    location: String,
    size: u64,
    part_bytes: u64,
    /// Whether `"` quotes newlines (CSV; RFC 4180 doubles a quote inside a quoted field, so
    /// counting quotes tells whether a newline is inside one).
    quotes: bool,
    /// The next byte to read.
    pos: u64,
    /// Bytes read after the last cut.
    carry: Vec<u8>,
    /// Whether the end of `carry` is inside quotes.
    quoted: bool,
    /// Lines in the parts returned so far.
    lines: u64,
}

impl TextParts {
    fn new(location: &str, size: u64, part_bytes: u64, format: Format) -> Self {
        TextParts {
            location: location.to_string(),
            size,
            part_bytes,
            quotes: format == Format::Csv,
            pos: 0,
            carry: Vec::new(),
            quoted: false,
            lines: 0,
        }
    }

    /// The next part and the number of lines before it.
    async fn next(&mut self, storage: &dyn Storage) -> Result<Option<(Vec<u8>, u64)>> {
        loop {
            if self.pos >= self.size {
                if self.carry.is_empty() {
                    return Ok(None);
                }
                let part = std::mem::take(&mut self.carry);
                return Ok(Some(self.emit(part)));
            }
            let end = (self.pos + self.part_bytes).min(self.size);
            let bytes = storage.read_range(&self.location, self.pos..end).await?;
            self.pos = end;
            let mut quoted = self.quoted;
            let cut = if self.quotes {
                let mut cut = None;
                for (i, b) in bytes.iter().enumerate() {
                    match b {
                        b'"' => quoted = !quoted,
                        b'\n' if !quoted => cut = Some(i),
                        _ => {}
                    }
                }
                cut
            } else {
                // Without quotes the last newline is the cut: found from the end.
                memchr::memrchr(b'\n', &bytes)
            };
            // A cut is outside quotes, so the rest after it starts unquoted.
            self.quoted = quoted;
            match cut {
                Some(i) => {
                    let mut part = std::mem::take(&mut self.carry);
                    part.extend_from_slice(&bytes[..=i]);
                    self.carry.extend_from_slice(&bytes[i + 1..]);
                    return Ok(Some(self.emit(part)));
                }
                // A record longer than a part: read on until it ends.
                None => self.carry.extend_from_slice(&bytes),
            }
        }
    }

    fn emit(&mut self, part: Vec<u8>) -> (Vec<u8>, u64) {
        let before = self.lines;
        self.lines += memchr::memchr_iter(b'\n', &part).count() as u64;
        (part, before)
    }
}

/// The bytes holding every column chunk of one row group.
fn row_group_range(metadata: &ParquetMetaData, group: usize) -> Range<u64> {
    let columns = metadata.row_group(group).columns();
    let start = columns.iter().map(|c| c.byte_range().0).min().unwrap_or(0);
    let end = columns
        .iter()
        .map(|c| c.byte_range().0 + c.byte_range().1)
        .max()
        .unwrap_or(start);
    start..end
}

/// One row group's bytes, standing in for the whole file for the Parquet reader.
struct RowGroupBytes {
    start: u64,
    bytes: Bytes,
    size: u64,
}

impl Length for RowGroupBytes {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for RowGroupBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        use bytes::Buf;
        let at = self.offset(start, 0)?;
        Ok(self.bytes.slice(at..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        let at = self.offset(start, length)?;
        Ok(self.bytes.slice(at..at + length))
    }
}

impl RowGroupBytes {
    fn offset(&self, start: u64, length: usize) -> Result<usize, ParquetError> {
        let end = self.start + self.bytes.len() as u64;
        if start < self.start || start + length as u64 > end {
            return Err(ParquetError::General(format!(
                "bytes {start}..{} lie outside the row group read ({}..{end})",
                start + length as u64,
                self.start
            )));
        }
        Ok((start - self.start) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::RescuedRow;
    use crate::storage::MemoryStorage;
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;

    /// Every part of the file at `location`, read in parts of `part_bytes`.
    async fn read_parts(
        storage: &MemoryStorage,
        location: &str,
        format: Format,
        declared: Option<&Schema>,
        csv: &CsvOptions,
        part_bytes: u64,
    ) -> Vec<Parsed> {
        let meta = storage.head(location).await.unwrap();
        let mut parts = SourceParts::open(storage, &meta, format, declared, csv, part_bytes)
            .await
            .unwrap();
        let mut all = Vec::new();
        while let Some(p) = parts.next().await.unwrap() {
            all.push(p);
        }
        all
    }

    /// Reads `data` in parts of every size from 1 byte up and checks each reading against
    /// reading the file whole: the same rows, types and rescued lines.
    fn same_as_whole(format: Format, data: &[u8], declared: Option<&Schema>, csv: &CsvOptions) {
        futures::executor::block_on(async {
            let storage = MemoryStorage::new();
            let bytes = Bytes::copy_from_slice(data);
            storage.put("/src/f", bytes.clone()).await.unwrap();
            let whole = parse("/src/f", format, &bytes, declared, csv);
            let (whole_rows, whole_rescued) = flatten(whole);
            for part_bytes in (1..=data.len() as u64 + 1).chain([4096]) {
                let parts = read_parts(&storage, "/src/f", format, declared, csv, part_bytes).await;
                let n = parts.len();
                let mut all = Parsed::default();
                for p in parts {
                    all.batches.extend(p.batches);
                    all.rescued.extend(p.rescued);
                }
                let (rows, rescued) = flatten(all);
                assert_eq!(
                    rows, whole_rows,
                    "rows, parts of {part_bytes} bytes ({n} parts)"
                );
                assert_eq!(
                    rescued, whole_rescued,
                    "rescued, parts of {part_bytes} bytes"
                );
            }
        })
    }

    fn flatten(p: Parsed) -> (Option<RecordBatch>, Vec<(u64, String, String)>) {
        let rows = p
            .batches
            .first()
            .map(|b| concat_batches(&b.schema(), &p.batches).unwrap());
        let mut rescued: Vec<(u64, String, String)> = p
            .rescued
            .into_iter()
            .map(
                |RescuedRow {
                     line, raw, error, ..
                 }| (line, raw, error),
            )
            .collect();
        rescued.sort();
        (rows.filter(|b| b.num_rows() > 0), rescued)
    }

    #[test]
    fn csv_parts_infer_and_rescue_as_the_whole_file() {
        // `qty` is an integer until its last row; `note` quotes a newline, a comma and a
        // doubled quote; `flag` is empty until late; a short row and a malformed one.
        let data = b"id,qty,note,flag\n1,5,\"two\nlines\",\n2,6,\"a, \"\"quoted\"\" word\",\n3,x\n4,7,plain,\n5,8.5,\"end\",true\n";
        same_as_whole(Format::Csv, data, None, &CsvOptions::default());
        let declared = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("qty", DataType::Int64, true),
        ]);
        same_as_whole(Format::Csv, data, Some(&declared), &CsvOptions::default());
        let headless = CsvOptions {
            header: false,
            delimiter: ';',
        };
        same_as_whole(Format::Csv, b"1;a\n2;b\n3\n", Some(&declared), &headless);
        // No header and no schema: one rescued entry for the file, however it is read.
        same_as_whole(Format::Csv, b"1;a\n2;b\n", None, &headless);
    }

    #[test]
    fn ndjson_parts_infer_and_rescue_as_the_whole_file() {
        let data = br#"{"id":1,"qty":5,"tags":["a"],"at":{"x":1}}
not json
{"id":2,"qty":6.5,"late":"here"}
[1,2]

{"id":3,"qty":7,"tags":[],"at":{"y":"z"},"n":null,"deep":[[{"b":1}],[{"a":true}]]}
"#;
        same_as_whole(Format::Ndjson, data, None, &CsvOptions::default());
        let declared = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("qty", DataType::Int64, true),
        ]);
        same_as_whole(
            Format::Ndjson,
            data,
            Some(&declared),
            &CsvOptions::default(),
        );
        // Types that conflict in different parts of the file fail the whole file, as whole.
        same_as_whole(
            Format::Ndjson,
            b"{\"a\":1}\n{\"a\":{\"b\":2}}\n",
            None,
            &CsvOptions::default(),
        );
    }

    #[test]
    fn parquet_parts_are_row_groups() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let ids: Vec<i64> = (0..1000).collect();
        let names: Vec<Option<String>> = ids
            .iter()
            .map(|i| (i % 7 != 0).then(|| format!("n{i}")))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(128))
            .build();
        let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        futures::executor::block_on(async {
            let storage = MemoryStorage::new();
            storage
                .put("/src/p", Bytes::from(out.clone()))
                .await
                .unwrap();
            let csv = CsvOptions::default();
            let parts = read_parts(&storage, "/src/p", Format::Parquet, None, &csv, 1024).await;
            let n = parts.len();
            let mut batches = Vec::new();
            for p in parts {
                assert!(p.rescued.is_empty());
                batches.extend(p.batches);
            }
            assert_eq!(n, 8, "one part per row group of 128 rows");
            assert_eq!(concat_batches(&batch.schema(), &batches).unwrap(), batch);

            // A broken footer is one rescued entry, as when the file is read whole.
            let mut broken = out.clone();
            let at = broken.len() - 12;
            broken[at..at + 4].copy_from_slice(&[0xff; 4]);
            storage.put("/src/b", Bytes::from(broken)).await.unwrap();
            let parts = read_parts(&storage, "/src/b", Format::Parquet, None, &csv, 1024).await;
            assert_eq!(parts.len(), 1, "nothing after the rescued entry");
            let p = &parts[0];
            assert_eq!(p.rows(), 0);
            assert!(
                p.rescued[0].error.contains("unreadable Parquet"),
                "{:?}",
                p.rescued
            );
        });
    }
}
