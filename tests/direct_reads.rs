//! Copy loads with direct reads (`LoadOptions::direct_reads`): byte for byte the normal copy
//! load, on a disk file (O_DIRECT) and on tmpfs (which refuses it: plain pread), for tensors
//! at file offsets that are not 4 KiB-aligned, of sizes that are not whole blocks, larger than
//! one read piece, tiny, empty, strided, misaligned or converted (the last ones copied as
//! usual); a file truncated after it was opened fails the load with an `Io` error naming the
//! entry and byte, and a failed or stopped load leaves the module as it was.

mod support_zip;

use mmckpt::{Checkpoint, DType, ErrorKind, LoadOptions, Module, OpenMode, OpenOptions};
use std::path::{Path, PathBuf};
use support_zip::pk;

/// One storage of the generated checkpoint: its key and float32 element count.
const STORAGES: [(&str, i32); 7] = [
    ("mid", 300_001),     // a view 64 bytes into it, and one 20 bytes in (misaligned)
    ("exact", 65_536),    // 256 KiB: whole blocks
    ("strided", 153_600), // a transposed view
    ("tiny", 3),
    ("empty", 0),
    ("min", 16_384), // exactly the 64 KiB below which entries are copied as usual
    ("big", (9 << 18) + 37), // 9 MiB + 148 bytes: more than one 8 MiB read piece; last in the file
];

/// (entry, storage, storage offset, shape, strides).
type Row = (&'static str, &'static str, i32, Vec<i32>, Vec<i32>);

fn rows() -> Vec<Row> {
    vec![
        ("mid", "mid", 16, vec![299_985], vec![1]),
        ("mid_misaligned", "mid", 5, vec![100_000], vec![1]),
        ("exact", "exact", 0, vec![256, 256], vec![256, 1]),
        ("strided", "strided", 0, vec![300, 512], vec![1, 300]),
        ("tiny", "tiny", 0, vec![3], vec![1]),
        ("empty", "empty", 0, vec![0], vec![1]),
        ("min", "min", 0, vec![16_384], vec![1]),
        ("big", "big", 0, vec![(9 << 18) + 37], vec![1]),
    ]
}

/// Element `i` of storage `s`: distinct bytes everywhere, so a misplaced byte shows.
fn storage_bytes(s: usize, numel: i32) -> Vec<u8> {
    (0..numel as u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) ^ (s as u32 * 0x0101_0101)).to_le_bytes())
        .collect()
}

fn generated_checkpoint() -> Vec<u8> {
    let mut pickle = vec![0x80, 2, b'}', b'('];
    for (name, storage, offset, shape, strides) in rows() {
        let numel = STORAGES.iter().find(|(k, _)| *k == storage).unwrap().1;
        pickle.extend(pk::unicode(name));
        pickle.extend(pk::tensor(storage, numel, offset, &shape, &strides));
    }
    pickle.extend_from_slice(b"u.");
    let data: Vec<(String, Vec<u8>)> = STORAGES
        .iter()
        .enumerate()
        .map(|(s, (key, numel))| (key.to_string(), storage_bytes(s, *numel)))
        .collect();
    let storages: Vec<(&str, &[u8])> = data
        .iter()
        .map(|(k, d)| (k.as_str(), d.as_slice()))
        .collect();
    support_zip::checkpoint(&pickle, &storages)
}

