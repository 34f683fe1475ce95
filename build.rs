//! Generates include/mmckpt.h from the ffi layer with cbindgen. The header is committed; a
//! test (tests/header.rs) fails when the committed file differs from what this produces.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CI");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let header = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    header.write_to_file(out_dir.join("mmckpt.h"));
    // Keep the committed copy fresh for developers, but never touch it when unchanged (mtime
    // stays put), and never in CI, where tests/header.rs must see a stale header fail.
    let committed = crate_dir.join("include/mmckpt.h");
    let mut fresh = Vec::new();
    header.write(&mut fresh);
    if std::fs::read(&committed).ok().as_deref() != Some(&fresh[..])
        && std::env::var_os("CI").is_none()
        && std::env::var_os("MMCKPT_NO_HEADER_WRITE").is_none()
    {
        std::fs::create_dir_all(committed.parent().unwrap()).expect("create include/");
        std::fs::write(&committed, &fresh).expect("write include/mmckpt.h");
    }
}
