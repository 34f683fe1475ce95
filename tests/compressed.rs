//! Deflated records (made by `scripts/make_deflated.py`: torch's fixtures, TorchScript archives
//! among them, re-zipped with Python's `zipfile` and `ZIP_DEFLATED`, which torch.load and
//! torch.jit.load read): the same tensors as the stored originals, inflated on first use, and
//! converted by the writer as the originals are; a wrong CRC-32 or a stream that inflates past its
//! declared size is `Format` naming the record; a declared size over the limit is `Limit`.

mod common;

use common::{fixture, repo_path};
use mmckpt::{save, Checkpoint, ErrorKind, OpenOptions, SaveFormat, SaveOptions};

const FIXTURES: [&str; 8] = [
    "dtypes",
    "nested",
    "forms",
    "bigendian",
    // TorchScript (torch.jit.save): deflated code/, constants.pkl and data.pkl records too.
    "script",
    "script_attr",
    "script_nested",
    "script_traced",
];

fn deflated(name: &str) -> std::path::PathBuf {
    repo_path(&format!("tests/data/deflated/{name}.pt"))
}

#[test]
fn deflated_archives_give_the_stored_originals_tensors() {
    for stem in FIXTURES {
        let original = Checkpoint::open(fixture(&format!("{stem}.pt")), &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        for variant in ["all", "data"] {
            let file = format!("{stem}_{variant}");
            for options in [
                OpenOptions::default(),
                OpenOptions {
                    verify_crc: true,
                    ..OpenOptions::default()
                },
            ] {
                let ckpt = Checkpoint::open(deflated(&file), &options)
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(ckpt.len(), original.len(), "{file}");
                assert!(!ckpt.is_empty(), "{file}");
                for i in 0..ckpt.len() {
                    assert_eq!(ckpt.name_at(i), original.name_at(i), "{file}");
                    let (ours, theirs) = (ckpt.tensor_at(i), original.tensor_at(i));
                    match (ours, theirs) {
                        (Ok(ours), Ok(theirs)) => {
                            assert_eq!(ours.bytes(), theirs.bytes(), "{file} tensor {i}");
                        }
                        (ours, theirs) => assert_eq!(
                            ours.map(|_| ()).map_err(|e| e.kind),
                            theirs.map(|_| ()).map_err(|e| e.kind),
                            "{file} tensor {i}"
                        ),
                    }
                }
            }
        }
    }
}

#[test]
fn deflated_archives_convert_as_the_stored_originals_do() {
    let dir = std::env::temp_dir().join(format!("mmckpt-compressed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for stem in FIXTURES {
        let original = Checkpoint::open(fixture(&format!("{stem}.pt")), &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let ckpt = Checkpoint::open(deflated(&format!("{stem}_all")), &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{stem}_all: {e}"));
        for format in [SaveFormat::Torch, SaveFormat::Safetensors] {
            let options = SaveOptions {
                format,
                ..SaveOptions::default()
            };
            let from_stored = dir.join(format!("{stem}-stored.{}", format.name()));
            let from_deflated = dir.join(format!("{stem}-deflated.{}", format.name()));
            let stored_result = save(&original, &from_stored, &options);
            let deflated_result = save(&ckpt, &from_deflated, &options);
            match (stored_result, deflated_result) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(ours.tensors, theirs.tensors, "{stem} {}", format.name());
                    let (a, b) = (
                        Checkpoint::open(&from_stored, &OpenOptions::default()).unwrap(),
                        Checkpoint::open(&from_deflated, &OpenOptions::default()).unwrap(),
                    );
                    assert_eq!(a.len(), b.len(), "{stem} {}", format.name());
                    for i in 0..a.len() {
                        let (x, y) = (a.tensor_at(i).unwrap(), b.tensor_at(i).unwrap());
                        assert_eq!(x.name(), y.name(), "{stem}");
                        assert_eq!(x.shape(), y.shape(), "{stem} {}", x.name());
                        assert_eq!(
                            x.contiguous_bytes(),
                            y.contiguous_bytes(),
                            "{stem} {} {}",
                            format.name(),
                            x.name()
                        );
                    }
                }
                (ours, theirs) => assert_eq!(
                    ours.map(|_| ()).map_err(|e| e.kind),
                    theirs.map(|_| ()).map_err(|e| e.kind),
                    "{stem} {}",
                    format.name()
                ),
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn first_tensor_error(name: &str, options: &OpenOptions) -> mmckpt::Error {
    match Checkpoint::open(deflated(name), options) {
        Err(e) => e,
        Ok(ckpt) => (0..ckpt.len())
            .find_map(|i| ckpt.tensor_at(i).err())
            .unwrap_or_else(|| panic!("{name}: every tensor read")),
    }
}

#[test]
fn a_wrong_crc_is_format_naming_the_record_and_both_crcs() {
    let e = first_tensor_error("bad_crc", &OpenOptions::default());
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
    assert!(e.message.contains("/data/0'"), "{e}");
    assert!(e.message.contains("CRC-32 mismatch"), "{e}");
    assert_eq!(e.message.matches("0x").count(), 2, "{e}");
}

#[test]
fn a_record_inflating_past_its_declared_size_is_format() {
    let e = first_tensor_error("inflates_past_size", &OpenOptions::default());
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
    assert!(e.message.contains("/data/0'"), "{e}");
    assert!(e.message.contains("inflates to more than"), "{e}");
}

#[test]
fn a_declared_size_over_the_limit_is_limit() {
    let mut options = OpenOptions::default();
    options.limits.max_inflated_bytes = 1;
    let e = Checkpoint::open(deflated("dtypes_data"), &options).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit, "{e}");
    assert!(e.message.contains("max_inflated_bytes"), "{e}");
    // A deflated data.pkl is bounded by max_pickle_bytes.
    let mut options = OpenOptions::default();
    options.limits.max_pickle_bytes = 16;
    let e = Checkpoint::open(deflated("dtypes_all"), &options).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit, "{e}");
}
