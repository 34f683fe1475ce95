//! Times opening a checkpoint (metadata only): `cargo run --release --example open_time FILE`.
use mmckpt::checkpoint::{Checkpoint, OpenOptions};
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: open_time FILE");
    for _ in 0..3 {
        let start = Instant::now();
        let ckpt = Checkpoint::open(&path, &OpenOptions::default()).expect("open");
        let elapsed = start.elapsed();
        println!(
            "{} tensors in {:.3} ms ({:.3} us/tensor)",
            ckpt.len(),
            elapsed.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e6 / ckpt.len().max(1) as f64
        );
    }
}
