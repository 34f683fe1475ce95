//! Every tensor of every torch-written fixture equals what torch.load returned: dtype, shape,
//! strides, storage offset, the SHA-256 of its row-major bytes, and storage sharing.

mod common;

use common::{fixture, manifest, sha256_hex};
use mmckpt::fuzzing::{self, Backing};
use mmckpt::OpenMode;
use mmckpt::{Checkpoint, OpenOptions};
use serde_json::Value;
use std::collections::HashMap;

/// Formats this version does not read yet (tracked in the issues).
const NOT_YET: &[&str] = &[];

fn as_i64s(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn check_file(file: &str, expected: &Value, mode: OpenMode) {
    let options = OpenOptions {
        mode,
        ..OpenOptions::default()
    };
    let ckpt = Checkpoint::open(fixture(file), &options)
        .unwrap_or_else(|e| panic!("{file}: open failed: {e}"));
    assert_eq!(
        ckpt.format().name(),
        expected["format"].as_str().unwrap(),
        "{file}"
    );
    let tensors = expected["tensors"].as_array().unwrap();
    assert_eq!(ckpt.len(), tensors.len(), "{file}: table size");
    let torchscript = expected["format"] == "torchscript";
    // storage_group (torch) <-> storage id (mmckpt) must be a bijection.
    let mut group_to_id: HashMap<i64, u64> = HashMap::new();
    let mut id_to_group: HashMap<u64, i64> = HashMap::new();
    for (i, want) in tensors.iter().enumerate() {
        let name = want["name"].as_str().unwrap();
        let t = ckpt
            .tensor_at(i)
            .unwrap_or_else(|e| panic!("{file}: tensor {i} ({name}): {e}"));
        let what = format!("{file}: {name}");
        assert_eq!(t.name(), name, "{what}: table order");
        assert_eq!(t.dtype().name(), want["dtype"].as_str().unwrap(), "{what}");
        assert_eq!(
            t.shape(),
            as_i64s(&want["shape"]).as_slice(),
            "{what}: shape"
        );
        assert_eq!(
            t.strides(),
            as_i64s(&want["stride"]).as_slice(),
            "{what}: stride"
        );
        assert_eq!(
            t.storage_offset(),
            want["storage_offset"].as_i64().unwrap(),
            "{what}"
        );
        assert_eq!(t.numel(), want["numel"].as_u64().unwrap(), "{what}: numel");
        assert_eq!(
            sha256_hex(&t.contiguous_bytes()),
            want["sha256"].as_str().unwrap(),
            "{what}: values"
        );
        if !torchscript {
            // torch.jit.load(...).state_dict() detaches, so its flags say nothing about the file.
            assert_eq!(
                t.is_parameter(),
                want["is_parameter"].as_bool().unwrap(),
                "{what}"
            );
            assert_eq!(
                t.requires_grad(),
                want["requires_grad"].as_bool().unwrap(),
                "{what}"
            );
        }
        let group = want["storage_group"].as_i64().unwrap();
        assert_eq!(
            *group_to_id.entry(group).or_insert(t.storage_id()),
            t.storage_id(),
            "{what}: aliasing"
        );
        assert_eq!(
            *id_to_group.entry(t.storage_id()).or_insert(group),
            group,
            "{what}: aliasing"
        );
        assert_eq!(
            t.is_mapped(),
            mode != OpenMode::Read && t.file_offset().is_some(),
            "{what}"
        );
        let ptr = t.data_ptr() as usize;
        assert_eq!(
            ptr % t.dtype().itemsize().min(8),
            0,
            "{what}: misaligned data pointer"
        );
        if t.is_mapped() {
            // The pointer lies in the mapping (of the tensor's own file: a shard index's
            // tensors live in the shards) at the recorded file offset.
            let Backing::File(source) = fuzzing::backing(&t) else {
                panic!("{what}: mapped storage without a file backing");
            };
            let base = source.bytes().as_ptr() as usize;
            assert_eq!(
                ptr - base,
                t.file_offset().unwrap() as usize,
                "{what}: file offset"
            );
        }
    }
    // Every name can be looked up.
    for want in tensors {
        let name = want["name"].as_str().unwrap();
        assert!(ckpt.tensor(name).is_ok(), "{file}: lookup of {name}");
    }
}

#[test]
fn every_fixture_matches_the_torch_manifest() {
    for (file, expected) in manifest() {
        if NOT_YET.contains(&file.as_str()) {
            continue;
        }
        check_file(&file, &expected, OpenMode::Map);
    }
}

#[test]
fn read_mode_gives_the_same_tensors_unmapped() {
    for (file, expected) in manifest() {
        if NOT_YET.contains(&file.as_str()) {
            continue;
        }
        check_file(&file, &expected, OpenMode::Read);
    }
}

#[test]
fn root_selects_a_sub_object() {
    let options = OpenOptions {
        root: Some("model".into()),
        ..OpenOptions::default()
    };
    let ckpt = Checkpoint::open(fixture("nested.pt"), &options).unwrap();
    let names: Vec<&str> = ckpt.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fc.weight", "fc.bias", "norm.weight", "norm.bias"]);
    let options = OpenOptions {
        root: Some("optimizer.state.0".into()),
        ..OpenOptions::default()
    };
    let ckpt = Checkpoint::open(fixture("nested.pt"), &options).unwrap();
    let names: Vec<&str> = ckpt.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["step", "exp_avg", "exp_avg_sq"]);
    let options = OpenOptions {
        root: Some("model.nope".into()),
        ..OpenOptions::default()
    };
    let err = Checkpoint::open(fixture("nested.pt"), &options)
        .err()
        .unwrap();
    assert_eq!(err.kind, mmckpt::ErrorKind::NotFound);
    assert!(err.message.contains("nope"), "{}", err.message);
}

#[test]
fn tied_weights_share_pointer_and_storage() {
    let ckpt = Checkpoint::open(fixture("forms.pt"), &OpenOptions::default()).unwrap();
    let a = ckpt.tensor("embed.weight").unwrap();
    let b = ckpt.tensor("lm_head.weight").unwrap();
    assert_eq!(a.data_ptr(), b.data_ptr());
    assert_eq!(a.storage_id(), b.storage_id());
}

#[test]
fn strict_open_accepts_real_checkpoints() {
    let options = OpenOptions {
        strict: true,
        ..OpenOptions::default()
    };
    for file in [
        "dtypes.pt",
        "forms.pt",
        "proto4.pt",
        "align4096.pt",
        "recipe.pt",
    ] {
        Checkpoint::open(fixture(file), &options).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    // nested.pt holds an argparse.Namespace: not on the allowlist.
    let err = Checkpoint::open(fixture("nested.pt"), &options)
        .err()
        .unwrap();
    assert_eq!(err.kind, mmckpt::ErrorKind::Unsafe);
    assert!(
        err.message.contains("argparse.Namespace"),
        "{}",
        err.message
    );
}
