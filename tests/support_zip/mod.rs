//! A minimal writer of torch-style zip archives (stored entries, data aligned to 64 bytes by an
//! `FB` extra field, a classic end record) for hand-made hostile inputs in the integration
//! tests. Valid checkpoints for tests come from torch (tests/fixtures); these bytes exist only to
//! carry malformed or malicious pickles.
#![allow(dead_code)]

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `records` are (full name, data); names are written as given.
pub fn zip(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in records {
        let offset = out.len() as u32;
        let base = out.len() + 30 + name.len() + 4;
        let pad = (64 - base % 64) % 64;
        let crc = crc32(data);
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&((4 + pad) as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&0x4246u16.to_le_bytes());
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.extend(std::iter::repeat(b'Z').take(pad));
        out.extend_from_slice(data);

        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, internal, external attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let n = (records.len() as u16).to_le_bytes();
    out.extend_from_slice(&n);
    out.extend_from_slice(&n);
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
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
