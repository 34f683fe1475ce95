//! The safetensors header parser, then the whole walk on inputs that open.
//! The body is `mmckpt::fuzzing::safetensors`, which tests/hostile.rs runs on every `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmckpt::fuzzing::safetensors(data));
