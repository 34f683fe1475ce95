//! The module-spec parser over arbitrary text; small modules are also materialized.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmckpt::module::Module;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut module) = Module::from_spec(text) else {
        return;
    };
    let bytes: u128 = module
        .entries()
        .iter()
        .map(|e| e.numel() as u128 * e.dtype().itemsize() as u128)
        .sum();
    // A spec may declare terabytes (that is legal); allocate only what a fuzzer can afford.
    if bytes <= 1 << 24 {
        module.materialize().expect("small modules materialize");
        assert!(module.entries().iter().all(|e| e.has_data()));
    }
});
