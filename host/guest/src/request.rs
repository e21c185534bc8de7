//! What the host asks of the guest, and the answers. A request is JSON, followed for
//! `query_finish` by a newline and the parts' results; an answer is one line of JSON
//! (`{"ok": …}` or `{"error": "…"}`), followed for a query by its result as Arrow IPC.

use std::sync::Arc;

use medallion_core::arrow::array::RecordBatch;
use medallion_core::arrow::datatypes::SchemaRef;
use medallion_core::arrow::ipc::writer::StreamWriter;
use medallion_core::datafusion::prelude::SessionContext;
use medallion_core::pipeline::{self, Progress, RunOptions, TableState};
use medallion_core::query::{collect_sql, new_context, register_location, EngineOptions};
use medallion_core::query_parts::{self, QueryParts};
use medallion_core::spec::PipelineSpec;
use medallion_core::storage::{CountingStorage, Storage};
use serde::Deserialize;
use serde_json::json;

use crate::abi;
use crate::host_storage::{HostClock, HostStorage};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    /// Build `tables` of the pipeline `spec` (TOML) and stage their new versions; `inputs`
    /// are tables staged by other instances of the same run. Answers a `pipeline::Staged`.
    Stage {
        spec: String,
        options: RunOptions,
        tables: Vec<String>,
        #[serde(default)]
        inputs: Vec<TableState>,
    },
    /// Run `sql` over tables registered by name. Answers `{"rows", "io"}` and the rows as an
    /// Arrow IPC stream.
    Query {
        sql: String,
        tables: Vec<QueryTable>,
        #[serde(default)]
        engine: EngineOptions,
    },
    /// Part `part` of `sql` split into `parts` instances (`medallion_core::query_parts`).
    /// Answers `{"fingerprint", "lengths", "io"}` and one Arrow IPC stream per cut, of those
    /// lengths. A query that does not split has `"fingerprint": null`; part 0 then answers
    /// the whole query, as `query` does.
    QueryPart {
        sql: String,
        tables: Vec<QueryTable>,
        #[serde(default)]
        engine: EngineOptions,
        parts: usize,
        part: usize,
    },
    /// The rest of `sql` over the parts' results, which follow the request: each part's
    /// streams as it answered them, part by part, `lengths[part][cut]` bytes each. Answers as `query`
    /// does, or `{"changed": true}` if this instance's plan is not the parts'
    /// (`fingerprint`): a table changed in between.
    QueryFinish {
        sql: String,
        tables: Vec<QueryTable>,
        #[serde(default)]
        engine: EngineOptions,
        parts: usize,
        fingerprint: String,
        lengths: Vec<Vec<usize>>,
    },
}

/// A table of a query: a Parquet file or glob, or a Delta table (prefix `delta:`).
#[derive(Deserialize)]
struct QueryTable {
    name: String,
    location: String,
}

/// Handles one request; never fails (errors are answers too).
pub fn handle(request: &[u8]) -> Vec<u8> {
    // JSON as serde_json writes it holds no raw newline: the first one ends the request.
    let (request, payload) = match request.iter().position(|&b| b == b'\n') {
        Some(i) => (&request[..i], &request[i + 1..]),
        None => (request, &[][..]),
    };
    let request: Request = match serde_json::from_slice(request) {
        Ok(r) => r,
        Err(e) => return error(format!("the request is not valid: {e}")),
    };
    let request = match request {
        Request::QueryFinish {
            sql,
            tables,
            engine,
            parts,
            fingerprint,
            lengths,
        } => {
            return query_finish(
                &sql,
                &tables,
                engine,
                parts,
                &fingerprint,
                &lengths,
                payload,
            )
        }
        other => other,
    };
    futures::executor::block_on(async {
        match request {
            Request::Stage {
                spec,
                options,
                tables,
                inputs,
            } => stage(&spec, &options, &tables, &inputs).await,
            Request::Query {
                sql,
                tables,
                engine,
            } => query(&sql, &tables, engine, counting_storage()).await,
            Request::QueryPart {
                sql,
                tables,
                engine,
                parts,
                part,
            } => query_part(&sql, &tables, engine, parts, part).await,
            Request::QueryFinish { .. } => error("query_finish runs on its own runtime".into()),
        }
    })
}

