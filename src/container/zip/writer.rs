//! A small zip writer for tests: stored entries, optional zip64 end records and extra fields,
//! optional `FB` alignment padding (as torch writes it) and data descriptors, and knobs to
//! produce broken archives.

/// One entry to write.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub data: Vec<u8>,
    /// Compression method written in both headers (the data is never compressed).
    pub method: u16,
    /// Extra general-purpose flag bits.
    pub flags: u16,
    /// Name written in the local header instead of `name`.
    pub local_name: Option<String>,
    /// Size claimed by the central directory instead of `data.len()`.
    pub cd_size: Option<u64>,
    /// Local header offset claimed by the central directory.
    pub cd_offset: Option<u64>,
    /// False: only a central directory entry is written (`cd_offset` must be set).
    pub write_local: bool,
}

impl Entry {
    pub fn new(name: &str, data: &[u8]) -> Entry {
        Entry {
            name: name.to_owned(),
            data: data.to_vec(),
            method: 0,
            flags: 0,
            local_name: None,
            cd_size: None,
            cd_offset: None,
            write_local: true,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Writer {
    pub entries: Vec<Entry>,
    /// Data alignment (0 or 1: none), by an `FB` extra field in the local header.
    pub align: u64,
    /// Write a zip64 end record and locator (torch always does).
    pub zip64: bool,
    /// Put every size and offset in zip64 extra fields (central and local headers).
    pub zip64_extras: bool,
    /// Flag bit 3: zero sizes and CRC in local headers, a descriptor after the data.
    pub descriptor: bool,
    pub comment: Vec<u8>,
}

pub struct Built {
    pub bytes: Vec<u8>,
    /// Per entry (in order): local header offset and data offset (0 when not written).
    pub local_offsets: Vec<u64>,
    pub data_offsets: Vec<u64>,
    /// Offset of each central directory entry.
    pub cd_entries: Vec<usize>,
    pub cd_offset: usize,
    /// Offset of the classic end of central directory record.
    pub eocd: usize,
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
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

fn p16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn p32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn p64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn clamp32(v: u64, force: bool) -> u32 {
    if force || v >= 0xFFFF_FFFF {
        0xFFFF_FFFF
    } else {
        v as u32
    }
}

/// A bare local header (zero sizes, no extra) for `name`, to plant inside other data.
pub fn local_header(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    p32(&mut out, 0x0403_4b50);
    p16(&mut out, 20);
    p16(&mut out, 0);
    p16(&mut out, 0);
    p32(&mut out, 0x0021_0000);
    p32(&mut out, 0);
    p32(&mut out, 0);
    p32(&mut out, 0);
    p16(&mut out, name.len() as u16);
    p16(&mut out, 0);
    out.extend_from_slice(name.as_bytes());
    out
}

impl Writer {
    pub fn new(entries: Vec<Entry>) -> Writer {
        Writer {
            entries,
            ..Writer::default()
        }
    }

    pub fn build(&self) -> Built {
        let mut out = Vec::new();
        let mut local_offsets = Vec::new();
        let mut data_offsets = Vec::new();
        let flag_bits = if self.descriptor { 1 << 3 } else { 0 } | (1 << 11);
        for e in &self.entries {
            if !e.write_local {
                local_offsets.push(0);
                data_offsets.push(0);
                continue;
            }
            let lh = out.len() as u64;
            local_offsets.push(lh);
            let name = e.local_name.as_deref().unwrap_or(&e.name);
            let size = e.data.len() as u64;
            let crc = crc32(&e.data);
            let mut extra = Vec::new();
            let local_zip64 = self.zip64_extras && !self.descriptor;
            if local_zip64 {
                p16(&mut extra, 0x0001);
                p16(&mut extra, 16);
                p64(&mut extra, size);
                p64(&mut extra, size);
            }
            if self.align > 1 {
                let base = lh + 30 + name.len() as u64 + extra.len() as u64 + 4;
                let pad = (self.align - base % self.align) % self.align;
                p16(&mut extra, 0x4246); // "FB"
                p16(&mut extra, pad as u16);
                extra.resize(extra.len() + pad as usize, b'Z');
            }
            p32(&mut out, 0x0403_4b50);
            p16(&mut out, if self.zip64_extras { 45 } else { 20 });
            p16(&mut out, flag_bits | e.flags);
            p16(&mut out, e.method);
            p32(&mut out, 0x0021_0000);
            if self.descriptor {
                p32(&mut out, 0);
                p32(&mut out, 0);
                p32(&mut out, 0);
            } else {
                p32(&mut out, crc);
                p32(&mut out, clamp32(size, local_zip64));
                p32(&mut out, clamp32(size, local_zip64));
            }
            p16(&mut out, name.len() as u16);
            p16(&mut out, extra.len() as u16);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&extra);
            data_offsets.push(out.len() as u64);
            out.extend_from_slice(&e.data);
            if self.descriptor {
                p32(&mut out, 0x0807_4b50);
                p32(&mut out, crc);
                if self.zip64_extras {
                    p64(&mut out, size);
                    p64(&mut out, size);
                } else {
                    p32(&mut out, size as u32);
                    p32(&mut out, size as u32);
                }
            }
        }

        let cd_offset = out.len();
        let mut cd_entries = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            cd_entries.push(out.len());
            let size = e.cd_size.unwrap_or(e.data.len() as u64);
            let offset = e.cd_offset.unwrap_or(local_offsets[i]);
            let force = self.zip64_extras;
            let mut extra = Vec::new();
            let mut z = Vec::new();
            if force || size >= 0xFFFF_FFFF {
                p64(&mut z, size);
                p64(&mut z, size);
            }
            if force || offset >= 0xFFFF_FFFF {
                p64(&mut z, offset);
            }
            if !z.is_empty() {
                p16(&mut extra, 0x0001);
                p16(&mut extra, z.len() as u16);
                extra.extend_from_slice(&z);
            }
            p32(&mut out, 0x0201_4b50);
            p16(&mut out, 0x031e);
            p16(&mut out, if force { 45 } else { 20 });
            p16(&mut out, flag_bits | e.flags);
            p16(&mut out, e.method);
            p32(&mut out, 0x0021_0000);
            p32(&mut out, crc32(&e.data));
            p32(&mut out, clamp32(size, force));
            p32(&mut out, clamp32(size, force));
            p16(&mut out, e.name.len() as u16);
            p16(&mut out, extra.len() as u16);
            p16(&mut out, 0); // comment
            p16(&mut out, 0); // disk
            p16(&mut out, 0); // internal attributes
            p32(&mut out, 0o100644 << 16);
            p32(&mut out, clamp32(offset, force));
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(&extra);
        }
        let cd_size = (out.len() - cd_offset) as u64;
        let n = self.entries.len() as u64;
        if self.zip64 {
            let z64 = out.len() as u64;
            p32(&mut out, 0x0606_4b50);
            p64(&mut out, 44);
            p16(&mut out, 0x031e);
            p16(&mut out, 45);
            p32(&mut out, 0);
            p32(&mut out, 0);
            p64(&mut out, n);
            p64(&mut out, n);
            p64(&mut out, cd_size);
            p64(&mut out, cd_offset as u64);
            p32(&mut out, 0x0706_4b50);
            p32(&mut out, 0);
            p64(&mut out, z64);
            p32(&mut out, 1);
        } else {
            assert!(n < 0xFFFF, "plain archives hold fewer than 65535 entries");
        }
        let eocd = out.len();
        let n16 = if n >= 0xFFFF { 0xFFFF } else { n as u16 };
        p32(&mut out, 0x0605_4b50);
        p16(&mut out, 0);
        p16(&mut out, 0);
        p16(&mut out, n16);
        p16(&mut out, n16);
        p32(&mut out, clamp32(cd_size, false));
        p32(&mut out, clamp32(cd_offset as u64, false));
        p16(&mut out, self.comment.len() as u16);
        out.extend_from_slice(&self.comment);
        Built {
            bytes: out,
            local_offsets,
            data_offsets,
            cd_entries,
            cd_offset,
            eocd,
        }
    }
}
