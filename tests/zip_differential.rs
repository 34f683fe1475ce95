//! mmckpt's zip directory against the `zip` crate's reading of the same bytes, for every file
//! under tests/fixtures and tests/data and every mutant the mutation test's generator makes of
//! the torch-written fixtures and of the differential archives.
//!
//! Where mmckpt accepts an archive, the crate must read it too, and see the same records in
//! the same order: same names, same absolute data offsets, same sizes. Where mmckpt refuses,
//! it must say why (a non-empty message); the crate may then accept or refuse, since mmckpt's
//! policy is stricter by design (see the `container::zip` module doc).
//! `MMCKPT_MUTANTS_PER_CLASS` scales the number of mutants, as in tests/mutation.rs.

mod common;
mod mutants;

use std::io::Cursor;
use std::path::PathBuf;

use common::repo_path;
use mmckpt::ZipLimits;

#[derive(Default)]
struct Tally {
    both_read: usize,
    only_crate_reads: usize,
    neither_reads: usize,
}

/// Compares the two readers on `bytes`; `what` names the input in failure messages.
fn compare(what: &str, bytes: &[u8], tally: &mut Tally) {
    let crate_reading = ::zip::ZipArchive::new(Cursor::new(bytes));
    let ours = match mmckpt::fuzzing::zip::parse(bytes, &ZipLimits::default()) {
        Ok(archive) => archive,
        Err(e) => {
            assert!(!e.message.is_empty(), "{what}: refused without a reason");
            match crate_reading {
                Ok(_) => {
                    if std::env::var_os("MMCKPT_SHOW_REFUSALS").is_some() {
                        eprintln!("{what}: only the zip crate reads it; mmckpt: {e}");
                    }
                    tally.only_crate_reads += 1
                }
                Err(_) => tally.neither_reads += 1,
            }
            return;
        }
    };
    let mut theirs = match crate_reading {
        Ok(archive) => archive,
        Err(e) => panic!("{what}: mmckpt reads it, the zip crate refuses it: {e}"),
    };
    assert_eq!(
        ours.records().len(),
        theirs.len(),
        "{what}: number of records"
    );
    for (i, record) in ours.records().enumerate() {
        let file = theirs
            .by_index_raw(i)
            .unwrap_or_else(|e| panic!("{what}: the zip crate cannot open {}: {e}", record.name));
        assert_eq!(
            (file.name_raw(), file.data_start(), file.compressed_size()),
            (record.name.as_bytes(), record.data_offset, record.size),
            "{what}: record {i} (name, data offset, size)"
        );
    }
    tally.both_read += 1;
}

/// Every file under `dir`, found without recursion.
fn files_under(dir: &str) -> Vec<PathBuf> {
    let mut pending = vec![repo_path(dir)];
    let mut files = Vec::new();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_fixture_and_data_file() {
    let mut tally = Tally::default();
    for path in files_under("tests/fixtures")
        .into_iter()
        .chain(files_under("tests/data"))
    {
        let bytes = std::fs::read(&path).unwrap();
        compare(&path.display().to_string(), &bytes, &mut tally);
    }
    eprintln!(
        "{} read alike, {} refused by mmckpt only, {} by both",
        tally.both_read, tally.only_crate_reads, tally.neither_reads
    );
    // The fixtures are torch's archives: each one a zip that both read.
    assert!(tally.both_read >= 15, "{} archives read", tally.both_read);
}

#[test]
fn every_mutant() {
    let scale: f64 = std::env::var("MMCKPT_MUTANTS_PER_CLASS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let mut tally = Tally::default();
    // The mutation test's fixtures, and the archives torch's reader and Python's zipfile
    // disagree on, whose mutants sit nearest the edges of the policy.
    let originals = (mutants::FIXTURES.iter().map(|file| repo_path(file)))
        .chain(files_under("tests/data/differential"))
        .filter(|path| path.extension().is_some_and(|ext| ext == "pt"));
    for path in originals {
        let original = std::fs::read(&path).unwrap();
        let file = path.display();
        mutants::for_each_mutant(&original, scale, |kind, mutant| {
            compare(&format!("{file} ({kind} mutant)"), mutant, &mut tally);
        });
    }
    eprintln!(
        "{} read alike, {} refused by mmckpt only, {} by both",
        tally.both_read, tally.only_crate_reads, tally.neither_reads
    );
    assert!(tally.both_read > 0 && tally.only_crate_reads + tally.neither_reads > 0);
}
