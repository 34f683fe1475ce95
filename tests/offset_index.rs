//! The offset index (`Checkpoint::tensor_range`): reading each tensor's range of its file with
//! plain `pread` gives the tensor's bytes, for every tensor of every torch-written fixture.

mod common;

use common::{fixture, manifest};
use mmckpt::{Checkpoint, ErrorKind, OpenOptions};
use std::fs::File;
use std::os::unix::fs::FileExt;

fn pread(path: &std::path::Path, offset: u64, length: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; length as usize];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut bytes, offset)
        .unwrap_or_else(|e| panic!("{}: {offset}..+{length}: {e}", path.display()));
    bytes
}

#[test]
fn every_range_read_with_pread_is_the_tensor() {
    let (mut exact, mut inexact) = (0, 0);
    for (file, _) in manifest() {
        let ckpt = Checkpoint::open(fixture(&file), &OpenOptions::default()).unwrap();
        for i in 0..ckpt.len() {
            let what = format!("{file}: {}", ckpt.name_at(i).unwrap());
            // The range is taken before the tensor is asked for: no storage copied yet.
            let range = ckpt
                .tensor_range(i)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let t = ckpt.tensor_at(i).unwrap();
            assert_eq!(range.dtype, t.dtype(), "{what}");
            assert_eq!(range.shape, t.shape(), "{what}");
            assert_eq!(range.strides, t.strides(), "{what}");
            assert_eq!(range.length, t.span_bytes(), "{what}");
            assert_eq!(range.storage_id, t.storage_id(), "{what}");
            assert!(range.offset >= range.storage_offset, "{what}");
            assert!(
                range.offset + range.length <= range.storage_offset + range.storage_length,
                "{what}"
            );
            let path = range.path.expect("opened from a file");
            let mut read = pread(path, range.offset, range.length);
            if !ckpt.is_big_endian() {
                assert_eq!(range.byte_swap_unit, 1, "{what}");
            }
            if range.byte_swap_unit > 1 {
                assert!(!range.exact, "{what}");
                for unit in read.chunks_exact_mut(range.byte_swap_unit.into()) {
                    unit.reverse();
                }
            }
            assert_eq!(read, t.bytes(), "{what}: pread of the range");
            if range.exact {
                exact += 1;
                assert_eq!(read, &*t.contiguous_bytes(), "{what}: exact range");
            } else {
                inexact += 1;
            }
            let whole = pread(path, range.storage_offset, range.storage_length);
            assert_eq!(range.whole_storage, whole.len() == read.len(), "{what}");
        }
    }
    // The fixtures hold both kinds (views, transposes and big-endian data are not exact).
    assert!(exact > 50 && inexact > 5, "{exact} exact, {inexact} not");
}

#[test]
fn a_sharded_checkpoint_names_each_tensors_shard() {
    let ckpt = Checkpoint::open(
        fixture("shards/pytorch_model.bin.index.json"),
        &OpenOptions::default(),
    )
    .unwrap();
    let mut files = std::collections::BTreeSet::new();
    for i in 0..ckpt.len() {
        let range = ckpt.tensor_range(i).unwrap();
        let path = range.path.unwrap();
        assert!(
            path.to_string_lossy().contains("pytorch_model-0000"),
            "{path:?}"
        );
        files.insert(path.to_path_buf());
        assert_eq!(
            pread(path, range.offset, range.length),
            ckpt.tensor_at(i).unwrap().bytes()
        );
    }
    assert_eq!(files.len(), 2);
}

#[test]
fn ranges_need_no_copy_and_name_no_file_for_bytes_in_memory() {
    // legacy_odd.pt's storages are misaligned: asking for a tensor copies its storage, asking
    // for its range does not.
    let ckpt = Checkpoint::open(fixture("legacy_odd.pt"), &OpenOptions::default()).unwrap();
    let pending = ckpt.copies_pending();
    assert!(pending > 0);
    for i in 0..ckpt.len() {
        assert!(ckpt.tensor_range(i).unwrap().exact);
    }
    assert_eq!(ckpt.copies_pending(), pending);
    assert_eq!(ckpt.copied_bytes(), 0);

    let bytes = std::fs::read(fixture("nested.pt")).unwrap();
    let ckpt = Checkpoint::from_bytes(&bytes, &OpenOptions::default()).unwrap();
    let range = ckpt.tensor_range(0).unwrap();
    assert_eq!(range.path, None);
    let start = range.offset as usize;
    assert_eq!(
        &bytes[start..start + range.length as usize],
        ckpt.tensor_at(0).unwrap().bytes()
    );
    assert_eq!(
        ckpt.tensor_range(ckpt.len()).unwrap_err().kind,
        ErrorKind::NotFound
    );
}
