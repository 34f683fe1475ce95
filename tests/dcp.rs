//! torch.distributed.checkpoint directories written by torch's own `dcp.save`
//! (scripts/make_dcp_fixtures.py: one process, and 2 and 4 gloo processes with DTensors),
//! compared with what `dcp.load` gave back into one process (tests/data/dcp/expected.json);
//! chunks, slices, values and the errors for broken directories.

mod common;

use common::{ints, narrow, repo_path, sha256_hex};
use mmckpt::{Checkpoint, DType, ErrorKind, Format, OpenOptions};
use serde_json::Value;

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(repo_path("tests/data/dcp/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn open(name: &str) -> Checkpoint {
    Checkpoint::open(
        repo_path("tests/data/dcp").join(name),
        &OpenOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_tensor_equals_what_dcp_load_gives() {
    for (dir, items) in expected() {
        let ckpt = open(&dir);
        assert_eq!(ckpt.format(), Format::Dcp);
        let mut tensors = 0;
        for (name, item) in items.as_object().unwrap() {
            let Some(sha) = item.get("sha256") else {
                continue;
            };
            tensors += 1;
            let index = ckpt
                .index_of(name)
                .unwrap_or_else(|| panic!("{dir}: {name}"));
            let t = ckpt.tensor_at(index).unwrap();
            assert_eq!(
                t.dtype().name(),
                item["dtype"].as_str().unwrap(),
                "{dir} {name}"
            );
            assert_eq!(t.shape(), ints(&item["shape"]), "{dir} {name}");
            assert_eq!(
                sha256_hex(&t.contiguous_bytes()),
                sha.as_str().unwrap(),
                "{dir} {name}"
            );
            // The chunks are what .metadata lists, each a view of its part of the whole.
            let chunks = item["chunks"].as_array().unwrap();
            assert_eq!(
                ckpt.chunk_count(index).unwrap(),
                chunks.len(),
                "{dir} {name}"
            );
            for (i, c) in chunks.iter().enumerate() {
                let chunk = ckpt.chunk_at(index, i).unwrap();
                assert_eq!(chunk.offsets(), ints(&c[0]), "{dir} {name} chunk {i}");
                assert_eq!(chunk.sizes(), ints(&c[1]), "{dir} {name} chunk {i}");
            }
            assert_eq!(
                ckpt.chunk_at(index, chunks.len()).unwrap_err().kind,
                ErrorKind::NotFound
            );
        }
        assert_eq!(ckpt.len(), tensors, "{dir}: one row per tensor");
    }
}

#[test]
fn the_directory_or_its_metadata_file() {
    let by_file = Checkpoint::open(
        repo_path("tests/data/dcp/rank4/.metadata"),
        &OpenOptions::default(),
    )
    .unwrap();
    let by_dir = open("rank4");
    let names = |c: &Checkpoint| -> Vec<String> {
        (0..c.len())
            .map(|i| c.name_at(i).unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&by_file), names(&by_dir));
}

#[test]
fn a_tensor_saved_whole_is_a_view_of_its_record() {
    // Replicated tensors are saved once, whole: the table's tensor is the chunk.
    let options = OpenOptions {
        accept_unaligned: true,
        ..OpenOptions::default()
    };
    let ckpt = Checkpoint::open(repo_path("tests/data/dcp/rank2"), &options).unwrap();
    let rep = ckpt.tensor("rep").unwrap();
    assert!(rep.is_mapped());
    assert!(rep.file_offset().is_some());
    let chunk = ckpt.chunk_at(ckpt.index_of("rep").unwrap(), 0).unwrap();
    assert_eq!(chunk.tensor().data_ptr(), rep.data_ptr());
    // A sharded one is assembled (owned memory), once; its chunks are views of the files.
    assert_eq!(ckpt.copies_pending(), 3);
    let row = ckpt.tensor("row").unwrap();
    assert!(!row.is_mapped());
    assert_eq!(ckpt.copies_pending(), 2);
    assert_eq!(ckpt.tensor("row").unwrap().data_ptr(), row.data_ptr());
    let index = ckpt.index_of("row").unwrap();
    let second = ckpt.chunk_at(index, 1).unwrap();
    assert!(second.tensor().is_mapped());
    assert_eq!(second.offsets(), [4, 0]);
    // The chunk's bytes are the whole's rows 4..8.
    assert_eq!(
        &*second.tensor().contiguous_bytes(),
        &row.bytes()[4 * 6 * 4..]
    );
}

#[test]
fn values_are_the_non_tensor_items() {
    let ckpt = open("single");
    assert_eq!(ckpt.value("step").unwrap().as_i64().unwrap(), 7);
    assert_eq!(ckpt.value("config.lr").unwrap().as_f64().unwrap(), 0.125);
    assert_eq!(ckpt.value("config.name").unwrap().as_str().unwrap(), "dcp");
    assert_eq!(open("rank4").value("step").unwrap().as_i64().unwrap(), 104);
    let w = ckpt.tensor("w").unwrap();
    assert_eq!(w.dtype(), DType::Float32);
}

#[test]
fn slices_equal_narrow_for_every_dim_start_and_length() {
    for dir in ["rank2", "rank4", "single"] {
        let reference = open(dir);
        for index in 0..reference.len() {
            let whole = reference.tensor_at(index).unwrap();
            let bytes = whole.contiguous_bytes().into_owned();
            let shape = whole.shape().to_vec();
            let itemsize = whole.dtype().itemsize();
            for dim in 0..shape.len() {
                for start in 0..=shape[dim] {
                    for length in 0..=shape[dim] - start {
                        // A fresh open: slices of a tensor not assembled yet.
                        let ckpt = open(dir);
                        let s = ckpt
                            .slice(index, dim as i64, start, length)
                            .unwrap_or_else(|e| panic!("{dir} {index} {dim} {start}: {e}"));
                        let t = s.tensor();
                        let mut want_shape = shape.clone();
                        want_shape[dim] = length;
                        assert_eq!(t.shape(), want_shape);
                        assert_eq!(
                            &*t.contiguous_bytes(),
                            narrow(&bytes, &shape, itemsize, dim, start, length),
                            "{dir} {} dim {dim} start {start} length {length}",
                            t.name()
                        );
                        // The same slice of the assembled tensor: a view of it.
                        let again = reference.slice(index, dim as i64, start, length).unwrap();
                        assert_eq!(again.tensor().contiguous_bytes(), t.contiguous_bytes());
                        if length > 0 {
                            assert_eq!(
                                again.tensor().storage_id(),
                                reference.tensor_at(index).unwrap().storage_id()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_slice_inside_one_chunk_is_a_view_of_it() {
    let options = OpenOptions {
        accept_unaligned: true,
        ..OpenOptions::default()
    };
    let ckpt = Checkpoint::open(repo_path("tests/data/dcp/rank4"), &options).unwrap();
    let index = ckpt.index_of("row").unwrap();
    // rows 2..4 of `row` [8, 4] Shard(0) over 4 ranks: chunk 1 holds rows 2..4.
    let s = ckpt.slice(index, 0, 2, 2).unwrap();
    let chunk = ckpt.chunk_at(index, 1).unwrap();
    assert_eq!(s.tensor().data_ptr(), chunk.tensor().data_ptr());
    assert!(s.tensor().is_mapped());
    // Nothing was assembled.
    assert_eq!(ckpt.copies_pending(), 3);
    // Rows 1..3 cross two chunks: a copy of only those bytes.
    let crossing = ckpt.slice(index, 0, 1, 2).unwrap();
    assert!(!crossing.tensor().is_mapped());
    assert_eq!(crossing.tensor().span_bytes(), 2 * 4 * 8);
    assert_eq!(ckpt.copies_pending(), 3);
    // A slice outlives its checkpoint.
    let bytes = crossing.tensor().contiguous_bytes().into_owned();
    drop(ckpt);
    // Row 2 is the view's first row and the copy's second.
    assert_eq!(&s.tensor().contiguous_bytes()[..4 * 8], &bytes[4 * 8..]);
}

#[test]
fn slices_of_single_file_checkpoints_are_views() {
    let ckpt = Checkpoint::open(
        repo_path("tests/fixtures/forms.pt"),
        &OpenOptions::default(),
    )
    .unwrap();
    let index = ckpt.index_of("transpose").unwrap();
    let t = ckpt.tensor_at(index).unwrap();
    let s = ckpt.slice(index, 1, 1, 1).unwrap();
    assert_eq!(s.tensor().strides(), t.strides());
    assert_eq!(
        s.tensor().storage_offset(),
        t.storage_offset() + t.strides()[1]
    );
    assert_eq!(s.tensor().storage_id(), t.storage_id());
    assert_eq!(ckpt.chunk_count(index).unwrap(), 1);
    assert_eq!(ckpt.chunk_at(index, 0).unwrap().offsets(), [0, 0]);
}

#[test]
fn bad_slices_are_worded_as_torch_words_them() {
    let ckpt = open("rank2");
    let row = ckpt.index_of("row").unwrap(); // [8, 6]
    let cases = [
        (
            2,
            0,
            1,
            "Dimension out of range (expected to be in range of [-2, 1], but got 2)",
        ),
        (
            0,
            9,
            1,
            "start out of range (expected to be in range of [-8, 8], but got 9)",
        ),
        (0, 2, -1, "narrow(): length must be non-negative."),
        (
            0,
            2,
            7,
            "start (2) + length (7) exceeds dimension size (8).",
        ),
    ];
    for (dim, start, length, message) in cases {
        let e = ckpt.slice(row, dim, start, length).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains(message), "{}", e.message);
    }
    // Negative dim and start count from the end, as in torch.
    let s = ckpt.slice(row, -2, -2, 2).unwrap();
    assert_eq!(s.tensor().shape(), [2, 6]);
}

#[test]
fn broken_directories_are_refused_with_what_is_wrong() {
    let cases = [
        ("missing_file", ErrorKind::Io, "__1_0.distcp"),
        (
            "gap",
            ErrorKind::Format,
            "do not tile its shape [8, 6]: they cover 24 of its 48",
        ),
        ("overlap", ErrorKind::Format, "overlap"),
        ("past_end", ErrorKind::Format, "lies outside '__0_0.distcp'"),
        (
            "dtype",
            ErrorKind::Format,
            "'.metadata' says float64, the saved tensor is float32",
        ),
        (
            "size",
            ErrorKind::Format,
            "says sizes [4, 7], the saved tensor has shape [4, 5]",
        ),
    ];
    for (name, kind, message) in cases {
        let e = Checkpoint::open(
            repo_path("tests/data/dcp/bad").join(name),
            &OpenOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind, kind, "{name}: {e}");
        assert!(e.message.contains(message), "{name}: {}", e.message);
    }
    let e = Checkpoint::open(repo_path("tests/data/dcp"), &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.message.contains(".metadata"), "{}", e.message);
}

#[test]
fn a_strict_open_accepts_dcp_metadata_and_refuses_other_globals() {
    let strict = OpenOptions {
        strict: true,
        ..OpenOptions::default()
    };
    for dir in ["rank2", "rank4"] {
        Checkpoint::open(repo_path("tests/data/dcp").join(dir), &strict).unwrap();
    }
    // The single-process save holds an io.BytesIO item, pickled as `_io.BytesIO`.
    let e = Checkpoint::open(repo_path("tests/data/dcp/single"), &strict).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsafe);
    assert!(e.message.contains("_io.BytesIO"), "{}", e.message);
}

/// A copy of a fixture directory in a fresh temporary directory, removed on drop.
struct TempCopy(std::path::PathBuf);

impl TempCopy {
    fn of(name: &str, tag: &str) -> TempCopy {
        let dir = std::env::temp_dir().join(format!("mmckpt-dcp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(repo_path("tests/data/dcp").join(name)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        TempCopy(dir)
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_truncation_and_flipped_byte_of_the_metadata_is_an_error_or_a_good_open() {
    let copy = TempCopy::of("rank2", "mutate");
    let metadata = std::fs::read(copy.0.join(".metadata")).unwrap();
    let reference = open("rank2");
    for cut in 0..metadata.len() {
        std::fs::write(copy.0.join(".metadata"), &metadata[..cut]).unwrap();
        assert!(
            Checkpoint::open(&copy.0, &OpenOptions::default()).is_err(),
            "cut at {cut}"
        );
    }
    for at in 0..metadata.len() {
        let mut bytes = metadata.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(copy.0.join(".metadata"), &bytes).unwrap();
        // Either refused, or every tensor it lists reads (assembled where sharded).
        if let Ok(ckpt) = Checkpoint::open(&copy.0, &OpenOptions::default()) {
            for index in 0..ckpt.len() {
                if let Ok(t) = ckpt.tensor_at(index) {
                    let _ = t.contiguous_bytes();
                }
                let _ = ckpt.slice(index, 0, 0, 1);
            }
        }
    }
    assert_eq!(reference.len(), 5);
}

#[test]
fn flipped_bytes_of_a_data_file_are_an_error_or_a_good_open() {
    let copy = TempCopy::of("rank2", "distcp");
    let file = copy.0.join("__1_0.distcp");
    let data = std::fs::read(&file).unwrap();
    for at in (0..data.len()).step_by(7) {
        let mut bytes = data.clone();
        bytes[at] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        if let Ok(ckpt) = Checkpoint::open(&copy.0, &OpenOptions::default()) {
            for index in 0..ckpt.len() {
                if let Ok(t) = ckpt.tensor_at(index) {
                    assert_eq!(t.contiguous_bytes().len() as u64, t.row_major_bytes());
                }
            }
        }
    }
}

#[test]
fn a_directory_saves_as_one_file_with_every_tensor_whole() {
    let copy = TempCopy::of("rank4", "save");
    let out = copy.0.join("whole.safetensors");
    let ckpt = open("rank4");
    let options = mmckpt::SaveOptions {
        format: mmckpt::SaveFormat::Safetensors,
        ..mmckpt::SaveOptions::default()
    };
    mmckpt::save(&ckpt, &out, &options).unwrap();
    let saved = Checkpoint::open(&out, &OpenOptions::default()).unwrap();
    let expected = expected();
    assert_eq!(saved.len(), 4);
    for (name, t) in saved.iter() {
        let t = t.unwrap();
        assert_eq!(
            sha256_hex(&t.contiguous_bytes()),
            expected["rank4"][name]["sha256"].as_str().unwrap(),
            "{name}"
        );
    }
}
