//! A query's result, kept as Arrow batches until JavaScript asks for it in a form: plain
//! objects (through JSON text, the same writer `medallion query --format json` uses, so the
//! values are identical to the native CLI's) or an Arrow IPC stream.

use medallion_core::arrow::array::RecordBatch;
use medallion_core::arrow::datatypes::SchemaRef;
use medallion_core::arrow::ipc::writer::StreamWriter;
use medallion_core::arrow::json::ArrayWriter;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
pub struct QueryResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    parts: usize,
}

impl QueryResult {
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self {
            schema,
            batches,
            parts: 1,
        }
    }

    /// A result of a query whose scans ran in `parts` parts (Web Workers).
    pub fn in_parts(self, parts: usize) -> Self {
        Self { parts, ..self }
    }
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

#[wasm_bindgen]
impl QueryResult {
    #[wasm_bindgen(getter, js_name = numRows)]
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// How many parts the query's scans ran in: 1 when it ran whole on one engine.
    #[wasm_bindgen(getter)]
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Column names, in order.
    #[wasm_bindgen(getter)]
    pub fn columns(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The rows as a JSON array of objects (JSON.parse it for plain objects).
    #[wasm_bindgen(js_name = toJSONText)]
    pub fn to_json_text(&self) -> Result<String, JsValue> {
        let mut out = Vec::new();
        let mut writer = ArrayWriter::new(&mut out);
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        writer.write_batches(&refs).map_err(js_error)?;
        writer.finish().map_err(js_error)?;
        drop(writer);
        if out.is_empty() {
            return Ok("[]".into());
        }
        String::from_utf8(out).map_err(js_error)
    }

    /// The result as an Arrow IPC stream (what apache-arrow's `tableFromIPC` reads).
    #[wasm_bindgen(js_name = toIPC)]
    pub fn to_ipc(&self) -> Result<Vec<u8>, JsValue> {
        let mut out = Vec::new();
        let mut writer = StreamWriter::try_new(&mut out, &self.schema).map_err(js_error)?;
        for b in &self.batches {
            writer.write(b).map_err(js_error)?;
        }
        writer.finish().map_err(js_error)?;
        drop(writer);
        Ok(out)
    }
}
