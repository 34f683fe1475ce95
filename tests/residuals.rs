//! tests/data/residuals (scripts/make_residuals.py, torch 2.15): a rebuild's argument changed
//! after the call, `collections.Counter` and torch's Python 2 renames, one zip storage key
//! behind storage classes of different sizes, legacy int and str storage keys. For each file
//! mmckpt reports exactly the tensors torch.load(weights_only=True) returned (which share a
//! storage included), or refuses it — the file, or tensor "w" — with the status the script
//! records (always the file when torch refuses it).

mod common;

use common::{repo_path, status_kind};
use mmckpt::{Checkpoint, ErrorKind, OpenOptions};
use serde_json::Value;
use std::collections::HashMap;

#[test]
fn residual_cases_match_torch_or_are_refused() {
    let dir = repo_path("tests/data/residuals");
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let expected: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    assert!(expected.len() >= 16, "only {} files", expected.len());
    for (file, want) in &expected {
        let torch = &want["torch"];
        let verdict = want["mmckpt"].as_str().unwrap();
        let opened = Checkpoint::open(dir.join(file), &OpenOptions::default());
        let refused_tensor = if verdict == "match" {
            None
        } else {
            let kind = status_kind(verdict).unwrap();
            match &opened {
                Err(e) => {
                    assert_eq!(e.kind, kind, "{file}: {e}");
                    continue;
                }
                Ok(ckpt) => {
                    assert!(
                        torch.get("refused").is_none(),
                        "{file}: torch refuses it ({}), mmckpt opens it",
                        torch["refused"]
                    );
                    assert_eq!(kind, ErrorKind::Unsupported, "{file}");
                    let err = ckpt
                        .tensor("w")
                        .err()
                        .unwrap_or_else(|| panic!("{file}: mmckpt reads 'w', expected {verdict}"));
                    assert_eq!(err.kind, kind, "{file}: {err}");
                    assert!(err.message.contains("'w'"), "{file}: {err}");
                    Some("w")
                }
            }
        };
        let ckpt = opened.unwrap_or_else(|e| panic!("{file}: {e}"));
        let tensors = torch["tensors"].as_array().unwrap();
        assert_eq!(ckpt.len(), tensors.len(), "{file}: tensor count");
        // torch's storage numbers and mmckpt's storage ids must pair one to one.
        let mut pairs: HashMap<i64, u64> = HashMap::new();
        let mut back: HashMap<u64, i64> = HashMap::new();
        for (index, row) in tensors.iter().enumerate() {
            let name = row["name"].as_str().unwrap();
            assert_eq!(ckpt.name_at(index), Some(name), "{file}: order");
            if Some(name) == refused_tensor {
                continue;
            }
            let t = ckpt
                .tensor(name)
                .unwrap_or_else(|e| panic!("{file}: {name}: {e}"));
            let at = format!("{file}: {name}");
            common::assert_tensor_matches_torch_row(&t, row, &at);
            let storage = row["storage"].as_i64().unwrap();
            let id = t.storage_id();
            assert_eq!(*pairs.entry(storage).or_insert(id), id, "{at}: shares");
            assert_eq!(*back.entry(id).or_insert(storage), storage, "{at}: shares");
        }
    }
}
