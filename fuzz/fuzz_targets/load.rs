//! Open, then a module built from the checkpoint and loaded (assign; copy and bfloat16 when small).
//! The body is `mmckpt::fuzzing::load`, which tests/hostile.rs runs on every `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmckpt::fuzzing::load(data));
