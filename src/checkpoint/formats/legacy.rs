//! The legacy `torch.save` format (`_use_new_zipfile_serialization=False`, and every file saved
//! before torch 1.6): a run of pickles — the magic number, the protocol version 1001, the sys
//! info dict, the object, the list of storage keys — then, for each key in that list's order,
//! an 8-byte little-endian element count and the storage's raw bytes. No alignment anywhere.
//!
//! The byte count of a storage is its element count times the element size of the storage
//! class the object pickle names for that key (`torch.FloatStorage` …; untyped storages count
//! bytes), so the storages can only be located after the object pickle has been read.
//!
//! Byte order: since torch 0.4 the writer (`THPStorage_writeFileRaw`) converts the counts and
//! the data to little-endian on big-endian hosts, and the reader (`_legacy_load`) never looks
//! at the sys info's `little_endian`; mmckpt does the same. The sys info's `type_sizes` must be
//! the sizes every torch build has (`short` 2, `int` 4, `long` 4 or 8).

use crate::checkpoint::storage::{Locations, Storage, StorageKey, StorageSet, SwapUnits};
use crate::checkpoint::{finish, Checkpoint, Format, OpenOptions, Parsed};
use crate::container::{PageVec, Source};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle::{self, Arena, NodeId, Value};
use crate::torch::{StorageId, StorageResolver};
use std::collections::HashMap;
use std::sync::Arc;

/// `0x1950a86a20f9469cfc6c` as pickle's LONG1 payload (little-endian two's complement).
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The legacy format's protocol version.
pub const PROTOCOL_VERSION: i64 = 1001;

/// True when the file starts like a pickle of protocol 2–5 (the legacy format, or some other
/// pickle: [`parse`] tells them apart by the magic number).
pub fn looks_like_pickle(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1])
}

/// What the pickles at the start of a legacy file say.
#[derive(Debug)]
pub struct LegacyHeader {
    /// The saved object.
    pub object: NodeId,
    /// The storage keys, in the order their bytes follow.
    pub storage_keys: Vec<String>,
    /// Element size of each key's storage class, from the object's persistent ids (the first
    /// use of a key decides, as in torch); `None` when the class is unknown.
    pub itemsizes: HashMap<String, Option<usize>>,
    /// Absolute offset of the first storage's element count.
    pub data_start: usize,
    /// The sys info's `little_endian` (informational: the data is little-endian either way).
    #[allow(dead_code)] // kept to say what the file declared; nothing depends on it
    pub little_endian: bool,
}

/// Where one storage's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyRecord {
    /// Elements, as the 8-byte count says.
    pub numel: u64,
    pub itemsize: usize,
    /// Absolute offset of the first data byte.
    pub data_offset: u64,
    pub nbytes: u64,
}

fn load_next(
    arena: &mut Arena,
    bytes: &[u8],
    pos: &mut usize,
    limits: &pickle::PickleLimits,
    max_pickle_bytes: u64,
    what: &str,
) -> Result<NodeId> {
    let start = *pos;
    if start >= bytes.len() {
        return Err(Error::format(format!(
            "legacy file ends at byte {start} before its {what} pickle"
        )));
    }
    let (node, used) = pickle::load(arena, &bytes[start..], limits)
        .map_err(|e| e.context(format!("legacy {what} pickle at byte {start}")))?;
    *pos = start + used;
    if *pos as u64 > max_pickle_bytes {
        return Err(Error::limit(format!(
            "the legacy file's pickles take more than {max_pickle_bytes} bytes"
        )));
    }
    Ok(node)
}

