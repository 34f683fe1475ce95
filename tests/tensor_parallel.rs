//! Tensor-parallel loads: every rank's share of every tensor of torch-written single-file
//! checkpoints and of the 2- and 4-rank distributed checkpoints equals
//! `torch.chunk(t, world, dim)[rank]` computed here from the whole tensor (whose bytes the
//! other suites check against torch), for assign, assign + contiguous and copy loads;
//! replicated entries load whole; and the errors.

mod common;

use common::{fixture, narrow, repo_path};
use mmckpt::{
    Checkpoint, DType, EntryKind, ErrorKind, LoadOptions, Module, OpenOptions, SplitRule,
    TensorParallel,
};
use std::path::PathBuf;

fn inputs() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = ["forms.pt", "dtypes.pt", "transposed.pt", "nested.pt"]
        .iter()
        .map(|f| fixture(f))
        .collect();
    for dir in ["rank2", "rank4", "single"] {
        paths.push(repo_path("tests/data/dcp").join(dir));
    }
    paths
}

fn open(path: &PathBuf) -> Checkpoint {
    Checkpoint::open(path, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// torch.chunk(t, world, dim)[rank] along a dimension of size `n`, as (start, length), or
/// `None` when torch.chunk returns fewer chunks than `rank + 1`. Written from torch's
/// documentation: chunks of ceil(n / world); a size-0 dimension gives `world` empty chunks.
fn torch_chunk(n: i64, world: i64, rank: i64) -> Option<(i64, i64)> {
    if n == 0 {
        return Some((0, 0));
    }
    let size = (n + world - 1) / world;
    let start = rank * size;
    (start < n).then(|| (start, size.min(n - start)))
}

/// An entry's elements in row-major order, read through its own strides.
fn row_major(entry: &mmckpt::Entry) -> Vec<u8> {
    let itemsize = entry.dtype().itemsize();
    let bytes = entry.bytes().unwrap();
    let shape = entry.shape();
    let strides = entry.strides();
    let numel: i64 = shape.iter().product();
    let mut out = Vec::with_capacity(numel as usize * itemsize);
    for flat in 0..numel {
        let (mut rest, mut at) = (flat, 0i64);
        for d in (0..shape.len()).rev() {
            at += (rest % shape[d]) * strides[d];
            rest /= shape[d];
        }
        let at = at as usize * itemsize;
        out.extend_from_slice(&bytes[at..at + itemsize]);
    }
    out
}

fn tp(rank: usize, world: usize, rules: &[(&str, i64)]) -> Option<TensorParallel> {
    let rules = rules.iter().map(|&(p, d)| SplitRule::new(p, d)).collect();
    Some(TensorParallel::new(rank, world, rules))
}

#[test]
fn every_rank_loads_torch_chunk_of_every_tensor() {
    let mut checked = 0;
    for path in inputs() {
        let reference = open(&path);
        for index in 0..reference.len() {
            let Ok(whole) = reference.tensor_at(index) else {
                continue;
            };
            let name = whole.name().to_string();
            let (dtype, shape) = (whole.dtype(), whole.shape().to_vec());
            let bytes = whole.contiguous_bytes().into_owned();
            let itemsize = dtype.itemsize();
            for dim in 0..shape.len() {
                for world in 1..=5usize {
                    for rank in 0..world {
                        let Some((start, length)) =
                            torch_chunk(shape[dim], world as i64, rank as i64)
                        else {
                            continue;
                        };
                        let mut local = shape.clone();
                        local[dim] = length;
                        let want = narrow(&bytes, &shape, itemsize, dim, start, length);
                        // A negative dim names the same dimension.
                        let rule_dim = if rank % 2 == 0 {
                            dim as i64
                        } else {
                            dim as i64 - shape.len() as i64
                        };
                        for (assign, contiguous) in [(true, false), (true, true), (false, false)] {
                            // A fresh open: a distributed checkpoint's tensor not assembled.
                            let ckpt = open(&path);
                            let mut m = Module::new("Net");
                            m.add(&name, dtype, &local, EntryKind::Parameter).unwrap();
                            if !assign {
                                m.materialize().unwrap();
                            }
                            let options = LoadOptions {
                                assign,
                                contiguous,
                                strict: false,
                                tensor_parallel: tp(rank, world, &[(&name, rule_dim)]),
                                ..LoadOptions::default()
                            };
                            let what = format!(
                                "{} {name} dim {dim} rank {rank}/{world} assign {assign} \
                                 contiguous {contiguous}",
                                path.display()
                            );
                            let report = m
                                .load(&ckpt, &options)
                                .unwrap_or_else(|e| panic!("{what}: {e}"));
                            assert_eq!(report.loaded(), 1, "{what}");
                            let entry = m.get(&name).unwrap();
                            assert_eq!(entry.shape(), local, "{what}");
                            assert_eq!(row_major(entry), want, "{what}");
                            if contiguous || !assign {
                                assert!(entry.is_contiguous(), "{what}");
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}

#[test]
fn shares_are_views_and_only_their_bytes_are_copied() {
    // `row` [8, 4] float64, saved by 4 ranks in Shard(0): rank 1's rows are chunk 1's, bound
    // as a view of it without assembling anything.
    let path = repo_path("tests/data/dcp/rank4");
    let ckpt = open(&path);
    let index = ckpt.index_of("row").unwrap();
    let mut m = Module::new("Net");
    m.add("row", DType::Float64, &[2, 4], EntryKind::Parameter)
        .unwrap();
    let options = LoadOptions {
        assign: true,
        strict: false,
        tensor_parallel: tp(1, 4, &[("r*", 0)]),
        ..LoadOptions::default()
    };
    let pending = ckpt.copies_pending();
    m.load(&ckpt, &options).unwrap();
    let chunk = ckpt.chunk_at(index, 1).unwrap();
    assert_eq!(m.get("row").unwrap().data_ptr(), chunk.tensor().data_ptr());
    assert!(m.get("row").unwrap().is_mapped());
    assert_eq!(ckpt.copies_pending(), pending, "nothing assembled");

    // A column share of a single-file tensor is a strided view of the file; with
    // `contiguous` it is copied, the copy holding only the share.
    let ckpt = open(&fixture("forms.pt"));
    let whole = ckpt.tensor("contiguous").unwrap();
    let mut m = Module::new("Net");
    m.add("contiguous", DType::Float32, &[4, 3], EntryKind::Parameter)
        .unwrap();
    let mut options = LoadOptions {
        assign: true,
        strict: false,
        tensor_parallel: tp(1, 2, &[("contiguous", 1)]),
        ..LoadOptions::default()
    };
    let report = m.load(&ckpt, &options).unwrap();
    let entry = m.get("contiguous").unwrap();
    assert!(entry.is_mapped() && !entry.is_contiguous());
    assert_eq!(entry.strides(), [6, 1]);
    assert_eq!(entry.storage_id(), whole.storage_id());
    assert_eq!(entry.data_ptr(), whole.data_ptr().wrapping_add(3 * 4));
    assert!(report.copied_keys().is_empty());
    options.contiguous = true;
    let report = m.load(&ckpt, &options).unwrap();
    let entry = m.get("contiguous").unwrap();
    assert!(!entry.is_mapped() && entry.is_contiguous());
    assert_eq!(entry.nbytes(), 4 * 3 * 4);
    assert_eq!(report.copied_keys(), ["contiguous"]);
}

#[test]
fn unmatched_entries_are_replicated_and_the_first_rule_wins() {
    let path = repo_path("tests/data/dcp/rank4");
    let ckpt = open(&path);
    let rules = [("row", 0), ("co*", 1), ("*", 0)];
    for rank in 0..4 {
        let mut m = Module::new("Net");
        // The first two rules: `rep` and `short` match neither and load whole.
        for (name, dtype, local) in [
            ("col", DType::Float16, vec![3, 2]),
            ("rep", DType::Int8, vec![5]),
            ("row", DType::Float64, vec![2, 4]),
            ("short", DType::Int64, vec![3, 2]),
        ] {
            m.add(name, dtype, &local, EntryKind::Parameter).unwrap();
        }
        let options = LoadOptions {
            assign: true,
            tensor_parallel: tp(rank, 4, &rules[..2]),
            ..LoadOptions::default()
        };
        let report = m.load(&ckpt, &options).unwrap();
        assert_eq!(report.message(), "<All keys matched successfully>");
        let reference = open(&path);
        for name in ["rep", "short"] {
            let whole = reference.tensor(name).unwrap();
            assert_eq!(
                row_major(m.get(name).unwrap()),
                &*whole.contiguous_bytes(),
                "{name} replicated"
            );
        }
        // `co*` before `*`: col split along dim 1, not 0.
        let col = reference.tensor("col").unwrap();
        assert_eq!(
            row_major(m.get("col").unwrap()),
            narrow(&col.contiguous_bytes(), &[3, 8], 2, 1, 2 * rank as i64, 2)
        );
    }
    // With a catch-all last rule, `short` [3, 2] on dim 0 over 4 ranks leaves rank 3 without
    // a chunk (torch.chunk gives 3).
    let mut m = Module::new("Net");
    m.add("short", DType::Int64, &[1, 2], EntryKind::Parameter)
        .unwrap();
    let options = LoadOptions {
        assign: true,
        strict: false,
        tensor_parallel: tp(3, 4, &rules),
        ..LoadOptions::default()
    };
    let err = m.load(&ckpt, &options).unwrap_err();
    assert_eq!(err.kind, ErrorKind::ShapeMismatch);
    assert_eq!(
        err.message,
        "Error(s) in loading state_dict for Net:\n\tsize mismatch for short: copying a param \
         with shape torch.Size([3, 2]) from checkpoint, split for tensor-parallel rank 3 of \
         world size 4 along dim 0 (torch.chunk(t, 4, 0)[3]) into no shard, the shape in \
         current model is torch.Size([1, 2]). (torch.chunk gives 3 chunks)"
    );
}

#[test]
fn mismatches_and_bad_options_are_refused_before_anything_changes() {
    let ckpt = open(&fixture("dtypes.pt"));
    let mut m = Module::new("Net");
    m.add("float32", DType::Float32, &[3, 2], EntryKind::Parameter)
        .unwrap();
    m.add("int8", DType::Int8, &[3, 5], EntryKind::Parameter)
        .unwrap();
    m.materialize().unwrap();
    let load = |m: &mut Module, tensor_parallel| {
        let options = LoadOptions {
            strict: false,
            tensor_parallel,
            ..LoadOptions::default()
        };
        m.load(&ckpt, &options).unwrap_err()
    };
    // [3, 5] on dim 1 over 2 ranks: rank 0 holds [3, 3], rank 1 [3, 2].
    let err = load(&mut m, tp(0, 2, &[("float*", 1)]));
    assert_eq!(err.kind, ErrorKind::ShapeMismatch);
    assert_eq!(
        err.message,
        "Error(s) in loading state_dict for Net:\n\tsize mismatch for float32: copying a param \
         with shape torch.Size([3, 5]) from checkpoint, split for tensor-parallel rank 0 of \
         world size 2 along dim 1 (torch.chunk(t, 2, 1)[0]) into a shard of shape \
         torch.Size([3, 3]), the shape in current model is torch.Size([3, 2])."
    );
    for (tensor_parallel, words) in [
        (tp(2, 2, &[]), "rank 2 is out of range for world size 2"),
        (tp(0, 0, &[("*", 0)]), "world size is 0"),
        (tp(0, 2, &[("", 0)]), "rule 0 has an empty pattern"),
        (
            tp(1, 2, &[("float*", 2)]),
            "split rule 'float*' (dim 2) matches entry 'float32', whose checkpoint tensor \
             has shape torch.Size([3, 5]): dimension 2 is out of range",
        ),
        (tp(1, 2, &[("float*", -3)]), "[-2, 1]"),
    ] {
        let err = load(&mut m, tensor_parallel);
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{}", err.message);
        assert!(err.message.contains(words), "{}", err.message);
    }
    // Nothing was written: the materialized entries are still zero.
    for entry in m.entries() {
        assert!(entry.bytes().unwrap().iter().all(|&b| b == 0));
    }
    // Rank 1's share fits.
    let options = LoadOptions {
        strict: false,
        tensor_parallel: tp(1, 2, &[("float*", 1)]),
        ..LoadOptions::default()
    };
    let mut m = Module::new("Net");
    m.add("float32", DType::Float32, &[3, 2], EntryKind::Parameter)
        .unwrap();
    m.materialize().unwrap();
    m.load(&ckpt, &options).unwrap();
    let whole = ckpt.tensor("float32").unwrap();
    let share = narrow(&whole.contiguous_bytes(), &[3, 5], 4, 1, 3, 2);
    assert_eq!(m.get("float32").unwrap().bytes().unwrap(), share);
    // A copy load converting the strided share (float32 into float64).
    let mut m = Module::new("Net");
    m.add("float32", DType::Float64, &[3, 2], EntryKind::Parameter)
        .unwrap();
    m.materialize().unwrap();
    m.load(&ckpt, &options).unwrap();
    let widened: Vec<u8> = share
        .chunks(4)
        .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) as f64).to_le_bytes())
        .collect();
    assert_eq!(m.get("float32").unwrap().bytes().unwrap(), widened);
}

#[test]
fn a_rank_skeleton_of_the_table_loads_strictly_without_assembling() {
    let ckpt = open(&repo_path("tests/data/dcp/rank2"));
    let tp = TensorParallel::new(
        1,
        2,
        vec![SplitRule::new("row", 0), SplitRule::new("col", 1)],
    );
    let mut m = Module::from_checkpoint_for_rank(&ckpt, "", &tp).unwrap();
    assert_eq!(m.get("row").unwrap().shape(), [4, 6]);
    assert_eq!(m.get("col").unwrap().shape(), [4, 5]);
    assert_eq!(m.get("uneven").unwrap().shape(), [5, 3]);
    let options = LoadOptions {
        assign: true,
        tensor_parallel: Some(tp),
        ..LoadOptions::default()
    };
    let report = m.load(&ckpt, &options).unwrap();
    assert_eq!(report.message(), "<All keys matched successfully>");
    // row and col are views of rank 1's chunks (not of an assembled whole).
    for name in ["row", "col"] {
        let chunk = ckpt.chunk_at(ckpt.index_of(name).unwrap(), 1).unwrap();
        let entry = m.get(name).unwrap();
        assert_eq!(entry.storage_id(), chunk.tensor().storage_id(), "{name}");
        assert_eq!(entry.data_ptr(), chunk.tensor().data_ptr(), "{name}");
    }

    // A rank with no chunk of a tensor is named.
    let tp = TensorParallel::new(3, 4, vec![SplitRule::new("uneven", 1)]);
    let err = Module::from_checkpoint_for_rank(&ckpt, "", &tp).unwrap_err();
    assert_eq!(err.kind, ErrorKind::ShapeMismatch);
    assert!(
        err.message.contains("no chunk of 'uneven'"),
        "{}",
        err.message
    );
    let bad = TensorParallel::new(2, 2, vec![]);
    let err = Module::from_checkpoint_for_rank(&ckpt, "", &bad).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
}
