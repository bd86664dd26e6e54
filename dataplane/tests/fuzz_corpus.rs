//! Replays the fuzz targets' committed inputs (`fuzz/seeds/<target>/`: seeds and the
//! inputs that crashed older code) through the same target logic the fuzzers run
//! (`fuzz/src/targets.rs`), as a plain test: no instrumented build, no cargo-fuzz. A
//! finding the fuzzers once made therefore stays fixed in `make test`. See docs/fuzzing.md.

#[path = "../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no committed inputs for {target}");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let run = std::panic::catch_unwind(|| targets::run(target, &data));
        assert!(run.is_ok(), "{target}: {} fails", file.display());
    }
}

#[test]
fn every_target_has_committed_inputs() {
    for target in targets::TARGETS {
        assert!(!inputs(target).is_empty(), "{target}");
    }
}

#[test]
fn wsframe_corpus() {
    replay("wsframe");
}

#[test]
fn engine_packet_corpus() {
    replay("engine_packet");
}

#[test]
fn socketio_packet_corpus() {
    replay("socketio_packet");
}

#[test]
fn policy_corpus() {
    replay("policy");
}

#[test]
fn config_corpus() {
    replay("config");
}
