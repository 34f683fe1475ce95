//! Prefetch plans (`Checkpoint::prefetch_while`, `LoadOptions::prefetch`): the same results
//! in every open mode, and in per-tensor mode exactly the touched storages' bytes read, even
//! with a window smaller than one storage.

use mmckpt::{Checkpoint, LoadOptions, Module, OpenMode, OpenOptions, DEFAULT_PREFETCH_BUDGET};
use std::collections::HashSet;

const FIXTURES: [&str; 4] = ["transposed.pt", "dtypes.pt", "bigendian.pt", "legacy.pt"];
const MODES: [OpenMode; 3] = [OpenMode::Map, OpenMode::Read, OpenMode::PerTensor];

fn open(fixture: &str, mode: OpenMode) -> Checkpoint {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    Checkpoint::open(
        path,
        &OpenOptions {
            mode,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// A copy load of every entry; returns each entry's name and bytes, and the bytes read.
fn copy_load(fixture: &str, mode: OpenMode, prefetch: bool) -> (Vec<(String, Vec<u8>)>, u64) {
    let ckpt = open(fixture, mode);
    let mut module = Module::from_checkpoint(&ckpt).unwrap();
    module.materialize().unwrap();
    let options = LoadOptions {
        prefetch,
        ..LoadOptions::default()
    };
    let report = module.load(&ckpt, &options).unwrap();
    assert!(!report.is_failure(), "{fixture}: {}", report.message());
    let entries = module
        .entries()
        .iter()
        .map(|e| (e.name().to_string(), e.bytes().unwrap().to_vec()))
        .collect();
    (entries, ckpt.file_bytes_read())
}

#[test]
fn a_prefetched_copy_load_gives_the_same_entries_in_every_mode() {
    for fixture in FIXTURES {
        let (expected, _) = copy_load(fixture, OpenMode::Map, false);
        assert!(!expected.is_empty(), "{fixture}");
        for mode in MODES {
            let (plain, plain_read) = copy_load(fixture, mode, false);
            let (prefetched, prefetched_read) = copy_load(fixture, mode, true);
            assert_eq!(plain, expected, "{fixture} {mode:?} without prefetch");
            assert_eq!(prefetched, expected, "{fixture} {mode:?} with prefetch");
            assert_eq!(
                prefetched_read, plain_read,
                "{fixture} {mode:?}: bytes read"
            );
        }
    }
}

/// The bytes of the distinct storages of `indices`.
fn storage_bytes(ckpt: &Checkpoint, indices: &[usize]) -> u64 {
    let mut seen = HashSet::new();
    indices
        .iter()
        .filter_map(|&i| ckpt.tensor_at(i).ok())
        .filter(|t| seen.insert(t.storage_id()))
        .map(|t| t.storage_nbytes() as u64)
        .sum()
}

#[test]
fn per_tensor_prefetch_reads_exactly_the_touched_storages() {
    let fixture = "transposed.pt";
    let all = open(fixture, OpenMode::Map);
    // Every other entry: a share of the file, not the whole of it.
    let share: Vec<usize> = (0..all.len()).step_by(2).collect();
    assert!(share.len() >= 2 && share.len() < all.len());
    let touched = storage_bytes(&all, &share);
    for budget in [DEFAULT_PREFETCH_BUDGET, 1] {
        let ckpt = open(fixture, OpenMode::PerTensor);
        let before = ckpt.file_bytes_read();
        let loaded: Vec<Vec<u8>> = ckpt.prefetch_while(&share, budget, |cursor| {
            share
                .iter()
                .map(|&i| {
                    let t = ckpt.tensor_at(i).unwrap();
                    cursor.consumed(&t);
                    t.contiguous_bytes().into_owned()
                })
                .collect()
        });
        assert_eq!(
            ckpt.file_bytes_read() - before,
            touched,
            "budget {budget}: the share's storages, each once, and nothing else"
        );
        for (&i, bytes) in share.iter().zip(&loaded) {
            assert_eq!(*bytes, *all.tensor_at(i).unwrap().contiguous_bytes(), "{i}");
        }
    }
}

#[test]
fn a_consumer_that_stops_early_ends_the_prefetch() {
    // A window of one byte and a consumer that never advances: only the first storage may be
    // fetched, and the call returns.
    let ckpt = open("transposed.pt", OpenMode::PerTensor);
    let indices: Vec<usize> = (0..ckpt.len()).collect();
    let largest = (0..ckpt.len())
        .filter_map(|i| ckpt.tensor_at(i).ok().map(|t| t.storage_nbytes() as u64))
        .max()
        .unwrap();
    let fresh = open("transposed.pt", OpenMode::PerTensor);
    let before = fresh.file_bytes_read();
    fresh.prefetch_while(&indices, 1, |_| ());
    assert!(fresh.file_bytes_read() - before <= largest);
}

#[test]
fn a_prefetched_load_under_a_prefix_reads_only_that_share() {
    let fixture = "transposed.pt";
    let all = open(fixture, OpenMode::Map);
    let first = all.name_at(0).unwrap().to_string();
    let Some((prefix, _)) = first.split_once('.') else {
        panic!("{first} has no prefix");
    };
    let share: Vec<usize> = (0..all.len())
        .filter(|&i| all.name_at(i).unwrap().starts_with(&format!("{prefix}.")))
        .collect();
    assert!(share.len() < all.len());
    let touched = storage_bytes(&all, &share);

    let ckpt = open(fixture, OpenMode::PerTensor);
    let whole = open(fixture, OpenMode::Map);
    let mut module = Module::from_checkpoint_under(&whole, prefix).unwrap();
    module.materialize().unwrap();
    let before = ckpt.file_bytes_read();
    let options = LoadOptions {
        prefix: prefix.to_string(),
        strict: false,
        prefetch: true,
        ..LoadOptions::default()
    };
    module.load(&ckpt, &options).unwrap();
    assert_eq!(ckpt.file_bytes_read() - before, touched);
}

#[test]
fn per_tensor_prefetch_reads_ahead_on_its_own_thread() {
    // The consumer asks for no tensor: whatever is read, the prefetch thread read, in a window
    // that covers the whole (small) file.
    let ckpt = open("transposed.pt", OpenMode::PerTensor);
    let indices: Vec<usize> = (0..ckpt.len()).collect();
    let touched = storage_bytes(&open("transposed.pt", OpenMode::Map), &indices);
    let before = ckpt.file_bytes_read();
    ckpt.prefetch_while(&indices, DEFAULT_PREFETCH_BUDGET, |_| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while ckpt.copies_pending() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    assert_eq!(ckpt.copies_pending(), 0);
    assert_eq!(ckpt.file_bytes_read() - before, touched);
}
