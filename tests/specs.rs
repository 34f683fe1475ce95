//! Spec fidelity against real torch: for every case in tests/fixtures/specs.json (written by
//! scripts/make_fixtures.py from `state_dict()` of the module built under torch.device('meta')),
//! mmckpt's meta module has the same entries — names, order, shapes, dtypes, kinds.

mod common;

use common::fixture;
use mmckpt::Module;
use serde_json::Value;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("specs.json")).expect("specs.json");
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn every_spec_builds_the_entries_torch_builds() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| c.get("expected").is_some()) {
        let name = case["name"].as_str().unwrap();
        let json = case["spec_text"].as_str().unwrap();
        let module = Module::from_spec(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = case["expected"].as_array().unwrap();
        // state_dict() leaves out non-persistent buffers; the module still has them.
        let got: Vec<String> = module
            .entries()
            .iter()
            .filter(|e| e.is_persistent())
            .map(|e| {
                format!(
                    "{} {:?} {} {}",
                    e.name(),
                    e.shape(),
                    e.declared_dtype().name(),
                    if e.is_parameter() {
                        "parameter"
                    } else {
                        "buffer"
                    }
                )
            })
            .collect();
        let want: Vec<String> = expected
            .iter()
            .map(|e| {
                let shape: Vec<i64> = e["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                format!(
                    "{} {:?} {} {}",
                    e["name"].as_str().unwrap(),
                    shape,
                    e["dtype"].as_str().unwrap(),
                    e["kind"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(got, want, "{name}");
        assert!(
            module.entries().iter().all(|e| !e.has_data()),
            "{name}: a meta module has no data"
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} cases");
}

#[test]
fn invalid_specs_name_the_node() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| c.get("error_contains").is_some()) {
        let name = case["name"].as_str().unwrap();
        let json = case["spec_text"].as_str().unwrap();
        let err = Module::from_spec(json)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(err.kind, mmckpt::ErrorKind::InvalidArgument, "{name}");
        let needle = case["error_contains"].as_str().unwrap();
        assert!(
            err.message.contains(needle),
            "{name}: {:?} lacks {needle:?}",
            err.message
        );
        checked += 1;
    }
    assert!(checked >= 8);
}
