//! The command line: its synopsis against the README, its output against torch's manifest,
//! hostile inputs (huge names, astronomic stride-0 views, amplifying value trees), and the
//! `cli` fuzz target over the regression corpus and the seed checkpoints.

#[path = "../../tests/support_zip/mod.rs"]
mod support_zip;

use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use support_zip::pk;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Runs the command line in this process: (exit status, stdout, stderr).
fn cli(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = mmckpt_cli::run(args.iter().map(OsString::from), &mut out, &mut err);
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8 output");
    (code, text(out), text(err))
}

/// A scratch file under the target directory, removed by the caller's test run next time.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

const FOUR_FLOATS: [u8; 16] = [0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64];

/// `--flag` words of the lines that start with `mmckpt <command>` (and their continuations).
fn flags_of(text: &str, command: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("mmckpt ") {
            inside = trimmed.starts_with(&format!("mmckpt {command} "));
        } else if !trimmed.starts_with('[') {
            inside = false;
        }
        if inside {
            for word in line.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
                if word.starts_with("--") {
                    flags.push(word.to_string());
                }
            }
        }
    }
    flags.sort();
    flags
}

#[test]
fn the_readme_synopsis_is_the_usage() {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let section = readme
        .split("## Command line")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("README.md has a ## Command line code block");
    for command in ["ls", "load", "index", "verify"] {
        let (ours, theirs) = (
            flags_of(mmckpt_cli::USAGE, command),
            flags_of(section, command),
        );
        assert!(!ours.is_empty(), "{command}: no flags in the usage");
        assert_eq!(
            ours, theirs,
            "{command}: the usage and the README's synopsis"
        );
    }
    // The block between the markers is `mmckpt --help`'s output, verbatim.
    let block = readme
        .split("<!-- mmckpt --help -->\n```\n")
        .nth(1)
        .and_then(|s| s.split("```\n<!-- end of mmckpt --help -->").next())
        .expect("README.md has the marked `mmckpt --help` block");
    let (code, out, _) = cli(&["--help"]);
    assert_eq!((code, out.as_str()), (0, block));
    let (code, out, _) = cli(&["help"]);
    assert_eq!((code, out.trim_end()), (0, mmckpt_cli::USAGE));
    let (code, _, err) = cli(&["ls", "x.pt", "--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("MMCKPT_ERR_INVALID_ARGUMENT") && err.contains("--no-such-flag"),
        "{err}"
    );
    let (code, _, err) = cli(&["load", "x.pt", "--dtype", "float33"]);
    assert_eq!(code, 2);
    assert!(err.contains("--dtype float33"), "{err}");
}

/// `--version`, `help COMMAND`, `COMMAND --help`: each prints, succeeds, and opens nothing.
#[test]
fn version_and_help_of_each_command() {
    let version = format!("mmckpt {}\n", env!("CARGO_PKG_VERSION"));
    for flag in ["--version", "-V"] {
        assert_eq!(cli(&[flag]), (0, version.clone(), String::new()), "{flag}");
    }
    let usage = (0, format!("{}\n", mmckpt_cli::USAGE), String::new());
    for args in [
        &["help"][..],
        &["help", "--help"],
        &["help", "-h"],
        &["--help"],
    ] {
        assert_eq!(cli(args), usage, "{args:?}");
    }
    for (command, help) in [
        ("ls", mmckpt_cli::LS_HELP),
        ("load", mmckpt_cli::LOAD_HELP),
        ("convert", mmckpt_cli::CONVERT_HELP),
        ("index", mmckpt_cli::INDEX_HELP),
        ("verify", mmckpt_cli::VERIFY_HELP),
    ] {
        let want = (0, format!("{help}\n"), String::new());
        for args in [
            &["help", command][..],
            &[command, "--help"],
            &[command, "-h"],
            &[command, "no-such-file.pt", "--help"],
        ] {
            assert_eq!(cli(args), want, "{args:?}");
        }
        // The help's synopsis is the usage's, and its options section describes every flag.
        assert_eq!(
            flags_of(help, command),
            flags_of(mmckpt_cli::USAGE, command)
        );
        let mut described: Vec<String> = help
            .split("options:")
            .nth(1)
            .unwrap()
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|word| word.starts_with("--"))
            .map(str::to_string)
            .collect();
        described.sort();
        let mut flags = flags_of(help, command);
        flags.dedup();
        assert_eq!(described, flags, "{command}: options described");
        // A usage error shows the command's synopsis, not every command's.
        let (code, _, err) = cli(&[command, "--no-such-flag"]);
        assert_eq!(code, 2);
        assert!(err.contains(&format!("mmckpt help {command}")), "{err}");
        let other = if command == "ls" { "load" } else { "ls" };
        assert!(!err.contains(&format!("mmckpt {other} FILE")), "{err}");
    }
    let (code, out, err) = cli(&["help", "frobnicate"]);
    assert_eq!(code, 2);
    assert!(
        out.is_empty() && err.contains("unknown command 'frobnicate'"),
        "{err}"
    );
    let (code, _, err) = cli(&["--frobnicate"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("'--frobnicate'") && err.contains("usage:"),
        "{err}"
    );
}

#[test]
fn convert_writes_both_formats_and_refuses_bad_arguments() {
    let input = repo_path("tests/fixtures/proto4.pt");
    let input = input.to_str().unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-convert");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, format) in [("out.pt", "torch"), ("out.safetensors", "safetensors")] {
        let out = dir.join(name);
        let (code, stdout, err) = cli(&["convert", input, out.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(
            stdout.starts_with(&format!("wrote {} ({format}): 3 tensors", out.display())),
            "{stdout}"
        );
        let (code, listed, err) = cli(&["ls", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(listed.contains("3 tensors"), "{listed}");
        // --quiet prints nothing.
        let (code, stdout, _) = cli(&["convert", input, out.to_str().unwrap(), "--quiet"]);
        assert_eq!((code, stdout.as_str()), (0, ""));
    }
    let out = dir.join("x.pt");
    let out = out.to_str().unwrap();
    for (args, message) in [
        (&["convert", input][..], "no OUT given"),
        (&["convert"][..], "no IN given"),
        (
            &["convert", input, out, "--format", "onnx"],
            "--format onnx",
        ),
        (&["convert", input, out, "--dtype", "int8"], "--dtype int8"),
        (&["convert", input, out, "extra"], "extra"),
    ] {
        let (code, _, err) = cli(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let (code, _, err) = cli(&["convert", "no-such-file.pt", out]);
    assert_eq!(code, 1);
    assert!(err.contains("MMCKPT_ERR_IO"), "{err}");
    assert!(!Path::new(out).exists());
}

/// The table's storage column is the JSON's `storage_id` (not the key in the file, which for a
/// legacy file is a heap address); the binary numbers a file's storages from 1.
#[test]
fn the_table_and_json_number_storages_alike() {
    use mmckpt::{Checkpoint, OpenOptions};
    use mmckpt_cli::LsView;
    for fixture in [
        "legacy.pt",
        "exotic.pt",
        "nested.pt",
        "shards/pytorch_model.bin.index.json",
    ] {
        let ckpt = Checkpoint::open(
            repo_path("tests/fixtures").join(fixture),
            &OpenOptions::default(),
        )
        .unwrap();
        let print = |json: bool| {
            let mut out = Vec::new();
            let view = LsView {
                json,
                hash: false,
                max_hash_bytes: 0,
            };
            mmckpt_cli::print_ls(&ckpt, view, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let (table, json) = (print(false), print(true));
        let doc: Value = serde_json::from_str(&json).unwrap();
        let mut compared = 0;
        for tensor in doc["tensors"].as_array().unwrap() {
            let Some(id) = tensor["storage_id"].as_u64() else {
                continue; // an error row
            };
            let name = tensor["name"].as_str().unwrap();
            let row = table
                .lines()
                .find(|line| line.split_whitespace().next() == Some(name))
                .unwrap();
            assert_eq!(
                row.split_whitespace().last(),
                Some(id.to_string().as_str()),
                "{fixture}: {row}"
            );
            compared += 1;
        }
        assert!(compared > 0, "{fixture}");
        assert!(table.lines().next().unwrap().ends_with("storage id"));
    }
    let legacy = repo_path("tests/fixtures/legacy.pt");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mmckpt"))
        .arg("ls")
        .arg(&legacy)
        .output()
        .unwrap();
    let table = String::from_utf8(output.stdout).unwrap();
    let ids: Vec<&str> = table
        .lines()
        .skip(1)
        .take(3)
        .map(|line| line.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3"], "{table}");
}

/// A tensor mmckpt cannot represent has its message after its name; the message widens no
/// column (the dtype column is as wide as the widest dtype).
#[test]
fn error_rows_do_not_stretch_the_columns() {
    let path = repo_path("tests/fixtures/exotic.pt");
    let (code, out, err) = cli(&["ls", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap();
    let dtype_width = header.find("shape").unwrap() - header.find("dtype").unwrap() - 2;
    assert_eq!(dtype_width, "complex64".len(), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.contains("<MMCKPT_ERR_")).collect();
    assert_eq!(errors.len(), 4, "{out}");
    for line in errors {
        assert_eq!(line.find('<'), header.find("dtype"), "{line}");
        assert!(line.contains("is not supported>"), "{line}");
    }
}

/// A module spec passed as FILE (JSON, like a shard index) is named as a spec, with the
/// command that uses it; JSON that is neither keeps the shard index's message.
#[test]
fn a_spec_given_as_file_is_told_apart_from_a_shard_index() {
    let spec = repo_path("tests/fixtures/recipe.spec.json");
    let flat = scratch(
        "flat.spec.json",
        br#"{"name": "Net", "entries": [{"name": "w", "shape": [2]}]}"#,
    );
    for file in [&spec, &flat] {
        let file = file.to_str().unwrap();
        for command in ["ls", "load"] {
            let (code, out, err) = cli(&[command, file]);
            assert_eq!(code, 2, "{command} {file}");
            assert!(out.is_empty());
            assert!(
                err.contains(&format!("'{file}' is a module spec"))
                    && err.contains(&format!("mmckpt load CHECKPOINT --spec {file}")),
                "{err}"
            );
        }
    }
    let neither = scratch("neither.json", br#"{"metadata": {}}"#);
    let (code, _, err) = cli(&["ls", neither.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no \"weight_map\""), "{err}");
    let index = repo_path("tests/fixtures/shards/pytorch_model.bin.index.json");
    let (code, out, err) = cli(&["ls", index.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("format sharded\n"), "{out}");
}

/// `load FILE --spec SPEC`: every error of the spec names SPEC (and is not followed by the
/// usage); a spec that mirrors `__init__` with stateless layers loads like one without them.
#[test]
fn spec_errors_name_the_spec_file() {
    let ckpt = repo_path("tests/fixtures/recipe.pt");
    let ckpt = ckpt.to_str().unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "unknown.json",
            br#"{"type": "Module", "children": {"act": {"type": "Relu"}}}"#,
            "node 'act': unknown type 'Relu' (did you mean 'ReLU'?)",
        ),
        ("broken.json", b"{\"type\": ", "not valid JSON"),
        (
            "args.json",
            br#"{"type": "Linear", "in_features": 1}"#,
            "missing argument 'out_features'",
        ),
        ("latin1.json", b"{\"name\": \"\xe9\"}", "is not UTF-8"),
    ];
    for (name, text, detail) in cases {
        let spec = scratch(name, text);
        let (code, out, err) = cli(&["load", ckpt, "--spec", spec.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}");
        assert!(out.is_empty());
        assert!(err.contains(&format!("spec '{}'", spec.display())), "{err}");
        assert!(err.contains(detail), "{err}");
        assert!(!err.contains("usage:"), "{err}");
    }
    let mirrored = scratch(
        "mirrored.json",
        br#"{"name": "SomeModule", "type": "Module", "children": {
              "linears": {"type": "ModuleList", "repeat": 10, "item":
                  {"type": "Linear", "in_features": 1000, "out_features": 1000}},
              "act": {"type": "ReLU", "inplace": true},
              "drop": {"type": "Dropout", "p": 0.1},
              "pool": {"type": "AdaptiveAvgPool2d", "output_size": [1, 1]}}}"#,
    );
    let (code, out, err) = cli(&[
        "load",
        ckpt,
        "--spec",
        mirrored.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("-> SomeModule (20 entries, assign load"),
        "{out}"
    );
}

/// `ls --json --hash` of every torch-written fixture: the hashes (streamed in row-major order,
/// strided views included) are the SHA-256 torch's bytes have.
#[test]
fn ls_json_hashes_match_torch() {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/manifest.json")).unwrap();
    let manifest: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    let mut compared = 0;
    for (file, want) in &manifest {
        let path = repo_path("tests/fixtures").join(file);
        let (code, out, err) = cli(&["ls", path.to_str().unwrap(), "--json", "--hash"]);
        assert_eq!(code, 0, "{file}: {err}");
        let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(doc["format"], want["format"], "{file}");
        let tensors = doc["tensors"].as_array().unwrap();
        let wanted = want["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), wanted.len(), "{file}");
        for (got, want) in tensors.iter().zip(wanted) {
            assert_eq!(got["name"], want["name"], "{file}");
            assert_eq!(got["sha256"], want["sha256"], "{file}: {}", want["name"]);
            compared += 1;
        }
        if let Some(values) = want.get("values") {
            let names: Vec<&Value> = doc["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| &v["name"])
                .collect();
            for value in values.as_array().unwrap() {
                assert!(
                    names.contains(&&value["name"]),
                    "{file}: value {}",
                    value["name"]
                );
            }
        }
    }
    assert!(compared >= 50, "only {compared} tensors compared");
}

/// `ls --json` lists every non-tensor value with its kind and value, as torch loaded it.
#[test]
fn ls_json_lists_values() {
    let path = repo_path("tests/fixtures/nested.pt");
    let (code, out, err) = cli(&["ls", path.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert!(doc["tensors"].is_array());
    assert_eq!(doc["format"], "zip");
    assert!(doc.get("values_truncated").is_none());
    let got = doc["values"].as_array().unwrap();
    let text = std::fs::read_to_string(repo_path("tests/fixtures/manifest.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    for entry in manifest["nested.pt"]["values"].as_array().unwrap() {
        assert!(got.contains(entry), "{entry} not in {got:?}");
    }
}

/// A name of 80,001 bytes (two segments of 40,000): `format!`'s width is a u16, and padding to
/// such a width used to panic ("Formatting argument out of range").
#[test]
fn names_of_more_than_65535_bytes_are_listed_and_loaded() {
    let (outer, inner) = ("a".repeat(40_000), "b".repeat(40_000));
    let mut pickle = b"\x80\x02}(".to_vec();
    pickle.extend(pk::unicode(&outer));
    pickle.extend(b"}(");
    pickle.extend(pk::unicode(&inner));
    pickle.extend(pk::tensor("0", 4, 0, &[4], &[1]));
    pickle.extend(b"uu.");
    let path = scratch(
        "long_name.pt",
        &support_zip::checkpoint(&pickle, &[("0", &FOUR_FLOATS)]),
    );
    let file = path.to_str().unwrap();
    let name = format!("{outer}.{inner}");
    for args in [
        &["ls", file][..],
        &["ls", file, "--hash"],
        &["ls", file, "--json", "--hash"],
        &["load", file],
        &["load", file, "--copy", "--dtype", "bfloat16"],
    ] {
        let (code, out, err) = cli(args);
        assert_eq!(code, 0, "{:?}: {err}", &args[2..]);
        assert!(out.contains(&name), "{:?}: the name is listed", &args[2..]);
        // Columns are padded to at most MAX_COLUMN_WIDTH: no line is the name's length again.
        let longest = out.lines().map(str::len).max().unwrap();
        assert!(
            longest < name.len() + 400,
            "{:?}: a line of {longest} bytes",
            &args[2..]
        );
    }
}

/// A stride-0 view of 2^60 elements over 16 stored bytes: `--hash` refuses it (LIMIT, before
/// any output) instead of allocating or hashing exabytes; without `--hash` it is listed.
#[test]
fn hashing_an_astronomic_stride_zero_view_is_a_limit_error() {
    let mut pickle = b"\x80\x02}".to_vec();
    pickle.extend(pk::unicode("w"));
    pickle.extend(pk::tensor("0", 4, 0, &[1 << 30, 1 << 30], &[0, 0]));
    pickle.extend(b"s.");
    let path = scratch(
        "stride0.pt",
        &support_zip::checkpoint(&pickle, &[("0", &FOUR_FLOATS)]),
    );
    let file = path.to_str().unwrap();
    for args in [
        &["ls", file, "--hash"][..],
        &["ls", file, "--json", "--hash"],
    ] {
        let (code, out, err) = cli(args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            out.is_empty(),
            "{args:?}: nothing is written before the error"
        );
        assert!(
            err.contains("MMCKPT_ERR_LIMIT")
                && err.contains("'w'")
                && err.contains("--max-hash-bytes"),
            "{err}"
        );
    }
    let (code, out, err) = cli(&["ls", file, "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["tensors"][0]["numel"], 1u64 << 60);
    // The limit is the caller's to raise: a small view hashes within a small budget.
    let mut pickle = b"\x80\x02}".to_vec();
    pickle.extend(pk::unicode("w"));
    pickle.extend(pk::tensor("0", 4, 0, &[1 << 20, 4], &[0, 1]));
    pickle.extend(b"s.");
    let path = scratch(
        "stride0_small.pt",
        &support_zip::checkpoint(&pickle, &[("0", &FOUR_FLOATS)]),
    );
    let file = path.to_str().unwrap();
    let (code, _, err) = cli(&["ls", file, "--hash", "--max-hash-bytes", "1000"]);
    assert_eq!(code, 1, "16 MiB is over 1000 bytes: {err}");
    let (code, out, err) = cli(&["ls", file, "--json", "--hash"]);
    assert_eq!(code, 0, "{err}");
    // 2^20 repeats of [1, 2, 3, 4] as float32, hashed in pieces, never copied whole.
    let doc: Value = serde_json::from_str(&out).unwrap();
    let mut whole = Vec::new();
    for _ in 0..1 << 20 {
        whole.extend_from_slice(&FOUR_FLOATS);
    }
    use sha2::{Digest, Sha256};
    let want: String = Sha256::digest(&whole)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(doc["tensors"][0]["sha256"], want.as_str());
}

/// A 240 KB pickle whose values are named by 100,000 paths of 24 KB each (four levels of ten
/// 6 KB keys over one shared list, each level a memo reference to the one below): listing them
/// would write 2.4 GB of names. `ls --json` runs under a 1 GiB address-space limit and must end
/// cleanly with the listing cut by the values' name budget.
#[test]
fn ls_json_of_an_amplifying_value_tree_is_bounded() {
    let mut pickle = b"\x80\x02]q\x00(".to_vec();
    for i in 0..10u8 {
        pickle.extend([b'K', i]);
    }
    pickle.push(b'e');
    for level in 1..=4u8 {
        pickle.extend([b'}', b'q', level, b'(']);
        for i in 0..10 {
            pickle.extend(pk::unicode(&format!("{level}.{i}{}", "x".repeat(6000))));
            pickle.extend([b'h', level - 1]);
        }
        pickle.push(b'u');
    }
    pickle.push(b'.');
    assert!(pickle.len() < 250_000);
    let path = scratch("amplify.pt", &support_zip::checkpoint(&pickle, &[]));
    let out_path = path.with_extension("json");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" ls --json \"$1\" > \"$2\"")
        .arg(env!("CARGO_BIN_EXE_mmckpt"))
        .arg(&path)
        .arg(&out_path)
        .status()
        .expect("sh");
    assert!(status.success(), "mmckpt ls --json: {status}");
    let size = std::fs::metadata(&out_path).unwrap().len();
    assert!(size < 128 << 20, "{size} bytes of output");
    let doc: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(doc["values_truncated"], true);
    let values = doc["values"].as_array().unwrap();
    assert!(
        !values.is_empty() && values.len() < 100_000,
        "{} values",
        values.len()
    );
    assert!(values[0]["name"].as_str().unwrap().len() > 24_000);
}

/// Checkpoints the seed corpus starts from (as tests/hostile.rs lists them) and every
/// regression input of every target: all through the `cli` target with several options bytes.
#[test]
fn the_cli_fuzz_target_passes_on_the_regressions_and_seeds() {
    let mut files = Vec::new();
    for dir in [
        "tests/fixtures",
        "tests/data/bad",
        "tests/data/attacks",
        "tests/data/differential",
        "tests/data/zip",
    ] {
        for entry in std::fs::read_dir(repo_path(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "pt") && !path.ends_with("recipe.pt") {
                files.push((path, true));
            }
        }
    }
    for dir in std::fs::read_dir(repo_path("tests/data/regressions")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                // Files under regressions/cli/ carry their options byte already.
                let raw = !dir.ends_with("cli");
                if path.extension().is_none_or(|e| e != "md") {
                    files.push((path, raw));
                }
            }
        }
    }
    assert!(files.len() >= 80, "only {} inputs", files.len());
    for (path, raw) in &files {
        let data = std::fs::read(path).unwrap();
        if !raw {
            mmckpt_cli::fuzz(&data);
            continue;
        }
        for choice in [0u8, 1, 2, 3, 4 | 32, 8 | 16 | 1] {
            let mut input = vec![choice];
            input.extend_from_slice(&data);
            mmckpt_cli::fuzz(&input);
        }
    }
    // The fuzz crate runs the same function.
    let target = std::fs::read_to_string(repo_path("fuzz/fuzz_targets/cli.rs")).unwrap();
    assert!(target.contains("fuzz_target!(|data: &[u8]| mmckpt_cli::fuzz(data));"));
    let manifest = std::fs::read_to_string(repo_path("fuzz/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"cli\"\npath = \"fuzz_targets/cli.rs\""));
}

/// A fresh, empty scratch directory under the target directory.
fn scratch_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY (test): c_path is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// `--spec` naming a FIFO is refused at once (reading it plainly would wait for a writer); the
/// binary runs as a child under a deadline so that a regression fails instead of hanging.
#[test]
fn the_cli_refuses_a_fifo_spec_without_blocking() {
    let dir = scratch_dir("fifo-spec");
    let spec = dir.join("spec.json");
    mkfifo(&spec);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mmckpt"))
        .args([
            "load",
            repo_path("tests/fixtures/dtypes.pt").to_str().unwrap(),
            "--spec",
        ])
        .arg(&spec)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("mmckpt load --spec FIFO blocked");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("spec.json") && stderr.contains("FIFO"),
        "{stderr}"
    );
}

/// `load --contiguous` on the transposed fixture: the strided entries are reported copied,
/// the row-major ones stay zero-copy views into the file.
#[test]
fn load_contiguous_copies_only_the_strided_entries() {
    let file = repo_path("tests/fixtures/transposed.pt");
    let file = file.to_str().unwrap();
    let (code, plain, err) = cli(&["load", file]);
    assert_eq!(code, 0, "{err}");
    let (code, rows, err) = cli(&["load", file, "--contiguous"]);
    assert_eq!(code, 0, "{err}");
    let status = |out: &str, name: &str| {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{out}"));
        if line.contains("zero-copy") {
            "view"
        } else {
            "copied"
        }
    };
    for (name, strided) in [
        ("conv1.weight", true),
        ("conv1.bias", false),
        ("fc.weight", true),
        ("fc.bias", false),
    ] {
        assert_eq!(status(&plain, name), "view", "{name} without --contiguous");
        let want = if strided { "copied" } else { "view" };
        assert_eq!(status(&rows, name), want, "{name} with --contiguous");
    }
}

/// `index --json`: every exact range, read from the file, hashes as `ls --hash` hashes the
/// tensor's row-major bytes (themselves checked against torch's manifest elsewhere); a view's
/// range is not exact.
#[test]
fn index_json_ranges_read_back_as_the_tensors() {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileExt;
    for file in [
        "forms.pt",
        "legacy_odd.pt",
        "shards/pytorch_model.bin.index.json",
    ] {
        let path = repo_path("tests/fixtures").join(file);
        let path = path.to_str().unwrap();
        let (code, out, err) = cli(&["index", path, "--json"]);
        assert_eq!(code, 0, "{err}");
        let index: Value = serde_json::from_str(&out).unwrap();
        let (code, out, err) = cli(&["ls", path, "--json", "--hash"]);
        assert_eq!(code, 0, "{err}");
        let ls: Value = serde_json::from_str(&out).unwrap();
        let (ranges, tensors) = (
            index["tensors"].as_array().unwrap(),
            ls["tensors"].as_array().unwrap(),
        );
        assert_eq!(ranges.len(), tensors.len(), "{file}");
        let mut exact = 0;
        for (range, tensor) in ranges.iter().zip(tensors) {
            assert_eq!(range["name"], tensor["name"], "{file}");
            assert_eq!(range["shape"], tensor["shape"], "{file}");
            assert_eq!(range["stride"], tensor["stride"], "{file}");
            if range["exact"] != true {
                continue;
            }
            exact += 1;
            let mut bytes = vec![0u8; range["length"].as_u64().unwrap() as usize];
            std::fs::File::open(range["file"].as_str().unwrap())
                .unwrap()
                .read_exact_at(&mut bytes, range["offset"].as_u64().unwrap())
                .unwrap();
            let hex: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                hex,
                tensor["sha256"].as_str().unwrap(),
                "{file}: {}",
                range["name"]
            );
        }
        assert!(exact > 0, "{file}");
        if file == "forms.pt" {
            let transpose = ranges.iter().find(|r| r["name"] == "transpose").unwrap();
            assert_eq!(transpose["exact"], false);
        }
    }
    let (code, out, _) = cli(&[
        "index",
        repo_path("tests/fixtures/forms.pt").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("name ") && out.contains("transpose"),
        "{out}"
    );
}

/// `verify`: a torch-written archive passes, a byte changed in a tensor's storage fails naming
/// its record, and a legacy file is refused (it records no checksums).
#[test]
fn verify_checks_the_crcs() {
    let good = repo_path("tests/fixtures/forms.pt");
    let (code, out, err) = cli(&["verify", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ok: ") && out.contains("match their CRC-32"),
        "{out}"
    );
    let mut bytes = std::fs::read(&good).unwrap();
    let ckpt = mmckpt::Checkpoint::open(&good, &mmckpt::OpenOptions::default()).unwrap();
    let range = ckpt.tensor_range(0).unwrap();
    bytes[range.offset as usize] ^= 0x40;
    let bad = scratch("verify-corrupt.pt", &bytes);
    let (code, out, err) = cli(&["verify", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("MMCKPT_ERR_FORMAT") && err.contains("is corrupt") && err.contains("/data/"),
        "{err}"
    );
    let legacy = repo_path("tests/fixtures/legacy.pt");
    let (code, _, err) = cli(&["verify", legacy.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("MMCKPT_ERR_UNSUPPORTED"), "{err}");
}

#[test]
fn ls_reads_a_distributed_checkpoint_directory() {
    // tests/data/dcp/rank4: dcp.save on 4 gloo processes (scripts/make_dcp_fixtures.py);
    // expected.json holds what dcp.load gave back.
    let text = std::fs::read_to_string(repo_path("tests/data/dcp/expected.json")).unwrap();
    let expected: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    let dir = repo_path("tests/data/dcp/rank4");
    let (code, out, err) = cli(&["ls", dir.to_str().unwrap(), "--json", "--hash"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["format"], "dcp");
    let tensors = doc["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 4);
    for t in tensors {
        let want = &expected["rank4"][t["name"].as_str().unwrap()];
        assert_eq!(t["sha256"], want["sha256"], "{}", t["name"]);
        assert_eq!(t["shape"], want["shape"], "{}", t["name"]);
    }
    assert_eq!(doc["values"][0]["name"], "step");
    assert_eq!(doc["values"][0]["value"], 104);
    // The text table, by the directory's .metadata too.
    let metadata = dir.join(".metadata");
    let (code, out, err) = cli(&["ls", metadata.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("4 tensors") && out.contains("format dcp"),
        "{out}"
    );
}

/// `load --tp RANK/WORLD --split PATTERN=DIM`: the module built from the table has the rank's
/// local shapes (torch.chunk's), the first matching rule wins, unmatched entries are whole;
/// and the argument errors.
#[test]
fn load_tensor_parallel_builds_and_loads_the_rank_share() {
    let dir = repo_path("tests/data/dcp/rank4");
    let dir = dir.to_str().unwrap();
    let (code, out, err) = cli(&[
        "load", dir, "--tp", "1/4", "--split", "row=0", "--split", "c*=-1", "--split", "*=0",
        "--copy",
    ]);
    assert_eq!(code, 0, "{err}");
    let shape_of = |name: &str| {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{out}"));
        line.split_whitespace()
            .skip(2)
            .take_while(|w| !w.ends_with("copied"))
            .collect::<String>()
    };
    // row [8, 4] on dim 0, col [3, 8] on dim 1, short [3, 2] and rep [5] by the catch-all.
    assert_eq!(shape_of("row"), "[2,4]");
    assert_eq!(shape_of("col"), "[3,2]");
    assert_eq!(shape_of("short"), "[1,2]");
    assert_eq!(shape_of("rep"), "[2]");
    assert!(out.contains("<All keys matched successfully>"), "{out}");

    let (code, _, err) = cli(&["load", dir, "--tp", "3/4", "--split", "short=0"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("MMCKPT_ERR_SHAPE_MISMATCH") && err.contains("no chunk of 'short'"),
        "{err}"
    );
    for (args, words) in [
        (&["--split", "*=0"][..], "--split needs --tp"),
        (&["--tp", "4"][..], "--tp 4: expected RANK/WORLD"),
        (
            &["--tp", "1/4", "--split", "row"][..],
            "--split row: expected PATTERN=DIM",
        ),
        (
            &["--tp", "4/4"][..],
            "rank 4 is out of range for world size 4",
        ),
    ] {
        let mut all = vec!["load", dir];
        all.extend_from_slice(args);
        let (code, _, err) = cli(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
    }
}
