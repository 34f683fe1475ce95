//! Hostile inputs: every file under tests/data/regressions/<target>/ (inputs that once crashed,
//! hung or exhausted memory in a fuzz target, see fuzz/README.md) goes through the same code
//! path as its fuzz target and must end in a clean error or success; plus hand-made inputs for
//! the bounds that protect the tensor walk.

mod common;
mod support_zip;

use common::{expected_rows, fixture, repo_path, status_kind};
use mmckpt::fuzzing::{self, walk_tensors};
use mmckpt::{Checkpoint, ErrorKind, OpenOptions};
use support_zip::pk;

/// Fuzz targets of crates above the library (`fuzz_targets/cli.rs` calls `mmckpt_cli::fuzz`):
/// cli/tests/cli.rs checks them and replays `tests/data/regressions/cli/`.
const OTHER_CRATE_TARGETS: &[&str] = &["cli"];

/// The library function of fuzz target `name` (`mmckpt::fuzzing`, what the fuzz crate runs).
fn target(name: &str) -> fuzzing::Target {
    fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name}: no such fuzz target"))
        .1
}

#[test]
fn every_regression_input_ends_cleanly() {
    let root = repo_path("tests/data/regressions");
    let mut count = 0usize;
    for dir in std::fs::read_dir(&root).expect("tests/data/regressions") {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        if OTHER_CRATE_TARGETS.contains(&name.as_str()) {
            continue;
        }
        let own = target(&name);
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            own(&data);
            // Every input also goes through every other target: a bug one layer found must
            // not hide in another.
            for (other, run) in fuzzing::TARGETS {
                if *other != name {
                    run(&data);
                }
            }
            count += 1;
        }
    }
    eprintln!("{count} regression inputs");
}

/// The files `fuzz/seed.sh` copies into the `zip`, `open`, `walk`, `load` and `legacy` corpora.
fn checkpoint_seeds() -> Vec<std::path::PathBuf> {
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
            // recipe.pt (40 MB) is left out of the corpus, as seed.sh leaves it out.
            if path.extension().is_some_and(|e| e == "pt") && !path.ends_with("recipe.pt") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every target over the seed corpus `fuzz/seed.sh` builds (checkpoints; their `.pkl` records,
/// or the whole file when it is not a zip, for `pickle`; module specs for `spec`): the corpus a
/// campaign starts from passes the targets' checks on every `cargo test`.
#[test]
fn every_fuzz_target_passes_on_its_seed_corpus() {
    let seeds = checkpoint_seeds();
    assert!(seeds.len() >= 80, "only {} seed checkpoints", seeds.len());
    let mut pickles = 0usize;
    for path in &seeds {
        let data = std::fs::read(path).unwrap();
        for name in ["zip", "open", "walk", "load", "legacy"] {
            target(name)(&data);
        }
        for pickle in fuzzing::pickle_seeds(&data) {
            fuzzing::pickle(pickle);
            pickles += 1;
        }
    }
    assert!(pickles >= 50, "only {pickles} pickle records");
    let specs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("specs.json")).unwrap()).unwrap();
    let specs = specs.as_array().expect("specs.json is a list");
    for case in specs {
        fuzzing::spec(case["spec_text"].as_str().unwrap().as_bytes());
    }
    fuzzing::spec(&std::fs::read(fixture("recipe.spec.json")).unwrap());
    eprintln!(
        "{} checkpoints, {pickles} pickles, {} specs",
        seeds.len(),
        specs.len() + 1
    );
}

