//! What opening a legacy file costs, and what its first tensor access costs: a legacy file's
//! storages are misaligned, and each is copied into aligned memory the first time one of its
//! tensors is asked for (`bench/legacy_lazy.py` writes the 800 MB input and runs this).
//!
//! `legacy_lazy FILE [REPS]` prints one JSON object: the open's time (minimum and median over
//! REPS opens) and resident growth (from `/proc/self/statm`, measured around the first open in
//! this process), then for the first tensor: the time of `tensor_at`, the bytes copied, and the
//! resident growth; the same open with `accept_unaligned` (nothing copied).
use mmckpt::{Checkpoint, OpenOptions};
use std::time::Instant;

/// Resident bytes of this process (`/proc/self/statm`, second field, in pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: legacy_lazy FILE [REPS]");
    let reps: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let file_bytes = std::fs::metadata(&path).expect("stat").len();

    let rss0 = resident_bytes();
    let start = Instant::now();
    let ckpt = Checkpoint::open(&path, &OpenOptions::default()).expect("open");
    let first_open_ms = ms(start);
    let rss_open = resident_bytes();
    let (tensors, storages, pending) = (ckpt.len(), ckpt.storage_count(), ckpt.copies_pending());

    let start = Instant::now();
    let t = ckpt.tensor_at(0).expect("tensor 0");
    let access_ms = ms(start);
    let rss_access = resident_bytes();
    let (storage_bytes, copied) = (t.storage_nbytes(), ckpt.copied_bytes());
    let again = Instant::now();
    let _ = ckpt.tensor_at(0).expect("tensor 0");
    let second_access_us = ms(again) * 1e3;
    drop(ckpt);

    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let ckpt = Checkpoint::open(&path, &OpenOptions::default()).expect("open");
        times.push(ms(start));
        drop(ckpt);
    }
    times.sort_by(f64::total_cmp);

    let unaligned = OpenOptions {
        accept_unaligned: true,
        ..OpenOptions::default()
    };
    let ckpt = Checkpoint::open(&path, &unaligned).expect("open unaligned");
    let rss_before = resident_bytes();
    let start = Instant::now();
    let t = ckpt.tensor_at(0).expect("tensor 0");
    let unaligned_access_us = ms(start) * 1e3;
    let unaligned = (
        t.is_mapped(),
        t.data_ptr() as usize % 4,
        ckpt.copied_bytes(),
        resident_bytes() as i64 - rss_before as i64,
    );

    println!(
        "{{\"file_mib\": {:.1}, \"tensors\": {tensors}, \"storages\": {storages}, \
         \"copies_pending_after_open\": {pending}, \
         \"first_open_ms\": {first_open_ms:.3}, \"open_min_ms\": {:.3}, \"open_median_ms\": {:.3}, \
         \"open_rss_growth_mib\": {:.2}, \
         \"first_access_ms\": {access_ms:.3}, \"second_access_us\": {second_access_us:.2}, \
         \"tensor0_storage_mib\": {:.2}, \"copied_mib\": {:.2}, \"access_rss_growth_mib\": {:.2}, \
         \"unaligned_open\": {{\"mapped\": {}, \"data_ptr_mod_4\": {}, \"copied_bytes\": {}, \
         \"access_us\": {unaligned_access_us:.2}, \"access_rss_growth_mib\": {:.2}}}}}",
        mib(file_bytes as i64),
        times[0],
        times[times.len() / 2],
        mib(rss_open as i64 - rss0 as i64),
        mib(storage_bytes as i64),
        mib(copied as i64),
        mib(rss_access as i64 - rss_open as i64),
        unaligned.0,
        unaligned.1,
        unaligned.2,
        mib(unaligned.3),
    );
}
