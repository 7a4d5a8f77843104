//! Bytes as the JSON strings of a model file's metadata (unet_config, scheduler_config and the
//! other keys), through config validation, scheduler construction and model-file parsing.
//! See tests/common/fuzz_harness.rs.
#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::metadata(data));
