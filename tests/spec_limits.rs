//! Amplifying module specs: what a spec expands to is bounded by entries, modules, name bytes
//! and unrolled JSON values, computed before anything is built. Each case runs under an
//! allocator that records the peak, which must stay within LIMITS.md's bound for specs:
//! 32 × the spec's size + 1 GiB — and, for refused specs, far less.

use mmckpt::ErrorKind;
use mmckpt::{Module, MAX_SPEC_ENTRIES, MAX_SPEC_NAME_BYTES, MAX_SPEC_NODES, MAX_SPEC_VALUES};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

struct Peak;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Peak = Peak;

/// One measurement at a time (tests run on several threads).
static SERIAL: Mutex<()> = Mutex::new(());

/// Builds `spec`, returning the outcome and the peak bytes allocated meanwhile above what was
/// live before.
fn measured(spec: &str) -> (mmckpt::Result<Module>, usize) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let outcome = Module::from_spec(spec);
    (outcome, PEAK.load(Relaxed) - before)
}

/// Builds `spec`, expects a Limit error whose message contains each of `needles`, and that
/// refusing it cost little memory.
fn refused(spec: &str, needles: &[&str]) {
    let started = std::time::Instant::now();
    let (outcome, peak) = measured(spec);
    let err = outcome.expect_err("refused");
    assert_eq!(err.kind, ErrorKind::Limit, "{err}");
    for needle in needles {
        assert!(
            err.message.contains(needle),
            "{:?} lacks {needle:?}",
            err.message
        );
    }
    assert!(
        peak <= 32 * spec.len() + (1 << 20),
        "refusing a {}-byte spec took {peak} bytes",
        spec.len()
    );
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

fn linear() -> &'static str {
    r#"{"type": "Linear", "in_features": 2, "out_features": 2}"#
}

#[test]
fn a_repeat_of_a_thousand_parameters_a_million_times_is_refused_before_building() {
    // 32 KB that asked for 10^9 entries (6.5 GB before the bound counted entries).
    let params: Vec<String> = (0..1000)
        .map(|i| format!(r#""p{i}": {{"shape": [1]}}"#))
        .collect();
    let spec = format!(
        r#"{{"type": "Sequential", "repeat": 1000000, "item": {{"type": "Module", "params": {{{}}}}}}}"#,
        params.join(", ")
    );
    refused(
        &spec,
        &["'<root>'", &format!("{MAX_SPEC_ENTRIES} entries"), "repeat"],
    );
}

#[test]
fn nested_repeats_are_multiplied_and_the_limit_names_the_node() {
    let spec = format!(
        r#"{{"type": "Module", "children": {{"body": {{"type": "Sequential", "repeat": 2000,
            "item": {{"type": "Sequential", "repeat": 2000, "item": {}}}}}}}}}"#,
        linear()
    );
    // The inner item alone is fine (2,000 layers); `body` is not.
    refused(&spec, &["node 'body'", &MAX_SPEC_NODES.to_string()]);
    let spec = r#"{"type": "Sequential", "repeat": 4294967296,
        "item": {"type": "Sequential", "repeat": 4294967296,
        "item": {"type": "Sequential", "repeat": 4294967296, "item": {"type": "ReLU"}}}}"#;
    // The innermost repeat alone exceeds the bound: it is the node named.
    refused(spec, &["node '0.0'", "modules"]);
}

#[test]
fn long_names_multiplied_by_repeat_are_refused_by_name_bytes() {
    // One 8 KiB entry name, 16,384 times: 128 MiB of names from an 8 KiB spec.
    let name = "n".repeat(8 << 10);
    let spec = format!(
        r#"{{"type": "Sequential", "repeat": 16384,
            "item": {{"entries": [{{"name": "{name}", "shape": [1]}}]}}}}"#
    );
    refused(&spec, &["bytes of names", &MAX_SPEC_NAME_BYTES.to_string()]);
    // A 1 MiB submodule key is a prefix of every name below it: 200 names of 1 MiB.
    let key = "k".repeat(1 << 20);
    let spec = format!(
        r#"{{"type": "Module", "children": {{"{key}":
            {{"type": "Sequential", "repeat": 100, "item": {}}}}}}}"#,
        linear()
    );
    refused(&spec, &["'<root>'", "bytes of names"]);
}

