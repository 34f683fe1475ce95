//! Times opening a checkpoint (metadata only), for profiling:
//! `REPS=30 cargo run --release -p mmckpt-cli --example open_time FILE` prints each open, then the minimum and
//! median (under callgrind, the default of 3 keeps the run short).
use mmckpt::{Checkpoint, OpenOptions};
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: open_time FILE");
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut times = Vec::with_capacity(reps);
    let mut tensors = 0;
    for _ in 0..reps {
        let start = Instant::now();
        let ckpt = Checkpoint::open(&path, &OpenOptions::default()).expect("open");
        let elapsed = start.elapsed().as_secs_f64();
        tensors = ckpt.len().max(1);
        println!(
            "{} tensors in {:.3} ms ({:.3} us/tensor)",
            ckpt.len(),
            elapsed * 1e3,
            elapsed * 1e6 / tensors as f64
        );
        times.push(elapsed);
    }
    times.sort_by(f64::total_cmp);
    let (min, median) = (times[0], times[times.len() / 2]);
    println!(
        "min {:.3} ms ({:.3} us/tensor), median {:.3} ms ({:.3} us/tensor)",
        min * 1e3,
        min * 1e6 / tensors as f64,
        median * 1e3,
        median * 1e6 / tensors as f64
    );
}
