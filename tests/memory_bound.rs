//! The memory bound (LIMITS.md, "Memory bound"): for every entry point, the peak address space
//! is at most `BOUND_PER_INPUT_BYTE` × the input's size + `BOUND_CONSTANT` beyond what the
//! process used before. Each case runs an amplifying input in a child process under RLIMIT_AS
//! set to exactly that (plus the child's own baseline): the child must finish with a result
//! (success, or a LIMIT / FORMAT error) and never die of a failed allocation.
//!
//! `MMCKPT_MEASURE=1 cargo test --release --test memory_bound -- --nocapture` runs the cases
//! without a limit and prints each one's peak, to check the statement against.

mod child;
mod support_zip;

use child::inputs::{archive, get, put, tensor, PROTO};
use child::{cli_path, describe, limit_child, peak_address_space};
use mmckpt::ErrorKind;
use mmckpt::{Checkpoint, OpenOptions};
use mmckpt::{LoadOptions, Module};
use std::path::{Path, PathBuf};
use std::process::Command;
use support_zip::pk;

/// k: bytes of address space per byte of input (the mapping, the arena, the table, names).
const BOUND_PER_INPUT_BYTE: u64 = 64;
/// The constant, with the default limits (LIMITS.md derives it from them).
const BOUND_CONSTANT: u64 = 4 << 30;

const CASE_VAR: &str = "MMCKPT_MEMORY_CASE";
const INPUT_VAR: &str = "MMCKPT_MEMORY_INPUT";

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmckpt-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn measuring() -> bool {
    std::env::var_os("MMCKPT_MEASURE").is_some()
}

/// The address space a child uses before it reads any input: the test binary (or the CLI)
/// with its libraries, the test harness's threads and a small-stack thread.
fn baseline(program: &Path, args: &[&str]) -> u64 {
    let mut command = Command::new(program);
    command.args(args).env(CASE_VAR, "baseline");
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("MMCKPT_PEAK="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no baseline from {}: {}",
                program.display(),
                describe(&output)
            )
        })
}