fn error(message: String) -> Vec<u8> {
    line(&json!({ "error": message }))
}

fn line(value: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

async fn stage(
    spec: &str,
    options: &RunOptions,
    tables: &[String],
    inputs: &[TableState],
) -> Vec<u8> {
    let spec = match PipelineSpec::from_toml(spec) {
        Ok(s) => s,
        Err(e) => return error(e.to_string()),
    };
    let storage: Arc<dyn Storage> = Arc::new(HostStorage);
    let staged = pipeline::stage(
        &spec,
        storage,
        &HostClock,
        options,
        tables,
        inputs,
        &report_progress,
    )
    .await;
    match staged {
        Ok(s) => match serde_json::to_value(&s) {
            Ok(v) => line(&json!({ "ok": v })),
            Err(e) => error(format!("serialising the staged tables: {e}")),
        },
        Err(e) => error(e.to_string()),
    }
}

/// Forwards the run's progress to the host.
fn report_progress(event: Progress) {
    let event = match event {
        Progress::Planned { tables } => json!({ "event": "planned", "tables": tables }),
        Progress::TableStarted { table, layer } => {
            json!({ "event": "table_started", "table": table, "layer": layer })
        }
        Progress::FileIngested { table, file, bytes } => {
            json!({ "event": "file_ingested", "table": table, "file": file, "bytes": bytes })
        }
        Progress::TableFinished {
            table,
            rows,
            skipped,
        } => json!({ "event": "table_finished", "table": table, "rows": rows, "skipped": skipped }),
        Progress::Committing { tables } => json!({ "event": "committing", "tables": tables }),
    };
    let bytes = serde_json::to_vec(&event).unwrap_or_default();
    // SAFETY: `bytes` is valid for the duration of the call.
    unsafe { abi::progress(bytes.as_ptr(), bytes.len() as u32) };
}

/// Registers the query's tables in `ctx`, counting what is read through `counting`.
async fn register(
    ctx: &SessionContext,
    counting: &Arc<CountingStorage>,
    tables: &[QueryTable],
) -> Result<(), Vec<u8>> {
    let storage: Arc<dyn Storage> = counting.clone();
    for t in tables {
        if let Err(e) = register_location(ctx, &storage, &t.name, &t.location).await {
            return Err(error(format!("table `{}` ({}): {e}", t.name, t.location)));
        }
    }
    Ok(())
}

fn counting_storage() -> Arc<CountingStorage> {
    Arc::new(CountingStorage::new(Arc::new(HostStorage)))
}

/// The whole query in this instance; `counting` counts its reads (and any made before).
async fn query(
    sql: &str,
    tables: &[QueryTable],
    engine: EngineOptions,
    counting: Arc<CountingStorage>,
) -> Vec<u8> {
    let ctx = new_context(engine);
    if let Err(answer) = register(&ctx, &counting, tables).await {
        return answer;
    }
    match collect_sql(&ctx, "query", sql).await {
        Ok((schema, batches)) => rows_answer(&schema, batches, &counting),
        Err(e) => error(e.to_string()),
    }
}

/// A query's answer: its row count and I/O, then its rows as an Arrow IPC stream.
fn rows_answer(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    counting: &CountingStorage,
) -> Vec<u8> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let ipc = match ipc_stream(schema, &batches) {
        Ok(ipc) => ipc,
        Err(e) => return error(e),
    };
    drop(batches);
    let mut out = line(&json!({ "ok": { "rows": rows, "io": counting.stats().counts() } }));
    out.extend_from_slice(&ipc);
    out
}

fn ipc_stream(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut ipc = Vec::new();
    StreamWriter::try_new(&mut ipc, schema)
        .and_then(|mut w| {
            for b in batches {
                w.write(b)?;
            }
            w.finish()
        })
        .map_err(|e| format!("encoding the result as Arrow IPC: {e}"))?;
    Ok(ipc)
}

