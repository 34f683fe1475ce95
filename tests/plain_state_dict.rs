//! The plain state-dict reader (`checkpoint::plain`) against the generic path: every
//! torch-written file of the repository opened both ways gives the same table, tensors,
//! storages and values, or the same error (`mmckpt::fuzzing::plain_matches_generic`); the
//! files of tests/data/plain (scripts/make_plain_fixtures.py) match what torch loaded; and every
//! byte of a plain pickle replaced by each opcode byte, every truncation, and hand-made pickles
//! near the layout (a repeated key, memo references of the wrong kind) open alike both ways.

mod common;
mod support_zip;

use common::repo_path;
use mmckpt::fuzzing::plain_matches_generic;
use mmckpt::{Checkpoint, OpenOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every `.pt` / `.pth` file under `dir`, recursively, sorted.
fn torch_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            torch_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("pt" | "pth")
        ) {
            out.push(path);
        }
    }
}

/// The files scripts/make_plain_fixtures.py writes as plain state dicts; its other files are
/// near the layout but not it.
const PLAIN: &[&str] = &[
    "linear_3",
    "linear_700",
    "linear_500_5",
    "dtypes",
    "views",
    "requires_grad",
    "keys",
    "metadata_versions",
    "no_metadata",
    "odd_metadata",
    "single",
    "empty",
];

