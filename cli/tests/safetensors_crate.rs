//! mmckpt's safetensors reader against the `safetensors` crate's (0.6) on the same bytes: the
//! package-written fixtures, the hand-made hostile headers of tests/data/bad, and mutants of a
//! fixture's header. The crate's validation is the minimum: whatever it refuses, mmckpt
//! refuses; what both accept, they read alike (names, and per tensor the dtype, shape and
//! bytes). mmckpt refuses a few headers the crate accepts (duplicate names, where the crate
//! keeps the last; more than 64 dimensions) and reads a few tensors torch cannot hold as
//! `Unsupported` rows (F6 dtypes, F4 with an odd last dimension).

use mmckpt::{Checkpoint, DType, ErrorKind, OpenOptions};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

fn repo(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn torch_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::UInt8,
        Dtype::I8 => DType::Int8,
        Dtype::I16 => DType::Int16,
        Dtype::U16 => DType::UInt16,
        Dtype::F16 => DType::Float16,
        Dtype::BF16 => DType::BFloat16,
        Dtype::I32 => DType::Int32,
        Dtype::U32 => DType::UInt32,
        Dtype::F32 => DType::Float32,
        Dtype::F64 => DType::Float64,
        Dtype::I64 => DType::Int64,
        Dtype::U64 => DType::UInt64,
        Dtype::F8_E4M3 => DType::Float8E4M3Fn,
        Dtype::F8_E5M2 => DType::Float8E5M2,
        Dtype::F8_E8M0 => DType::Float8E8M0Fnu,
        Dtype::F4 => DType::Float4E2M1FnX2,
        _ => return None,
    })
}

/// safetensors dtypes the Python package (0.8) writes and the crate (0.6) does not know,
/// each with a known one of its bit width, spelled to the same length (JSON whitespace pads).
const NEWER: &[(&str, &str, DType)] = &[
    (r#""dtype":"C64""#, r#""dtype":"U64""#, DType::Complex64),
    (
        r#""dtype":"F8_E4M3FNUZ""#,
        r#""dtype":"F8_E4M3"    "#,
        DType::Float8E4M3FnUz,
    ),
    (
        r#""dtype":"F8_E5M2FNUZ""#,
        r#""dtype":"F8_E5M2"    "#,
        DType::Float8E5M2FnUz,
    ),
];

/// `bytes` with the dtypes of [`NEWER`] replaced, for the crate.
fn for_the_crate(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for (newer, known, _) in NEWER {
        let (newer, known) = (newer.as_bytes(), known.as_bytes());
        let mut at = 0;
        while let Some(found) = out[at..].windows(newer.len()).position(|w| w == newer) {
            out[at + found..at + found + newer.len()].copy_from_slice(known);
            at += found + newer.len();
        }
    }
    out
}

/// Compares the two readers on `bytes`; returns whether mmckpt opened them.
fn compare(bytes: &[u8], what: &str) -> bool {
    let translated = for_the_crate(bytes);
    let theirs = SafeTensors::deserialize(&translated);
    let ours = Checkpoint::from_bytes(bytes, &OpenOptions::default());
    let (theirs, ours) = match (theirs, ours) {
        (Err(_), Err(_)) => return false,
        (Err(e), Ok(_)) => panic!("{what}: the crate refuses ({e:?}) a file mmckpt opens"),
        (Ok(_), Err(e)) => {
            let known = ["twice", "at most 64", "more than"];
            assert!(
                e.kind == ErrorKind::Format && known.iter().any(|k| e.message.contains(k)),
                "{what}: mmckpt refuses a file the crate opens: {e}"
            );
            return false;
        }
        (Ok(t), Ok(o)) => (t, o),
    };
    let mut names: Vec<String> = theirs.names().into_iter().map(String::from).collect();
    let mut ours_names: Vec<String> = ours.iter().map(|(n, _)| n.to_string()).collect();
    // Ties of empty tensors at one offset come in the crate's hash order.
    names.sort();
    ours_names.sort();
    assert_eq!(names, ours_names, "{what}");
    let base = translated.as_ptr() as usize;
    for name in &names {
        let view = theirs.tensor(name).unwrap();
        match (torch_dtype(view.dtype()), ours.tensor(name)) {
            (None, Err(e)) => assert_eq!(e.kind, ErrorKind::Unsupported, "{what}: {name}"),
            (Some(DType::Float4E2M1FnX2), Err(e)) => {
                assert_eq!(e.kind, ErrorKind::Unsupported, "{what}: {name}");
                assert!(
                    view.shape().last().is_some_and(|d| d % 2 == 1),
                    "{what}: {name}"
                );
            }
            (Some(dtype), Ok(t)) => {
                let newer = NEWER.iter().find(|n| n.2 == t.dtype());
                let dtype = match newer {
                    Some(&(_, known, newer)) if torch_dtype_of(known) == Some(dtype) => newer,
                    _ => dtype,
                };
                assert_eq!(t.dtype(), dtype, "{what}: {name}");
                let mut shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                if dtype == DType::Float4E2M1FnX2 {
                    *shape.last_mut().unwrap() /= 2;
                }
                assert_eq!(t.shape(), &shape[..], "{what}: {name}");
                assert_eq!(t.bytes(), view.data(), "{what}: {name}");
                let at = view.data().as_ptr() as usize - base;
                assert_eq!(t.file_offset(), Some(at as u64), "{what}: {name}");
            }
            (dtype, ours) => panic!("{what}: {name}: crate {dtype:?}, mmckpt {ours:?}"),
        }
    }
    true
}

/// The mmckpt dtype of a `"dtype":"X"` spelling in [`NEWER`].
fn torch_dtype_of(spelled: &str) -> Option<DType> {
    Some(match spelled.split('"').nth(3)? {
        "U64" => DType::UInt64,
        "F8_E4M3" => DType::Float8E4M3Fn,
        "F8_E5M2" => DType::Float8E5M2,
        _ => return None,
    })
}

fn files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(repo(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    out.sort();
    out
}

#[test]
fn fixtures_and_hostile_headers_agree_with_the_crate() {
    let mut opened = 0;
    let all = [
        files("tests/fixtures/safetensors"),
        files("tests/fixtures/safetensors/sharded"),
        files("tests/data/bad"),
    ];
    for path in all.iter().flatten() {
        let bytes = std::fs::read(path).unwrap();
        opened += usize::from(compare(&bytes, &path.display().to_string()));
    }
    assert!(opened >= 5, "{opened}");
}

#[test]
fn header_mutants_agree_with_the_crate() {
    let original = std::fs::read(repo("tests/fixtures/safetensors/dtypes.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let (mut count, mut opened) = (0, 0);
    for at in 8..header_end {
        for byte in *b"0189}]\"-,[ e" {
            if original[at] == byte {
                continue;
            }
            let mut mutant = original.clone();
            mutant[at] = byte;
            opened += usize::from(compare(&mutant, &format!("byte {at} = {byte:#04x}")));
            count += 1;
        }
    }
    eprintln!("{count} mutants, {opened} opened by both");
    assert!(count > 10_000 && opened > 100, "{count} / {opened}");
}
