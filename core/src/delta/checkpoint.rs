//! Parquet checkpoints: a table's whole state at one version in one file, so that opening a
//! long-lived table reads one checkpoint and the few commits after it instead of every commit.
//!
//! Written every `delta.checkpointInterval` commits (default 10), with `_last_checkpoint`
//! pointing at it; read from any writer's classic checkpoints, single- or multi-part. Rows
//! are converted from and to the same [`Action`] types the JSON commits use, through
//! arrow-json, so there is one definition of each action.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::json::writer::LineDelimitedWriter;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::{ArrowWriter, ProjectionMask};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;

use super::actions::Action;
use super::log::{
    checkpoint_location, last_checkpoint_location, read_last_checkpoint, LastCheckpoint,
};
use super::snapshot::Snapshot;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// The table property that sets how many commits lie between checkpoints.
pub const CHECKPOINT_INTERVAL_KEY: &str = "delta.checkpointInterval";
/// Checkpoints every 10 commits unless the table says otherwise (Spark's and delta-rs's default).
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 10;

fn delta_err(location: &str, message: impl Into<String>) -> Error {
    Error::Delta {
        location: location.to_string(),
        message: message.into(),
    }
}

fn string_map() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

fn string_list() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

/// The columns of a checkpoint, as the protocol lays them out (one struct per action kind).
pub fn checkpoint_schema() -> SchemaRef {
    let s = |name: &str, fields: Vec<Field>| {
        Field::new(name, DataType::Struct(Fields::from(fields)), true)
    };
    let utf8 = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let i64f = |n: &str, null: bool| Field::new(n, DataType::Int64, null);
    let boolf = |n: &str, null: bool| Field::new(n, DataType::Boolean, null);
    Arc::new(Schema::new(vec![
        s(
            "txn",
            vec![
                utf8("appId", false),
                i64f("version", false),
                i64f("lastUpdated", true),
            ],
        ),
        s(
            "add",
            vec![
                utf8("path", false),
                Field::new("partitionValues", string_map(), true),
                i64f("size", false),
                i64f("modificationTime", false),
                boolf("dataChange", false),
                utf8("stats", true),
                Field::new("tags", string_map(), true),
                // Always null in Medallion's tables; present because readers such as
                // delta-kernel ask for it.
                s(
                    "deletionVector",
                    vec![
                        utf8("storageType", false),
                        utf8("pathOrInlineDv", false),
                        Field::new("offset", DataType::Int32, true),
                        Field::new("sizeInBytes", DataType::Int32, false),
                        i64f("cardinality", false),
                    ],
                ),
            ],
        ),
        s(
            "remove",
            vec![
                utf8("path", false),
                i64f("deletionTimestamp", true),
                boolf("dataChange", false),
                boolf("extendedFileMetadata", true),
                Field::new("partitionValues", string_map(), true),
                i64f("size", true),
            ],
        ),
        s(
            "metaData",
            vec![
                utf8("id", false),
                utf8("name", true),
                utf8("description", true),
                s(
                    "format",
                    vec![
                        utf8("provider", false),
                        Field::new("options", string_map(), true),
                    ],
                ),
                utf8("schemaString", false),
                Field::new("partitionColumns", string_list(), true),
                Field::new("configuration", string_map(), true),
                i64f("createdTime", true),
            ],
        ),
        s(
            "protocol",
            vec![
                Field::new("minReaderVersion", DataType::Int32, false),
                Field::new("minWriterVersion", DataType::Int32, false),
                Field::new("readerFeatures", string_list(), true),
                Field::new("writerFeatures", string_list(), true),
            ],
        ),
    ]))
}