#[test]
fn every_torch_written_file_opens_alike_both_ways() {
    let mut files = Vec::new();
    torch_files(&repo_path("tests/fixtures"), &mut files);
    torch_files(&repo_path("tests/data"), &mut files);
    assert!(files.len() > 100, "{}", files.len());
    let mut plain = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let read_plain = std::panic::catch_unwind(|| plain_matches_generic(&bytes))
            .unwrap_or_else(|_| panic!("{}", path.display()));
        if read_plain {
            plain.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    for name in PLAIN {
        assert!(plain.iter().any(|p| p == name), "{name} was not read plain");
    }
    for name in [
        "plain_dict",
        "parameters",
        "with_values",
        "nested",
        "newer_dtypes",
    ] {
        assert!(!plain.iter().any(|p| p == name), "{name} was read plain");
    }
}

#[test]
fn plain_files_match_what_torch_loaded() {
    let text = std::fs::read_to_string(repo_path("tests/data/plain/expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    for name in PLAIN {
        let case = &expected[*name];
        let path = repo_path(&format!("tests/data/plain/{name}.pt"));
        let ckpt = Checkpoint::open(&path, &OpenOptions::default()).unwrap();
        assert_eq!(
            ckpt.len() as u64,
            case["tensors"].as_u64().unwrap(),
            "{name}"
        );
        for (key, row) in case["rows"].as_object().unwrap() {
            let t = ckpt
                .tensor(key)
                .unwrap_or_else(|e| panic!("{name}: {key}: {e}"));
            let ints = |v: &Value| common::ints(v);
            assert_eq!(
                t.dtype().name(),
                row["dtype"].as_str().unwrap(),
                "{name}: {key}"
            );
            assert_eq!(t.shape(), ints(&row["shape"]), "{name}: {key}");
            assert_eq!(t.strides(), ints(&row["stride"]), "{name}: {key}");
            assert_eq!(
                t.storage_offset(),
                row["offset"].as_i64().unwrap(),
                "{name}: {key}"
            );
            assert_eq!(t.requires_grad(), row["requires_grad"].as_bool().unwrap());
        }
    }
}

/// The record `data.pkl` of a torch archive: where it is in the file.
fn pickle_range(bytes: &[u8]) -> std::ops::Range<usize> {
    let archive = mmckpt::fuzzing::zip::parse(bytes, &Default::default()).unwrap();
    let record = archive.get("data.pkl").unwrap();
    let start = record.data_offset as usize;
    start..start + record.size as usize
}

#[test]
fn every_byte_of_a_plain_pickle_replaced_opens_alike_both_ways() {
    // The opcodes the reader takes, the ones next to them, and bytes that are none.
    let replacements = [
        0x00, 0xff, b'q', b'r', b'h', b'j', b'(', b't', b'K', b'M', b'J', b'X', b'u', b's', b'}',
        b')', b'R', b'Q', b'c', b'b', b'.', 0x85, 0x86, 0x87, 0x88, 0x89, 0x8c, 0x80, b'0', b'N',
        b'1', b'a',
    ];
    let mut opened = 0usize;
    let mut compared = 0usize;
    for name in ["linear_3", "views", "requires_grad", "odd_metadata"] {
        let original = std::fs::read(repo_path(&format!("tests/data/plain/{name}.pt"))).unwrap();
        let range = pickle_range(&original);
        for at in range {
            for &byte in &replacements {
                if original[at] == byte {
                    continue;
                }
                let mut mutant = original.clone();
                mutant[at] = byte;
                if plain_matches_generic(&mutant) {
                    opened += 1;
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 20_000, "{compared}");
    // Some replacements keep the layout (another memo key, another int): read plain still.
    assert!(opened > 100, "{opened}");
}

/// `OrderedDict(items)` with `_metadata`, protocol 2, each tensor a fresh storage.
fn state_dict(items: &[(&str, &[u8])]) -> Vec<u8> {
    use support_zip::pk;
    let mut p = vec![0x80, 2];
    p.extend(pk::global("collections", "OrderedDict"));
    p.extend([b'q', 0, b')', b'R', b'q', 1, b'(']);
    for (key, value) in items {
        p.extend(pk::unicode(key));
        p.extend_from_slice(value);
    }
    p.extend_from_slice(b"u.");
    p
}

fn open_both_ways(pickle: &[u8], storages: usize) -> bool {
    let data: Vec<(String, Vec<u8>)> = (0..storages)
        .map(|k| (k.to_string(), vec![0u8; 16]))
        .collect();
    let records: Vec<(&str, &[u8])> = data.iter().map(|(k, b)| (k.as_str(), &b[..])).collect();
    plain_matches_generic(&support_zip::checkpoint(pickle, &records))
}

#[test]
fn hand_made_pickles_near_the_layout_open_alike_both_ways() {
    use support_zip::pk;
    let t = |key: &str| pk::tensor(key, 4, 0, &[4], &[1]);
    // The layout: read plain.
    assert!(open_both_ways(
        &state_dict(&[("a", &t("0")), ("b", &t("1"))]),
        2
    ));
    // A repeated key (Python keeps the first position and the last value): the generic path.
    assert!(!open_both_ways(
        &state_dict(&[("a", &t("0")), ("a", &t("1"))]),
        2
    ));
    // Two tensors of one storage.
    assert!(open_both_ways(
        &state_dict(&[("a", &t("0")), ("b", &t("0"))]),
        1
    ));
    // A storage the archive lacks, a count larger than the record: the generic path's error.
    assert!(!open_both_ways(&state_dict(&[("a", &t("7"))]), 1));
    assert!(!open_both_ways(
        &state_dict(&[("a", &pk::tensor("0", 9, 0, &[9], &[1]))]),
        1
    ));
    // A view past its storage's end, a negative stride.
    assert!(!open_both_ways(
        &state_dict(&[("a", &pk::tensor("0", 4, 2, &[4], &[1]))]),
        1
    ));
    assert!(!open_both_ways(
        &state_dict(&[("a", &pk::tensor("0", 4, 3, &[2], &[-1]))]),
        1
    ));
    // Items without a MARK (one SETITEM each, not what CPython writes for two).
    let mut p = vec![0x80, 2];
    p.extend(pk::global("collections", "OrderedDict"));
    p.extend([b')', b'R']);
    for (key, storage) in [("a", "0"), ("b", "1")] {
        p.extend(pk::unicode(key));
        p.extend(t(storage));
        p.push(b's');
    }
    p.push(b'.');
    assert!(!open_both_ways(&p, 2));
    // A memo reference to a value of another kind where a string is read (the storage tag).
    let mut p = state_dict(&[("a", &t("0"))]);
    let tag = p.windows(7).position(|w| w == b"storage").unwrap() - 5;
    p.splice(tag..tag + 12, [b'h', 1]);
    assert!(!open_both_ways(&p, 1));
}
