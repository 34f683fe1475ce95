//! `OpenMode::PerTensor` (`MMCKPT_OPEN_PREAD`): no mapping of the file, metadata read at open,
//! each storage read with `pread` the first time one of its tensors is asked for. Results are
//! those of the mapped open, over every fixture.

mod common;

use common::{fixture, manifest};
use mmckpt::{Checkpoint, OpenMode, OpenOptions};

fn per_tensor() -> OpenOptions {
    OpenOptions {
        mode: OpenMode::PerTensor,
        ..OpenOptions::default()
    }
}

#[test]
fn every_fixture_reads_as_it_maps() {
    for (file, _) in manifest() {
        let mapped = Checkpoint::open(fixture(&file), &OpenOptions::default()).unwrap();
        let read = Checkpoint::open(fixture(&file), &per_tensor())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(read.format(), mapped.format(), "{file}");
        assert_eq!(read.len(), mapped.len(), "{file}");
        for i in 0..mapped.len() {
            let (a, b) = (mapped.tensor_at(i).unwrap(), read.tensor_at(i).unwrap());
            let what = format!("{file}: {}", a.name());
            assert_eq!(a.name(), b.name(), "{what}");
            assert_eq!(a.dtype(), b.dtype(), "{what}");
            assert_eq!(a.shape(), b.shape(), "{what}");
            assert_eq!(a.strides(), b.strides(), "{what}");
            assert_eq!(a.bytes(), b.bytes(), "{what}");
            assert!(!b.is_mapped(), "{what}");
            assert_eq!(
                b.data_ptr() as usize % a.dtype().itemsize().min(8),
                0,
                "{what}"
            );
            // The same ranges (storage ids are process-wide: each open numbers its own).
            let (mut a, b) = (
                mapped.tensor_range(i).unwrap(),
                read.tensor_range(i).unwrap(),
            );
            a.storage_id = b.storage_id;
            assert_eq!(a, b, "{what}");
        }
        let limits = mmckpt::ValueLimits::default();
        let (a, b) = (mapped.value_leaves(&limits), read.value_leaves(&limits));
        assert_eq!(a.values.len(), b.values.len(), "{file}");
        for (a, b) in a.values.iter().zip(&b.values) {
            assert_eq!((a.path(), a.kind()), (b.path(), b.kind()), "{file}");
            assert_eq!(
                a.text().ok().map(|t| t.into_owned()),
                b.text().ok().map(|t| t.into_owned()),
                "{file}"
            );
        }
    }
}

/// The lines of /proc/self/maps that map `path`.
fn mappings_of(path: &std::path::Path) -> Vec<String> {
    let path = std::fs::canonicalize(path).unwrap();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(path.to_str().unwrap()))
        .map(str::to_owned)
        .collect()
}

#[test]
fn nothing_is_mapped_and_only_touched_storages_are_read() {
    // recipe.pt (40 MB in many storages), copied: the other tests map the fixture itself.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("per-tensor-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("recipe.pt");
    std::fs::copy(fixture("recipe.pt"), &path).unwrap();
    let ckpt = Checkpoint::open(&path, &per_tensor()).unwrap();
    assert_eq!(ckpt.file_bytes_read(), 0, "opening reads metadata only");
    assert!(mappings_of(&path).is_empty(), "{:?}", mappings_of(&path));
    let mut expected = 0u64;
    let mut seen = std::collections::HashSet::new();
    for i in [0, 3, 3, 7] {
        let t = ckpt.tensor_at(i).unwrap();
        if seen.insert(t.storage_id()) {
            expected += t.storage_nbytes() as u64;
        }
        assert_eq!(ckpt.file_bytes_read(), expected, "after tensor {i}");
    }
    assert!(expected < std::fs::metadata(&path).unwrap().len() / 4);
    assert!(mappings_of(&path).is_empty());
    // The mapped open does map it (the check can see a mapping).
    let mapped = Checkpoint::open(&path, &OpenOptions::default()).unwrap();
    assert!(!mappings_of(&path).is_empty());
    assert_eq!(mapped.file_bytes_read(), 0);
}

#[test]
fn threads_asking_at_once_read_a_storage_once() {
    let ckpt = Checkpoint::open(fixture("recipe.pt"), &per_tensor()).unwrap();
    let t0 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| ckpt.tensor_at(0).unwrap().data_ptr() as usize))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(t0.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        ckpt.file_bytes_read(),
        ckpt.tensor_at(0).unwrap().storage_nbytes() as u64
    );
}

#[test]
fn auto_maps_a_local_file_and_knows_network_filesystems() {
    let ckpt = Checkpoint::open(
        fixture("nested.pt"),
        &OpenOptions {
            mode: OpenMode::Auto,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    // The fixtures are on a local filesystem (or tmpfs/overlay): mapped.
    assert!(ckpt.tensor_at(0).unwrap().is_mapped());
}

#[path = "support_zip/mod.rs"]
mod support_zip;

#[test]
fn a_large_storage_is_read_in_pieces_into_the_same_bytes() {
    use support_zip::pk;
    // 48 MiB of float32: read on several threads (pieces of at least 16 MiB).
    let numel: i32 = 12 << 20;
    let data: Vec<u8> = (0..numel as usize * 4)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut pickle = b"\x80\x02}(".to_vec();
    pickle.extend(pk::unicode("w"));
    pickle.extend(pk::tensor("0", numel, 0, &[numel], &[1]));
    pickle.extend(b"u.");
    let bytes = support_zip::checkpoint(&pickle, &[("0", &data)]);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("per-tensor-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("large.pt");
    std::fs::write(&path, &bytes).unwrap();
    let ckpt = Checkpoint::open(&path, &per_tensor()).unwrap();
    assert_eq!(ckpt.file_bytes_read(), 0);
    let t = ckpt.tensor("w").unwrap();
    assert!(t.bytes() == &data[..], "the pieces reassemble the storage");
    assert_eq!(ckpt.file_bytes_read(), data.len() as u64);
    assert_eq!(t.data_ptr() as usize % 64, 0);
}

/// A safetensors file in per-tensor mode: the header is read at open, each tensor's bytes when
/// first asked for, and the tensors equal the mapped open's.
#[test]
fn a_safetensors_file_reads_its_header_then_each_tensor() {
    let path = fixture("safetensors/dtypes.safetensors");
    let mapped = Checkpoint::open(&path, &OpenOptions::default()).unwrap();
    let read = Checkpoint::open(&path, &per_tensor()).unwrap();
    assert_eq!(read.format(), mmckpt::Format::Safetensors);
    assert_eq!(read.file_bytes_read(), 0, "opening reads the header only");
    assert_eq!(read.len(), mapped.len());
    let mut expected = 0u64;
    for i in 0..mapped.len() {
        let Ok(a) = mapped.tensor_at(i) else {
            assert!(read.tensor_at(i).is_err(), "row {i} fails alike");
            continue;
        };
        let b = read.tensor_at(i).unwrap();
        assert_eq!((a.name(), a.bytes()), (b.name(), b.bytes()));
        assert!(!b.is_mapped(), "{}", a.name());
        expected += b.storage_nbytes() as u64;
        assert_eq!(read.file_bytes_read(), expected, "after {}", a.name());
    }
}
