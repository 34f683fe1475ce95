//! One cold-or-warm load in one I/O mode, for bench/io_modes.py:
//!
//!     io_modes FILE MODE WHAT
//!
//! MODE is `map`, `read` (the whole file) or `pread` (per tensor); WHAT is `one` (the first
//! tensor) or `all`. Opens FILE, asks for the tensors and reads one byte per 4 KiB page of
//! each (so a mapping faults its pages in), and prints one JSON object: seconds to open and to
//! load, the bytes of the tensors loaded, and the bytes read with pread after the metadata.

use mmckpt::{Checkpoint, OpenMode, OpenOptions};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, mode, what] = args.as_slice() else {
        return Err("usage: io_modes FILE map|read|pread one|all".into());
    };
    let mode = match mode.as_str() {
        "map" => OpenMode::Map,
        "read" => OpenMode::Read,
        "pread" => OpenMode::PerTensor,
        other => return Err(format!("unknown mode {other}").into()),
    };
    let start = Instant::now();
    let ckpt = Checkpoint::open(
        file,
        &OpenOptions {
            mode,
            ..OpenOptions::default()
        },
    )?;
    let open_s = start.elapsed().as_secs_f64();
    let count = if what == "one" { 1 } else { ckpt.len() };
    let start = Instant::now();
    let (mut loaded, mut checksum) = (0u64, 0u64);
    for i in 0..count {
        let t = ckpt.tensor_at(i)?;
        let bytes = t.bytes();
        loaded += bytes.len() as u64;
        checksum += bytes
            .iter()
            .step_by(4096)
            .map(|&b| u64::from(b))
            .sum::<u64>();
    }
    let load_s = start.elapsed().as_secs_f64();
    println!(
        "{{\"open_s\": {open_s:.6}, \"load_s\": {load_s:.6}, \"tensor_bytes\": {loaded}, \
         \"file_bytes_read\": {}, \"checksum\": {checksum}}}",
        ckpt.file_bytes_read()
    );
    Ok(())
}
