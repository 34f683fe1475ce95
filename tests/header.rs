//! The committed include/mmckpt.h must be exactly what cbindgen generates from src/ffi.
//!
//! cbindgen runs here, as a library in a test, rather than in a build script: a build script
//! that writes include/ would write into the source tree of every crate that depends on
//! mmckpt (often a read-only registry checkout), and would make every such build compile
//! cbindgen. `scripts/gen-header.sh` runs this test with MMCKPT_WRITE_HEADER=1 to rewrite the
//! committed header; without it, a stale header fails the test with that command.

use std::path::Path;

fn generated() -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable and valid");
    let header = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen could not generate the header from src/ffi");
    let mut bytes = Vec::new();
    header.write(&mut bytes);
    String::from_utf8(bytes).expect("cbindgen writes UTF-8")
}

#[test]
fn committed_header_equals_generated() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mmckpt.h");
    let generated = generated();
    if std::env::var_os("MMCKPT_WRITE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/mmckpt.h");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/mmckpt.h is stale (or missing): regenerate it with `scripts/gen-header.sh` \
         (MMCKPT_WRITE_HEADER=1 cargo test --test header), review the diff, and commit it"
    );
}
