//! Gives the shared library its SONAME, `libmmckpt.so.MAJOR`, as cargo-c does with
//! `version_suffix_components = 1`: programs linked against it record that name and find the
//! installed `lib/libmmckpt.so.0` (scripts/install.sh) rather than a build-tree path.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    // ELF platforms only: Mach-O names a library with -install_name, Windows has no SONAME.
    let elf = family == "unix" && !matches!(os.as_str(), "macos" | "ios" | "tvos" | "watchos");
    if elf {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmmckpt.so.{major}");
    }
}
