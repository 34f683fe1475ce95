//! Issue 11, class A items 3, 5, 7 against what real torch read (tests/data/keys, written by
//! scripts/make_key_semantics.py): dict keys Python folds into one (the first key and position,
//! the last value), float keys spelled as Python's repr and big ints in decimal; legacy view
//! keys that are also root keys refused; TorchScript tables that list exactly `state_dict()`.

mod common;

use common::repo_path;
use mmckpt::ValueKind;
use mmckpt::{Checkpoint, ErrorKind, OpenOptions};
use serde_json::Value;

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(repo_path("tests/data/keys/expected.json"))
        .expect("tests/data/keys/expected.json");
    serde_json::from_str::<Value>(&text)
        .expect("expected.json parses")
        .as_object()
        .expect("an object")
        .clone()
}

fn open(file: &str) -> mmckpt::Result<Checkpoint> {
    Checkpoint::open(
        repo_path(&format!("tests/data/keys/{file}")),
        &OpenOptions::default(),
    )
}

/// The root's children in order, as torch's entries are listed: the name and either the
/// tensor's float32 values or the int.
fn entries(ckpt: &Checkpoint) -> Vec<(String, Value)> {
    let root = ckpt.value("").expect("the root");
    let mut next_tensor = 0;
    root.children()
        .into_iter()
        .map(|(name, value)| {
            let leaf = if value.kind() == ValueKind::Tensor {
                // Tensors are table rows in walk order (names may repeat: `1` and `'1'`).
                assert_eq!(ckpt.name_at(next_tensor), Some(name.as_str()));
                let tensor = ckpt.tensor_at(next_tensor).expect("a tensor");
                next_tensor += 1;
                let floats: Vec<Value> = tensor
                    .contiguous_bytes()
                    .chunks_exact(4)
                    .map(|c| Value::from(f32::from_le_bytes(c.try_into().unwrap()) as f64))
                    .collect();
                serde_json::json!({ "tensor": floats })
            } else {
                serde_json::json!({ "int": value.as_i64().expect("an int value") })
            };
            (name, leaf)
        })
        .collect()
}

#[test]
fn folded_keys_names_and_values_match_torch() {
    let mut checked = 0;
    for (file, case) in expected() {
        let Some(want) = case.get("entries").and_then(Value::as_array) else {
            continue;
        };
        let ckpt = open(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let want: Vec<(String, Value)> = want
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_string();
                let mut leaf = e.as_object().unwrap().clone();
                leaf.remove("name");
                (name, Value::Object(leaf))
            })
            .collect();
        assert_eq!(entries(&ckpt), want, "{file}");
        // Name lookup (and so a load) finds the entry torch has under that name: the first.
        for (name, _) in &want {
            let first = &want.iter().find(|(n, _)| n == name).unwrap().1;
            let got = ckpt.value(name).unwrap();
            match first.get("int") {
                Some(int) => assert_eq!(Value::from(got.as_i64().unwrap()), *int, "{file}: {name}"),
                None => assert_eq!(got.kind(), ValueKind::Tensor, "{file}: {name}"),
            }
        }
        // A mirror has one entry per tensor name, bound by an assign load to the first
        // entry's tensor (the one torch's dict holds).
        let mut mirror = mmckpt::Module::from_checkpoint(&ckpt).unwrap();
        let distinct: std::collections::BTreeSet<&str> =
            (0..ckpt.len()).filter_map(|i| ckpt.name_at(i)).collect();
        assert_eq!(mirror.len(), distinct.len(), "{file}");
        let options = mmckpt::LoadOptions {
            assign: true,
            ..Default::default()
        };
        mirror.load(&ckpt, &options).unwrap();
        for entry in mirror.entries() {
            let first = ckpt.index_of(entry.name()).unwrap();
            let bytes = ckpt.tensor_at(first).unwrap().contiguous_bytes().to_vec();
            assert_eq!(entry.bytes(), Some(&bytes[..]), "{file}: {}", entry.name());
        }
        checked += 1;
    }
    assert_eq!(checked, 15, "every key case and the plain legacy view");
}

#[test]
fn legacy_view_keys_that_are_root_keys_are_refused() {
    let mut checked = 0;
    for (file, case) in expected() {
        if case.get("error").is_none() {
            continue;
        }
        let Err(e) = open(&file) else {
            panic!("{file}: opened, but torch reads one storage's bytes into another")
        };
        assert_eq!(e.kind, ErrorKind::Format, "{file}: {e}");
        assert!(
            e.message.contains("legacy storage key '")
                && e.message.contains("a view of 'A'")
                && (e.message.contains("a root storage") || e.message.contains("offset 3")),
            "{file}: {}",
            e.message
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn torchscript_tables_list_exactly_the_state_dict() {
    let mut checked = 0;
    for (file, case) in expected() {
        let Some(want) = case.get("state_dict").and_then(Value::as_array) else {
            continue;
        };
        let ckpt = open(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let names: Vec<&str> = (0..ckpt.len()).filter_map(|i| ckpt.name_at(i)).collect();
        let want: Vec<&str> = want.iter().map(|n| n.as_str().unwrap()).collect();
        assert_eq!(names, want, "{file}");
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "script_tuple_attrs.pt and the four script fixtures"
    );
}
