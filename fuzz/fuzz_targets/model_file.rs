//! Raw bytes as a model file: container and header parsing, metadata, config validation, the
//! tensor check, loading (small models) and sampler construction. See tests/common/fuzz_harness.rs.
#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::model_file(data));
