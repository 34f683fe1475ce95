//! The fuzz targets' bodies, one function per target taking the fuzzer's bytes, and the
//! checks they run on what opens.
//!
//! `fuzz/fuzz_targets/<name>.rs` is a one-line call to the function of that name, and the
//! integration tests call the same functions: `tests/hostile.rs` replays every input in
//! `tests/data/regressions/` and the seed corpus through every target, and `tests/mutation.rs`
//! runs [`walk_tensors`], [`visit_values`] and [`load_into_modules`] on every mutant. One source
//! per oracle: a check added here is made by the fuzzer and by `cargo test` alike.
//!
//! They live in the library (behind the `fuzzing` feature, not part of the API) because they
//! reach below the public API: the zip reader, the pickle machine, the value tree.
//!
//! Every function must return normally on any input: a panic is a finding. The assertions are
//! the invariants that must hold on whatever opened.

use crate::checkpoint::{Checkpoint, OpenOptions};
use crate::container::zip::{HeaderReads, ZipLimits};
use crate::dtype::DType;
use crate::module::{LoadOptions, Module};
use crate::pickle::{self, Arena};
use crate::values::{self, ValueLimits};

// Internals the integration tests inspect (which backing a tensor has, the zip reader alone):
// reachable here rather than through the API, as the tests replay these targets anyway.
pub use crate::checkpoint::Backing;
pub use crate::container::zip;
pub use crate::torch::is_allowed_global;

/// The backing of a tensor's storage: the file's bytes (`Backing::File`, its `Source`) or a
/// private aligned copy.
pub fn backing<'a>(tensor: &crate::Tensor<'a>) -> &'a Backing {
    tensor.storage.backing()
}

/// The node of the value tree a value is (equal for the same object reached by two paths).
pub fn node_of(value: &crate::ValueRef<'_>) -> u32 {
    value.node()
}

/// The whole file's bytes as the checkpoint holds them (mapped or read in).
pub fn file_bytes(ckpt: &Checkpoint) -> &[u8] {
    ckpt.source().bytes()
}

/// A fuzz target: the fuzzer's bytes in; returns normally on any input.
pub type Target = fn(&[u8]);

/// Every target by name: the fuzz crate's `[[bin]]` names and `tests/data/regressions/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("zip", zip),
    ("pickle", pickle),
    ("open", open),
    ("walk", walk),
    ("legacy", legacy),
    ("spec", spec),
    ("load", load),
    ("safetensors", safetensors),
];

/// At most this many logical bytes are copied out of one tensor (`contiguous_bytes`): one
/// stride-0 tensor may describe terabytes. The copy itself is tested by the strided unit
/// tests; here the bounds matter.
const MAX_COPY_BYTES: u64 = 1 << 24;

/// Copy loads allocate the module's whole size (twice with a conversion): only modules of at
/// most this many declared bytes are copy-loaded.
const MAX_COPY_LOAD_BYTES: u64 = 8 << 20;

/// The zip container alone: parse, then read every record's data. Parsing with local headers
/// read through a reader (as a mapped file with sparse records is parsed) must give exactly the
/// same archive or error.
pub fn zip(data: &[u8]) {
    let parsed = zip::parse(data, &ZipLimits::default());
    let read_at = zip::read_from(data);
    let reads = HeaderReads {
        read_at: &read_at,
        min_spacing: 0,
    };
    match (
        &parsed,
        &zip::parse_with(data, &ZipLimits::default(), Some(reads)),
    ) {
        (Ok(a), Ok(b)) => assert!(a.records().eq(b.records())),
        (Err(a), Err(b)) => assert_eq!((a.kind, &a.message), (b.kind, &b.message)),
        (a, b) => panic!("parse and parse_with disagree: {a:?} / {b:?}"),
    }
    if let Ok(archive) = parsed {
        for record in archive.records() {
            if let Ok(bytes) = archive.data(data, record) {
                assert_eq!(bytes.len() as u64, record.size);
                assert!(record.data_offset + record.size <= data.len() as u64);
            }
        }
        let _ = archive.get("data.pkl");
        let _ = archive.text(data, "byteorder");
    }
}

