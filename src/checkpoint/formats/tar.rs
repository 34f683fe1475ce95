//! The pre-1.0 `torch.save` format: a tar archive (torch ≤ 0.1.x, `_save` with `tarfile`) of
//! four members, read as torch 2.15's `_legacy_load` (`legacy_load`) reads them:
//!
//! - `sys_info`: a pickled dict (protocol version, byte order, type sizes); not needed;
//! - `storages`: pickle(count), then per storage pickle((key, location, storage class)), its
//!   element count as an int64 and its bytes; then pickle(views), storage views of a root;
//! - `tensors`: pickle(count), then per tensor pickle((key, storage key, tensor type)), then
//!   ndim (int32 and 4 bytes of padding), sizes and strides (int64s) and the storage offset;
//! - `pickle`: the saved object, whose tensors are persistent ids naming `tensors` keys.
//!
//! Every pickle is run by the same restricted machine as the other formats (nothing is
//! imported or called). Each tensor's persistent id is rewritten into the
//! `_rebuild_tensor(storage, offset, size, stride)` call torch's own rebuild amounts to, so the
//! table, names and bounds checks are the shared ones. Storages are slices of the file: tar
//! members start on 512-byte blocks, but a storage's bytes follow pickles of any length, so
//! most are misaligned and copied on first use, as a legacy file's are.
//!
//! torch ≥ 2.6 refuses these files under `weights_only=True`; a strict open refuses them too
//! (`Unsafe`). Storage views (old torch's `storage_views`) and tensors pickled other than by a
//! `tensors` key are refused (`Unsupported`).

use super::legacy::{self, LegacyRecord};
use crate::checkpoint::{finish, Checkpoint, Format, OpenOptions, Parsed};
use crate::container::Source;
use crate::error::{Error, Result};
use crate::pickle::{self, Arena, NodeId, Value};
use std::collections::HashMap;
use std::sync::Arc;

const BLOCK: usize = 512;

/// True when the file is a ustar/PAX tar archive (the `ustar` magic of the first header).
pub fn looks_like_tar(bytes: &[u8]) -> bool {
    bytes.len() >= BLOCK && &bytes[257..262] == b"ustar"
}

/// One member's data: its absolute offset and size.
#[derive(Clone, Copy)]
struct Member {
    offset: usize,
    size: usize,
}

/// The four members, by name. PAX extended headers (`x`, `g`) are stepped over; any other
/// member type or name is refused.
fn members(bytes: &[u8]) -> Result<HashMap<String, Member>> {
    let mut found = HashMap::new();
    let mut pos = 0usize;
    while pos + BLOCK <= bytes.len() {
        let header = &bytes[pos..pos + BLOCK];
        if header.iter().all(|&b| b == 0) {
            break; // the end-of-archive blocks
        }
        let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&header[..name_end]).into_owned();
        let size = octal(&header[124..136])
            .ok_or_else(|| Error::format(format!("tar header at byte {pos}: bad size field")))?;
        let data = pos + BLOCK;
        if size > bytes.len() - data {
            return Err(Error::format(format!(
                "tar member '{name}' at byte {pos}: {size} bytes run past the end of the file"
            )));
        }
        match header[156] {
            b'x' | b'g' => {}
            b'0' | 0 => {
                if !["sys_info", "pickle", "tensors", "storages"].contains(&name.as_str()) {
                    return Err(Error::format(format!(
                        "tar member '{name}' is not one of a torch tar checkpoint's (sys_info, \
                         pickle, tensors, storages)"
                    )));
                }
                if found
                    .insert(name.clone(), Member { offset: data, size })
                    .is_some()
                {
                    return Err(Error::format(format!("tar member '{name}' appears twice")));
                }
            }
            other => {
                return Err(Error::format(format!(
                    "tar member '{name}' has type '{}'; a torch tar checkpoint holds files only",
                    char::from(other).escape_default()
                )))
            }
        }
        pos = data + size.div_ceil(BLOCK) * BLOCK;
    }
    for name in ["pickle", "tensors", "storages"] {
        if !found.contains_key(name) {
            return Err(Error::format(format!(
                "tar archive has no '{name}' member: not a torch tar checkpoint"
            )));
        }
    }
    Ok(found)
}

/// A tar numeric field: octal digits, NUL/space padded.
fn octal(field: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    usize::from_str_radix(digits, 8).ok()
}

/// Reads the pickles and binary fields of one member, front to back.
struct Reader<'a> {
    bytes: &'a [u8],
    /// Absolute offset of `bytes[0]`.
    base: usize,
    pos: usize,
    what: &'static str,
}

impl Reader<'_> {
    fn pickle(&mut self, arena: &mut Arena, options: &OpenOptions) -> Result<NodeId> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let (node, used) = pickle::load(arena, rest, &options.limits.pickle).map_err(|e| {
            e.context(format!(
                "tar member '{}' at byte {}",
                self.what,
                self.base + self.pos
            ))
        })?;
        self.pos += used;
        Ok(node)
    }
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let at = self.pos;
        let out = at
            .checked_add(n)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| {
                Error::format(format!(
                    "tar member '{}' ends before the {n} bytes at byte {}",
                    self.what,
                    self.base + at
                ))
            })?;
        self.pos += n;
        Ok(out)
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
}

