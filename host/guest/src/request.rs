//! What the host asks of the guest, and the answers. Requests are JSON; an answer is one
//! line of JSON (`{"ok": …}` or `{"error": "…"}`), followed for a query by its result as an
//! Arrow IPC stream.

use std::sync::Arc;

use medallion_core::arrow::ipc::writer::StreamWriter;
use medallion_core::pipeline::{self, Progress, RunOptions, TableState};
use medallion_core::query::{collect_sql, new_context, register_location, EngineOptions};
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
}

/// A table of a query: a Parquet file or glob, or a Delta table (prefix `delta:`).
#[derive(Deserialize)]
struct QueryTable {
    name: String,
    location: String,
}

/// Handles one request; never fails (errors are answers too).
pub fn handle(request: &[u8]) -> Vec<u8> {
    let request: Request = match serde_json::from_slice(request) {
        Ok(r) => r,
        Err(e) => return error(format!("the request is not valid: {e}")),
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
            } => query(&sql, &tables, engine).await,
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

async fn query(sql: &str, tables: &[QueryTable], engine: EngineOptions) -> Vec<u8> {
    let counting = Arc::new(CountingStorage::new(Arc::new(HostStorage)));
    let io = counting.stats();
    let storage: Arc<dyn Storage> = counting;
    let ctx = new_context(engine);
    for t in tables {
        if let Err(e) = register_location(&ctx, &storage, &t.name, &t.location).await {
            return error(format!("table `{}` ({}): {e}", t.name, t.location));
        }
    }
    let (schema, batches) = match collect_sql(&ctx, "query", sql).await {
        Ok(r) => r,
        Err(e) => return error(e.to_string()),
    };
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut ipc = Vec::new();
    let written = StreamWriter::try_new(&mut ipc, &schema).and_then(|mut w| {
        for b in &batches {
            w.write(b)?;
        }
        w.finish()
    });
    if let Err(e) = written {
        return error(format!("encoding the result as Arrow IPC: {e}"));
    }
    drop(batches);
    let mut out = line(&json!({ "ok": { "rows": rows, "io": io.counts() } }));
    out.extend_from_slice(&ipc);
    out
}
