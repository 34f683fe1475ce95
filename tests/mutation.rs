//! Deterministic mutation test: thousands of mutants of every torch-written fixture (bit flips,
//! truncations at every structural boundary, byte-range duplications, swapped zip entries,
//! substituted pickle opcodes), each opened and, when it opens, walked fully: every name looked
//! up, every tensor's bytes read and checked to lie inside the file, every value visited, and
//! a module built from it and loaded (assign; copy and bfloat16 conversion when small). Each mutant must succeed or
//! fail with an error; a panic, hang or out-of-range byte fails the test.
//!
//! The same generator, in C, runs through the C ABI under ASan+UBSan and valgrind
//! (c_tests/test_mutation.c); this one runs inside Rust, where every slice access is checked.
//! `MMCKPT_MUTANTS_PER_CLASS` scales the number of mutants (default 1.0 = the CI amount).

mod common;
mod mutants;

use common::repo_path;
use mmckpt::module::{LoadOptions, Module};
use mmckpt::values::{self, ValueLimits};
use mmckpt::{Checkpoint, DType, OpenOptions};

fn walk(ckpt: &Checkpoint, file_len: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..ckpt.len() {
        let name = ckpt.name_at(i).expect("index in range").to_owned();
        let first = ckpt.index_of(&name).expect("every name is found");
        assert!(first <= i);
        let by_name = ckpt.tensor(&name);
        let Ok(t) = ckpt.tensor_at(i) else {
            continue;
        };
        assert_eq!(by_name.is_ok(), ckpt.tensor_at(first).is_ok());
        let span = t.desc.span_bytes();
        if let Some(off) = t.file_offset() {
            assert!(off.checked_add(span).is_some_and(|end| end <= file_len));
        }
        let bytes = t.bytes();
        assert_eq!(bytes.len() as u64, span);
        sum = bytes.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        let logical = t.desc.numel.saturating_mul(t.desc.dtype.itemsize() as u64);
        if logical <= 1 << 24 {
            assert_eq!(t.contiguous_bytes().len() as u64, logical);
        }
    }
    sum.wrapping_add(visit_values(ckpt))
        .wrapping_add(load_into_modules(ckpt))
}

/// A skeleton of the checkpoint, assign-loaded; copy-loaded (and converted) when small.
fn load_into_modules(ckpt: &Checkpoint) -> u64 {
    let Ok(mut module) = Module::from_checkpoint(ckpt) else {
        return 0;
    };
    let non_strict = LoadOptions {
        strict: false,
        ..LoadOptions::default()
    };
    let assign = LoadOptions {
        assign: true,
        ..non_strict.clone()
    };
    let _ = module.load(ckpt, &assign);
    let mut sum = 0u64;
    let mut total = 0u64;
    for e in module.entries() {
        if let Some(bytes) = e.bytes() {
            sum = bytes.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        }
        total = total.saturating_add(
            e.numel()
                .saturating_mul(e.declared_dtype().itemsize() as u64),
        );
    }
    if total > 8 << 20 {
        return sum;
    }
    for dtype in [None, Some(DType::BFloat16)] {
        let Ok(mut copy) = Module::from_checkpoint(ckpt) else {
            return sum;
        };
        if let Some(d) = dtype {
            copy.set_floating_dtype(d)
                .expect("a fresh module has no data");
        }
        copy.materialize().expect("small modules materialize");
        let _ = copy.load(ckpt, &non_strict);
    }
    sum
}

/// Every non-tensor value: read through its kind's accessor and found again by its path.
fn visit_values(ckpt: &Checkpoint) -> u64 {
    let leaves = values::leaves(ckpt.arena(), ckpt.root(), &ValueLimits::default());
    let mut sum = 0u64;
    for (i, leaf) in leaves.values.iter().enumerate() {
        let _ = leaf.as_bool();
        let _ = leaf.as_i64();
        let _ = leaf.as_f64();
        let _ = leaf.as_complex();
        let _ = leaf.class_name();
        if let Ok(text) = leaf.text() {
            sum = sum.wrapping_add(text.len() as u64);
        }
        // Looking a value up by its name walks the tree again: do it for the first few.
        if i < 64 {
            let again = values::value(ckpt, leaf.path());
            assert!(
                again.is_ok(),
                "value '{}' is listed but not found",
                leaf.path()
            );
        }
    }
    sum
}

#[test]
fn mutants_of_every_fixture_open_cleanly_or_fail_cleanly() {
    let scale: f64 = std::env::var("MMCKPT_MUTANTS_PER_CLASS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let started = std::time::Instant::now();
    let mut total = 0usize;
    let mut opened = 0usize;
    for file in mutants::FIXTURES {
        let original = std::fs::read(repo_path(file)).unwrap();
        let mut count = 0usize;
        mutants::for_each_mutant(&original, scale, |kind, mutant| {
            let strict = OpenOptions {
                strict: count % 2 == 1,
                ..OpenOptions::default()
            };
            let result = std::panic::catch_unwind(|| {
                Checkpoint::from_bytes(mutant, &strict)
                    .ok()
                    .map(|c| walk(&c, mutant.len() as u64))
            });
            match result {
                Ok(Some(_)) => opened += 1,
                Ok(None) => {}
                Err(_) => {
                    let path = std::env::temp_dir().join("mmckpt-mutant-panic.pt");
                    std::fs::write(&path, mutant).unwrap();
                    panic!(
                        "{file}: mutant {count} ({kind}) panicked; saved to {}",
                        path.display()
                    );
                }
            }
            count += 1;
        });
        total += count;
        eprintln!("{file}: {count} mutants");
    }
    eprintln!(
        "{total} mutants, {opened} opened and walked, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(total >= 10_000, "only {total} mutants");
}