fn key_of(arena: &Arena, node: NodeId) -> Option<String> {
    match arena.get(node) {
        Value::Str(s) => Some(arena.str(*s).to_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Element size of a storage class global, including the quantized classes (whose tensors
/// mmckpt does not represent, but whose bytes must be stepped over).
pub fn storage_class_itemsize(module: &str, name: &str) -> Option<usize> {
    match (module, name) {
        ("torch", "UntypedStorage") | ("torch.storage", "UntypedStorage") => Some(1),
        ("torch", "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage") => {
            Some(1)
        }
        ("torch", "QInt32Storage") => Some(4),
        ("torch", n) => DType::from_storage_class(n).map(|d| d.itemsize()),
        _ => None,
    }
}

fn check_sys_info(arena: &Arena, node: NodeId) -> Result<bool> {
    let Value::Dict { items, .. } = arena.get(node) else {
        return Err(Error::format("legacy sys info pickle is not a dict"));
    };
    let get = |key: &str| {
        items
            .iter()
            .find(|&&(k, _)| arena.as_str(k) == Some(key))
            .map(|&(_, v)| v)
    };
    let little_endian = match get("little_endian").map(|v| arena.get(v)) {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(Error::format(
                "legacy sys info: little_endian is not a bool",
            ))
        }
    };
    if let Some(sizes) = get("type_sizes") {
        let Value::Dict { items: sizes, .. } = arena.get(sizes) else {
            return Err(Error::format("legacy sys info: type_sizes is not a dict"));
        };
        for &(k, v) in sizes {
            let name = arena.as_str(k).unwrap_or("?");
            let allowed: &[i64] = match name {
                "short" => &[2],
                "int" => &[4],
                "long" => &[4, 8],
                _ => continue,
            };
            let size = arena.as_int(v);
            if !size.is_some_and(|s| allowed.contains(&s)) {
                return Err(Error::format(format!(
                    "legacy sys info: type_sizes says '{name}' is {} bytes; expected {}",
                    size.map_or("not an int".to_string(), |s| s.to_string()),
                    allowed
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )));
            }
        }
    }
    Ok(little_endian)
}

/// Reads the five pickles at the start of a legacy file into `arena`.
pub fn parse(
    arena: &mut Arena,
    bytes: &[u8],
    limits: &pickle::PickleLimits,
    max_pickle_bytes: u64,
) -> Result<LegacyHeader> {
    let mut pos = 0usize;
    let magic = load_next(
        arena,
        bytes,
        &mut pos,
        limits,
        max_pickle_bytes,
        "magic number",
    )?;
    match arena.get(magic) {
        Value::BigInt(b) if b[..] == MAGIC => {}
        _ => {
            return Err(Error::format(
                "file is a pickle that does not start with torch's magic number \
                 0x1950a86a20f9469cfc6c: not a torch.save file",
            ))
        }
    }
    let version = load_next(arena, bytes, &mut pos, limits, max_pickle_bytes, "protocol")?;
    match arena.as_int(version) {
        Some(PROTOCOL_VERSION) => {}
        other => {
            return Err(Error::format(format!(
                "legacy protocol version is {}; expected {PROTOCOL_VERSION}",
                other.map_or("not an int".to_string(), |v| v.to_string())
            )))
        }
    }
    let sys_info = load_next(arena, bytes, &mut pos, limits, max_pickle_bytes, "sys info")?;
    let little_endian = check_sys_info(arena, sys_info)?;
    let first_object_node = arena.len();
    let object = load_next(arena, bytes, &mut pos, limits, max_pickle_bytes, "object")?;
    let object_nodes = first_object_node..arena.len();
    let keys_node = load_next(
        arena,
        bytes,
        &mut pos,
        limits,
        max_pickle_bytes,
        "storage keys",
    )?;
    let items = arena
        .as_seq(keys_node)
        .ok_or_else(|| Error::format("legacy storage key list is not a list"))?;
    let storage_keys = items
        .iter()
        .map(|&k| {
            key_of(arena, k).ok_or_else(|| {
                Error::format("legacy storage key list holds a value that is not a string")
            })
        })
        .collect::<Result<Vec<String>>>()?;

    check_key_types(arena, object_nodes.clone(), items)?;

    // Each key's element size: the storage class of its first persistent id.
    let mut itemsizes: HashMap<String, Option<usize>> = HashMap::new();
    let mut roles = KeyRoles::default();
    for id in object_nodes {
        let Value::PersistentId(pid) = arena.get(id as NodeId) else {
            continue;
        };
        let Some(items) = arena.as_seq(*pid) else {
            continue;
        };
        if items.len() < 5 || arena.as_str(items[0]) != Some("storage") {
            continue; // malformed ids are reported when the tensor is interpreted
        }
        let Some(key) = key_of(arena, items[2]) else {
            continue;
        };
        let itemsize = arena
            .global_name(items[1])
            .and_then(|(m, n)| storage_class_itemsize(m, n));
        let view = items
            .get(5)
            .and_then(|&v| arena.as_seq(v))
            .and_then(|view| {
                let [view_key, offset, size] = view else {
                    return None; // malformed: reported when the tensor is interpreted
                };
                Some(KeyRole::View {
                    root: key.clone(),
                    view_key: key_of(arena, *view_key)?,
                    offset: arena.as_int(*offset)?,
                    size: arena.as_int(*size)?,
                })
            });
        roles.claim(KeyRole::Root(key.clone()))?;
        if let Some(view) = view {
            roles.claim(view)?;
        }
        itemsizes.entry(key).or_insert(itemsize);
    }
    Ok(LegacyHeader {
        object,
        storage_keys,
        itemsizes,
        data_start: pos,
        little_endian,
    })
}

/// Bits of [`check_key_types`]: a key spelled as a str, as an int.
const STR_KEY: u8 = 1;
const INT_KEY: u8 = 2;

fn key_type(arena: &Arena, node: NodeId) -> u8 {
    match arena.get(node) {
        Value::Str(_) => STR_KEY,
        Value::Int(_) => INT_KEY,
        _ => 0,
    }
}

/// torch's `_legacy_load` keeps storages in a dict keyed by the pickled keys, where the int
/// `1` and the str `'1'` are different keys (`serialization.py:1855-1858`, and
/// `:1927-1931`, `if key not in deserialized_objects: raise AssertionError`), while mmckpt
/// names storages by text. A key text used as both an int and a str by the persistent ids is
/// two storages in torch: refused (`UNSUPPORTED`). A key of the key list whose type differs
/// from the persistent ids' makes torch fail: refused as it does (`FORMAT`).
fn check_key_types(
    arena: &Arena,
    object_nodes: std::ops::Range<usize>,
    key_list: &[NodeId],
) -> Result<()> {
    let mut types: HashMap<String, u8> = HashMap::new();
    for id in object_nodes {
        let Value::PersistentId(pid) = arena.get(id as NodeId) else {
            continue;
        };
        let Some(items) = arena.as_seq(*pid) else {
            continue;
        };
        let view_key = items
            .get(5)
            .and_then(|&v| arena.as_seq(v))
            .and_then(|view| view.first().copied());
        for key in items.get(2).copied().into_iter().chain(view_key) {
            let Some(text) = key_of(arena, key) else {
                continue;
            };
            let seen = types.entry(text).or_insert(0);
            *seen |= key_type(arena, key);
            if *seen == STR_KEY | INT_KEY {
                return Err(Error::unsupported(format!(
                    "legacy storage key {} is used both as an int and as a str: torch keeps two \
                     storages under them, mmckpt names storages by text",
                    key_of(arena, key).unwrap_or_default()
                )));
            }
        }
    }
    for &key in key_list {
        let Some(text) = key_of(arena, key) else {
            continue;
        };
        let listed = key_type(arena, key);
        if let Some(&used) = types.get(&text) {
            if used != listed {
                let (spelled, as_used) = if listed == INT_KEY {
                    (text.clone(), format!("'{text}'"))
                } else {
                    (format!("'{text}'"), text.clone())
                };
                return Err(Error::format(format!(
                    "legacy storage key list names {spelled}, but the persistent ids use \
                     {as_used} (torch: \"storage key {spelled} not found in \
                     deserialized_objects\")"
                )));
            }
        }
    }
    Ok(())
}

/// What a legacy storage key names: a root storage, or a view of one.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyRole {
    Root(String),
    View {
        root: String,
        view_key: String,
        offset: i64,
        size: i64,
    },
}

/// The role of every key the persistent ids use. torch's `_legacy_load` keeps roots and views
/// in one dict (`deserialized_objects`), so a key used both ways, or as two different views,
/// makes torch alias one storage's bytes into another's depending on the order of the pickle
/// and of the records: refused.
#[derive(Default)]
struct KeyRoles {
    by_key: HashMap<String, KeyRole>,
}

impl KeyRoles {
    fn claim(&mut self, role: KeyRole) -> Result<()> {
        let key = match &role {
            KeyRole::Root(key) => key,
            KeyRole::View { view_key, .. } => view_key,
        };
        let Some(earlier) = self.by_key.get(key) else {
            self.by_key.insert(key.clone(), role);
            return Ok(());
        };
        if *earlier == role {
            return Ok(());
        }
        let describe = |role: &KeyRole| match role {
            KeyRole::Root(_) => "a root storage".to_string(),
            KeyRole::View {
                root, offset, size, ..
            } => format!("a view of '{root}' (offset {offset}, {size} elements)"),
        };
        Err(Error::format(format!(
            "legacy storage key '{key}' is both {} and {}: torch would read one storage's \
             bytes into the other",
            describe(earlier),
            describe(&role)
        )))
    }
}

/// Walks the storage sections after the pickles: for each key, its count and bytes.
pub fn locate_storages(
    bytes: &[u8],
    header: &LegacyHeader,
) -> Result<HashMap<String, LegacyRecord>> {
    let len = bytes.len() as u64;
    let mut pos = header.data_start as u64;
    let mut records = HashMap::with_capacity(header.storage_keys.len());
    for key in &header.storage_keys {
        let itemsize = match header.itemsizes.get(key) {
            Some(Some(size)) => *size as u64,
            Some(None) => {
                return Err(Error::unsupported(format!(
                    "legacy storage '{key}' has a storage class of unknown element size, so \
                     its bytes (at byte {pos}) and those of every later storage cannot be found"
                )))
            }
            None => {
                return Err(Error::format(format!(
                    "legacy storage key list names '{key}', which no tensor in the object uses"
                )))
            }
        };
        if len.saturating_sub(pos) < 8 {
            return Err(Error::format(format!(
                "legacy storage '{key}': the file ends at byte {len}, inside the 8-byte element \
                 count at byte {pos}"
            )));
        }
        let at = pos as usize;
        let mut count = [0u8; 8];
        count.copy_from_slice(&bytes[at..at + 8]);
        let numel = u64::from_le_bytes(count);
        let data_offset = pos + 8;
        let nbytes = numel.checked_mul(itemsize).ok_or_else(|| {
            Error::format(format!(
                "legacy storage '{key}': element count {numel} (at byte {pos}) overflows"
            ))
        })?;
        let end = data_offset
            .checked_add(nbytes)
            .filter(|&end| end <= len)
            .ok_or_else(|| {
                Error::format(format!(
                    "legacy storage '{key}' declares {numel} elements of {itemsize} bytes \
                     ({nbytes} bytes from byte {data_offset}), but the file ends at byte {len}"
                ))
            })?;
        let record = LegacyRecord {
            numel,
            itemsize: itemsize as usize,
            data_offset,
            nbytes,
        };
        if records.insert(key.clone(), record).is_some() {
            return Err(Error::format(format!(
                "legacy storage key list names '{key}' twice"
            )));
        }
        pos = end;
    }
    Ok(records)
}

/// Opens a legacy file.
pub(crate) fn open(source: &Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
    if options.verify_crc {
        return Err(Error::unsupported(
            "a CRC check was asked for, but the legacy format (a pickle stream, not a zip \
             archive) records no checksums",
        ));
    }
    let bytes = source.bytes();
    let mut arena = Arena::new();
    let header = parse(
        &mut arena,
        bytes,
        &options.limits.pickle,
        options.limits.max_pickle_bytes,
    )?;
    let records = locate_storages(bytes, &header)?;
    let storages = LegacyStorages::new(source, &records);
    let parsed = Parsed {
        format: Format::Legacy,
        arena,
        top: header.object,
        // The writer converts to little-endian (see the module doc).
        byte_order_big: false,
        storages,
    };
    finish(source.clone(), parsed, options)
}

/// Storages of a legacy file: slices of the file (or, for old torch's storage views, slices
/// of a root storage), located by [`locate_storages`].
pub(super) struct LegacyStorages<'a> {
    source: &'a Arc<Source>,
    records: &'a std::collections::HashMap<String, LegacyRecord>,
    storages: PageVec<Storage>,
    by_key: crate::hash::HashMap<String, usize>,
    locations: Locations,
}

impl<'a> LegacyStorages<'a> {
    /// Storages of `source` located by `records` (also a tar checkpoint's, which stores them
    /// as a legacy file does).
    pub(super) fn new(
        source: &'a Arc<Source>,
        records: &'a std::collections::HashMap<String, LegacyRecord>,
    ) -> LegacyStorages<'a> {
        LegacyStorages {
            source,
            records,
            storages: PageVec::with_capacity(records.len()),
            by_key: crate::hash::HashMap::default(),
            locations: Locations::default(),
        }
    }
}

