//! The module-spec parser over any UTF-8 text; small modules are materialized.
//! The body is `mmckpt::fuzzing::spec`, which tests/hostile.rs runs on every `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmckpt::fuzzing::spec(data));
