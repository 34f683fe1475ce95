//! tests/data/tensor_state (scripts/make_tensor_state.py, torch 2.15): tensors whose meaning
//! depends on a torch rule a reader can miss — state attached to a rebuilt tensor, `conj` /
//! `neg` metadata, big-endian byte swaps by storage class, the exact `byteorder` record. For
//! each file mmckpt reports exactly the tensors torch.load(weights_only=True) returned, or
//! refuses it with the status the script records (always when torch refuses the file).

mod common;

use common::{repo_path, status_kind};
use mmckpt::{Checkpoint, OpenOptions};
use serde_json::Value;

#[test]
fn tensor_state_matches_torch_or_is_refused() {
    let dir = repo_path("tests/data/tensor_state");
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let expected: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    assert!(expected.len() >= 70, "only {} files", expected.len());
    for (file, want) in &expected {
        let torch = &want["torch"];
        let verdict = want["mmckpt"].as_str().unwrap();
        let opened = Checkpoint::open(dir.join(file), &OpenOptions::default());
        if verdict != "match" {
            let kind = status_kind(verdict).unwrap();
            // A refusal: of the file, or (for a state mmckpt does not model) of the tensor.
            let err = match &opened {
                Err(e) => e.clone(),
                Ok(ckpt) => {
                    assert!(
                        torch.get("refused").is_none(),
                        "{file}: torch refuses it ({}), mmckpt opens it",
                        torch["refused"]
                    );
                    assert_eq!(kind, mmckpt::ErrorKind::Unsupported, "{file}");
                    ckpt.tensor("w")
                        .err()
                        .unwrap_or_else(|| panic!("{file}: mmckpt reads 'w', expected {verdict}"))
                }
            };
            assert_eq!(err.kind, kind, "{file}: {err}");
            continue;
        }
        let ckpt = opened.unwrap_or_else(|e| panic!("{file}: {e}"));
        let tensors = torch["tensors"].as_array().unwrap();
        assert_eq!(ckpt.len(), tensors.len(), "{file}: tensor count");
        for (index, row) in tensors.iter().enumerate() {
            let name = row["name"].as_str().unwrap();
            assert_eq!(ckpt.name_at(index), Some(name), "{file}: order");
            let t = ckpt
                .tensor(name)
                .unwrap_or_else(|e| panic!("{file}: {name}: {e}"));
            let at = format!("{file}: {name}");
            common::assert_tensor_matches_torch_row(&t, row, &at);
        }
    }
}

/// Two references to one big-endian storage whose classes swap by different units: torch
/// swaps by the class of the reference it unpickles first, an order mmckpt's table walk does
/// not follow, so the file is refused rather than read one way or the other.
#[test]
fn a_big_endian_storage_with_two_swap_units_is_refused() {
    use std::io::Write;
    use zip::write::{SimpleFileOptions, ZipWriter};
    fn unicode(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut p = b"\x80\x02}(".to_vec();
    for (name, class, numel) in [("a", "FloatStorage", 2u8), ("b", "DoubleStorage", 1)] {
        unicode(&mut p, name);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        unicode(&mut p, "storage");
        p.extend_from_slice(format!("ctorch\n{class}\n").as_bytes());
        unicode(&mut p, "0");
        unicode(&mut p, "cpu");
        p.extend_from_slice(&[b'K', numel, b't', b'Q']);
        p.extend_from_slice(&[b'K', 0, b'K', numel, 0x85, b'K', 1, 0x85, 0x89]);
        p.extend_from_slice(b"ccollections\nOrderedDict\n)RtR");
    }
    p.extend_from_slice(b"u.");
    for (order, refused) in [(&b"big"[..], true), (&b"little"[..], false)] {
        let mut archive = ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, data) in [
            ("archive/data.pkl", &p[..]),
            ("archive/byteorder", order),
            ("archive/data/0", &[1, 2, 3, 4, 5, 6, 7, 8]),
        ] {
            archive.start_file(name, stored).unwrap();
            archive.write_all(data).unwrap();
        }
        let bytes = archive.finish().unwrap().into_inner();
        let result = Checkpoint::from_bytes(&bytes, &OpenOptions::default());
        match result {
            Err(e) if refused => {
                assert_eq!(e.kind, mmckpt::ErrorKind::Unsupported, "{e}");
                assert!(e.message.contains("storage '0'"), "{e}");
            }
            Ok(_) if !refused => {}
            Err(e) => panic!("little-endian: {e}"),
            Ok(_) => panic!("big-endian with two swap units was read"),
        }
    }
}

/// The strict allowlist is exactly torch's (tests/data/tensor_state/allowed_globals.txt, from
/// torch 2.15): every listed global is allowed, and every other pairing of a listed module
/// with a listed name is refused (`torch.UntypedStorage`, `torch._tensor.Tensor`, ...).
#[test]
fn the_allowlist_is_exactly_torchs() {
    use mmckpt::fuzzing::is_allowed_global;
    let text =
        std::fs::read_to_string(repo_path("tests/data/tensor_state/allowed_globals.txt")).unwrap();
    let listed: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once('.').unwrap())
        .collect();
    assert!(listed.len() > 100, "only {} globals", listed.len());
    let mut modules: Vec<&str> = listed.iter().map(|g| g.0).collect();
    let mut names: Vec<&str> = listed.iter().map(|g| g.1).collect();
    modules.extend(["torch._tensor", "copyreg", "UserDict", "os"]);
    names.extend(["list", "dict", "_reconstructor", "float", "half", "system"]);
    for module in &modules {
        for name in &names {
            // torch reads Python 2's `__builtin__` as `builtins`, as mmckpt's machine does.
            let canonical = if *module == "__builtin__" {
                "builtins"
            } else {
                module
            };
            assert_eq!(
                is_allowed_global(module, name),
                listed.contains(&(canonical, *name)),
                "{module}.{name}"
            );
        }
    }
    for (module, name) in [("__builtin__", "set"), ("__builtin__", "complex")] {
        assert!(is_allowed_global(module, name), "{module}.{name}");
    }
}
