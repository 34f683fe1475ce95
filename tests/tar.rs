//! Pre-1.0 tar checkpoints (scripts/make_tar_cases.py, written as torch v0.1.12's `_save`
//! wrote them): every tensor equals what torch 2.15's `torch.load(weights_only=False)` returns,
//! a strict open refuses the file as torch's `weights_only=True` does, and no cut of the file
//! opens or panics.

mod common;

use common::{ints, repo_path, sha256_hex};
use mmckpt::{Checkpoint, ErrorKind, Format, OpenMode, OpenOptions};
use serde_json::Value;
use std::collections::HashMap;

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(repo_path("tests/data/tar/expected.json")).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(map) => map,
        _ => panic!("expected.json is not an object"),
    }
}

#[test]
fn tar_checkpoints_read_as_torch_reads_them() {
    for (file, want) in expected() {
        let path = repo_path("tests/data/tar").join(&file);
        for mode in [OpenMode::Map, OpenMode::Read, OpenMode::PerTensor] {
            let options = OpenOptions {
                mode,
                ..OpenOptions::default()
            };
            let ckpt = Checkpoint::open(&path, &options).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(ckpt.format(), Format::Tar);
            assert_eq!(ckpt.format().name(), "tar");
            let tensors = want["tensors"].as_array().unwrap();
            assert_eq!(ckpt.len(), tensors.len(), "{file}");
            let mut group_to_id: HashMap<i64, u64> = HashMap::new();
            for (i, w) in tensors.iter().enumerate() {
                let t = ckpt.tensor_at(i).unwrap();
                let what = format!("{file}: {}", t.name());
                assert_eq!(t.name(), w["name"].as_str().unwrap(), "{what}");
                assert_eq!(t.dtype().name(), w["dtype"].as_str().unwrap(), "{what}");
                assert_eq!(t.shape(), ints(&w["shape"]).as_slice(), "{what}");
                assert_eq!(t.strides(), ints(&w["stride"]).as_slice(), "{what}");
                assert_eq!(
                    t.storage_offset(),
                    w["storage_offset"].as_i64().unwrap(),
                    "{what}"
                );
                assert_eq!(
                    sha256_hex(&t.contiguous_bytes()),
                    w["sha256"].as_str().unwrap(),
                    "{what}"
                );
                let group = w["storage_group"].as_i64().unwrap();
                assert_eq!(
                    *group_to_id.entry(group).or_insert(t.storage_id()),
                    t.storage_id(),
                    "{what}: storage sharing"
                );
                // Its range in the file reads back as the tensor.
                let range = ckpt.tensor_range(i).unwrap();
                let bytes = std::fs::read(&path).unwrap();
                let start = range.offset as usize;
                assert_eq!(
                    &bytes[start..start + range.length as usize],
                    t.bytes(),
                    "{what}"
                );
            }
            assert_eq!(group_to_id.len(), {
                let mut ids: Vec<u64> = group_to_id.values().copied().collect();
                ids.sort_unstable();
                ids.dedup();
                ids.len()
            });
        }
    }
}

#[test]
fn aligned_storages_are_mapped_and_misaligned_ones_copied_on_first_use() {
    let path = repo_path("tests/data/tar/state_dict.pt");
    let ckpt = Checkpoint::open(&path, &OpenOptions::default()).unwrap();
    let pending = ckpt.copies_pending();
    assert!(
        pending > 0,
        "the storages follow pickles: most are misaligned"
    );
    let (mut mapped, mut copied) = (0, 0);
    for (_, t) in ckpt.iter() {
        let t = t.unwrap();
        if t.is_mapped() {
            mapped += 1;
            assert_eq!(t.data_ptr() as usize % t.dtype().itemsize().min(8), 0);
        } else {
            copied += 1;
        }
    }
    assert!(mapped > 0 && copied > 0, "{mapped} mapped, {copied} copied");
    assert_eq!(ckpt.copies_pending(), 0);
}

#[test]
fn strict_opens_and_crc_checks_refuse_tar_files_and_cuts_never_open() {
    let path = repo_path("tests/data/tar/state_dict.pt");
    let want = expected();
    let torch_error = want["state_dict.pt"]["weights_only_error"]
        .as_str()
        .unwrap();
    assert!(torch_error.contains("legacy .tar format"), "{torch_error}");
    let strict = OpenOptions {
        strict: true,
        ..OpenOptions::default()
    };
    let e = Checkpoint::open(&path, &strict).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsafe, "{e}");
    assert!(e.message.contains("weights_only"), "{e}");
    let verify = OpenOptions {
        verify_crc: true,
        ..OpenOptions::default()
    };
    assert_eq!(
        Checkpoint::open(&path, &verify).unwrap_err().kind,
        ErrorKind::Unsupported
    );
    let whole = std::fs::read(&path).unwrap();
    // A cut inside the members fails; past the last member only the end blocks are lost,
    // which tarfile (and so torch) does not need either.
    let last_member_end = {
        let ckpt = Checkpoint::from_bytes(&whole, &OpenOptions::default()).unwrap();
        (0..ckpt.len())
            .map(|i| {
                let r = ckpt.tensor_range(i).unwrap();
                r.storage_offset + r.storage_length
            })
            .max()
            .unwrap() as usize
    };
    for len in 0..last_member_end {
        assert!(
            Checkpoint::from_bytes(&whole[..len], &OpenOptions::default()).is_err(),
            "cut at {len}"
        );
    }
}
