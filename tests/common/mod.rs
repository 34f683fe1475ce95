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

/// Asserts that `t` is the tensor torch recorded in `row` (a `expected.json` row written by a
/// scripts/make_*.py generator: dtype, shape, stride, storage_offset, requires_grad, parameter,
/// conj, neg, sha256 of the row-major bytes); `at` names it in failures.
#[allow(dead_code)] // not every test binary that includes `common` compares torch rows
pub fn assert_tensor_matches_torch_row(t: &mmckpt::Tensor<'_>, row: &serde_json::Value, at: &str) {
    let ints = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        t.dtype().name(),
        row["dtype"].as_str().unwrap(),
        "{at}: dtype"
    );
    assert_eq!(t.shape(), ints(&row["shape"]).as_slice(), "{at}: shape");
    assert_eq!(t.strides(), ints(&row["stride"]).as_slice(), "{at}: stride");
    assert_eq!(
        t.storage_offset(),
        row["storage_offset"].as_i64().unwrap(),
        "{at}: offset"
    );
    assert_eq!(
        t.requires_grad(),
        row["requires_grad"].as_bool().unwrap(),
        "{at}: requires_grad"
    );
    assert_eq!(
        t.is_parameter(),
        row["parameter"].as_bool().unwrap(),
        "{at}: parameter"
    );
    assert_eq!(t.is_conj(), row["conj"].as_bool().unwrap(), "{at}: conj");
    assert_eq!(t.is_neg(), row["neg"].as_bool().unwrap(), "{at}: neg");
    assert_eq!(
        sha256_hex(&t.contiguous_bytes()),
        row["sha256"].as_str().unwrap(),
        "{at}: bytes"
    );
}

/// A JSON array of integers (shapes, offsets in the torch-written expectations).
pub fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Row-major bytes of `whole` (of `shape`) narrowed to `[start, start + length)` along `dim`.
pub fn narrow(
    whole: &[u8],
    shape: &[i64],
    itemsize: usize,
    dim: usize,
    start: i64,
    length: i64,
) -> Vec<u8> {
    let outer: i64 = shape[..dim].iter().product();
    let inner = shape[dim + 1..].iter().product::<i64>() as usize * itemsize;
    let mut out = Vec::new();
    for o in 0..outer {
        let base = (o * shape[dim] + start) as usize * inner;
        out.extend_from_slice(&whole[base..base + length as usize * inner]);
    }
    out
}
