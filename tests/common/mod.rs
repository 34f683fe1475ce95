//! Shared helpers for the integration tests: fixture paths, the torch-written manifest, and the
//! `expected.tsv` tables that come with the hand-made inputs.
#![allow(dead_code)]

use mmckpt::ErrorKind;
use serde_json::Value;
use std::path::{Path, PathBuf};

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

/// The rows of `dir/expected.tsv` (written with the files in `dir` by scripts/make_*.py):
/// tab-separated columns; `#` comments and blank lines skipped.
pub fn expected_rows(dir: &Path) -> Vec<Vec<String>> {
    let path = dir.join("expected.tsv");
    let table =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// The error kind of a C status name in an `expected.tsv` (`MMCKPT_ERR_FORMAT`, …); `None` for
/// `MMCKPT_OK`.
pub fn status_kind(status: &str) -> Option<ErrorKind> {
    use ErrorKind::*;
    if status == "MMCKPT_OK" {
        return None;
    }
    Some(
        [Format, Unsupported, Unsafe, Limit, Io, NotFound]
            .into_iter()
            .find(|k| k.status_name() == status)
            .unwrap_or_else(|| panic!("unexpected status {status} in expected.tsv")),
    )
}
