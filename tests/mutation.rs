//! Deterministic mutation test: thousands of mutants of every torch-written fixture (bit flips,
//! truncations at every structural boundary, byte-range duplications, swapped zip entries,
//! substituted pickle opcodes), each opened (the non-strict ones also with the plain
//! state-dict reader off, which must change nothing) and, when it opens, walked fully: every name looked
//! up, every tensor's bytes read and checked to lie inside the file, every value visited, and
//! a module built from it and loaded (assign; copy and bfloat16 conversion when small). Each mutant must succeed or
//! fail with an error; a panic, hang or out-of-range byte fails the test.
//!
//! The same generator, in C, runs through the C ABI under ASan+UBSan and valgrind
//! (c_tests/test_mutation.c); this one runs inside Rust, where every slice access is checked.
//! Both check their mutants against tests/mutants/digests.tsv, so they generate the same ones.
//! The checks on what opens are the fuzz targets' own (`mmckpt::fuzzing`).
//! `MMCKPT_MUTANTS_PER_CLASS` scales the number of mutants (default 1.0 = the CI amount).

mod common;
mod mutants;

use common::repo_path;
use mmckpt::fuzzing;
use mmckpt::{Checkpoint, OpenOptions};

/// Everything the fuzz targets check on an open checkpoint (`mmckpt::fuzzing`): the `walk`
/// target's tensors and values, and the `load` target's module loads.
fn walk(ckpt: &Checkpoint, file_len: u64) -> u64 {
    fuzzing::walk_tensors(ckpt, file_len)
        .wrapping_add(fuzzing::visit_values(ckpt))
        .wrapping_add(fuzzing::load_into_modules(ckpt))
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
                // A non-strict open may read a plain state dict straight into its table: the
                // generic path must give the same.
                if !strict.strict {
                    fuzzing::plain_matches_generic(mutant);
                }
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

/// c_tests/test_mutation.c generates these mutants again in C: both generators are checked
/// against the committed digests, so they agree. After a deliberate change to the generator or
/// the fixtures, rerun with `MMCKPT_UPDATE_MUTANT_DIGESTS=1` to rewrite the file.
#[test]
fn the_committed_mutant_digests_are_this_generators() {
    let path = repo_path("tests/mutants/digests.tsv");
    let generated = mutants::digests_tsv(|file| std::fs::read(repo_path(file)).unwrap());
    if std::env::var_os("MMCKPT_UPDATE_MUTANT_DIGESTS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale (MMCKPT_UPDATE_MUTANT_DIGESTS=1 rewrites it); this generator gives:\n{generated}",
        path.display()
    );
}
