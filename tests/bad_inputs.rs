//! Hand-made malformed files (scripts/make_bad_inputs.py): each gets its specific error kind
//! and a message naming the problem; none crashes.

mod common;

use common::repo_path;
use mmckpt::checkpoint::{Checkpoint, OpenOptions};
use mmckpt::ErrorKind;

fn kind_of(status: &str) -> ErrorKind {
    use ErrorKind::*;
    [Format, Unsupported, Unsafe, Limit, Io, NotFound]
        .into_iter()
        .find(|k| k.status_name() == status)
        .unwrap_or_else(|| panic!("unexpected status {status} in expected.tsv"))
}

#[test]
fn every_bad_input_fails_with_its_status_and_message() {
    let dir = repo_path("tests/data/bad");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    let mut count = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, flags, status, needle) = (
            cols[0],
            cols[1],
            cols[2],
            cols.get(3).copied().unwrap_or(""),
        );
        let options = OpenOptions {
            strict: flags == "STRICT",
            ..OpenOptions::default()
        };
        let opened = Checkpoint::open(dir.join(file), &options);
        let err = if flags == "TENSOR" {
            let ckpt = opened.unwrap_or_else(|e| panic!("{file}: open should succeed: {e}"));
            ckpt.tensor_at(0)
                .err()
                .unwrap_or_else(|| panic!("{file}: tensor 0 should fail"))
        } else {
            match opened {
                Ok(_) => panic!("{file}: opened, expected {status}"),
                Err(e) => e,
            }
        };
        assert_eq!(err.kind, kind_of(status), "{file}: {err}");
        assert!(
            err.message.contains(needle),
            "{file}: message {:?} lacks {needle:?}",
            err.message
        );
        count += 1;
    }
    assert!(count >= 20, "expected.tsv lists only {count} cases");
}

#[test]
fn missing_paths_and_directories_are_io_errors() {
    let err = Checkpoint::open("/nonexistent/model.pt", &OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(err.message.contains("/nonexistent/model.pt"));
    let err = Checkpoint::open(repo_path("tests"), &OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(err.message.contains("directory"));
}

#[test]
fn a_global_is_never_executed_without_strict_either() {
    // The pickle asks os.system to create this file.
    let marker = std::path::Path::new("/tmp/mmckpt-pwned-marker");
    let _ = std::fs::remove_file(marker);
    let ckpt = Checkpoint::open(
        repo_path("tests/data/bad/global_os_system.pt"),
        &OpenOptions::default(),
    )
    .expect("without STRICT an unknown global is an opaque object");
    assert_eq!(ckpt.len(), 0);
    assert!(!marker.exists(), "the pickle's os.system call ran");
}
