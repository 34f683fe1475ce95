//! `walk` on inputs that start with a pickle PROTO: the legacy (pre-zip) stream reader.
//! The body is `mmckpt::fuzzing::legacy`, which tests/hostile.rs runs on every `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmckpt::fuzzing::legacy(data));
