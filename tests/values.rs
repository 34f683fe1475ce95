//! Non-tensor values by dotted path, against nested.pt and the values torch recorded in
//! tests/fixtures/manifest.json.

mod common;

use common::{fixture, manifest};
use mmckpt::fuzzing;
use mmckpt::{Checkpoint, ErrorKind, OpenOptions};
use mmckpt::{ValueKind, ValueLimits};
use serde_json::Value;

fn nested() -> Checkpoint {
    Checkpoint::open(fixture("nested.pt"), &OpenOptions::default()).expect("open nested.pt")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn manifest_values_read_by_path() {
    let ckpt = nested();
    let m = manifest();
    let expected = m["nested.pt"]["values"].as_array().expect("values list");
    assert_eq!(expected.len(), 8);
    for entry in expected {
        let name = entry["name"].as_str().unwrap();
        let v = ckpt.value(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = &entry["value"];
        match entry["kind"].as_str().unwrap() {
            "int" => match want {
                Value::Number(n) => {
                    assert_eq!(v.kind(), ValueKind::Int, "{name}");
                    assert_eq!(v.as_i64().unwrap(), n.as_i64().unwrap(), "{name}");
                }
                Value::String(s) => {
                    assert_eq!(v.kind(), ValueKind::BigInt, "{name}");
                    assert_eq!(v.decimal().unwrap(), *s, "{name}");
                    assert_eq!(&*v.text().unwrap(), s.as_bytes());
                }
                _ => panic!("bad manifest int"),
            },
            "float" => assert_eq!(v.as_f64().unwrap(), want.as_f64().unwrap(), "{name}"),
            "str" => assert_eq!(v.as_str().unwrap(), want.as_str().unwrap(), "{name}"),
            "bytes" => assert_eq!(hex(v.as_bytes().unwrap()), want.as_str().unwrap()),
            "bool" => assert_eq!(v.as_bool().unwrap(), want.as_bool().unwrap(), "{name}"),
            "none" => assert_eq!(v.kind(), ValueKind::None, "{name}"),
            other => panic!("unknown manifest kind {other}"),
        }
    }
}

#[test]
fn walked_leaves_contain_the_manifest_values_in_order() {
    let ckpt = nested();
    let leaves = ckpt.value_leaves(&ValueLimits::default());
    assert!(!leaves.truncated);
    let names: Vec<&str> = leaves.values.iter().map(|v| v.path()).collect();
    let m = manifest();
    let mut at = 0;
    for entry in m["nested.pt"]["values"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let pos = names[at..]
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("{name} missing or out of order in {names:?}"));
        at += pos + 1;
    }
    // No tensor is a value leaf, and every leaf resolves to itself by name.
    for leaf in &leaves.values {
        assert_ne!(leaf.kind(), ValueKind::Tensor);
        let again = ckpt.value(leaf.path()).unwrap();
        assert_eq!(
            fuzzing::node_of(&again),
            fuzzing::node_of(leaf),
            "{}",
            leaf.path()
        );
    }
    assert!(names.contains(&"optimizer.param_groups.0.lr"));
}

#[test]
fn containers_objects_and_tensors() {
    let ckpt = nested();
    let root = ckpt.value("").unwrap();
    assert_eq!(root.kind(), ValueKind::Dict);
    let keys: Vec<String> = (0..root.child_count())
        .map(|i| root.child_key(i).unwrap())
        .collect();
    for k in ["model", "optimizer", "epoch", "step", "args"] {
        assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
    }
    assert_eq!(
        root.child_key(root.child_count()).unwrap_err().kind,
        ErrorKind::NotFound
    );

    let args = ckpt.value("args").unwrap();
    assert_eq!(args.kind(), ValueKind::Object);
    assert_eq!(args.class_name().unwrap(), "argparse.Namespace");
    assert_eq!(args.get("hidden").unwrap().as_i64().unwrap(), 16);
    assert_eq!(args.get("hidden").unwrap().path(), "args.hidden");
    assert_eq!(ckpt.value("args.scale").unwrap().kind(), ValueKind::Tensor);
    assert!(ckpt.tensor("args.scale").is_ok());

    // State dict keys contain dots; the path still finds them, and tensors are leaves.
    let w = ckpt.value("model.fc.weight").unwrap();
    assert_eq!(w.kind(), ValueKind::Tensor);
    assert_eq!(w.child_count(), 0);
    assert_eq!(
        ckpt.value("optimizer.param_groups.0.lr")
            .unwrap()
            .as_f64()
            .unwrap(),
        0.001
    );
    let betas = ckpt.value("optimizer.param_groups.0.betas").unwrap();
    assert_eq!(betas.kind(), ValueKind::Tuple);
    assert_eq!(betas.child_count(), 2);
    let params = ckpt.value("optimizer.param_groups.0.params").unwrap();
    assert_eq!(params.kind(), ValueKind::List);
    assert_eq!(params.get("3").unwrap().as_i64().unwrap(), 3);
    // Enumerating every container and resolving child paths gives the same nodes.
    let mut stack = vec![root];
    let mut seen = 0;
    while let Some(v) = stack.pop() {
        for (segment, child) in v.children() {
            assert!(v.child_key(0).is_ok());
            let again = ckpt.value(child.path()).unwrap();
            assert_eq!(
                fuzzing::node_of(&again),
                fuzzing::node_of(&child),
                "{} / {segment}",
                child.path()
            );
            stack.push(child);
            seen += 1;
        }
    }
    assert!(seen > 40);
}

#[test]
fn conversions_follow_python() {
    let ckpt = nested();
    let v = |p: &str| ckpt.value(p).unwrap();
    // bool is an int; an int is a float; a bigint converts to the nearest double.
    assert_eq!(v("flags.0").as_i64().unwrap(), 1);
    assert_eq!(v("epoch").as_f64().unwrap(), 3.0);
    assert_eq!(v("step").as_f64().unwrap(), 2f64.powi(70));
    assert_eq!(v("epoch").as_complex().unwrap(), (3.0, 0.0));
    assert_eq!(&*v("epoch").text().unwrap(), b"3");
    // ...but not the other way round.
    assert_eq!(
        v("epoch").as_bool().unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        v("lr").as_i64().unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    assert_eq!(v("step").as_i64().unwrap_err().kind, ErrorKind::Limit);
    let e = v("name").as_i64().unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(
        e.message.contains("'name'") && e.message.contains("a str"),
        "{}",
        e.message
    );
    assert_eq!(&*v("blob").text().unwrap(), b"\x00\x01");
    assert_eq!(v("lr").text().unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(
        v("epoch").class_name().unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
}

#[test]
fn missing_paths_say_where_they_stop() {
    let ckpt = nested();
    let e = ckpt.value("nope").unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("the root"), "{}", e.message);
    let e = ckpt.value("args.nope").unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.message.contains("'args'") && e.message.contains("'nope'"),
        "{}",
        e.message
    );
    let e = ckpt.value("epoch.x").unwrap_err();
    assert!(e.message.contains("is an int"), "{}", e.message);
    assert!(ckpt.value("flags.2").is_err());
    assert!(ckpt.value("flags.").is_err());
    assert!(ckpt.value(".flags").is_err());
}

#[test]
fn paths_are_relative_to_the_selected_root() {
    let options = OpenOptions {
        root: Some("optimizer".into()),
        ..OpenOptions::default()
    };
    let ckpt = Checkpoint::open(fixture("nested.pt"), &options).unwrap();
    let lr = ckpt.value("param_groups.0.lr").unwrap();
    assert_eq!(lr.as_f64().unwrap(), 0.001);
    assert!(ckpt.value("epoch").is_err());
    let leaves = ckpt.value_leaves(&ValueLimits::default());
    assert_eq!(leaves.values[0].path(), "param_groups.0.lr");
}

#[test]
fn walk_limits_truncate() {
    let ckpt = nested();
    let limits = ValueLimits {
        max_values: 3,
        ..ValueLimits::default()
    };
    let leaves = ckpt.value_leaves(&limits);
    assert_eq!(leaves.values.len(), 3);
    assert!(leaves.truncated);
    let limits = ValueLimits {
        max_depth: 1,
        ..ValueLimits::default()
    };
    let leaves = ckpt.value_leaves(&limits);
    assert!(leaves.truncated);
    let names: Vec<&str> = leaves.values.iter().map(|v| v.path()).collect();
    assert_eq!(names, ["epoch", "step", "lr", "name", "blob"]);
}
