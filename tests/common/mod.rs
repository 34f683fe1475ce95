//! Shared helpers for the integration tests: fixture paths and the torch-written manifest.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn fixture(name: &str) -> PathBuf {
    repo_path("tests/fixtures").join(name)
}

/// `tests/fixtures/manifest.json`, written by scripts/make_fixtures.py from what torch.load
/// returns.
pub fn manifest() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixture("manifest.json")).expect("manifest.json");
    match serde_json::from_str(&text).expect("manifest.json is JSON") {
        Value::Object(map) => map,
        _ => panic!("manifest.json is not an object"),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
