//! The writer's memory bound (`mmckpt::save`, LIMITS.md "Writer memory"): converting a
//! big-endian checkpoint, whose storages must be byte-swapped, grows the address space by the
//! input's mapping plus at most one tensor, never by the model. Each conversion runs in a child
//! process that reports its peak address space (`VmPeak`) before and after; the checkpoint has
//! four storages, so holding a swapped copy of each (as reading callers get them) would exceed
//! the bound by two tensors.

mod child;
mod support_zip;

use child::peak_address_space;
use mmckpt::{save, Checkpoint, OpenOptions, SaveFormat, SaveOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use support_zip::pk;

const CASE_VAR: &str = "MMCKPT_WRITER_MEMORY_CASE";
const INPUT_VAR: &str = "MMCKPT_WRITER_MEMORY_INPUT";
const OUTPUT_VAR: &str = "MMCKPT_WRITER_MEMORY_OUTPUT";

const TENSORS: usize = 4;
/// float32 elements per tensor: 32 MiB each, 128 MiB in all.
const ELEMENTS: usize = 8 << 20;
const TENSOR_BYTES: u64 = ELEMENTS as u64 * 4;
/// What the bound allows beyond the input's mapping and one tensor: the scratch and conversion
/// buffers, the output's buffering, the zip writer and the allocator's slack.
const SLACK: u64 = 16 << 20;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmckpt-writer-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Element `i` of tensor `t`: distinct across tensors, asymmetric in its bytes.
fn element(t: usize, i: usize) -> f32 {
    (t * ELEMENTS + i) as f32 + 0.25
}

/// `{"t0": …, "t3": …}`, each a float32 tensor over its own storage, stored big-endian.
fn big_endian_checkpoint() -> Vec<u8> {
    let mut pickle = vec![0x80, 2, b'}', b'('];
    let mut storages = Vec::new();
    for t in 0..TENSORS {
        pickle.extend(pk::unicode(&format!("t{t}")));
        let n = ELEMENTS as i32;
        pickle.extend(pk::tensor(&t.to_string(), n, 0, &[n], &[1]));
        let mut data = Vec::with_capacity(ELEMENTS * 4);
        for i in 0..ELEMENTS {
            data.extend_from_slice(&element(t, i).to_be_bytes());
        }
        storages.push((format!("archive/data/{t}"), data));
    }
    pickle.extend_from_slice(b"u.");
    let mut records: Vec<(&str, &[u8])> =
        vec![("archive/data.pkl", &pickle), ("archive/byteorder", b"big")];
    records.extend(storages.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    support_zip::zip(&records)
}

/// In the child: the conversion, between two readings of the peak address space.
fn convert_in_child(format: SaveFormat) {
    let input = PathBuf::from(std::env::var_os(INPUT_VAR).unwrap());
    let output = PathBuf::from(std::env::var_os(OUTPUT_VAR).unwrap());
    let worker = std::thread::Builder::new()
        .stack_size(child::SMALL_STACK)
        .spawn(move || {
            // This thread's allocator arena exists before the first reading.
            drop(std::hint::black_box(vec![0u8; 4096]));
            let before = peak_address_space();
            let ckpt = Checkpoint::open(&input, &OpenOptions::default()).unwrap();
            let options = SaveOptions {
                format,
                ..SaveOptions::default()
            };
            save(&ckpt, &output, &options).unwrap();
            let after = peak_address_space();
            println!("\nMMCKPT_GROWTH={}", after - before);
        })
        .unwrap();
    if worker.join().is_err() {
        std::process::exit(3);
    }
}

/// In the parent: runs the child for `test` and checks its growth and its output.
fn check(test: &str, input: &Path, output: &Path) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE_VAR, test)
        .env(INPUT_VAR, input)
        .env(OUTPUT_VAR, output)
        .output()
        .unwrap();
    assert!(out.status.success(), "{test}: {}", child::describe(&out));
    let growth: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("MMCKPT_GROWTH="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{test}: no growth reported: {}", child::describe(&out)));
    let size = std::fs::metadata(input).unwrap().len();
    let bound = size + TENSOR_BYTES + SLACK;
    assert!(
        growth <= bound,
        "{test}: converting {size} bytes grew the address space by {growth} bytes, over the \
         bound of {bound} (the input's mapping, one tensor of {TENSOR_BYTES} and {SLACK})"
    );
    let ckpt = Checkpoint::open(output, &OpenOptions::default()).unwrap();
    assert_eq!(ckpt.len(), TENSORS, "{test}");
    for t in 0..TENSORS {
        let tensor = ckpt.tensor(&format!("t{t}")).unwrap();
        let bytes = tensor.contiguous_bytes();
        assert_eq!(bytes.len(), ELEMENTS * 4, "{test} t{t}");
        for i in [0, 1, ELEMENTS / 2 + 3, ELEMENTS - 1] {
            let at = i * 4;
            let got = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            assert_eq!(got, element(t, i), "{test} t{t}[{i}]");
        }
    }
    std::fs::remove_file(output).unwrap();
}

fn run(test: &str, format: SaveFormat) {
    match std::env::var(CASE_VAR) {
        Ok(case) if case == test => return convert_in_child(format),
        Ok(_) => return,
        Err(_) => {}
    }
    let dir = scratch();
    let input = dir.join(format!("{test}.pt"));
    std::fs::write(&input, big_endian_checkpoint()).unwrap();
    let output = dir.join(format!("{test}.out"));
    check(test, &input, &output);
    std::fs::remove_file(&input).unwrap();
}

#[test]
fn converting_a_big_endian_checkpoint_to_torch_holds_at_most_one_tensor() {
    run(
        "converting_a_big_endian_checkpoint_to_torch_holds_at_most_one_tensor",
        SaveFormat::Torch,
    );
}

#[test]
fn converting_a_big_endian_checkpoint_to_safetensors_holds_at_most_one_tensor() {
    run(
        "converting_a_big_endian_checkpoint_to_safetensors_holds_at_most_one_tensor",
        SaveFormat::Safetensors,
    );
}