/// The pickle machine alone: the bytes as one pickle, then every node built visited.
pub fn pickle(data: &[u8]) {
    let mut arena = Arena::new();
    if let Ok((root, used)) = pickle::load(&mut arena, data, &pickle::PickleLimits::default()) {
        assert!(used <= data.len());
        assert!((root as usize) < arena.len());
        for id in 0..arena.len() as pickle::NodeId {
            let _ = arena.as_str(id);
            let _ = arena.as_int(id);
            let _ = arena.as_seq(id);
            let _ = arena.global_name(id);
            let _ = crate::tree::children(&arena, id);
        }
    }
}

/// The pickles a checkpoint holds, as `fuzz/seed.sh` seeds the `pickle` target with them: the
/// `.pkl` records of a zip the zip reader accepts, else the whole input (a legacy stream starts
/// with one).
pub fn pickle_seeds(data: &[u8]) -> Vec<&[u8]> {
    match zip::parse(data, &ZipLimits::default()) {
        Ok(archive) => archive
            .records()
            .filter(|r| r.name.ends_with(".pkl"))
            .filter_map(|r| archive.data(data, r).ok())
            .collect(),
        Err(_) => vec![data],
    }
}

/// The whole open path (container, pickle, torch interpretation, table), plain and strict, and
/// the plain state-dict reader against the generic path ([`plain_matches_generic`]).
pub fn open(data: &[u8]) {
    plain_matches_generic(data);
    let strict = OpenOptions {
        strict: true,
        ..OpenOptions::default()
    };
    let _ = Checkpoint::from_bytes(data, &strict);
}

/// Opens `data` twice with default options: as it opens (a plain state dict read straight into
/// its table, its value tree built on first use) and with the plain reader off (the generic
/// path: value tree, walk, interpretation). Panics unless both give the same: the same error,
/// or the same table (every row's name, dtype, shape, strides, offset, flags and bytes, storages
/// shared alike) and the same values. Returns whether the plain reader took it.
pub fn plain_matches_generic(data: &[u8]) -> bool {
    let options = OpenOptions::default();
    let fast = Checkpoint::from_bytes(data, &options);
    let generic = crate::checkpoint::plain::without(|| Checkpoint::from_bytes(data, &options));
    let (fast, generic) = match (fast, generic) {
        (Err(a), Err(b)) => {
            assert_eq!(
                (a.kind, &a.message),
                (b.kind, &b.message),
                "the errors differ"
            );
            return false;
        }
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!(
            "one way opened, the other did not: plain {:?}, generic {:?}",
            a.err(),
            b.err()
        ),
    };
    assert!(!generic.read_plain());
    assert_eq!(fast.len(), generic.len(), "table lengths");
    assert_eq!(fast.storage_count(), generic.storage_count(), "storages");
    let mut same_storage = std::collections::HashMap::new();
    for i in 0..fast.len() {
        assert_eq!(fast.name_at(i), generic.name_at(i), "name {i}");
        assert_eq!(fast.name_c_at(i), generic.name_c_at(i), "C name {i}");
        match (fast.tensor_at(i), generic.tensor_at(i)) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    (a.dtype(), a.shape(), a.strides(), a.storage_offset()),
                    (b.dtype(), b.shape(), b.strides(), b.storage_offset()),
                    "tensor {i}"
                );
                assert_eq!(
                    (
                        a.requires_grad(),
                        a.is_parameter(),
                        a.file_offset(),
                        a.is_mapped()
                    ),
                    (
                        b.requires_grad(),
                        b.is_parameter(),
                        b.file_offset(),
                        b.is_mapped()
                    ),
                    "tensor {i}"
                );
                assert_eq!(a.bytes(), b.bytes(), "tensor {i}'s bytes");
                let pair = same_storage.entry(a.storage_id()).or_insert(b.storage_id());
                assert_eq!(
                    *pair,
                    b.storage_id(),
                    "tensor {i}'s storage is shared alike"
                );
            }
            (Err(a), Err(b)) => assert_eq!((a.kind, a.message), (b.kind, b.message)),
            (a, b) => panic!("tensor {i}: plain {:?}, generic {:?}", a.err(), b.err()),
        }
        let name = fast.name_at(i).unwrap_or_default();
        assert_eq!(
            fast.index_of(name),
            generic.index_of(name),
            "lookup of '{name}'"
        );
    }
    let listing = |ckpt: &Checkpoint| {
        let leaves = ckpt.value_leaves(&ValueLimits::default());
        let values: Vec<String> = leaves
            .values
            .iter()
            .map(|v| format!("{} {:?}", v.path(), v.kind()))
            .collect();
        (values, leaves.truncated)
    };
    assert_eq!(listing(&fast), listing(&generic), "values");
    // The trees are parsed from the same bytes with the same limits: the same size, the same
    // saved object.
    let tree = |ckpt: &Checkpoint| {
        let (arena, _) = ckpt.tree().expect("the value tree");
        let root = ckpt.value("").expect("the root");
        (
            arena.len(),
            root.kind(),
            root.child_count(),
            root.class_name().ok(),
        )
    };
    assert_eq!(tree(&fast), tree(&generic), "the saved object");
    fast.read_plain()
}

