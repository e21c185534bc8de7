//! Bronze ingestion of arbitrary bytes as CSV and NDJSON, inferred and with a declared
//! schema: any input is rows or rescued rows with a reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medallion_core::source::parse;
use medallion_core::spec::{CsvOptions, Format, PipelineSpec};

fuzz_target!(|data: &[u8]| {
    let declared = PipelineSpec::from_toml(
        "[bronze.t]\npath = \"x\"\nschema = { id = \"bigint\", name = \"string\", at = \"timestamp\", amount = \"decimal(10,2)\" }\n",
    )
    .ok()
    .and_then(|s| s.bronze["t"].declared_schema().ok().flatten());
    for format in [Format::Csv, Format::Ndjson] {
        for schema in [None, declared.as_ref()] {
            let bytes = bytes::Bytes::copy_from_slice(data);
            let _ = parse("fuzz-input", format, &bytes, schema, &CsvOptions::default());
        }
    }
});
