//! One reader per input format. Each finds the value tree and the storages of one kind of file
//! and hands them to the shared finishing step (`checkpoint::finish`) as a `Parsed`; a
//! composite format (a shard index) opens its parts through `open` and joins their tables.
//!
//! A new single-file format is one new file here plus its line in `open`: a sniffing test on
//! the first bytes, a parser producing `Parsed`, and a `StorageSet`
//! that locates each storage's bytes.

pub mod dcp;
pub mod legacy;
pub mod safetensors;
pub mod sharded;
pub mod tar;
pub mod torchscript;
pub mod zip;

use super::{Checkpoint, OpenOptions};
use crate::container::Source;
use crate::error::{Error, Result};
use std::sync::Arc;

/// Opens a single checkpoint file (a zip archive, TorchScript included, a legacy file or a
/// safetensors file) by its first bytes.
pub(crate) fn open(source: &Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
    let bytes = source.bytes();
    if crate::container::zip::looks_like_zip(bytes) {
        zip::open(source, options)
    } else if safetensors::looks_like_safetensors(bytes) {
        // Before the pickle test: a header length of 0x280 + 2^16·k starts `80 02`.
        safetensors::open(source, options)
    } else if legacy::looks_like_pickle(bytes) {
        legacy::open(source, options)
    } else if tar::looks_like_tar(bytes) {
        tar::open(source, options)
    } else if safetensors::claims(bytes) {
        // A safetensors header whose length is wrong: its own error says so.
        safetensors::open(source, options)
    } else {
        Err(Error::format(describe_unknown_format(bytes)))
    }
}

fn describe_unknown_format(bytes: &[u8]) -> String {
    if bytes.len() >= 2 && bytes[0] == 0x80 && bytes[1] <= 5 {
        format!(
            "file is a pickle of protocol {}; torch.save files use protocol 2 or higher",
            bytes[1]
        )
    } else {
        let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!(
            "not a PyTorch checkpoint: no zip signature at byte 0, no pickle, no safetensors \
             header (first bytes: {})",
            shown.join(" ")
        )
    }
}
