//! One cold-or-warm load in one I/O mode, for bench/io_modes.py:
//!
//!     io_modes FILE MODE WHAT [prefetch]
//!
//! MODE is `map`, `read` (the whole file) or `pread` (per tensor); WHAT is `one` (the first
//! tensor), `all` (every tensor: one byte per 4 KiB page of each is read, so a mapping faults
//! its pages in) or `copy` (every tensor copied into a buffer of its own, as a copy load
//! does). With `prefetch`, the tensors' storages are brought in ahead of the loop by
//! `Checkpoint::prefetch_while` (default window). Prints one JSON object: seconds to open and
//! to load, the bytes of the tensors loaded, and the bytes read with pread after the metadata.

use mmckpt::{Checkpoint, OpenMode, OpenOptions, DEFAULT_PREFETCH_BUDGET};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (file, mode, what, prefetch) = match args.as_slice() {
        [_, file, mode, what] => (file, mode, what, false),
        [_, file, mode, what, flag] if flag == "prefetch" => (file, mode, what, true),
        _ => return Err("usage: io_modes FILE map|read|pread one|all|copy [prefetch]".into()),
    };
    let mode = match mode.as_str() {
        "map" => OpenMode::Map,
        "read" => OpenMode::Read,
        "pread" => OpenMode::PerTensor,
        other => return Err(format!("unknown mode {other}").into()),
    };
    let copy = match what.as_str() {
        "one" | "all" => false,
        "copy" => true,
        other => return Err(format!("unknown selection {other}").into()),
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
    let indices: Vec<usize> = (0..count).collect();
    let budget = if prefetch { DEFAULT_PREFETCH_BUDGET } else { 0 };
    let start = Instant::now();
    let load = |cursor: Option<&mmckpt::PrefetchCursor>| -> mmckpt::Result<(u64, u64)> {
        let (mut loaded, mut checksum) = (0u64, 0u64);
        let mut buf = Vec::new();
        for &i in &indices {
            let t = ckpt.tensor_at(i)?;
            let bytes = t.bytes();
            loaded += bytes.len() as u64;
            let touched = if copy {
                buf.clear();
                buf.extend_from_slice(bytes);
                &buf[..]
            } else {
                bytes
            };
            checksum += touched
                .iter()
                .step_by(4096)
                .map(|&b| u64::from(b))
                .sum::<u64>();
            if let Some(cursor) = cursor {
                cursor.consumed(&t);
            }
        }
        Ok((loaded, checksum))
    };
    let (loaded, checksum) = if prefetch {
        ckpt.prefetch_while(&indices, budget, |cursor| load(Some(cursor)))?
    } else {
        load(None)?
    };
    let load_s = start.elapsed().as_secs_f64();
    println!(
        "{{\"open_s\": {open_s:.6}, \"load_s\": {load_s:.6}, \"tensor_bytes\": {loaded}, \
         \"file_bytes_read\": {}, \"checksum\": {checksum}}}",
        ckpt.file_bytes_read()
    );
    Ok(())
}
