//! The unit tests' zip writer. The `zip` crate writes a valid archive of stored records (data
//! aligned by its padding extra field when asked, zip64 end records and extra fields when
//! asked, data descriptors in its streaming mode); the knobs that make an archive broken are
//! byte patches applied afterwards to what it wrote, at offsets its reader reports.

use std::collections::HashSet;
use std::io::{Cursor, Seek, Write};

use zip::write::FullFileOptions;
use zip::{CompressionMethod, ZipWriter};

const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// An extra-field id the crate writes as given; patched into the zip64 id afterwards (the
/// crate refuses a zip64 field from its caller).
const PLACEHOLDER_EXTRA_ID: u16 = 0xCAFE;
const U32_SENTINEL: u32 = 0xFFFF_FFFF;

/// One entry to write.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub data: Vec<u8>,
    /// Compression method written in both headers (the data is never compressed).
    pub method: u16,
    /// Extra general-purpose flag bits.
    pub flags: u16,
    /// Name written in the local header instead of `name` (of the same length).
    pub local_name: Option<String>,
    /// Size claimed by the central directory instead of `data.len()`.
    pub cd_size: Option<u64>,
    /// Local header offset claimed by the central directory.
    pub cd_offset: Option<u64>,
    /// False: the entry's own local header is not meant to be referenced (set `cd_offset`);
    /// its offsets in [`Built`] are 0.
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
    /// Data alignment (0 or 1: none), by the crate's padding extra field in the local header.
    pub align: u64,
    /// Write a zip64 end record and locator (torch always does).
    pub zip64: bool,
    /// Zip64 extra fields for every record (the crate's `large_file`).
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

fn set_u16(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn set_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}
fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// A bare local header (zero sizes and CRC, no extra) for `name`, to plant inside other data:
/// the one the crate writes for an empty record.
pub fn local_header(name: &str) -> Vec<u8> {
    let built = Writer::new(vec![Entry::new(name, b"")]).build();
    let header = &built.bytes[..LOCAL_LEN + name.len()];
    assert_eq!(get_u16(header, 28), 0, "no extra field");
    header.to_vec()
}

/// A name of the same length as `name` that is not in `used` (the crate refuses to write two
/// records of one name; the real name is patched in afterwards).
fn stand_in(name: &str, used: &HashSet<String>) -> String {
    let (stem, _) = name.split_at(name.len() - 1);
    (b'A'..=b'Z')
        .map(|c| format!("{stem}{}", c as char))
        .find(|candidate| !used.contains(candidate))
        .expect("a free stand-in name")
}

impl Writer {
    pub fn new(entries: Vec<Entry>) -> Writer {
        Writer {
            entries,
            ..Writer::default()
        }
    }

    /// The names the crate writes: each entry's own, or a stand-in for a repeated one.
    fn written_names(&self) -> Vec<String> {
        let mut used = HashSet::new();
        let mut written = Vec::new();
        for e in &self.entries {
            let name = if used.contains(&e.name) {
                stand_in(&e.name, &used)
            } else {
                e.name.clone()
            };
            used.insert(name.clone());
            written.push(name);
        }
        written
    }

    fn write<W: Write + Seek>(&self, zip: &mut ZipWriter<W>, names: &[String]) {
        for (e, name) in self.entries.iter().zip(names) {
            let mut options = FullFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .large_file(self.zip64_extras);
            if self.align > 1 {
                options = options.with_alignment(u16::try_from(self.align).unwrap());
            }
            if e.cd_offset
                .is_some_and(|offset| offset >= u64::from(U32_SENTINEL))
            {
                // Room in the central entry for a zip64 field holding the offset.
                options
                    .add_extra_data(PLACEHOLDER_EXTRA_ID, Box::new([0; 8]), true)
                    .unwrap();
            }
            zip.start_file(name.as_str(), options).unwrap();
            zip.write_all(&e.data).unwrap();
        }
        zip.set_raw_comment(self.comment.clone().into_boxed_slice());
        if self.zip64 {
            // An (empty) zip64 comment makes the crate write the zip64 end records.
            zip.set_raw_zip64_comment(Some(Box::new([])));
        }
    }

