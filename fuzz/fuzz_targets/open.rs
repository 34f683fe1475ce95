//! The whole open path (container, pickle, torch interpretation, table), plain and strict.
//! The body is `mmckpt::fuzzing::open`, which tests/hostile.rs runs on every `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmckpt::fuzzing::open(data));