/// Open, then walk everything: [`walk_tensors`] and [`visit_values`].
pub fn walk(data: &[u8]) {
    if let Ok(ckpt) = Checkpoint::from_bytes(data, &OpenOptions::default()) {
        std::hint::black_box(walk_tensors(&ckpt, data.len() as u64));
        std::hint::black_box(visit_values(&ckpt));
    }
}

/// [`walk`] on inputs that start with a pickle PROTO opcode: the fuzzer's mutations stay on the
/// legacy (pre-zip) stream reader's magic/version/sys-info/keys/storages path.
pub fn legacy(data: &[u8]) {
    if data.first() == Some(&0x80) {
        walk(data);
    }
}

/// The module-spec parser over any UTF-8 text; small modules are also materialized.
pub fn spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut module) = Module::from_spec(text) else {
        return;
    };
    let bytes: u128 = module
        .entries()
        .iter()
        .map(|e| e.numel() as u128 * e.dtype().itemsize() as u128)
        .sum();
    // A spec may declare terabytes (that is legal); allocate only what a fuzzer can afford.
    if bytes <= 1 << 24 {
        module.materialize().expect("small modules materialize");
        assert!(module.entries().iter().all(|e| e.has_data()));
    }
}

/// The safetensors header parser alone (every input, the length prefix included), then, for
/// inputs that open, the whole walk. A header that parses describes tensors that tile the
/// data area in order, each exactly shape × dtype bytes, inside the input.
pub fn safetensors(data: &[u8]) {
    use crate::checkpoint::formats::safetensors::parse_header;
    if let Ok(header) = parse_header(data, &OpenOptions::default()) {
        let data_len = (data.len() - header.data_start) as u64;
        let mut at = 0;
        for t in &header.tensors {
            assert!(
                t.begin == at && t.end >= t.begin && t.end <= data_len,
                "{}",
                t.name
            );
            at = t.end;
        }
        assert_eq!(at, data_len);
        if let Ok(ckpt) = Checkpoint::from_bytes(data, &OpenOptions::default()) {
            assert_eq!(ckpt.len(), header.tensors.len());
            std::hint::black_box(walk_tensors(&ckpt, data.len() as u64));
            std::hint::black_box(visit_values(&ckpt));
            std::hint::black_box(load_into_modules(&ckpt));
        }
    }
}

/// Open, then [`load_into_modules`].
pub fn load(data: &[u8]) {
    if let Ok(ckpt) = Checkpoint::from_bytes(data, &OpenOptions::default()) {
        std::hint::black_box(load_into_modules(&ckpt));
    }
}

