//! Nothing input-controlled recurses: million-deep nesting and million-segment names go
//! through every API that walks them (open, the tensor table, `root`, value lookup and
//! listing, module from checkpoint, load and its report, `mmckpt ls --json`), each on a
//! thread with a 256 KiB stack in a child process, so that recursion once per level overflows
//! loudly. Deep input is either walked iteratively or refused with a LIMIT error.

mod child;
mod support_zip;

use child::inputs::{archive, deep_dicts, deep_sequences, dotted};
use child::{cli_path, describe, in_child, limit_child};
use mmckpt::ErrorKind;
use mmckpt::ValueKind;
use mmckpt::{Checkpoint, OpenOptions};
use mmckpt::{LoadOptions, Module};

const DEPTH: usize = 1_000_000;

/// Limits that let the walks go all the way down.
fn deep_options() -> OpenOptions {
    let mut options = OpenOptions::default();
    options.limits.table.max_depth = 2 * DEPTH;
    options.limits.values.max_depth = 2 * DEPTH;
    options
}

fn open(bytes: &[u8], options: &OpenOptions) -> mmckpt::Result<Checkpoint> {
    Checkpoint::from_bytes(bytes, options)
}

#[test]
fn million_deep_dicts_are_refused_by_default_and_walked_when_allowed() {
    in_child(
        "million_deep_dicts_are_refused_by_default_and_walked_when_allowed",
        None,
        || {
            let bytes = archive(&deep_dicts(DEPTH));
            let err = open(&bytes, &OpenOptions::default()).err().unwrap();
            assert_eq!(err.kind, ErrorKind::Limit, "{err}");

            let ckpt = open(&bytes, &deep_options()).unwrap();
            let name = format!("{}.a", dotted(DEPTH));
            assert_eq!(ckpt.len(), 1);
            assert_eq!(ckpt.name_at(0), Some(name.as_str()));
            assert_eq!(ckpt.tensor(&name).unwrap().bytes(), 1f32.to_le_bytes());

            // Values: lookup by a path of a million segments, and the listing.
            let int_path = format!("{}.b", dotted(DEPTH));
            let seven = ckpt.value(&int_path).unwrap();
            assert_eq!(seven.as_i64().unwrap(), 7);
            let top = ckpt.value("").unwrap();
            assert_eq!(top.get(&int_path).unwrap().as_i64().unwrap(), 7);
            let leaves = ckpt.value_leaves(&deep_options().limits.values);
            assert!(!leaves.truncated);
            assert_eq!(leaves.values.len(), 1);
            assert_eq!(leaves.values[0].path(), int_path);
            // The default listing stops at its depth bound instead.
            let shallow = ckpt.value_leaves(&Default::default());
            assert!(shallow.truncated && shallow.values.is_empty());
            drop(ckpt);

            // `root` a million segments down.
            let options = OpenOptions {
                root: Some(dotted(DEPTH)),
                ..OpenOptions::default()
            };
            let ckpt = open(&bytes, &options).unwrap();
            assert_eq!(ckpt.name_at(0), Some("a"));
        },
    );
}

#[test]
fn a_module_with_a_million_segment_name_loads_and_reports() {
    in_child(
        "a_module_with_a_million_segment_name_loads_and_reports",
        None,
        || {
            let ckpt = open(&archive(&deep_dicts(DEPTH)), &deep_options()).unwrap();
            let name = format!("{}.a", dotted(DEPTH));
            for (assign, convert) in [(true, false), (false, false), (true, true)] {
                let mut module = Module::from_checkpoint(&ckpt).unwrap();
                assert_eq!(module.entries()[0].name(), name);
                if !assign {
                    module.materialize().unwrap();
                }
                let options = LoadOptions {
                    assign,
                    strict: true,
                    convert,
                    contiguous: false,
                    prefix: String::new(),
                    prefetch: false,
                    tensor_parallel: None,
                    direct_reads: false,
                };
                let report = module.load(&ckpt, &options).unwrap();
                assert!(!report.is_failure(), "{}", report.message());
                assert_eq!(report.loaded(), 1);
                // A report with a million-segment missing key and unexpected key.
                let mut other = Module::new("other");
                other
                    .add(
                        &format!("{name}x"),
                        mmckpt::DType::Float32,
                        &[1],
                        mmckpt::EntryKind::Parameter,
                    )
                    .unwrap();
                let report = other
                    .load(
                        &ckpt,
                        &LoadOptions {
                            strict: false,
                            ..options.clone()
                        },
                    )
                    .unwrap();
                assert_eq!(report.missing_keys().len(), 1);
                assert_eq!(report.unexpected_keys().len(), 1);
                assert!(!report.message().is_empty());
            }
        },
    );
}

#[test]
fn million_deep_tuples_lists_and_tuple_keys_are_bounded() {
    in_child(
        "million_deep_tuples_lists_and_tuple_keys_are_bounded",
        None,
        || {
            let bytes = archive(&deep_sequences(DEPTH, false));
            let err = open(&bytes, &OpenOptions::default()).err().unwrap();
            assert_eq!(err.kind, ErrorKind::Limit, "{err}");
            let ckpt = open(&bytes, &deep_options()).unwrap();
            assert_eq!(ckpt.tensor("t").unwrap().bytes(), 1f32.to_le_bytes());
            let leaves = ckpt.value_leaves(&deep_options().limits.values);
            // The None at the bottom of the tuples; the innermost list is empty.
            assert!(!leaves.truncated);
            assert_eq!(leaves.values.len(), 1);
            assert_eq!(leaves.values[0].kind(), ValueKind::None);
            assert!(leaves.values[0].path().starts_with("deep.0.0.0."));
            let deep = ckpt.value("deep").unwrap();
            assert_eq!(deep.child_count(), 1);
            let bottom = format!("l{}", ".0".repeat(DEPTH));
            assert_eq!(ckpt.value(&bottom).unwrap().child_count(), 0);
            drop(ckpt);

            // A key nested a million deep is named iteratively and cut at its bound.
            let bytes = archive(&deep_sequences(DEPTH, true));
            for options in [OpenOptions::default(), deep_options()] {
                let err = open(&bytes, &options).err().unwrap();
                assert_eq!(err.kind, ErrorKind::Limit, "{err}");
            }
        },
    );
}

#[test]
fn the_cli_lists_million_deep_input_on_a_small_stack() {
    let dir = std::env::temp_dir().join(format!("mmckpt-norec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in [
        ("dicts.pt", archive(&deep_dicts(DEPTH))),
        ("seqs.pt", archive(&deep_sequences(DEPTH, false))),
        ("key.pt", archive(&deep_sequences(DEPTH, true))),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        for args in [&["ls", "--json"][..], &["ls"], &["load"]] {
            let mut command = std::process::Command::new(cli_path());
            command.args(args).arg(&path);
            // The main thread's stack comes from RLIMIT_STACK at exec.
            limit_child(&mut command, None, Some(256 << 10));
            let output = command.output().expect("target/release/mmckpt runs");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.code() == Some(1) && stderr.contains("MMCKPT_ERR_LIMIT"),
                "{file} {args:?}: {}",
                describe(&output)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
