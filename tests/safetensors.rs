//! safetensors input: the fixtures `safetensors.torch.save_file` wrote
//! (scripts/make_safetensors_fixtures.py) against the manifest it wrote from
//! `safetensors.torch.load_file`, the shard index, detection by content, alignment, the value
//! API's `__metadata__`, and the root option. Malformed headers are in tests/data/bad
//! (`st_*`, tests/bad_inputs.rs).

mod common;

use common::{repo_path, sha256_hex};
use mmckpt::fuzzing::{self, Backing};
use mmckpt::{Checkpoint, ErrorKind, Format, OpenMode, OpenOptions, ValueKind};
use serde_json::Value;
use std::path::PathBuf;

fn st_fixture(name: &str) -> PathBuf {
    repo_path("tests/fixtures/safetensors").join(name)
}

fn manifest() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(st_fixture("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The file's tensors as `safetensors.torch.load_file` gave them, in its order.
fn expected(file: &str) -> Vec<Value> {
    manifest()[file]["tensors"].as_array().unwrap().clone()
}

fn check_against_manifest(ckpt: &Checkpoint, rows: &[Value], at: &str) {
    let names: Vec<&str> = ckpt.iter().map(|(n, _)| n).collect();
    let want: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, want, "{at}: table order is load_file's");
    for row in rows {
        let name = row["name"].as_str().unwrap();
        let t = ckpt.tensor(name).unwrap();
        assert_eq!(
            t.dtype().name(),
            row["dtype"].as_str().unwrap(),
            "{at}: {name}"
        );
        let shape: Vec<i64> = row["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        assert_eq!(t.shape(), &shape[..], "{at}: {name}");
        assert!(t.is_contiguous(), "{at}: {name}");
        assert_eq!(
            sha256_hex(&t.contiguous_bytes()),
            row["sha256"].as_str().unwrap(),
            "{at}: {name}"
        );
    }
}

#[test]
fn every_dtype_matches_load_file() {
    let path = st_fixture("dtypes.safetensors");
    for mode in [OpenMode::Map, OpenMode::Read] {
        let options = OpenOptions {
            mode,
            ..OpenOptions::default()
        };
        let ckpt = Checkpoint::open(&path, &options).unwrap();
        assert_eq!(ckpt.format(), Format::Safetensors);
        assert_eq!(ckpt.format().name(), "safetensors");
        let rows = expected("dtypes.safetensors");
        assert_eq!(rows.len(), 20, "every dtype torch and safetensors share");
        check_against_manifest(&ckpt, &rows, &format!("{mode:?}"));
        // One storage per tensor, each the file's own bytes (the writer aligns them).
        assert_eq!(ckpt.storage_count(), ckpt.len());
        let mut ids: Vec<u64> = ckpt.iter().map(|(_, t)| t.unwrap().storage_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ckpt.len());
        let file = std::fs::read(&path).unwrap();
        for (name, t) in ckpt.iter() {
            let t = t.unwrap();
            assert_eq!(t.is_mapped(), mode == OpenMode::Map, "{name}");
            let at = t.file_offset().unwrap() as usize;
            assert_eq!(&file[at..at + t.bytes().len()], t.bytes(), "{name}");
            assert!(matches!(fuzzing::backing(&t), Backing::File(_)), "{name}");
        }
    }
}

#[test]
fn float4_is_packed_two_per_byte_as_torch_has_it() {
    let ckpt = Checkpoint::open(st_fixture("dtypes.safetensors"), &OpenOptions::default()).unwrap();
    let t = ckpt.tensor("float4_e2m1fn_x2").unwrap();
    // The header says [3, 4] (4-bit elements); torch's dtype holds two per element.
    assert_eq!(
        (t.shape(), t.numel(), t.bytes().len()),
        (&[3i64, 2][..], 6, 6)
    );
}

#[test]
fn metadata_is_read_through_the_value_api() {
    let ckpt = Checkpoint::open(st_fixture("dtypes.safetensors"), &OpenOptions::default()).unwrap();
    assert_eq!(
        ckpt.value("__metadata__.format").unwrap().as_str().unwrap(),
        "pt"
    );
    assert_eq!(
        ckpt.value("__metadata__.note").unwrap().as_str().unwrap(),
        "one tensor per dtype"
    );
    assert_eq!(ckpt.value("__metadata__").unwrap().kind(), ValueKind::Dict);
    // Tensors are leaves of the value tree, as a state dict's are.
    assert_eq!(ckpt.value("float32").unwrap().kind(), ValueKind::Tensor);
    let leaves: Vec<String> = ckpt
        .value_leaves(&Default::default())
        .values
        .iter()
        .map(|l| l.path().to_string())
        .collect();
    assert_eq!(leaves, ["__metadata__.format", "__metadata__.note"]);
    assert_eq!(
        ckpt.value("__metadata__.nope").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn the_root_option_selects_as_in_a_flat_state_dict() {
    let path = st_fixture("dtypes.safetensors");
    let open = |root: &str| {
        Checkpoint::open(
            &path,
            &OpenOptions {
                root: Some(root.into()),
                ..OpenOptions::default()
            },
        )
    };
    let one = open("int16").unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one.name_at(0), Some(""));
    assert_eq!(one.tensor_at(0).unwrap().dtype().name(), "int16");
    assert_eq!(open("__metadata__").unwrap().len(), 0);
    assert_eq!(open("no.such").unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn a_safetensors_shard_index_is_one_checkpoint() {
    let index = st_fixture("sharded/model.safetensors.index.json");
    let ckpt = Checkpoint::open(&index, &OpenOptions::default()).unwrap();
    assert_eq!(ckpt.format(), Format::Sharded);
    let mut rows = expected("sharded/model-00001-of-00002.safetensors");
    rows.extend(expected("sharded/model-00002-of-00002.safetensors"));
    check_against_manifest(&ckpt, &rows, "index");
    assert!(ckpt.iter().all(|(_, t)| t.unwrap().is_mapped()));
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmckpt-st-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn detected_by_content_whatever_the_name() {
    let bytes = std::fs::read(st_fixture("dtypes.safetensors")).unwrap();
    let dir = temp_dir("name");
    let path = dir.join("pytorch_model.bin");
    std::fs::write(&path, &bytes).unwrap();
    let by_path = Checkpoint::open(&path, &OpenOptions::default()).unwrap();
    let in_memory = Checkpoint::from_bytes(&bytes, &OpenOptions::default()).unwrap();
    for ckpt in [&by_path, &in_memory] {
        assert_eq!(ckpt.format(), Format::Safetensors);
        check_against_manifest(ckpt, &expected("dtypes.safetensors"), "renamed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A safetensors file: the header as given, its length in front, then `data`.
fn st_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn a_misaligned_tensor_is_copied_as_a_zip_record_would_be() {
    // The F32 tensor starts one byte into the data area: at a file offset not a multiple of 4.
    let header = r#"{"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}"#;
    assert_ne!((8 + header.len() + 1) % 4, 0);
    let mut data = vec![7u8];
    data.extend(1.5f32.to_le_bytes());
    data.extend((-2.0f32).to_le_bytes());
    let dir = temp_dir("align");
    let path = dir.join("odd.safetensors");
    std::fs::write(&path, st_bytes(header, &data)).unwrap();
    let ckpt = Checkpoint::open(&path, &OpenOptions::default()).unwrap();
    assert_eq!(ckpt.name_at(0), Some("b"), "offset order");
    let a = ckpt.tensor("a").unwrap();
    assert!(!a.is_mapped());
    assert!(matches!(fuzzing::backing(&a), Backing::Owned(_)));
    assert_eq!(a.data_ptr() as usize % 4, 0);
    let values: Vec<f32> = a
        .bytes()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, [1.5, -2.0]);
    assert!(
        ckpt.tensor("b").unwrap().is_mapped(),
        "a byte is never misaligned"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn table_order_is_by_offset_and_ties_keep_header_order() {
    let header = r#"{"z":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"e2":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"e1":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#;
    let ckpt = Checkpoint::from_bytes(&st_bytes(header, b"AB"), &OpenOptions::default()).unwrap();
    let names: Vec<&str> = ckpt.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["e2", "e1", "a", "z"]);
    assert_eq!(ckpt.tensor("z").unwrap().bytes(), b"B");
    assert_eq!(ckpt.tensor("e1").unwrap().numel(), 0);
}

#[test]
fn a_header_length_that_starts_like_a_pickle_or_a_brace_is_still_safetensors() {
    // Length 0x280 (bytes 80 02 …, a pickle's PROTO 2) and 0x17b (7b 01 …, a JSON '{').
    for len in [0x280usize, 0x17b] {
        let body = r#"{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}"#;
        let header = format!("{body}{}}}", " ".repeat(len - body.len() - 1));
        assert_eq!(header.len(), len);
        let bytes = st_bytes(&header, b"xy");
        let dir = temp_dir(&format!("len{len}"));
        let path = dir.join("w.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let ckpt = Checkpoint::open(&path, &OpenOptions::default()).unwrap();
        assert_eq!(ckpt.format(), Format::Safetensors, "{len:#x}");
        assert_eq!(ckpt.tensor("w").unwrap().bytes(), b"xy");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn neither_zip_nor_pickle_nor_safetensors_says_so() {
    let e =
        Checkpoint::from_bytes(b"GGUF\x03\0\0\0\0\0\0\0\0\0", &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.message.contains("no safetensors header"), "{}", e.message);
}

#[test]
fn the_header_bound_is_a_limit() {
    let bytes = std::fs::read(st_fixture("dtypes.safetensors")).unwrap();
    let mut options = OpenOptions::default();
    options.limits.max_header_bytes = 64;
    let e = Checkpoint::from_bytes(&bytes, &options).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    assert!(e.message.contains("max_header_bytes"), "{}", e.message);
    let mut options = OpenOptions::default();
    options.limits.table.max_tensors = 3;
    let e = Checkpoint::from_bytes(&bytes, &options).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    assert!(e.message.contains("more than 3 tensors"), "{}", e.message);
}

/// The `safetensors` fuzz target (and `open`, `walk`, `load`) over the seeds `fuzz/seed.sh`
/// gives it: the package-written fixtures and the hand-made hostile headers.
#[test]
fn the_fuzz_targets_pass_on_the_safetensors_seeds() {
    let mut seeds = Vec::new();
    for dir in [
        "tests/fixtures/safetensors",
        "tests/fixtures/safetensors/sharded",
        "tests/data/bad",
    ] {
        for entry in std::fs::read_dir(repo_path(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                seeds.push(path);
            }
        }
    }
    assert!(seeds.len() >= 25, "{}", seeds.len());
    for path in seeds {
        let data = std::fs::read(&path).unwrap();
        for (name, target) in fuzzing::TARGETS {
            if ["safetensors", "open", "walk", "load"].contains(name) {
                target(&data);
            }
        }
    }
}
