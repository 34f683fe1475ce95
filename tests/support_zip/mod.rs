//! Torch-style zip archives (stored entries, data aligned to 64 bytes) for hand-made hostile
//! inputs in the integration tests, written by the `zip` crate. Valid checkpoints for tests
//! come from torch (tests/fixtures); these bytes exist only to carry malformed or malicious
//! pickles.
#![allow(dead_code)]

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// `records` are (full name, data); names are written as given.
pub fn zip(records: &[(&str, &[u8])]) -> Vec<u8> {
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .with_alignment(64);
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in records {
        writer.start_file(*name, options).expect("a new record");
        writer.write_all(data).expect("record data");
    }
    writer.finish().expect("the end records").into_inner()
}

/// A checkpoint whose `archive/data.pkl` is `pickle`, with extra `archive/<name>` records.
pub fn checkpoint(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut names: Vec<(String, &[u8])> = vec![("archive/data.pkl".into(), pickle)];
    for (key, data) in storages {
        names.push((format!("archive/data/{key}"), data));
    }
    let records: Vec<(&str, &[u8])> = names.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    zip(&records)
}
/// Pickle building blocks (protocol 2 opcodes).
pub mod pk {
    pub fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }
    pub fn unicode(s: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend_from_slice(&(s.len() as u32).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    }
    pub fn int(i: i32) -> Vec<u8> {
        let mut v = vec![b'J'];
        v.extend_from_slice(&i.to_le_bytes());
        v
    }
    /// `_rebuild_tensor_v2(('storage', torch.FloatStorage, key, 'cpu', numel), offset, size,
    /// stride, False, OrderedDict())` with the persistent id built by BINPERSID.
    pub fn tensor(key: &str, numel: i32, offset: i32, size: &[i32], stride: &[i32]) -> Vec<u8> {
        let mut v = global("torch._utils", "_rebuild_tensor_v2");
        v.push(b'(');
        v.push(b'(');
        v.extend(unicode("storage"));
        v.extend(global("torch", "FloatStorage"));
        v.extend(unicode(key));
        v.extend(unicode("cpu"));
        v.extend(int(numel));
        v.push(b't');
        v.push(b'Q');
        v.extend(int(offset));
        v.push(b'(');
        for &s in size {
            v.extend(int(s));
        }
        v.push(b't');
        v.push(b'(');
        for &s in stride {
            v.extend(int(s));
        }
        v.push(b't');
        v.push(0x89); // NEWFALSE
        v.extend(global("collections", "OrderedDict"));
        v.push(b')');
        v.push(b'R');
        v.push(b't');
        v.push(b'R');
        v
    }
}