/// Items of a tuple node, or a `Format` error naming what was expected.
fn tuple<'a>(arena: &'a Arena, node: NodeId, what: &str, len: usize) -> Result<&'a [NodeId]> {
    arena
        .as_seq(node)
        .filter(|items| items.len() == len)
        .ok_or_else(|| Error::format(format!("{what} is not a tuple of {len}")))
}

fn count(arena: &Arena, node: NodeId, what: &str) -> Result<usize> {
    arena
        .as_int(node)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::format(format!("{what}: the count is not a non-negative int")))
}

fn key(arena: &Arena, node: NodeId, what: &str) -> Result<String> {
    match arena.get(node) {
        Value::Int(i) => Ok(i.to_string()),
        Value::Str(s) => Ok(arena.str(*s).to_owned()),
        _ => Err(Error::format(format!(
            "{what}: the key is not an int or str"
        ))),
    }
}

/// A storage of the `storages` member.
struct TarStorage {
    location: String,
    class: (Box<str>, Box<str>),
    record: LegacyRecord,
}

/// A tensor of the `tensors` member.
struct TarTensor {
    storage: String,
    sizes: Vec<i64>,
    strides: Vec<i64>,
    offset: i64,
}

fn read_storages(
    bytes: &[u8],
    member: Member,
    options: &OpenOptions,
) -> Result<HashMap<String, TarStorage>> {
    let mut arena = Arena::new();
    let mut r = Reader {
        bytes: &bytes[member.offset..member.offset + member.size],
        base: member.offset,
        pos: 0,
        what: "storages",
    };
    let n = r.pickle(&mut arena, options)?;
    let n = count(&arena, n, "tar member 'storages'")?;
    let mut storages = HashMap::new();
    for i in 0..n {
        let node = r.pickle(&mut arena, options)?;
        let what = format!("tar storage {i}");
        let items = tuple(&arena, node, &what, 3)?;
        let storage_key = key(&arena, items[0], &what)?;
        let location = arena
            .as_str(items[1])
            .ok_or_else(|| Error::format(format!("{what}: the location is not a str")))?
            .to_owned();
        let (module, name) = arena
            .global_name(items[2])
            .ok_or_else(|| Error::format(format!("{what}: the storage class is not a global")))?;
        let itemsize = legacy::storage_class_itemsize(module, name).ok_or_else(|| {
            Error::unsupported(format!("{what}: unknown storage class '{module}.{name}'"))
        })?;
        let class = (module.into(), name.into());
        let numel = r.i64()?;
        let nbytes = u64::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(itemsize as u64))
            .ok_or_else(|| Error::format(format!("{what}: bad element count {numel}")))?;
        let data_offset = (member.offset + r.pos) as u64;
        r.take(usize::try_from(nbytes).unwrap_or(usize::MAX))?;
        let record = LegacyRecord {
            numel: numel as u64,
            itemsize,
            data_offset,
            nbytes,
        };
        let storage = TarStorage {
            location,
            class,
            record,
        };
        if storages.insert(storage_key.clone(), storage).is_some() {
            return Err(Error::format(format!(
                "tar storage '{storage_key}' appears twice"
            )));
        }
    }
    let views = r.pickle(&mut arena, options)?;
    if !arena.as_seq(views).is_some_and(<[NodeId]>::is_empty) {
        return Err(Error::unsupported(
            "the tar checkpoint has storage views (old torch's views of a root storage), \
             which mmckpt does not read",
        ));
    }
    Ok(storages)
}

fn read_tensors(
    bytes: &[u8],
    member: Member,
    options: &OpenOptions,
) -> Result<HashMap<String, TarTensor>> {
    let mut arena = Arena::new();
    let mut r = Reader {
        bytes: &bytes[member.offset..member.offset + member.size],
        base: member.offset,
        pos: 0,
        what: "tensors",
    };
    let n = r.pickle(&mut arena, options)?;
    let n = count(&arena, n, "tar member 'tensors'")?;
    let mut tensors = HashMap::new();
    for i in 0..n {
        let node = r.pickle(&mut arena, options)?;
        let what = format!("tar tensor {i}");
        let items = tuple(&arena, node, &what, 3)?;
        let tensor_key = key(&arena, items[0], &what)?;
        let storage = key(&arena, items[1], &what)?;
        let ndim = i32::from_le_bytes(r.take(4)?.try_into().unwrap_or_default());
        r.take(4)?; // the legacy encoding wrote ndim as 8 bytes
        let ndim = usize::try_from(ndim)
            .ok()
            .filter(|&d| d <= 64)
            .ok_or_else(|| Error::format(format!("{what}: bad ndim {ndim}")))?;
        let sizes = (0..ndim).map(|_| r.i64()).collect::<Result<Vec<_>>>()?;
        let strides = (0..ndim).map(|_| r.i64()).collect::<Result<Vec<_>>>()?;
        let offset = r.i64()?;
        let tensor = TarTensor {
            storage,
            sizes,
            strides,
            offset,
        };
        if tensors.insert(tensor_key.clone(), tensor).is_some() {
            return Err(Error::format(format!(
                "tar tensor '{tensor_key}' appears twice"
            )));
        }
    }
    Ok(tensors)
}