/// A checkpoint file holding `actions` (protocol, metaData, txn, add, remove; no commitInfo).
pub fn encode_checkpoint(location: &str, actions: &[Action]) -> Result<Bytes> {
    let schema = checkpoint_schema();
    let mut json = Vec::new();
    for a in actions {
        serde_json::to_writer(&mut json, a)
            .map_err(|e| delta_err(location, format!("checkpoint: {e}")))?;
        json.push(b'\n');
    }
    let err = |e: &dyn std::fmt::Display| delta_err(location, format!("writing checkpoint: {e}"));
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(actions.len().max(1))
        .build_decoder()
        .map_err(|e| err(&e))?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut rest = &json[..];
    while !rest.is_empty() {
        let n = decoder.decode(rest).map_err(|e| err(&e))?;
        rest = &rest[n..];
        if let Some(b) = decoder.flush().map_err(|e| err(&e))? {
            batches.push(b);
        }
        if n == 0 && !rest.iter().all(u8::is_ascii_whitespace) {
            return Err(err(&"the action decoder stopped before the last action"));
        }
        if n == 0 {
            break;
        }
    }
    // A checkpoint missing an action would make readers lose files: count them.
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows != actions.len() {
        return Err(err(&format!("{rows} rows for {} actions", actions.len())));
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(|e| err(&e))?;
    for b in &batches {
        writer.write(b).map_err(|e| err(&e))?;
    }
    Ok(Bytes::from(writer.into_inner().map_err(|e| err(&e))?))
}

/// The actions in a checkpoint file (any writer's classic checkpoint).
pub fn decode_checkpoint(location: &str, bytes: Bytes) -> Result<Vec<Action>> {
    let err = |e: &dyn std::fmt::Display| delta_err(location, format!("reading checkpoint: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| err(&e))?;
    // Only the action kinds Medallion replays; other writers add columns (stats_parsed,
    // sidecar, domainMetadata…) that would only cost decoding.
    let wanted = ["txn", "add", "remove", "metaData", "protocol"];
    let roots: Vec<usize> = builder
        .parquet_schema()
        .root_schema()
        .get_fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted.contains(&f.name()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| err(&e))?;
    let mut actions = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(&e))?;
        let mut json = Vec::new();
        {
            let mut w = LineDelimitedWriter::new(&mut json);
            w.write(&batch).map_err(|e| err(&e))?;
            w.finish().map_err(|e| err(&e))?;
        }
        let text = std::str::from_utf8(&json).map_err(|e| err(&e))?;
        for (n, line) in text.lines().enumerate() {
            if let Some(a) = Action::parse_line(line).map_err(|e| {
                delta_err(
                    location,
                    format!("checkpoint row {}: {e}", actions.len() + n),
                )
            })? {
                actions.push(a);
            }
        }
    }
    Ok(actions)
}

/// Writes a checkpoint of `snapshot` and points `_last_checkpoint` at it (unless it already
/// points at a later one). The checkpoint holds only what the log already says, so writing it
/// twice (two writers) writes the same state.
pub async fn write_checkpoint(
    storage: &dyn Storage,
    snapshot: &Snapshot,
    now_ms: i64,
) -> Result<()> {
    let location = checkpoint_location(&snapshot.location, snapshot.version);
    let actions = snapshot.checkpoint_actions(now_ms);
    let bytes = encode_checkpoint(&location, &actions)?;
    storage.put(&location, bytes).await?;
    let last = last_checkpoint_location(&snapshot.location);
    let newer = read_last_checkpoint(storage, &snapshot.location)
        .await?
        .is_none_or(|l| l.version < snapshot.version);
    if newer {
        let body = serde_json::to_vec(&LastCheckpoint {
            version: snapshot.version,
            size: actions.len() as u64,
            parts: None,
        })
        .map_err(|e| delta_err(&last, e.to_string()))?;
        storage.put(&last, Bytes::from(body)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_survive_a_checkpoint_round_trip() {
        let lines = [
            r#"{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}"#,
            r#"{"metaData":{"id":"x","format":{"provider":"parquet","options":{}},"schemaString":"{\"type\":\"struct\",\"fields\":[]}","partitionColumns":["p"],"configuration":{"delta.checkpointInterval":"5","k":null},"createdTime":1}}"#,
            r#"{"txn":{"appId":"stream-1","version":42,"lastUpdated":7}}"#,
            r#"{"add":{"path":"p=a%20b/part-1.parquet","partitionValues":{"p":"a b"},"size":10,"modificationTime":3,"dataChange":false,"stats":"{\"numRecords\":2}","tags":{"medallion.source":"/x.csv"}}}"#,
            r#"{"add":{"path":"p=__HIVE_DEFAULT_PARTITION__/part-2.parquet","partitionValues":{"p":null},"size":11,"modificationTime":3,"dataChange":false}}"#,
            r#"{"remove":{"path":"old.parquet","deletionTimestamp":9,"dataChange":true,"extendedFileMetadata":true,"partitionValues":{},"size":4}}"#,
        ];
        let actions: Vec<Action> = lines
            .iter()
            .map(|l| Action::parse_line(l).unwrap().unwrap())
            .collect();
        let bytes = encode_checkpoint("t", &actions).unwrap();
        let back = decode_checkpoint("t", bytes).unwrap();
        // The file keeps NULL map values (other readers see `"p": null`); reading them back
        // through arrow-json drops such entries, which means the same here: a partition value
        // or property that is absent is NULL.
        let mut expected = actions.clone();
        for a in &mut expected {
            match a {
                Action::Metadata(m) => m.configuration.retain(|_, v| v.is_some()),
                Action::Add(a) => a.partition_values.retain(|_, v| v.is_some()),
                _ => {}
            }
        }
        assert_eq!(back, expected);
    }
}
