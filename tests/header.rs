//! The committed include/mmckpt.h must be exactly what cbindgen generates from src/ffi.

#[test]
fn committed_header_equals_generated() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/mmckpt.h"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/mmckpt.h");
    let committed = std::fs::read_to_string(path).expect("include/mmckpt.h is missing");
    assert!(
        committed == generated,
        "include/mmckpt.h is stale: build outside CI (cargo build) to regenerate it, then commit it"
    );
}