/// Runs `case` of this test binary in a child on `input` under the bound.
fn check_case(test: &str, input: &Path) {
    let exe = std::env::current_exe().unwrap();
    let args = [test, "--exact", "--nocapture", "--test-threads=1"];
    let size = std::fs::metadata(input).unwrap().len();
    let base = baseline(
        &exe,
        &[
            "baseline_peak",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    let limit = base + BOUND_PER_INPUT_BYTE * size + BOUND_CONSTANT;
    let mut command = Command::new(&exe);
    command.args(args).env(CASE_VAR, test).env(INPUT_VAR, input);
    if !measuring() {
        limit_child(&mut command, Some(limit), None);
    }
    let output = command.output().unwrap();
    if measuring() {
        let peak = String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("MMCKPT_PEAK=").map(str::to_owned))
            .unwrap_or_default();
        println!("{test}: input {size} B, baseline {base} B, peak {peak} B");
    }
    assert!(
        output.status.success(),
        "{test} on {size} bytes of input under {limit} bytes of address space: {}",
        describe(&output)
    );
}

/// In the child: runs `body` on the input (on a small stack) and reports the peak; in the
/// parent: writes the input and checks the case.
fn case(test: &str, input: impl FnOnce() -> Vec<u8>, body: fn(&Path)) {
    if std::env::var(CASE_VAR).as_deref() == Ok(test) {
        let path = PathBuf::from(std::env::var_os(INPUT_VAR).unwrap());
        std::thread::Builder::new()
            .stack_size(child::SMALL_STACK)
            .spawn(move || body(&path))
            .unwrap()
            .join()
            .unwrap_or_else(|_| std::process::exit(3));
        println!("\nMMCKPT_PEAK={}", peak_address_space());
        return;
    }
    if std::env::var_os(CASE_VAR).is_some() {
        return;
    }
    let path = scratch().join(test);
    std::fs::write(&path, input()).unwrap();
    check_case(test, &path);
}

#[test]
fn baseline_peak() {
    if std::env::var(CASE_VAR).as_deref() == Ok("baseline") {
        std::thread::Builder::new()
            .stack_size(child::SMALL_STACK)
            .spawn(|| {})
            .unwrap()
            .join()
            .unwrap();
        println!("\nMMCKPT_PEAK={}", peak_address_space());
    }
}

/// An open ends with a checkpoint or with a LIMIT / FORMAT / UNSUPPORTED error.
fn open_settles(path: &Path, options: &OpenOptions) -> Option<Checkpoint> {
    match Checkpoint::open(path, options) {
        Ok(ckpt) => Some(ckpt),
        Err(e) => {
            assert!(
                matches!(
                    e.kind,
                    ErrorKind::Limit | ErrorKind::Format | ErrorKind::Unsupported
                ),
                "{e}"
            );
            None
        }
    }
}

/// `{LONG: D2}`, D2 = `{j<i>: D1}` × `fan`, D1 = `{k<i>: T}` × `fan`, T one tensor, each
/// memoized once: `fan²` table rows named under a `key_len`-byte key, from a few KB.
fn shared_under_long_keys(fan: usize, key_len: usize) -> Vec<u8> {
    let mut p = PROTO.to_vec();
    p.push(b'}');
    p.extend(pk::unicode(&"x".repeat(key_len)));
    p.push(b'}');
    p.push(b'(');
    p.extend(pk::unicode("j0"));
    p.push(b'}');
    p.push(b'(');
    p.extend(pk::unicode("k0"));
    p.extend(tensor());
    p.extend(put(1));
    for i in 1..fan {
        p.extend(pk::unicode(&format!("k{i}")));
        p.extend(get(1));
    }
    p.push(b'u');
    p.extend(put(2));
    for i in 1..fan {
        p.extend(pk::unicode(&format!("j{i}")));
        p.extend(get(2));
    }
    p.push(b'u');
    p.push(b's');
    p.push(b'.');
    p
}

/// `{"x": list(L), …}`: L a memoized list of `len` ints copied `copies` times by the
/// interpreted constructor `builtins.list`, and a `blob_len`-byte bytes value copied by
/// `bytearray` `copies` times.
fn copying_constructors(len: usize, copies: usize, blob_len: usize) -> Vec<u8> {
    let mut p = PROTO.to_vec();
    p.push(b'}');
    p.extend(pk::global("builtins", "list"));
    p.extend(put(1));
    p.extend(pk::global("builtins", "bytearray"));
    p.extend(put(2));
    p.push(b'(');
    p.push(b']');
    p.push(b'(');
    for i in 0..len {
        p.extend(pk::int(i as i32));
    }
    p.push(b'e');
    p.extend(put(3));
    p.push(b'0');
    p.push(b'B');
    p.extend((blob_len as u32).to_le_bytes());
    p.extend(std::iter::repeat(0u8).take(blob_len));
    p.extend(put(4));
    p.push(b'0');
    for i in 0..copies {
        p.extend(pk::unicode(&format!("l{i}")));
        p.extend(get(1));
        p.extend(get(3));
        p.extend_from_slice(&[0x85, b'R']);
        p.extend(pk::unicode(&format!("b{i}")));
        p.extend(get(2));
        p.extend(get(4));
        p.extend_from_slice(&[0x85, b'R']);
    }
    p.extend(pk::unicode("t"));
    p.extend(tensor());
    p.push(b'u');
    p.push(b'.');
    p
}

/// One float32 tensor over a 1-element storage, viewed with stride 0 as 2^60 elements.
fn stride0_huge() -> Vec<u8> {
    let mut p = PROTO.to_vec();
    p.push(b'}');
    p.extend(pk::unicode("huge"));
    p.extend(pk::global("torch._utils", "_rebuild_tensor_v2"));
    p.push(b'(');
    p.push(b'(');
    p.extend(pk::unicode("storage"));
    p.extend(pk::global("torch", "FloatStorage"));
    p.extend(pk::unicode("0"));
    p.extend(pk::unicode("cpu"));
    p.extend(pk::int(1));
    p.push(b't');
    p.push(b'Q');
    p.extend(pk::int(0));
    p.push(b'(');
    for _ in 0..2 {
        p.extend(pk::int(1 << 30));
    }
    p.push(b't');
    p.push(b'(');
    p.extend(pk::int(0));
    p.extend(pk::int(0));
    p.push(b't');
    p.push(0x89);
    p.extend(pk::global("collections", "OrderedDict"));
    p.extend_from_slice(b")Rt");
    p.push(b'R');
    p.push(b's');
    p.push(b'.');
    p
}

fn open_and_load(path: &Path) {
    let Some(ckpt) = open_settles(path, &OpenOptions::default()) else {
        return;
    };
    for (assign, convert) in [(true, false), (true, true), (false, false)] {
        let Ok(mut module) = Module::from_checkpoint(&ckpt) else {
            continue;
        };
        if convert {
            let _ = module.set_floating_dtype(mmckpt::DType::Float16);
        }
        if !assign && module.materialize().is_err() {
            continue;
        }
        let options = LoadOptions {
            assign,
            strict: false,
            convert,
            contiguous: false,
            prefix: String::new(),
            prefetch: false,
            tensor_parallel: None,
            direct_reads: false,
        };
        if let Err(e) = module.load(&ckpt, &options) {
            assert!(
                matches!(
                    e.kind,
                    ErrorKind::Limit | ErrorKind::NoMemory | ErrorKind::Format
                ),
                "{e}"
            );
        }
    }
}

#[test]
fn open_zip_shared_subtrees_under_long_keys() {
    case(
        "open_zip_shared_subtrees_under_long_keys",
        || archive(&shared_under_long_keys(1000, 60_000)),
        open_and_load,
    );
}

#[test]
fn open_and_load_a_million_shared_rows() {
    case(
        "open_and_load_a_million_shared_rows",
        || archive(&shared_under_long_keys(1000, 1)),
        open_and_load,
    );
}

#[test]
fn open_zip_copying_constructors() {
    case(
        "open_zip_copying_constructors",
        || archive(&copying_constructors(100_000, 200, 1 << 20)),
        |path| {
            open_settles(path, &OpenOptions::default());
        },
    );
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn open_and_load_legacy() {
    case(
        "open_and_load_legacy",
        || fixture("legacy_odd.pt"),
        open_and_load,
    );
}

#[test]
fn open_and_load_torchscript() {
    case(
        "open_and_load_torchscript",
        || fixture("script_nested.pt"),
        open_and_load,
    );
}

#[test]
fn open_and_load_a_shard_index_naming_one_shard_300_ways() {
    let test = "open_and_load_a_shard_index_naming_one_shard_300_ways";
    if std::env::var(CASE_VAR).as_deref() == Ok(test) {
        case(test, Vec::new, open_and_load);
        return;
    }
    if std::env::var_os(CASE_VAR).is_some() {
        return;
    }
    let dir = scratch().join("shards");
    std::fs::create_dir_all(&dir).unwrap();
    let mut p = PROTO.to_vec();
    p.extend_from_slice(b"}(");
    let mut map = serde_json::Map::new();
    for i in 0..300 {
        p.extend(pk::unicode(&format!("t{i}")));
        p.extend(tensor());
        map.insert(format!("t{i}"), format!("{}x.bin", "./".repeat(i)).into());
    }
    p.extend_from_slice(b"u.");
    std::fs::write(dir.join("x.bin"), archive(&p)).unwrap();
    let index = dir.join("m.index.json");
    std::fs::write(&index, serde_json::json!({"weight_map": map}).to_string()).unwrap();
    check_case(test, &index);
}

#[test]
fn spec_repeat_bomb() {
    case(
        "spec_repeat_bomb",
        || {
            // One module node of 1,000 flat entries, repeated a million times.
            let entries: Vec<String> = (0..1000)
                .map(|i| format!(r#"{{"name": "p{i}", "shape": [1]}}"#))
                .collect();
            format!(
                r#"{{"name": "m", "type": "Module", "children": {{"l": {{"type": "ModuleList", "repeat": 1000000, "item": {{"entries": [{}]}}}}}}}}"#,
                entries.join(", ")
            )
            .into_bytes()
        },
        |path| {
            let json = std::fs::read_to_string(path).unwrap();
            if let Err(e) = Module::from_spec(&json) {
                assert!(
                    matches!(e.kind, ErrorKind::Limit | ErrorKind::InvalidArgument),
                    "{e}"
                );
            }
        },
    );
}

/// `mmckpt ls --json --hash` on `bytes`, under the bound, with the CLI's own baseline.
fn cli_case(name: &str, bytes: Vec<u8>) {
    if std::env::var_os(CASE_VAR).is_some() {
        return;
    }
    let path = scratch().join(name);
    std::fs::write(&path, bytes).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    // The CLI prints its usage and exits: its address space then is the baseline (an upper
    // estimate, plus a margin for the mapping's rounding).
    let base = 64 << 20;
    let limit = base + BOUND_PER_INPUT_BYTE * size + BOUND_CONSTANT;
    for args in [
        &["ls", "--json", "--hash"][..],
        &["ls", "--hash"],
        &["load"],
    ] {
        let mut command = Command::new(cli_path());
        command.args(args).arg(&path);
        limit_child(&mut command, Some(limit), None);
        let output = command.output().expect("target/release/mmckpt runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success()
                || (output.status.code() == Some(1)
                    && (stderr.contains("MMCKPT_ERR_LIMIT")
                        || stderr.contains("MMCKPT_ERR_FORMAT"))),
            "{name} {args:?} on {size} bytes under {limit}: {}",
            describe(&output)
        );
    }
}

#[test]
fn cli_ls_json_hash_of_a_stride0_huge_view() {
    cli_case("stride0.pt", archive(&stride0_huge()));
}

#[test]
fn cli_ls_json_of_shared_values_under_long_keys() {
    // Leaves (non-tensor values) shared under a long key: every listed value has a long path.
    let mut p = shared_under_long_keys(1000, 60_000);
    // Replace the tensor by an int: the shared leaf is listed once per path.
    let t = tensor();
    let at = p.windows(t.len()).position(|w| w == t.as_slice()).unwrap();
    p.splice(at..at + t.len(), [b'K', 1]);
    cli_case("leaves.pt", archive(&p));
}