fn push_str(arena: &mut Arena, s: &str) -> NodeId {
    let s = arena.store_str(s);
    arena.push(Value::Str(s))
}

/// Pushes a tuple of ints.
fn push_ints(arena: &mut Arena, values: &[i64]) -> NodeId {
    let items: Vec<NodeId> = values.iter().map(|&v| arena.push(Value::Int(v))).collect();
    arena.push(Value::Tuple(items.into()))
}

/// Opens a pre-1.0 tar checkpoint.
pub(crate) fn open(source: &Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
    if options.strict {
        return Err(Error::unsafe_global(
            "a tar checkpoint (the pre-1.0 torch.save format) is refused by torch under \
             weights_only=True, and so by a strict open",
        ));
    }
    if options.verify_crc {
        return Err(Error::unsupported(
            "a CRC check was asked for, but the tar format records no checksums",
        ));
    }
    let bytes = source.bytes();
    let found = members(bytes)?;
    let storages = read_storages(bytes, found["storages"], options)?;
    let tensors = read_tensors(bytes, found["tensors"], options)?;
    let main = found["pickle"];
    if main.size as u64 > options.limits.max_pickle_bytes {
        return Err(Error::limit(format!(
            "tar member 'pickle' is {} bytes; the limit is {}",
            main.size, options.limits.max_pickle_bytes
        )));
    }
    let mut arena = Arena::new();
    let (top, _) = pickle::load(
        &mut arena,
        &bytes[main.offset..main.offset + main.size],
        &options.limits.pickle,
    )
    .map_err(|e| e.context("tar member 'pickle'"))?;
    // Each tensor's persistent id becomes _rebuild_tensor(('storage', class, key, location,
    // numel), offset, size, stride): what torch's `set_` on the storage builds.
    let rebuild = arena.push(Value::Global {
        module: "torch._utils".into(),
        name: "_rebuild_tensor".into(),
    });
    let persistent: Vec<NodeId> = arena.persistent_ids().to_vec();
    for node in persistent {
        let Value::PersistentId(pid) = *arena.get(node) else {
            continue;
        };
        let tensor_key =
            key(&arena, pid, "a persistent id of tar member 'pickle'").map_err(|_| {
                Error::unsupported(
                    "tar member 'pickle' has a persistent id that is not a tensor key (a \
                     module class with its source, or a storage), which mmckpt does not read",
                )
            })?;
        let tensor = tensors.get(&tensor_key).ok_or_else(|| {
            Error::unsupported(format!(
                "tar member 'pickle' names '{tensor_key}', which is not in member 'tensors' \
                 (a storage pickled directly?)"
            ))
        })?;
        let storage = storages.get(&tensor.storage).ok_or_else(|| {
            Error::format(format!(
                "tar tensor '{tensor_key}' names storage '{}', which member 'storages' does \
                 not hold",
                tensor.storage
            ))
        })?;
        let tag = push_str(&mut arena, "storage");
        let class = arena.push(Value::Global {
            module: storage.class.0.clone(),
            name: storage.class.1.clone(),
        });
        let skey = push_str(&mut arena, &tensor.storage);
        let location = push_str(&mut arena, &storage.location);
        let numel = arena.push(Value::Int(storage.record.numel as i64));
        let id = arena.push(Value::Tuple(vec![tag, class, skey, location, numel].into()));
        let storage_pid = arena.push(Value::PersistentId(id));
        arena.note_persistent_id(storage_pid);
        let offset = arena.push(Value::Int(tensor.offset));
        let sizes = push_ints(&mut arena, &tensor.sizes);
        let strides = push_ints(&mut arena, &tensor.strides);
        let args = arena.push(Value::Tuple(
            vec![storage_pid, offset, sizes, strides].into(),
        ));
        *arena.get_mut(node) = Value::Object {
            callable: rebuild,
            args,
            kwargs: None,
            new_object: false,
            state: None,
            items: None,
        };
    }
    let records: HashMap<String, LegacyRecord> =
        storages.into_iter().map(|(k, s)| (k, s.record)).collect();
    let parsed = Parsed {
        format: Format::Tar,
        arena,
        top,
        // torch's tar writer wrote the machine's order; every machine it ran on was
        // little-endian (sys_info's `little_endian`), as torch 2.15's reader assumes.
        byte_order_big: false,
        storages: legacy::LegacyStorages::new(source, &records),
    };
    finish(source.clone(), parsed, options)
}