impl StorageResolver for LegacyStorages<'_> {
    fn resolve(&mut self, _persistent: NodeId, id: &StorageId<'_>) -> Result<(usize, u64)> {
        let own_key: &str = id.legacy_view.as_ref().map_or(&id.key, |(view, _, _)| view);
        if let Some(&index) = self.by_key.get(own_key) {
            return Ok((index, self.storages[index].len() as u64));
        }
        let record = self.records.get(&*id.key).ok_or_else(|| {
            Error::format(format!(
                "storage '{}' is not in the legacy file's storage key list",
                id.key
            ))
        })?;
        let itemsize = id.dtype.map_or(1, |d| d.itemsize() as u64);
        let overflow = || Error::format(format!("storage '{}': size overflows", id.key));
        let (start, len) =
            match &id.legacy_view {
                None => {
                    let declared = id.declared_bytes().ok_or_else(overflow)?;
                    if declared > record.nbytes {
                        return Err(Error::format(format!(
                            "storage '{}' declares {} elements of {} ({declared} bytes) but the \
                         file holds {} bytes for it at byte {}",
                            id.key,
                            id.numel,
                            id.class_name(),
                            record.nbytes,
                            record.data_offset
                        )));
                    }
                    (record.data_offset, declared)
                }
                Some((view, offset, size)) => {
                    let start = offset.checked_mul(itemsize).ok_or_else(overflow)?;
                    let len = size.checked_mul(itemsize).ok_or_else(overflow)?;
                    let end = start.checked_add(len).ok_or_else(overflow)?;
                    if end > record.nbytes {
                        return Err(Error::format(format!(
                        "storage view '{view}' (elements {offset}..{offset}+{size} of {}) ends at \
                         byte {end} of storage '{}', past its {} bytes",
                        id.class_name(), id.key, record.nbytes
                    )));
                    }
                    (record.data_offset + start, len)
                }
            };
        let index = self.storages.len();
        self.storages.push(Storage::in_file(
            StorageKey::new(own_key),
            self.locations.intern(id.location),
            self.source,
            start as usize,
            len as usize,
        ));
        self.by_key.insert(own_key.to_string(), index);
        Ok((index, len))
    }

    fn expected_storages(&self) -> usize {
        self.records.len()
    }
}

