//! Open, then walk everything: every name looked up, every tensor's bytes read, every value visited.
//! The body is `mmckpt::fuzzing::walk`, which tests/hostile.rs runs on every `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmckpt::fuzzing::walk(data));
