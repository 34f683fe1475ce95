//! A fuzzed checkpoint loaded into a module built from it: assign, then (when small enough to
//! allocate) copy and bfloat16 conversion. Every step must succeed or fail with an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmckpt::module::{LoadOptions, Module};
use mmckpt::{Checkpoint, DType, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(ckpt) = Checkpoint::from_bytes(data, &OpenOptions::default()) else {
        return;
    };
    let Ok(mut module) = Module::from_checkpoint(&ckpt) else {
        return;
    };
    let non_strict = LoadOptions {
        strict: false,
        ..LoadOptions::default()
    };
    let assign = LoadOptions {
        assign: true,
        ..non_strict.clone()
    };
    let _ = module.load(&ckpt, &assign);
    for e in module.entries() {
        if let Some(bytes) = e.bytes() {
            std::hint::black_box(bytes.iter().fold(0u8, |a, &b| a ^ b));
        }
    }
    let bytes: u128 = module
        .entries()
        .iter()
        .map(|e| e.numel() as u128 * e.declared_dtype().itemsize() as u128 * 2)
        .sum();
    if bytes > 1 << 24 {
        return;
    }
    for dtype in [None, Some(DType::BFloat16)] {
        let Ok(mut copy) = Module::from_checkpoint(&ckpt) else {
            return;
        };
        if let Some(d) = dtype {
            copy.set_floating_dtype(d).expect("a fresh module has no data");
        }
        copy.materialize().expect("small modules materialize");
        let _ = copy.load(&ckpt, &non_strict);
    }
});
