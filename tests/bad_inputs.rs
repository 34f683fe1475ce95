//! Hand-made malformed files (scripts/make_bad_inputs.py): each gets its specific error kind
//! and a message naming the problem; none crashes.

mod common;

use common::{expected_rows, repo_path, status_kind};
use mmckpt::ErrorKind;
use mmckpt::{Checkpoint, OpenOptions};

#[test]
fn every_bad_input_fails_with_its_status_and_message() {
    let dir = repo_path("tests/data/bad");
    let mut count = 0;
    for cols in expected_rows(&dir) {
        let [file, flags, status] = [0, 1, 2].map(|i| cols[i].as_str());
        let needle = cols.get(3).map_or("", String::as_str);
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
        assert_eq!(Some(err.kind), status_kind(status), "{file}: {err}");
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