/// Every name looked up (it maps to its first entry, and a lookup by name succeeds exactly when
/// that entry's does), every tensor's bytes read and checked to lie inside the file of
/// `file_len` bytes, and the row-major copy made when it is at most 16 MiB. Returns a sum of
/// the bytes read, to keep the reads.
pub fn walk_tensors(ckpt: &Checkpoint, file_len: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..ckpt.len() {
        let name = ckpt.name_at(i).expect("index in range").to_owned();
        let first = ckpt.index_of(&name).expect("every name is found");
        assert!(first <= i, "a name maps to its first entry");
        let by_name = ckpt.tensor(&name);
        let Ok(t) = ckpt.tensor_at(i) else {
            continue;
        };
        assert_eq!(by_name.is_ok(), ckpt.tensor_at(first).is_ok());
        let span = t.span_bytes();
        if let Some(off) = t.file_offset() {
            assert!(
                off.checked_add(span).is_some_and(|end| end <= file_len),
                "tensor '{name}' ends past the file"
            );
        }
        let bytes = t.bytes();
        assert_eq!(bytes.len() as u64, span);
        sum = bytes.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        let logical = t.row_major_bytes();
        if logical <= MAX_COPY_BYTES {
            let whole = t.contiguous_bytes();
            assert_eq!(whole.len() as u64, logical);
            // Streamed in pieces, the same bytes in the same order.
            let mut at = 0usize;
            t.for_each_row_major_chunk(4096, |piece| {
                assert_eq!(
                    piece,
                    &whole[at..at + piece.len()],
                    "tensor '{name}' streamed"
                );
                at += piece.len();
                Ok::<(), ()>(())
            })
            .expect("the callback never fails");
            assert_eq!(at, whole.len(), "tensor '{name}' streamed");
        }
    }
    sum
}

/// Every non-tensor value read through its kind's accessors, and the first 64 found again by
/// their paths. Returns a sum of the text lengths read.
pub fn visit_values(ckpt: &Checkpoint) -> u64 {
    let (arena, root) = ckpt
        .tree()
        .expect("the value tree (a deferred one parses the bytes the open read)");
    let leaves = values::leaves(arena, root, &ValueLimits::default());
    let mut sum = 0u64;
    for (i, leaf) in leaves.values.iter().enumerate() {
        let _ = leaf.as_bool();
        let _ = leaf.as_i64();
        let _ = leaf.as_f64();
        let _ = leaf.as_complex();
        let _ = leaf.class_name();
        if let Ok(text) = leaf.text() {
            sum = sum.wrapping_add(text.len() as u64);
        }
        // Looking a value up by its name walks the tree again: do it for the first few.
        if i < 64 {
            let again = values::value(ckpt, leaf.path());
            assert!(
                again.is_ok(),
                "value '{}' is listed but not found",
                leaf.path()
            );
        }
    }
    sum
}

/// A module skeleton of the checkpoint, assign-loaded (not strict); when its declared size is
/// at most 8 MiB, also a copy load and a bfloat16-converting copy load into materialized
/// skeletons. Every step must succeed or fail with an error. Returns a sum of the assigned
/// bytes.
pub fn load_into_modules(ckpt: &Checkpoint) -> u64 {
    let Ok(mut module) = Module::from_checkpoint(ckpt) else {
        return 0;
    };
    let non_strict = LoadOptions {
        strict: false,
        ..LoadOptions::default()
    };
    let assign = LoadOptions {
        assign: true,
        ..non_strict.clone()
    };
    let _ = module.load(ckpt, &assign);
    let mut sum = 0u64;
    let mut total = 0u64;
    for e in module.entries() {
        if let Some(bytes) = e.bytes() {
            sum = bytes.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        }
        total = total.saturating_add(
            e.numel()
                .saturating_mul(e.declared_dtype().itemsize() as u64),
        );
    }
    if total > MAX_COPY_LOAD_BYTES {
        return sum;
    }
    for dtype in [None, Some(DType::BFloat16)] {
        let Ok(mut copy) = Module::from_checkpoint(ckpt) else {
            return sum;
        };
        if let Some(d) = dtype {
            copy.set_floating_dtype(d)
                .expect("a fresh module has no data");
        }
        copy.materialize().expect("small modules materialize");
        let _ = copy.load(ckpt, &non_strict);
    }
    sum
}
