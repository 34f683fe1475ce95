//! Archives whose record names differ from torch's only in ASCII case
//! (scripts/make_case_archives.py, from real torch files): torch's reader finds records
//! case-insensitively, so mmckpt must read what torch reads, or refuse the file where torch's
//! answer hangs on miniz's sort order (two names equal up to case). manifest.json holds what
//! torch 2.15 returned for each.

mod common;

use common::{repo_path, sha256_hex};
use mmckpt::ErrorKind;
use mmckpt::{Checkpoint, OpenOptions};
use serde_json::Value;

#[test]
fn mmckpt_reads_what_torch_reads_or_refuses() {
    let dir = repo_path("tests/data/case");
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let manifest: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    assert!(manifest.len() >= 15, "{} cases", manifest.len());
    let (mut reads, mut refuses) = (0, 0);
    for (file, want) in &manifest {
        // A strict open refuses TorchScript's `__torch__` classes whatever the names.
        let torchscript = file.starts_with("ts_");
        for strict in [false, true].into_iter().filter(|&s| !(s && torchscript)) {
            let options = OpenOptions {
                strict,
                ..OpenOptions::default()
            };
            let opened = Checkpoint::open(dir.join(file), &options);
            match want["mmckpt"].as_str().unwrap() {
                "reads" => {
                    assert_eq!(want["torch"], "loads", "{file}");
                    let ckpt = opened.unwrap_or_else(|e| panic!("{file}: {e}"));
                    let tensors = want["tensors"].as_array().unwrap();
                    assert_eq!(ckpt.len(), tensors.len(), "{file}");
                    for (i, t) in tensors.iter().enumerate() {
                        let got = ckpt.tensor_at(i).unwrap();
                        let what = format!("{file}: {}", t["name"]);
                        assert_eq!(got.name(), t["name"].as_str().unwrap(), "{what}");
                        assert_eq!(got.dtype().name(), t["dtype"], "{what}");
                        let shape: Vec<i64> = (t["shape"].as_array().unwrap().iter())
                            .map(|d| d.as_i64().unwrap())
                            .collect();
                        assert_eq!(got.shape(), shape.as_slice(), "{what}");
                        assert_eq!(
                            sha256_hex(&got.contiguous_bytes()),
                            t["sha256"].as_str().unwrap(),
                            "{what}: values"
                        );
                    }
                    reads += 1;
                }
                "refuses" => {
                    let e = opened.err().unwrap_or_else(|| panic!("{file}: opened"));
                    assert_eq!(e.kind, ErrorKind::Format, "{file}: {e}");
                    let needle = want["refusal"].as_str().unwrap();
                    assert!(e.message.contains(needle), "{file}: {e} lacks {needle:?}");
                    refuses += 1;
                }
                other => panic!("{file}: mmckpt = {other}"),
            }
        }
    }
    assert!(
        reads >= 13 && refuses >= 10,
        "{reads} read, {refuses} refused"
    );
}