/// A directory of its own under `parent` (removed on drop).
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &Path, tag: &str) -> Scratch {
        let dir = parent.join(format!("mmckpt-direct-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the test files go: a disk file system (the target directory, never tmpfs here) and
/// tmpfs (/dev/shm), when there is one.
fn places() -> Vec<(&'static str, PathBuf)> {
    let mut places = vec![("disk", PathBuf::from(env!("CARGO_TARGET_TMPDIR")))];
    if Path::new("/dev/shm").is_dir() {
        places.push(("tmpfs", PathBuf::from("/dev/shm")));
    }
    places
}

fn open(path: &Path, mode: OpenMode) -> Checkpoint {
    Checkpoint::open(
        path,
        &OpenOptions {
            mode,
            ..OpenOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each entry's name, bytes and address.
type Loaded = Vec<(String, Vec<u8>, usize)>;

fn contents(module: &Module) -> Loaded {
    module
        .entries()
        .iter()
        .map(|e| {
            let bytes = e.bytes().unwrap();
            (
                e.name().to_string(),
                bytes.to_vec(),
                bytes.as_ptr() as usize,
            )
        })
        .collect()
}

fn bytes_only(loaded: &Loaded) -> Vec<(&str, &[u8])> {
    loaded
        .iter()
        .map(|(n, b, _)| (n.as_str(), b.as_slice()))
        .collect()
}

/// A materialized module (optionally declared in `dtype`) copy-loaded from `ckpt`; also the
/// addresses right after materialize.
fn copy_load(ckpt: &Checkpoint, direct_reads: bool, dtype: Option<DType>) -> (Loaded, Loaded) {
    let mut module = Module::from_checkpoint(ckpt).unwrap();
    if let Some(dtype) = dtype {
        module.set_floating_dtype(dtype).unwrap();
    }
    module.materialize().unwrap();
    let before = contents(&module);
    let options = LoadOptions {
        direct_reads,
        ..LoadOptions::default()
    };
    let report = module.load(ckpt, &options).unwrap();
    assert!(!report.is_failure(), "{}", report.message());
    (before, contents(&module))
}

/// The entries a direct read applies to in the generated checkpoint, with their file offsets.
fn read_directly(ckpt: &Checkpoint) -> Vec<(String, u64)> {
    ["mid", "exact", "min", "big"]
        .iter()
        .map(|name| {
            let i = (0..ckpt.len())
                .find(|&i| ckpt.name_at(i) == Some(*name))
                .unwrap();
            (
                name.to_string(),
                ckpt.tensor_at(i).unwrap().file_offset().unwrap(),
            )
        })
        .collect()
}

#[test]
fn direct_reads_give_the_bytes_of_a_normal_copy_load_on_disk_and_on_tmpfs() {
    let bytes = generated_checkpoint();
    for (place, parent) in places() {
        let scratch = Scratch::new(&parent, "same");
        let path = scratch.write("gen.pt", &bytes);
        let ckpt = open(&path, OpenMode::Map);
        let direct = read_directly(&ckpt);
        // Not vacuous: offsets inside a block, and sizes that are not whole blocks.
        assert!(
            direct.iter().any(|(_, o)| o % 4096 != 0),
            "{place}: {direct:?}"
        );
        let (_, plain) = copy_load(&ckpt, false, None);
        let (before, loaded) = copy_load(&ckpt, true, None);
        assert!(
            bytes_only(&loaded) == bytes_only(&plain),
            "{place}: bytes differ"
        );
        for ((name, _, old), (_, _, new)) in before.iter().zip(&loaded) {
            match direct.iter().find(|(n, _)| n == name) {
                // Read into a new buffer placed like the file offset within its block.
                Some((_, offset)) => {
                    assert_ne!(old, new, "{place} {name}: not read directly");
                    assert_eq!(*new as u64 % 4096, offset % 4096, "{place} {name}");
                    assert_eq!(new % 64, 0, "{place} {name}");
                }
                None => assert_eq!(old, new, "{place} {name}: copied as usual"),
            }
        }
        // Conversions are copied as usual, and give the same values.
        let (_, plain) = copy_load(&ckpt, false, Some(DType::Float64));
        let (before, loaded) = copy_load(&ckpt, true, Some(DType::Float64));
        assert!(
            bytes_only(&loaded) == bytes_only(&plain),
            "{place}: float64"
        );
        assert!(before.iter().zip(&loaded).all(|(a, b)| a.2 == b.2));
        // A checkpoint read into memory, or mapped copy-on-write (its user may have written
        // to it), is copied from its bytes.
        for mode in [OpenMode::Read, OpenMode::MapCopyOnWrite] {
            let other = open(&path, mode);
            let (before, loaded) = copy_load(&other, true, None);
            assert!(
                bytes_only(&loaded) == bytes_only(&plain_f32(&ckpt)),
                "{place} {mode:?}"
            );
            assert!(
                before.iter().zip(&loaded).all(|(a, b)| a.2 == b.2),
                "{place} {mode:?}"
            );
        }
        // MapPopulate is a shared mapping: read directly.
        let populated = open(&path, OpenMode::MapPopulate);
        let (before, loaded) = copy_load(&populated, true, None);
        assert!(
            bytes_only(&loaded) == bytes_only(&plain_f32(&ckpt)),
            "{place} populate"
        );
        assert!(
            before.iter().zip(&loaded).any(|(a, b)| a.2 != b.2),
            "{place} populate"
        );
    }
}

fn plain_f32(ckpt: &Checkpoint) -> Loaded {
    copy_load(ckpt, false, None).1
}

#[test]
fn direct_reads_of_the_fixtures_equal_normal_copy_loads() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    let mut compared = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pt") {
            continue;
        }
        let Ok(ckpt) = Checkpoint::open(&path, &OpenOptions::default()) else {
            continue;
        };
        let Ok(mut module) = Module::from_checkpoint(&ckpt) else {
            continue;
        };
        module.materialize().unwrap();
        let normal = module.load(&ckpt, &LoadOptions::default());
        let Ok(_) = normal else {
            continue;
        };
        let plain = contents(&module);
        let (_, direct) = copy_load(&ckpt, true, None);
        assert!(
            bytes_only(&direct) == bytes_only(&plain),
            "{}",
            path.display()
        );
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} fixtures compared");
}

#[test]
fn a_file_truncated_after_open_is_an_io_error_and_the_module_is_unchanged() {
    let bytes = generated_checkpoint();
    for (place, parent) in places() {
        let scratch = Scratch::new(&parent, "truncated");
        let path = scratch.write("gen.pt", &bytes);
        let ckpt = open(&path, OpenMode::Map);
        let big = read_directly(&ckpt)
            .into_iter()
            .find(|(n, _)| n == "big")
            .unwrap()
            .1;
        let mut module = Module::from_checkpoint(&ckpt).unwrap();
        module.materialize().unwrap();
        let options = LoadOptions {
            direct_reads: true,
            ..LoadOptions::default()
        };
        module.load(&ckpt, &options).unwrap();
        let loaded = contents(&module);
        // Inside the last storage, not on a block boundary: the other entries still read.
        let cut = big + (5 << 20) + 1000;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let err = module.load(&ckpt, &options).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Io, "{place}: {err}");
        assert!(err.message.contains("entry 'big'"), "{place}: {err}");
        assert!(
            err.message.contains(&format!("ends at byte {cut}")),
            "{place}: {err}"
        );
        assert!(contents(&module) == loaded, "{place}: the module changed");
    }
}

#[test]
fn a_stopped_strict_load_puts_the_old_buffers_back() {
    let bytes = generated_checkpoint();
    let scratch = Scratch::new(&places()[0].1, "stopped");
    let path = scratch.write("gen.pt", &bytes);
    let ckpt = open(&path, OpenMode::Map);
    let mut module = Module::from_checkpoint(&ckpt).unwrap();
    module.materialize().unwrap();
    let before = contents(&module);
    let options = LoadOptions {
        direct_reads: true,
        ..LoadOptions::default()
    };
    // Stops at the last entry in file order: every direct read has replaced a buffer by then.
    let mut seen = Vec::new();
    let mut stop = |e: &mmckpt::Entry| {
        seen.push(e.name().to_string());
        e.name() != "big"
    };
    let err = module
        .load_with(&ckpt, &options, Some(&mut stop))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Callback, "{err}");
    assert_eq!(seen.len(), module.len(), "{seen:?}");
    assert!(contents(&module) == before, "the module changed");
}
