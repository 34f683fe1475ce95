//! The whole open path over arbitrary bytes: container, pickle, torch interpretation, table.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmckpt::{Checkpoint, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let _ = Checkpoint::from_bytes(data, &OpenOptions::default());
    let strict = OpenOptions {
        strict: true,
        ..OpenOptions::default()
    };
    let _ = Checkpoint::from_bytes(data, &strict);
});
