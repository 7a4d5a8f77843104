//! Replays the committed fuzz corpus (fuzz/corpus/<target>/*) through the fuzz targets' own
//! harness (tests/common/fuzz_harness.rs) on the stable toolchain: every input the fuzzer kept
//! for its coverage, and every crash reproducer whose bug was fixed, must run without a panic.
//! Building and running the fuzzer itself: RELIABILITY.md "Fuzzing".

#[path = "common/fuzz_harness.rs"]
mod harness;

use std::panic::catch_unwind;
use std::path::PathBuf;

/// Runs every file of fuzz/corpus/`target` through `run`; returns how many there were.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if catch_unwind(|| run(&data)).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs of fuzz target `{target}` panicked (messages above):\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    println!("fuzz corpus `{target}`: {} inputs, no panic", files.len());
    files.len()
}

#[test]
fn model_file_corpus_replays_without_panics() {
    // A missing or emptied corpus would make this test pass vacuously.
    assert!(replay("model_file", harness::model_file) >= 20);
}

#[test]
fn metadata_corpus_replays_without_panics() {
    assert!(replay("metadata", harness::metadata) >= 20);
}
