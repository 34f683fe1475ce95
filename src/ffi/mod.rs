//! The C ABI: the only place with `extern "C"`, raw pointers, `catch_unwind` and the
//! thread-local error text. It converts arguments and delegates; no format logic lives here.
//!
//! Enum-typed *inputs* arrive as their raw `u32` (the C type is a `uint32_t` typedef), so any
//! value a C caller passes is handled without undefined behaviour.
#![allow(non_camel_case_types)]
// Exported functions take raw pointers from C by design; each one checks them (arg_ref,
// out_ptr, …) and the header documents what callers must guarantee.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod checkpoint;
mod chunks;
mod convert;
mod dlpack;
mod guard;
mod module;
mod options;
mod types;
mod values;
mod writer;

// No re-exports: the exported symbols are `#[no_mangle]` (in the library whatever the module's
// visibility), and the Rust API is the crate root's, not the C types.