    pub fn build(&self) -> Built {
        let names = self.written_names();
        let mut bytes = if self.descriptor {
            let mut zip = ZipWriter::new_stream(Vec::new());
            self.write(&mut zip, &names);
            zip.finish().unwrap().into_inner()
        } else {
            let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
            self.write(&mut zip, &names);
            zip.finish().unwrap().into_inner()
        };

        // Where the crate put everything, as its reader sees it. It reads the archive without
        // its comment, which may hold a decoy end record.
        let eocd = bytes.len() - 22 - self.comment.len();
        let mut plain = bytes[..eocd + 22].to_vec();
        set_u16(&mut plain, eocd + 20, 0);
        let mut archive = zip::ZipArchive::new(Cursor::new(plain)).unwrap();
        let mut local_offsets = Vec::new();
        let mut data_offsets = Vec::new();
        let mut cd_entries = Vec::new();
        assert_eq!(archive.len(), names.len());
        for (i, name) in names.iter().enumerate() {
            let file = archive.by_index_raw(i).unwrap();
            assert_eq!(file.name_raw(), name.as_bytes());
            local_offsets.push(file.header_start());
            data_offsets.push(file.data_start());
            cd_entries.push(usize::try_from(file.central_header_start()).unwrap());
        }
        drop(archive);
        let cd_offset = cd_entries.first().copied().unwrap_or(eocd);

        for (i, e) in self.entries.iter().enumerate() {
            let (central, local) = (cd_entries[i], local_offsets[i] as usize);
            let name_len = e.name.len();
            assert_eq!(names[i].len(), name_len);
            bytes[central + CENTRAL_LEN..central + CENTRAL_LEN + name_len]
                .copy_from_slice(e.name.as_bytes());
            let local_name = e.local_name.as_deref().unwrap_or(&e.name);
            assert_eq!(local_name.len(), name_len, "local names keep their length");
            bytes[local + LOCAL_LEN..local + LOCAL_LEN + name_len]
                .copy_from_slice(local_name.as_bytes());
            if e.method != 0 {
                set_u16(&mut bytes, local + 8, e.method);
                set_u16(&mut bytes, central + 10, e.method);
            }
            if e.flags != 0 {
                let (l, c) = (get_u16(&bytes, local + 6), get_u16(&bytes, central + 8));
                set_u16(&mut bytes, local + 6, l | e.flags);
                set_u16(&mut bytes, central + 8, c | e.flags);
            }
            if let Some(size) = e.cd_size {
                set_central_size(&mut bytes, central, size);
            }
            if let Some(offset) = e.cd_offset {
                set_central_offset(&mut bytes, central, offset);
            }
        }
        for (i, e) in self.entries.iter().enumerate() {
            if !e.write_local {
                local_offsets[i] = 0;
                data_offsets[i] = 0;
            }
        }
        Built {
            bytes,
            local_offsets,
            data_offsets,
            cd_entries,
            cd_offset,
            eocd,
        }
    }
}

/// The extra fields of the central entry at `central`: (id, offset of the body, body length).
fn central_extras(bytes: &[u8], central: usize) -> Vec<(u16, usize, usize)> {
    let name_len = usize::from(get_u16(bytes, central + 28));
    let extra_len = usize::from(get_u16(bytes, central + 30));
    let start = central + CENTRAL_LEN + name_len;
    let mut fields = Vec::new();
    let mut pos = start;
    while pos + 4 <= start + extra_len {
        let len = usize::from(get_u16(bytes, pos + 2));
        fields.push((get_u16(bytes, pos), pos + 4, len));
        pos += 4 + len;
    }
    fields
}

/// Makes the central entry claim `size` for both sizes: in its zip64 field when it has one
/// (both size fields then defer to it), else in the 32-bit fields.
fn set_central_size(bytes: &mut [u8], central: usize, size: u64) {
    let zip64 = central_extras(bytes, central)
        .into_iter()
        .find(|&(id, _, len)| id == ZIP64_EXTRA_ID && len >= 16);
    match zip64 {
        Some((_, body, _)) => {
            set_u32(bytes, central + 20, U32_SENTINEL);
            set_u32(bytes, central + 24, U32_SENTINEL);
            set_u64(bytes, body, size);
            set_u64(bytes, body + 8, size);
        }
        None => {
            let size = u32::try_from(size)
                .ok()
                .filter(|&s| s != U32_SENTINEL)
                .expect("a 32-bit size without a zip64 field");
            set_u32(bytes, central + 20, size);
            set_u32(bytes, central + 24, size);
        }
    }
}

/// Makes the central entry claim `offset` for its local header: in the 32-bit field, or in
/// the zip64 field made from the placeholder [`Writer::build`] reserved for it.
fn set_central_offset(bytes: &mut [u8], central: usize, offset: u64) {
    match u32::try_from(offset).ok().filter(|&o| o != U32_SENTINEL) {
        Some(offset) => {
            assert_ne!(get_u32(bytes, central + 42), U32_SENTINEL);
            set_u32(bytes, central + 42, offset);
        }
        None => {
            let extras = central_extras(bytes, central);
            assert!(
                !extras.iter().any(|&(id, _, _)| id == ZIP64_EXTRA_ID)
                    && get_u32(bytes, central + 20) != U32_SENTINEL
                    && get_u32(bytes, central + 24) != U32_SENTINEL,
                "the offset must be the zip64 field's only value"
            );
            let (_, body, _) = extras
                .into_iter()
                .find(|&(id, _, _)| id == PLACEHOLDER_EXTRA_ID)
                .expect("the placeholder extra field");
            set_u16(bytes, body - 4, ZIP64_EXTRA_ID);
            set_u64(bytes, body, offset);
            set_u32(bytes, central + 42, U32_SENTINEL);
        }
    }
}