#[test]
fn members_a_repeat_would_look_at_count_against_the_values_bound() {
    // 100,000 modules, each carrying 1,000 ignored members: 10^8 members to look at.
    let junk: Vec<String> = (0..1000).map(|i| format!(r#""x{i}": 0"#)).collect();
    let spec = format!(
        r#"{{"type": "Sequential", "repeat": 100000,
            "item": {{"type": "Linear", "in_features": 1, "out_features": 1, {}}}}}"#,
        junk.join(", ")
    );
    refused(&spec, &["JSON values", &MAX_SPEC_VALUES.to_string()]);
}

#[test]
fn an_object_with_many_members_is_checked_for_duplicates_in_linear_time() {
    // 200,000 members: a pairwise duplicate check took 2 × 10^10 comparisons.
    let params: Vec<String> = (0..200_000)
        .map(|i| format!(r#""p{i}": {{"shape": []}}"#))
        .collect();
    let spec = format!(
        r#"{{"type": "Module", "params": {{{}}}}}"#,
        params.join(", ")
    );
    let started = std::time::Instant::now();
    let (module, peak) = measured(&spec);
    assert_eq!(module.unwrap().len(), 200_000);
    assert!(peak <= 32 * spec.len() + (1 << 30), "{peak}");
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
}

#[test]
fn specs_within_the_bounds_build_within_the_memory_bound() {
    // 500,000 Linear layers: 1,000,000 entries (just under the entry bound) from 90 bytes.
    let spec = format!(
        r#"{{"type": "Sequential", "repeat": 500000, "item": {}}}"#,
        linear()
    );
    let (module, peak) = measured(&spec);
    let module = module.unwrap();
    assert_eq!(module.len(), 1_000_000);
    assert_eq!(module.entry_at(999_999).unwrap().name(), "499999.bias");
    assert!(peak <= 32 * spec.len() + (1 << 30), "{peak}");
    eprintln!("1,000,000 entries: peak {peak} bytes");
    // The densest JSON for the parsed tree (2 bytes a value, 5 a member), in ignored members:
    // parsing costs at most 32 bytes per byte of spec.
    for (array, object) in [("0,", ""), ("", r#""":0,"#), ("[],", r#""1":{},"#)] {
        let spec = format!(
            r#"{{"type": "Linear", "in_features": 1, "out_features": 1, "x": [{}0],
                "y": {{{}"z": 0}}}}"#,
            array.repeat(1_000_000),
            object.repeat(1_000_000)
        );
        let (module, peak) = measured(&spec);
        assert_eq!(module.unwrap().len(), 2);
        let filler = format!("{array}{object}");
        assert!(
            peak <= 32 * spec.len(),
            "{filler}: {peak} for {}",
            spec.len()
        );
        eprintln!("{filler}: peak {peak} for {} bytes", spec.len());
    }
}

#[test]
fn a_million_segment_entry_name_in_a_spec_builds() {
    // 2 MB of name, within every bound: built, then dropped, on a small stack.
    let name = "a.".repeat(1_000_000) + "w";
    let spec = format!(r#"{{"entries": [{{"name": "{name}", "shape": [2]}}]}}"#);
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let (module, peak) = measured(&spec);
            let module = module.unwrap();
            assert_eq!(module.entry_at(0).unwrap().name(), name);
            assert!(peak <= 32 * spec.len() + (1 << 20), "{peak}");
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn json_nesting_is_bounded_by_the_reader() {
    // serde_json refuses nesting past 128 levels: the spec walk's recursion has that bound.
    let mut spec = String::new();
    for _ in 0..200 {
        spec.push_str(r#"{"type": "Module", "children": {"c": "#);
    }
    spec.push_str(r#"{"type": "ReLU"}"#);
    spec.push_str(&"}}".repeat(200));
    let err = Module::from_spec(&spec).expect_err("refused");
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("recursion limit"), "{}", err.message);
    // The deepest spec the reader accepts (63 nested modules) builds on a 256 KiB stack.
    let mut spec = String::new();
    for _ in 0..63 {
        spec.push_str(r#"{"type": "Module", "children": {"c": "#);
    }
    spec.push_str(linear());
    spec.push_str(&"}}".repeat(63));
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let module = Module::from_spec(&spec).unwrap();
            assert_eq!(module.len(), 2);
            assert_eq!(module.entry_at(0).unwrap().name().len(), 63 * 2 + 6);
        })
        .unwrap()
        .join()
        .unwrap();
}
