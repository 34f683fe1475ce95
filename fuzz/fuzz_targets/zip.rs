//! The zip container alone: every record's data read, and parse and parse_with (local headers read through a reader) agree.
//! The body is `mmckpt::fuzzing::zip`, which tests/hostile.rs runs on every `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmckpt::fuzzing::zip(data));