/// `fuzz/fuzz_targets/<name>.rs` exists for every library target and is the one-line call
/// `mmckpt::fuzzing::<name>`, and each has its `[[bin]]`: the fuzzer runs what the tests run.
#[test]
fn every_fuzz_target_is_a_call_of_its_library_function() {
    let dir = repo_path("fuzz/fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
        .collect();
    files.sort();
    let mut names: Vec<String> = fuzzing::TARGETS
        .iter()
        .map(|(n, _)| n)
        .chain(OTHER_CRATE_TARGETS)
        .map(|n| format!("{n}.rs"))
        .collect();
    names.sort();
    assert_eq!(
        files, names,
        "fuzz/fuzz_targets/ and mmckpt::fuzzing::TARGETS"
    );
    let manifest = std::fs::read_to_string(repo_path("fuzz/Cargo.toml")).unwrap();
    for (name, _) in fuzzing::TARGETS {
        let source = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
        let call = format!("fuzz_target!(|data: &[u8]| mmckpt::fuzzing::{name}(data));");
        assert!(
            source.contains(&call),
            "fuzz_targets/{name}.rs lacks {call}"
        );
        let bin = format!("name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"");
        assert!(
            manifest.contains(&bin),
            "fuzz/Cargo.toml lacks the [[bin]] {name}"
        );
    }
}

fn open(bytes: &[u8]) -> mmckpt::Result<Checkpoint> {
    Checkpoint::from_bytes(bytes, &OpenOptions::default())
}

const FOUR_FLOATS: [u8; 16] = [0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64];

/// `{key: value}` as a protocol-2 pickle.
fn dict_pickle(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02}".to_vec();
    p.extend_from_slice(key);
    p.extend_from_slice(value);
    p.extend_from_slice(b"s.");
    p
}

#[test]
fn a_deeply_nested_tuple_key_does_not_overflow_the_stack() {
    // (((…(None,),…),),) 200,000 deep: flat for the pickle machine (TUPLE1), but naming the
    // dict entry must not recurse once per level.
    let mut key = b"N".to_vec();
    key.extend(std::iter::repeat(0x85u8).take(200_000));
    let value = pk::tensor("0", 4, 0, &[4], &[1]);
    let bytes = support_zip::checkpoint(&dict_pickle(&key, &value), &[("0", &FOUR_FLOATS)]);
    match open(&bytes) {
        Ok(ckpt) => {
            walk_tensors(&ckpt, bytes.len() as u64);
        }
        Err(e) => assert_eq!(e.kind, ErrorKind::Limit, "{e}"),
    }
}

#[test]
fn memo_keys_far_apart_do_not_grow_the_memo() {
    // 40 LONG_BINPUTs whose keys each double the last: the memo once sized its vector by the
    // largest key near it, so these few bytes asked for gigabytes. The pickle is valid.
    let mut value = b"N".to_vec();
    let mut key = 1023u32;
    for _ in 0..40 {
        value.push(b'r');
        value.extend_from_slice(&key.to_le_bytes());
        key = key.saturating_mul(2).saturating_add(1025);
    }
    let bytes = support_zip::checkpoint(&dict_pickle(b"X\x01\0\0\0a", &value), &[]);
    let ckpt = open(&bytes).expect("a valid pickle");
    assert_eq!(ckpt.len(), 0);
}

#[test]
fn names_built_from_huge_repeated_keys_are_bounded() {
    // A 60 KiB key used for 100,000 references to one tensor would make 6 GB of names.
    let big = "k".repeat(60 << 10);
    let mut p = b"\x80\x02}".to_vec();
    p.extend(pk::unicode(&big));
    p.extend(b"]q\x00(");
    p.extend(pk::tensor("0", 4, 0, &[4], &[1]));
    p.extend(b"q\x01");
    for _ in 0..100_000 {
        p.extend(b"h\x01");
    }
    p.extend(b"es.");
    let bytes = support_zip::checkpoint(&p, &[("0", &FOUR_FLOATS)]);
    let err = open(&bytes).expect_err("the names would not fit in memory");
    assert_eq!(err.kind, ErrorKind::Limit, "{err}");
}

#[test]
fn an_overlong_key_is_a_limit_error() {
    let big = "k".repeat(1 << 20);
    let value = pk::tensor("0", 4, 0, &[4], &[1]);
    let bytes = support_zip::checkpoint(
        &dict_pickle(&pk::unicode(&big), &value),
        &[("0", &FOUR_FLOATS)],
    );
    let err = open(&bytes).expect_err("a 1 MiB name");
    assert_eq!(err.kind, ErrorKind::Limit, "{err}");
}

#[test]
fn a_stride_zero_view_of_astronomic_numel_is_an_error_not_an_allocation() {
    // numel × itemsize does not fit in 64 bits: torch itself refuses such a tensor.
    let value = pk::tensor("0", 1, 0, &[1 << 30, 1 << 30, 4], &[0, 0, 0]);
    let bytes = support_zip::checkpoint(
        &dict_pickle(&pk::unicode("w"), &value),
        &[("0", &FOUR_FLOATS)],
    );
    let err = open(&bytes).expect_err("numel overflows");
    assert!(
        matches!(err.kind, ErrorKind::Format | ErrorKind::Limit),
        "{err}"
    );
}

/// tests/data/attacks (scripts/make_attacks.py): nothing is ever executed; a default open
/// gives the listed result; a strict open fails with Unsafe naming the global.
#[test]
fn attacks_never_execute_and_strict_names_the_global() {
    let dir = repo_path("tests/data/attacks");
    let mut count = 0;
    for cols in expected_rows(&dir) {
        let [file, default, strict, needle, marker] = [0, 1, 2, 3, 4].map(|i| cols[i].as_str());
        let _ = std::fs::remove_file(marker);
        let path = dir.join(file);
        match (
            Checkpoint::open(&path, &OpenOptions::default()),
            status_kind(default),
        ) {
            (Ok(ckpt), None) => {
                let len = std::fs::metadata(&path).unwrap().len();
                walk_tensors(&ckpt, len);
                assert!(
                    ckpt.tensor("w").is_ok(),
                    "{file}: the honest tensor 'w' is readable"
                );
            }
            (Err(e), Some(kind)) => assert_eq!(e.kind, kind, "{file}: {e}"),
            (Ok(_), Some(kind)) => panic!("{file}: opened, expected {kind:?}"),
            (Err(e), None) => panic!("{file}: expected to open: {e}"),
        }
        let strict_options = OpenOptions {
            strict: true,
            ..OpenOptions::default()
        };
        let err = Checkpoint::open(&path, &strict_options)
            .err()
            .unwrap_or_else(|| panic!("{file}: a strict open succeeded"));
        assert_eq!(Some(err.kind), status_kind(strict), "{file}: {err}");
        assert!(
            err.message.contains(needle),
            "{file}: {:?} does not name {needle}",
            err.message
        );
        assert!(
            !std::path::Path::new(marker).exists(),
            "{file}: its payload ran"
        );
        count += 1;
    }
    assert!(count >= 25, "only {count} attacks");
}

/// tests/data/differential (scripts/make_differentials.py): zip tricks on which two readers
/// could disagree. mmckpt gives the listed status, and where it opens the file it reads
/// exactly the values torch.load read from the same file.
#[test]
fn zip_tricks_are_rejected_or_read_exactly_as_torch_reads_them() {
    let dir = repo_path("tests/data/differential");
    let mut count = 0;
    for cols in expected_rows(&dir) {
        let [file, status, torch_read] = [0, 1, 2].map(|i| cols[i].as_str());
        count += 1;
        for mode in [mmckpt::OpenMode::Map, mmckpt::OpenMode::Read] {
            let options = OpenOptions {
                mode,
                ..OpenOptions::default()
            };
            let opened = Checkpoint::open(dir.join(file), &options);
            let ckpt = match (opened, status_kind(status)) {
                (Ok(ckpt), None) => ckpt,
                (Err(e), Some(kind)) => {
                    assert_eq!(e.kind, kind, "{file}: {e}");
                    continue;
                }
                (Ok(_), Some(kind)) => panic!("{file}: opened, expected {kind:?}"),
                (Err(e), None) => panic!("{file}: expected to open: {e}"),
            };
            assert!(!torch_read.starts_with("error"), "{file}: torch refused it");
            let mut seen = Vec::new();
            for (name, t) in ckpt.iter() {
                let t = t.unwrap();
                let values: Vec<String> = t
                    .contiguous_bytes()
                    .chunks_exact(4)
                    .map(|c| format!("{:?}", f32::from_le_bytes(c.try_into().unwrap()) as f64))
                    .collect();
                seen.push(format!("{name}={}", values.join(",")));
            }
            assert_eq!(
                seen.join(";"),
                torch_read,
                "{file}: mmckpt and torch read different tensors"
            );
        }
    }
    assert!(count >= 10, "only {count} differential cases");
}

/// A dict whose 20,000 keys each hold one 1,000,000-item tuple: naming a key once cost the
/// whole tuple (and selecting a root named every key), so 2 MB of pickle took minutes.
fn wide_tuple_keys_pickle() -> Vec<u8> {
    let mut p = b"\x80\x02Nq\x00(".to_vec();
    p.extend(std::iter::repeat(*b"h\x00").take(1_000_000).flatten());
    p.extend(b"tq\x01}(");
    for i in 0..20_000 {
        p.extend(b"h\x01");
        p.extend(pk::int(i));
        p.extend(b"\x86N");
    }
    p.extend(pk::unicode("x"));
    p.extend(pk::tensor("0", 4, 0, &[4], &[1]));
    p.extend(b"u.");
    p
}

#[test]
fn keys_that_are_huge_tuples_cost_no_more_than_their_name_bound() {
    let bytes = support_zip::checkpoint(&wide_tuple_keys_pickle(), &[("0", &FOUR_FLOATS)]);
    let started = std::time::Instant::now();
    let err = open(&bytes).expect_err("a key longer than 64 KiB");
    assert_eq!(err.kind, ErrorKind::Limit, "{err}");
    let rooted = OpenOptions {
        root: Some("x".into()),
        ..OpenOptions::default()
    };
    let ckpt = Checkpoint::from_bytes(&bytes, &rooted).expect("root 'x' is found");
    assert_eq!(ckpt.len(), 1);
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}

/// 200,000 tensors (REDUCE of one memoized call, 3 bytes each) sharing one metadata dict of
/// 1,000,000 items: every tensor scanned the whole dict.
#[test]
fn a_huge_metadata_dict_shared_by_many_tensors_is_rejected_at_once() {
    // A million distinct int keys (equal keys would fold into one item, as in Python).
    let mut p = b"\x80\x02}q\x00)q\x010(".to_vec();
    for key in 0..1_000_000i32 {
        p.push(b'J');
        p.extend(key.to_le_bytes());
        p.extend(b"h\x01");
    }
    p.extend(b"u0(");
    p.extend(b"(");
    p.extend(pk::unicode("storage"));
    p.extend(pk::global("torch", "FloatStorage"));
    p.extend(pk::unicode("0"));
    p.extend(pk::unicode("cpu"));
    p.extend(pk::int(4));
    p.extend(b"tQK\x00K\x04\x85K\x01\x85\x89Nh\x00tq\x020");
    p.extend(pk::global("torch._utils", "_rebuild_tensor_v2"));
    p.extend(b"q\x030](");
    p.extend(std::iter::repeat(*b"h\x03h\x02R").take(200_000).flatten());
    p.extend(b"e.");
    let bytes = support_zip::checkpoint(&p, &[("0", &FOUR_FLOATS)]);
    let started = std::time::Instant::now();
    let err = open(&bytes).expect_err("metadata of a million items");
    assert_eq!(err.kind, ErrorKind::Format, "{err}");
    assert!(err.message.contains("metadata"), "{err}");
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}

/// 200,000 tensor calls (3-byte REDUCEs of memoized arguments) sharing one persistent id:
/// `pid` is the persistent id tuple's bytes, `tail` goes between the stride and the REDUCE.
fn many_tensors_sharing(pid: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02(".to_vec();
    p.extend_from_slice(pid);
    p.extend(b"QK\x00K\x04\x85K\x01\x85\x89Ntq\x020");
    p.extend(pk::global("torch._utils", "_rebuild_tensor_v2"));
    p.extend(b"q\x030](");
    p.extend(std::iter::repeat(*b"h\x03h\x02R").take(200_000).flatten());
    p.extend(b"e.");
    p
}

/// `('storage', torch.<class>, key, 'cpu', 4[, (view_key, 0, 4)])` as a pickled persistent id.
fn storage_pid(class: &str, key: &str, view_key: Option<&str>) -> Vec<u8> {
    let mut pid = b"(".to_vec();
    pid.extend(pk::unicode("storage"));
    pid.extend(pk::global("torch", class));
    pid.extend(pk::unicode(key));
    pid.extend(pk::unicode("cpu"));
    pid.extend(pk::int(4));
    if let Some(view_key) = view_key {
        pid.extend(pk::unicode(view_key));
        pid.extend(b"K\x00K\x04\x87");
    }
    pid.push(b't');
    pid
}

#[test]
fn a_huge_storage_key_shared_by_many_tensors_is_rejected_before_it_is_copied() {
    let pid = storage_pid("FloatStorage", &"7".repeat(10 << 20), None);
    shared_pid_is_rejected_at_once(&pid, "storage key");
}

/// Opens many tensors sharing `pid`: the open must fail with a format error mentioning
/// `needle`, before the shared field is copied once per tensor.
fn shared_pid_is_rejected_at_once(pid: &[u8], needle: &str) {
    let bytes = support_zip::checkpoint(&many_tensors_sharing(pid), &[("0", &FOUR_FLOATS)]);
    let started = std::time::Instant::now();
    let err = open(&bytes).expect_err("a 10 MB shared field");
    assert_eq!(err.kind, ErrorKind::Format, "{err}");
    assert!(err.message.contains(needle), "{err}");
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_huge_global_name_is_a_limit_error() {
    // A 10 MB storage class name would be formatted into a message once per tensor.
    let pid = storage_pid(&"F".repeat(10 << 20), "0", None);
    let bytes = support_zip::checkpoint(&many_tensors_sharing(&pid), &[("0", &FOUR_FLOATS)]);
    let err = open(&bytes).expect_err("a 10 MB global name");
    assert_eq!(err.kind, ErrorKind::Limit, "{err}");
    assert!(err.message.contains("global name"), "{err}");
}

#[test]
fn errors_copied_to_many_entries_count_against_the_name_budget() {
    // An unsupported tensor first reached under a ~54 MB path (900 nested dicts keyed by one
    // memoized 60 KiB string) carries that name in its error; 3,000,000 more references to it
    // copied the error into every entry (160 TB).
    let mut p = b"\x80\x02".to_vec();
    p.extend(pk::unicode(&"k".repeat(60 << 10)));
    p.extend(b"q\x000");
    p.extend(pk::global("torch._utils", "_rebuild_qtensor"));
    p.extend(b")Rq\x010](");
    for _ in 0..900 {
        p.extend(b"}h\x00");
    }
    p.extend(b"h\x01");
    p.extend(std::iter::repeat(b's').take(900));
    p.extend(b"](");
    p.extend(std::iter::repeat(*b"h\x01").take(3_000_000).flatten());
    p.extend(b"ee.");
    let bytes = support_zip::checkpoint(&p, &[]);
    let err = open(&bytes).expect_err("the names and errors would not fit in memory");
    assert_eq!(err.kind, ErrorKind::Limit, "{err}");
}

#[test]
fn a_huge_legacy_view_key_shared_by_many_tensors_is_rejected_before_it_is_copied() {
    let pid = storage_pid("FloatStorage", "0", Some(&"7".repeat(10 << 20)));
    shared_pid_is_rejected_at_once(&pid, "view key");
}

/// Found by the `spec` fuzz target: `"repeat": 2222222222222` expanded its item for hours.
#[test]
fn a_spec_that_repeats_a_module_trillions_of_times_is_a_limit_error() {
    let spec = r#"{"type": "Sequential", "repeat": 2222222222222, "item": {"type": "Linear", "in_features": 2, "out_features": 2}}"#;
    let started = std::time::Instant::now();
    let err = mmckpt::Module::from_spec(spec).expect_err("refused");
    assert_eq!(err.kind, ErrorKind::Limit);
    assert!(err.message.contains("repeat"), "{}", err.message);
    assert!(started.elapsed().as_secs() < 30);
}

/// `{A: None, (A,): None, "x": tensor}` where A is a `len`-byte string, followed by `repeats`
/// inserts of B (a second string equal to A, memoized) and of new tuples `(B,)`, 4 and 5 bytes
/// each: every insert folds into the existing key.
fn equal_long_keys_pickle(len: usize, repeats: usize) -> Vec<u8> {
    let text = "a".repeat(len);
    let mut p = b"\x80\x02}".to_vec();
    p.extend(pk::unicode(&text));
    p.extend(b"q\x00Ns"); // d[A] = None
    p.extend(pk::unicode(&text));
    p.extend(b"q\x010Nq\x020("); // memo: 1 = B, 2 = None
    p.extend(std::iter::repeat(*b"h\x01h\x02").take(repeats).flatten());
    p.extend(b"uh\x00\x85Ns("); // d[B] = None, repeats times; d[(A,)] = None
    p.extend(
        std::iter::repeat(*b"h\x01\x85h\x02")
            .take(repeats)
            .flatten(),
    );
    p.extend(b"u"); // d[(B,)] = None, repeats times
    p.extend(pk::unicode("x"));
    p.extend(pk::tensor("0", 4, 0, &[4], &[1]));
    p.extend(b"s.");
    p
}

/// Found reading the dict-key folding (too big a shape for the fuzzer): a long string key and
/// an equal one memoized apart were compared byte by byte on every one of a million inserts,
/// and every new tuple `(B,)` copied and hashed the string again, so 9 MB of pickle took
/// hours. A long key's content is now read once per node (a canonical id).
#[test]
fn equal_long_keys_inserted_a_million_times_are_compared_once() {
    let pickle = equal_long_keys_pickle(1 << 20, 1 << 20);
    let bytes = support_zip::checkpoint(&pickle, &[("0", &FOUR_FLOATS)]);
    let started = std::time::Instant::now();
    let result = open(&bytes);
    let elapsed = started.elapsed();
    match result {
        Ok(ckpt) => panic!(
            "{} entries, yet the 1 MiB key is over the name bound",
            ckpt.len()
        ),
        // The pickle was read to its end: only naming the key refuses it.
        Err(e) => assert!(
            e.kind == ErrorKind::Limit && e.message.contains("name segment"),
            "{e}"
        ),
    }
    assert!(elapsed.as_secs() < 20, "took {elapsed:?}");
}
