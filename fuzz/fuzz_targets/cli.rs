//! The command line's output paths (`ls` as a table and JSON, `--hash`, `load`) on whatever
//! opens; the first byte picks the options. The body is `mmckpt_cli::fuzz`, which
//! cli/tests/cli.rs runs over the regression corpus and the seeds on every `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmckpt_cli::fuzz(data));
