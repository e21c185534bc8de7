//! The pipeline spec parser and validator on arbitrary text: a spec or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medallion_core::spec::PipelineSpec;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = PipelineSpec::from_toml(text) {
            let _ = medallion_core::dag::plan(&spec);
        }
    }
});
