//! Formats beyond the plain zip archive: legacy streams (zero-copy where aligned, copied where
//! not), old storage views, big-endian archives, storage locations, TorchScript archives,
//! tensors mmckpt cannot represent, and Hugging Face shard indexes. Values come from the
//! torch-written fixtures (manifest.json, exotic.json) unless a test says it is hand-made.

mod common;

use common::{fixture, sha256_hex};
use mmckpt::fuzzing::{self, Backing};
use mmckpt::ErrorKind;
use mmckpt::OpenMode;
use mmckpt::{Checkpoint, Format, OpenOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn open(path: impl AsRef<Path>) -> Checkpoint {
    let path = path.as_ref();
    Checkpoint::open(path, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn legacy_storages_are_mapped_when_aligned_and_copied_when_not() {
    for file in ["legacy.pt", "legacy_proto4.pt", "legacy_odd.pt"] {
        assert_eq!(open(fixture(file)).format(), Format::Legacy, "{file}");
    }
    let ckpt = open(fixture("legacy_odd.pt"));
    let (mut mapped, mut copied) = (Vec::new(), Vec::new());
    for (name, t) in ckpt.iter() {
        let t = t.unwrap();
        let itemsize = t.dtype().itemsize();
        assert_eq!(
            t.data_ptr() as usize % itemsize.min(8),
            0,
            "{name}: misaligned"
        );
        if itemsize == 1 {
            assert!(t.is_mapped(), "{name}: bytes never need a copy");
            continue;
        }
        if t.is_mapped() {
            // Zero-copy: the pointer is the file's bytes at the recorded offset.
            let base = fuzzing::file_bytes(&ckpt).as_ptr() as usize;
            assert_eq!(
                t.data_ptr() as usize - base,
                t.file_offset().unwrap() as usize
            );
            mapped.push(name.to_string());
        } else {
            assert!(matches!(fuzzing::backing(&t), Backing::Owned(_)), "{name}");
            assert_eq!(t.file_offset(), None, "{name}");
            copied.push(name.to_string());
        }
    }
    assert!(
        !mapped.is_empty() && !copied.is_empty(),
        "legacy_odd.pt should have aligned and misaligned multi-byte storages: mapped {mapped:?}, copied {copied:?}"
    );
}

/// The LONG1 magic number, protocol 1001 and an empty sys info, as torch's legacy writer
/// starts a file (hand-made bytes: torch 2.15 no longer writes storage views).
fn legacy_prefix() -> Vec<u8> {
    let mut out = vec![0x80, 2, 0x8a, 10];
    out.extend_from_slice(&[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    out.push(b'.');
    out.extend_from_slice(&[0x80, 2, b'M', 0xe9, 0x03, b'.']);
    out.extend_from_slice(&[0x80, 2, b'}', b'.']);
    out
}

fn unicode(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

/// `{'v': _rebuild_tensor_v2(<FloatStorage 'root' (6 elements), view (view_off, view_len)>,
/// 1, (2,), (1,), False, {})}`, the key list `['root']`, and the root's six floats 0..5.
fn legacy_with_view(view_off: u8, view_len: u8) -> Vec<u8> {
    let mut out = legacy_prefix();
    out.extend_from_slice(&[0x80, 2, b'}']);
    out.extend(unicode("v"));
    out.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    out.extend(unicode("storage"));
    out.extend_from_slice(b"ctorch\nFloatStorage\n");
    out.extend(unicode("root"));
    out.extend(unicode("cpu"));
    out.extend_from_slice(&[b'K', 6, b'(']);
    out.extend(unicode("view"));
    out.extend_from_slice(&[b'K', view_off, b'K', view_len, b't', b't', b'Q']);
    out.extend_from_slice(&[
        b'K', 1, b'K', 2, 0x85, b'K', 1, 0x85, 0x89, b'}', b't', b'R',
    ]);
    out.extend_from_slice(b"s.");
    out.extend_from_slice(&[0x80, 2, b']']);
    out.extend(unicode("root"));
    out.extend_from_slice(b"a.");
    out.extend_from_slice(&6u64.to_le_bytes());
    for i in 0..6 {
        out.extend_from_slice(&(i as f32).to_le_bytes());
    }
    out
}

#[test]
fn legacy_storage_views_are_slices_of_their_root() {
    let ckpt = Checkpoint::from_bytes(&legacy_with_view(2, 3), &OpenOptions::default()).unwrap();
    assert_eq!(ckpt.format(), Format::Legacy);
    let t = ckpt.tensor("v").unwrap();
    // view = root[2..5] = [2, 3, 4]; the tensor is view[1..3].
    assert_eq!(f32s(t.bytes()), [3.0, 4.0]);
    assert_eq!(t.storage_nbytes(), 12);
    assert_eq!(t.storage_key(), "view");
    let err = Checkpoint::from_bytes(&legacy_with_view(5, 3), &OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Format);
    assert!(
        err.message.contains("'view'") && err.message.contains("'root'"),
        "{}",
        err.message
    );
    // Every cut of the file fails cleanly (never a panic or an out-of-bounds read).
    let whole = legacy_with_view(2, 3);
    for len in 0..whole.len() {
        assert!(Checkpoint::from_bytes(&whole[..len], &OpenOptions::default()).is_err());
    }
}

#[test]
fn big_endian_archives_are_swapped_into_owned_memory() {
    let ckpt = open(fixture("bigendian.pt"));
    assert!(ckpt.is_big_endian());
    for (name, t) in ckpt.iter() {
        let t = t.unwrap();
        // Single bytes need no swap and stay in the mapping; everything else is a copy.
        assert_eq!(t.is_mapped(), t.dtype().itemsize() == 1, "{name}");
    }
    assert_eq!(
        f32s(&ckpt.tensor("f32").unwrap().contiguous_bytes()),
        [1.0, -2.5, 3.25]
    );
    let c64 = f32s(&ckpt.tensor("c64").unwrap().contiguous_bytes());
    assert_eq!(c64, [1.0, 2.0, 0.0, -3.5]); // each half of a complex is swapped on its own
    let i16s: Vec<i16> = ckpt
        .tensor("i16")
        .unwrap()
        .contiguous_bytes()
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(i16s, [1, -2, 300]);
}

#[test]
fn storage_locations_are_kept_and_do_not_matter() {
    let manifest = common::manifest();
    let want = manifest["location.pt"]["locations"].as_object().unwrap();
    let ckpt = open(fixture("location.pt"));
    for (name, location) in want {
        let t = ckpt.tensor(name).unwrap();
        assert_eq!(t.location(), location.as_str().unwrap(), "{name}");
        assert!(t.is_mapped(), "{name}");
    }
}

#[test]
fn torchscript_tables_hold_the_state_dict_only() {
    // The traced archive holds a constant tensor (constants.pkl + constants/0) and traced
    // inputs; neither is part of state_dict(), and neither is in the table.
    let bytes = std::fs::read(fixture("script_traced.pt")).unwrap();
    let archive = mmckpt::fuzzing::zip::parse(&bytes, &Default::default()).unwrap();
    assert!(archive.get("constants/0").is_some());
    assert!(archive.get("traced_inputs.pkl").is_some());
    let ckpt = open(fixture("script_traced.pt"));
    assert_eq!(ckpt.format(), Format::TorchScript);
    let names: Vec<&str> = ckpt.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["w"]);
    // Nested modules: attributes that are not tensors (ints, lists, dicts, strings, the
    // `training` flag) are walked past.
    let ckpt = open(fixture("script_nested.pt"));
    let names: Vec<&str> = ckpt.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "scale",
            "steps",
            "sub.stat",
            "sub.lin.weight",
            "sub.lin.bias",
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.bias"
        ]
    );
}

#[test]
fn unrepresentable_tensors_fail_alone_and_lazy_bits_are_reported() {
    let text = std::fs::read_to_string(fixture("exotic.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let want = &doc["exotic.pt"];
    let ckpt = open(fixture("exotic.pt"));
    let tensors = want["tensors"].as_array().unwrap();
    let unsupported = want["unsupported"].as_array().unwrap();
    assert_eq!(ckpt.len(), tensors.len() + unsupported.len());
    for row in unsupported {
        let name = row["name"].as_str().unwrap();
        let kind = row["kind"].as_str().unwrap();
        let err = ckpt.tensor(name).err().unwrap();
        assert_eq!(err.kind, ErrorKind::Unsupported, "{name}");
        assert!(
            err.message.contains(&format!("'{name}'")) && err.message.contains(kind),
            "{name}: {}",
            err.message
        );
    }
    for row in tensors {
        let name = row["name"].as_str().unwrap();
        let t = ckpt.tensor(name).unwrap();
        assert_eq!(t.dtype().name(), row["dtype"].as_str().unwrap(), "{name}");
        assert_eq!(t.is_conj(), row["conj"].as_bool().unwrap(), "{name}");
        assert_eq!(t.is_neg(), row["neg"].as_bool().unwrap(), "{name}");
        // The bytes are what the file stores; conj/neg say how to read them.
        let bytes = sha256_hex(&t.contiguous_bytes());
        assert_eq!(bytes, row["stored_sha256"].as_str().unwrap(), "{name}");
        let lazy = t.is_conj() || t.is_neg();
        assert_eq!(
            bytes == row["resolved_sha256"].as_str().unwrap(),
            !lazy,
            "{name}: stored and resolved values differ exactly when a lazy bit is set"
        );
    }
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmckpt-formats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const SHARD1: &str = "pytorch_model-00001-of-00002.bin";
const SHARD2: &str = "pytorch_model-00002-of-00002.bin";

#[test]
fn a_shard_index_is_one_checkpoint_over_its_shards() {
    let index = fixture("shards/pytorch_model.bin.index.json");
    for mode in [OpenMode::Map, OpenMode::Read] {
        let options = OpenOptions {
            mode,
            ..OpenOptions::default()
        };
        let ckpt = Checkpoint::open(&index, &options).unwrap();
        assert_eq!(ckpt.format(), Format::Sharded);
        let names: Vec<&str> = ckpt.iter().map(|(n, _)| n).collect();
        // Shard files in sorted order, each in its own order (not the index's sorted keys).
        assert_eq!(
            names,
            [
                "model.embed.weight",
                "model.layers.0.weight",
                "model.layers.0.bias",
                "model.norm.weight",
                "lm_head.weight"
            ]
        );
        let source_of = |name: &str| match fuzzing::backing(&ckpt.tensor(name).unwrap()) {
            Backing::File(s) => s.clone(),
            Backing::Owned(_) => panic!("{name}: copied"),
        };
        // One mapping per shard, shared by its tensors.
        let (a, b) = (
            source_of("model.embed.weight"),
            source_of("model.layers.0.bias"),
        );
        let c = source_of("lm_head.weight");
        assert!(Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, &c));
        assert_eq!(a.is_mapped(), mode == OpenMode::Map);
        // The same bytes as opening the shard itself.
        for (file, name) in [(SHARD1, "model.layers.0.bias"), (SHARD2, "lm_head.weight")] {
            let shard = open(fixture("shards").join(file));
            assert_eq!(
                shard.tensor(name).unwrap().bytes(),
                ckpt.tensor(name).unwrap().bytes()
            );
        }
    }
}

#[test]
fn shard_index_errors_name_the_shard_and_the_tensor() {
    let src = fixture("shards");
    let text = std::fs::read_to_string(src.join("pytorch_model.bin.index.json")).unwrap();

    // A missing shard file: Io, naming the shard.
    let dir = scratch("missing");
    std::fs::write(dir.join("pytorch_model.bin.index.json"), &text).unwrap();
    std::fs::copy(src.join(SHARD1), dir.join(SHARD1)).unwrap();
    let err = Checkpoint::open(
        dir.join("pytorch_model.bin.index.json"),
        &Default::default(),
    )
    .err()
    .unwrap();
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(err.message.contains(SHARD2), "{}", err.message);

    // A weight map naming a tensor its shard lacks: Format, naming both. The index has a name
    // other than `.index.json`: it is recognised by its first byte.
    std::fs::copy(src.join(SHARD2), dir.join(SHARD2)).unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["weight_map"]["ghost.weight"] = Value::from(SHARD2);
    std::fs::write(dir.join("index.json"), doc.to_string()).unwrap();
    let err = Checkpoint::open(dir.join("index.json"), &Default::default())
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Format);
    assert!(
        err.message.contains("'ghost.weight'") && err.message.contains(SHARD2),
        "{}",
        err.message
    );

    // An absolute shard path.
    doc["weight_map"]["ghost.weight"] = Value::from("/etc/passwd");
    std::fs::write(dir.join("abs.index.json"), doc.to_string()).unwrap();
    let err = Checkpoint::open(dir.join("abs.index.json"), &Default::default())
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Format);
    assert!(err.message.contains("/etc/passwd"), "{}", err.message);

    // A shard that is itself an index is not followed (no recursion).
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["weight_map"]["lm_head.weight"] = Value::from("self.index.json");
    std::fs::write(dir.join("self.index.json"), doc.to_string()).unwrap();
    let err = Checkpoint::open(dir.join("self.index.json"), &Default::default())
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Format);
    assert!(err.message.contains("self.index.json"), "{}", err.message);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A torch-style zip archive (hand-made: stored entries, zero CRCs as torch may write them,
/// zip64 end records) whose data.pkl is a dict of `count` one-element float32 tensors
/// `t<i>` = i, each with its own `data/<i>` record.
fn many_record_archive(count: usize) -> Vec<u8> {
    let mut pkl = vec![0x80, 2, b'}', b'('];
    for i in 0..count {
        pkl.extend(unicode(&format!("t{i}")));
        pkl.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        pkl.extend(unicode("storage"));
        pkl.extend_from_slice(b"ctorch\nFloatStorage\n");
        pkl.extend(unicode(&i.to_string()));
        pkl.extend(unicode("cpu"));
        pkl.extend_from_slice(&[b'K', 1, b't', b'Q', b'K', 0, b'K', 1, 0x85, b'K', 1, 0x85]);
        pkl.extend_from_slice(&[0x89, b'}', b't', b'R']);
    }
    pkl.extend_from_slice(b"u.");
    let mut records: Vec<(String, Vec<u8>)> = vec![("archive/data.pkl".into(), pkl)];
    for i in 0..count {
        records.push((
            format!("archive/data/{i}"),
            (i as f32).to_le_bytes().to_vec(),
        ));
    }
    records.push(("archive/byteorder".into(), b"little".to_vec()));

    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in &records {
        let offset = out.len() as u32;
        let fixed = |buf: &mut Vec<u8>| {
            buf.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
            buf.extend_from_slice(&0u32.to_le_bytes()); // crc
            buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
            buf.extend_from_slice(&0u16.to_le_bytes()); // extra
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        fixed(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0]); // version made by
        fixed(&mut central);
        central.extend_from_slice(&[0; 8]); // comment len, disk, internal, external attrs
        central.extend_from_slice(&0u32.to_le_bytes()[..2]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_offset, cd_size, n) = (out.len() as u64, central.len() as u64, records.len() as u64);
    out.extend_from_slice(&central);
    let z64 = out.len() as u64;
    out.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
    out.extend_from_slice(&44u64.to_le_bytes());
    out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for v in [n, n, cd_size, cd_offset] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&z64.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    out.extend_from_slice(&(cd_size as u32).to_le_bytes());
    out.extend_from_slice(&(cd_offset as u32).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

#[test]
fn an_archive_with_more_than_65535_records_opens_whole() {
    let count = 70_000;
    let ckpt =
        Checkpoint::from_bytes(&many_record_archive(count), &OpenOptions::default()).unwrap();
    assert_eq!(ckpt.len(), count);
    assert_eq!(ckpt.storage_count(), count);
    for i in [0usize, 1, 65_534, 65_535, 65_536, count - 1] {
        let t = ckpt.tensor(&format!("t{i}")).unwrap();
        assert_eq!(f32s(t.bytes()), [i as f32], "t{i}");
        assert_eq!(t.data_ptr() as usize % 4, 0, "t{i}: misaligned");
    }
}

#[test]
fn a_large_archive_parsed_on_two_threads_reports_errors_as_one_thread_would() {
    // 5,000 records: the directory is parsed beside the pickle. A broken directory is
    // reported even when the pickle is broken too; a broken pickle alone is reported as such.
    let good = many_record_archive(5_000);
    let ckpt = Checkpoint::from_bytes(&good, &OpenOptions::default()).unwrap();
    assert_eq!(ckpt.len(), 5_000);
    assert_eq!(f32s(ckpt.tensor("t4999").unwrap().bytes()), [4999.0]);

    let pickle_at = good.windows(3).position(|w| w == b"\x80\x02}").unwrap();
    let mut bad_pickle = good.clone();
    bad_pickle[pickle_at + 2] = 0xff; // not an opcode
    let err =
        Checkpoint::from_bytes(&bad_pickle, &OpenOptions::default()).expect_err("a broken pickle");
    assert_eq!(err.kind, ErrorKind::Format, "{err}");
    assert!(err.message.contains("data.pkl"), "{}", err.message);

    let last_entry = good
        .windows(4)
        .rposition(|w| w == 0x0201_4b50u32.to_le_bytes())
        .unwrap();
    for pickle_too in [false, true] {
        let mut bad = if pickle_too {
            bad_pickle.clone()
        } else {
            good.clone()
        };
        bad[last_entry] ^= 0xff;
        let err =
            Checkpoint::from_bytes(&bad, &OpenOptions::default()).expect_err("a broken directory");
        assert_eq!(err.kind, ErrorKind::Format, "{err}");
        assert!(
            err.message.contains("central directory signature"),
            "{}",
            err.message
        );
    }
}

/// A scripted module's plain tensor attribute (neither parameter nor buffer) is in its pickled
/// state but not in `state_dict()`: only the compressed code/ records say so, and mmckpt reads
/// them to leave it out.
#[test]
fn a_plain_tensor_attribute_of_a_scripted_module_is_not_in_the_table() {
    let path = common::fixture("script_attr.pt");
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.windows(5).any(|w| w == b"table"),
        "the attribute is in the file"
    );
    let ckpt = mmckpt::Checkpoint::open(&path, &mmckpt::OpenOptions::default()).unwrap();
    let names: Vec<&str> = ckpt.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight", "stat"]);
}