impl StorageSet for LegacyStorages<'_> {
    /// Legacy files are little-endian: no storage is ever byte-swapped.
    fn into_storages(self) -> (PageVec<Storage>, SwapUnits) {
        (self.storages, SwapUnits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(keys: &[&str], sizes: &[(&str, Option<usize>)], start: usize) -> LegacyHeader {
        LegacyHeader {
            object: 0,
            storage_keys: keys.iter().map(|k| k.to_string()).collect(),
            itemsizes: sizes.iter().map(|(k, s)| (k.to_string(), *s)).collect(),
            data_start: start,
            little_endian: true,
        }
    }

    #[test]
    fn storages_follow_each_other_without_alignment() {
        let mut bytes = vec![0xAAu8; 3];
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(&[9, 9, 9]);
        let h = header(&["b", "a"], &[("a", Some(1)), ("b", Some(4))], 3);
        let r = locate_storages(&bytes, &h).unwrap();
        assert_eq!(r["b"].data_offset, 11);
        assert_eq!(r["b"].nbytes, 8);
        assert_eq!(r["a"].data_offset, 27);
        assert_eq!(r["a"].nbytes, 3);
    }

    #[test]
    fn cut_and_oversized_storages_are_format_errors() {
        let mut bytes = 5u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 19]);
        let h = header(&["k"], &[("k", Some(4))], 0);
        let e = locate_storages(&bytes, &h).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Format);
        assert!(e.message.contains("'k'") && e.message.contains("ends at byte 27"));
        let e = locate_storages(&bytes[..5], &h).unwrap_err();
        assert!(e.message.contains("8-byte element count"), "{}", e.message);
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        let e = locate_storages(&huge, &h).unwrap_err();
        assert!(e.message.contains("overflows"), "{}", e.message);
        let h = header(&["k"], &[("k", None)], 0);
        let e = locate_storages(&bytes, &h).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unsupported);
        let h = header(&["x"], &[], 0);
        assert!(locate_storages(&bytes, &h).is_err());
    }
}