async fn query_part(
    sql: &str,
    tables: &[QueryTable],
    engine: EngineOptions,
    parts: usize,
    part: usize,
) -> Vec<u8> {
    let counting = counting_storage();
    let ctx = query_parts::context(engine, parts);
    if let Err(answer) = register(&ctx, &counting, tables).await {
        return answer;
    }
    let split = match QueryParts::plan(&ctx, sql).await {
        Ok(split) => split,
        Err(e) => return error(e.to_string()),
    };
    let Some(split) = split else {
        if part == 0 {
            return query(sql, tables, engine, counting).await;
        }
        let io = counting.stats().counts();
        return line(&json!({ "ok": { "fingerprint": null, "io": io } }));
    };
    // Before running: running tightens dynamic filters, which show in the plan.
    let fingerprint = split.fingerprint();
    let outputs = match split.run_part(&ctx, part).await {
        Ok(o) => o,
        Err(e) => return error(e.to_string()),
    };
    let (lengths, streams) = match split.encode_part(&outputs) {
        Ok(encoded) => encoded,
        Err(e) => return error(e.to_string()),
    };
    drop(outputs);
    let io = counting.stats().counts();
    let mut out = line(&json!({ "ok": {
        "fingerprint": fingerprint, "lengths": lengths, "io": io } }));
    out.extend_from_slice(&streams);
    out
}

fn query_finish(
    sql: &str,
    tables: &[QueryTable],
    engine: EngineOptions,
    parts: usize,
    fingerprint: &str,
    lengths: &[Vec<usize>],
    payload: &[u8],
) -> Vec<u8> {
    // DataFusion merges partitions in tokio tasks; one thread runs them all here.
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(r) => r,
        Err(e) => return error(format!("starting the query's task runtime: {e}")),
    };
    runtime.block_on(async {
        let counting = counting_storage();
        let ctx = query_parts::context(engine, parts);
        if let Err(answer) = register(&ctx, &counting, tables).await {
            return answer;
        }
        let split = match QueryParts::plan(&ctx, sql).await {
            Ok(Some(split)) if split.fingerprint() == fingerprint => split,
            Ok(_) => {
                let io = counting.stats().counts();
                return line(&json!({ "ok": { "changed": true, "io": io } }));
            }
            Err(e) => return error(e.to_string()),
        };
        let outputs = match read_outputs(&split, lengths, payload) {
            Ok(o) => o,
            Err(e) => return error(e),
        };
        match split.finish(&ctx, outputs).await {
            Ok((schema, batches)) => rows_answer(&schema, batches, &counting),
            Err(e) => error(e.to_string()),
        }
    })
}

/// The parts' outputs in `payload`, `outputs[part][cut]`: each part's streams in turn.
fn read_outputs(
    split: &QueryParts,
    lengths: &[Vec<usize>],
    payload: &[u8],
) -> Result<Vec<Vec<Vec<RecordBatch>>>, String> {
    if lengths.len() != split.parts() {
        return Err(format!(
            "the results of {} parts were sent, for a plan of {}",
            lengths.len(),
            split.parts()
        ));
    }
    let mut at = 0usize;
    let mut outputs = Vec::with_capacity(lengths.len());
    for (part, part_lengths) in lengths.iter().enumerate() {
        let bytes = part_lengths
            .iter()
            .try_fold(at, |end, &l| end.checked_add(l))
            .and_then(|end| payload.get(at..end))
            .ok_or_else(|| {
                format!(
                    "the result of part {part}: its lengths {part_lengths:?} from byte {at} run past the {} bytes sent",
                    payload.len()
                )
            })?;
        outputs.push(
            split
                .decode_part(part, part_lengths, bytes)
                .map_err(|e| e.to_string())?,
        );
        at += bytes.len();
    }
    if at != payload.len() {
        return Err(format!(
            "{} bytes were sent where the parts' lengths add up to {at}",
            payload.len()
        ));
    }
    Ok(outputs)
}
