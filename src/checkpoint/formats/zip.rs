//! `torch.save` zip archives (since torch 1.6) and `torch.jit.save` archives: `data.pkl`, the
//! storages as stored records `data/<key>`, an optional `byteorder` record; TorchScript adds
//! `constants.pkl` and `code/` (see [`super::torchscript`]). The directory is read by
//! [`crate::container::zip`]; this file turns its records into a checkpoint.

use crate::checkpoint::storage::{Locations, Storage, StorageKey, StorageSet};
use crate::checkpoint::{finish, Checkpoint, Format, OpenOptions, Parsed};
use crate::container::zip::{self, ZipArchive};
use crate::container::Source;
use crate::error::{Error, Result};
use crate::hash::HashMap;
use crate::pickle::{self, Arena, NodeId};
use crate::torch::{StorageId, StorageResolver};
use std::sync::Arc;

/// Opens a `torch.save` or `torch.jit.save` zip archive.
pub(crate) fn open(source: &Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
    let bytes = source.bytes();
    let parse_archive = || {
        let read_at = |offset: u64, buf: &mut [u8]| source.read_at(offset, buf);
        let reads = zip::HeaderReads {
            read_at: &read_at,
            min_spacing: zip::HeaderReads::SPARSE,
        };
        zip::parse_with(bytes, &options.limits.zip, Some(reads))
    };
    // A large archive's directory and its pickle are parsed at once, on two threads,
    // when data.pkl is where torch puts it; the pickle is used only if the directory
    // then names exactly those bytes (otherwise it is parsed again from the record).
    let guess = zip::guess_first_record(bytes, "data.pkl").filter(|&(_, size, entries)| {
        entries >= PARALLEL_MIN_RECORDS && size <= options.limits.max_pickle_bytes
    });
    let (archive, early) = match guess {
        Some((offset, size, _)) => std::thread::scope(|scope| {
            let directory = scope.spawn(parse_archive);
            let pickle_bytes = &bytes[offset as usize..(offset + size) as usize];
            let early = (offset, size, parse_pickle(pickle_bytes, options));
            match directory.join() {
                Ok(archive) => (archive, Some(early)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }),
        None => (parse_archive(), None),
    };
    let archive = archive?;
    let format = if archive.get("constants.pkl").is_some() {
        Format::TorchScript
    } else {
        Format::Zip
    };
    let pkl = archive.get("data.pkl").ok_or_else(|| {
        Error::format(if format == Format::TorchScript {
            format!(
                "TorchScript archive has no '{}/data.pkl' record (the module's state)",
                archive.prefix()
            )
        } else {
            format!(
                "zip archive has no '{}/data.pkl' record: not a torch.save checkpoint",
                archive.prefix()
            )
        })
    })?;
    if pkl.size > options.limits.max_pickle_bytes {
        return Err(Error::limit(format!(
            "data.pkl is {} bytes; the limit is {}",
            pkl.size, options.limits.max_pickle_bytes
        )));
    }
    let byte_order_big = byte_order_big(&archive, bytes)?;
    let pickle_bytes = archive.data(bytes, pkl)?;
    let (mut arena, top) = match early {
        Some((offset, size, parsed)) if (offset, size) == (pkl.data_offset, pkl.size) => parsed,
        _ => parse_pickle(pickle_bytes, options),
    }?;
    if format == Format::TorchScript {
        super::torchscript::ScriptClasses::read(&archive, bytes)?
            .prune_plain_tensor_attributes(&mut arena);
    }
    let storages = ZipStorages {
        source,
        archive: &archive,
        storages: Vec::with_capacity(archive.records().len()),
        by_key: HashMap::default(),
        locations: Locations::default(),
    };
    let parsed = Parsed {
        format,
        arena,
        top,
        byte_order_big,
        storages,
    };
    finish(source.clone(), parsed, options)
}

/// The `byteorder` record, compared byte for byte as torch does (`serialization.py`, `_load`:
/// `if byteorderdata not in [b"little", b"big"]: raise ValueError("Unknown endianness type")`):
/// no trimming, no case folding. No record is little-endian.
fn byte_order_big(archive: &ZipArchive, bytes: &[u8]) -> Result<bool> {
    let Some(record) = archive.get("byteorder") else {
        return Ok(false);
    };
    match archive.data(bytes, record)? {
        b"little" => Ok(false),
        b"big" => Ok(true),
        other => Err(Error::format(format!(
            "byteorder record is \"{}\"{}; torch accepts exactly 'little' or 'big'",
            other[..other.len().min(32)].escape_ascii(),
            if other.len() > 32 { "..." } else { "" }
        ))),
    }
}

/// Records from which a zip archive's directory is parsed on a thread of its own, beside the
/// pickle (below, a thread costs more than it saves).
const PARALLEL_MIN_RECORDS: u64 = 4096;

/// Parses `data.pkl` into a new arena.
fn parse_pickle(pickle_bytes: &[u8], options: &OpenOptions) -> Result<(Arena, NodeId)> {
    let mut arena = Arena::new();
    // torch's state dicts take about one value per 5 pickle bytes.
    arena.reserve((pickle_bytes.len() / 5).min(options.limits.pickle.max_nodes));
    let (top, _) = pickle::load(&mut arena, pickle_bytes, &options.limits.pickle)
        .map_err(|e| e.context("data.pkl"))?;
    Ok((arena, top))
}

struct ZipStorages<'a> {
    source: &'a Arc<Source>,
    archive: &'a ZipArchive,
    storages: Vec<Storage>,
    by_key: HashMap<String, usize>,
    locations: Locations,
}
impl StorageResolver for ZipStorages<'_> {
    fn resolve(&mut self, id: &StorageId<'_>) -> Result<(usize, u64)> {
        let key = StorageKey::new(&id.key);
        if let Some(index) = self.lookup(&key, &id.key) {
            let storage = &mut self.storages[index];
            storage.note_swap_unit(id.swap_unit(), false);
            return Ok((index, storage.len() as u64));
        }
        if id.legacy_view.is_some() {
            return Err(Error::format(format!(
                "storage '{}' carries legacy view metadata inside a zip archive",
                id.key
            )));
        }
        let record = self.archive.storage_record(&id.key).ok_or_else(|| {
            Error::format(format!(
                "storage '{}' has no record '{}/data/{}'",
                id.key,
                self.archive.prefix(),
                id.key
            ))
        })?;
        record.require_stored()?;
        let declared = id.declared_bytes().ok_or_else(|| {
            Error::format(format!("storage '{}': declared size overflows", id.key))
        })?;
        if declared > record.size {
            return Err(Error::format(format!(
                "storage '{}' declares {} elements of {} ({declared} bytes) but its record holds {} bytes",
                id.key, id.numel, id.class_name(), record.size
            )));
        }
        let index = self.storages.len();
        if key != StorageKey::Number(index as u32) {
            self.by_key.insert(id.key.to_string(), index);
        }
        let mut storage = Storage::in_file(
            key,
            self.locations.intern(id.location),
            self.source,
            record.data_offset as usize,
            declared as usize,
        );
        storage.note_swap_unit(id.swap_unit(), true);
        self.storages.push(storage);
        Ok((index, declared))
    }

    fn expected_storages(&self) -> usize {
        self.storages.capacity()
    }
}

impl ZipStorages<'_> {
    /// The storage with this key. torch numbers storages "0", "1", … in first-use order, so a
    /// key that is its own index is found without hashing (and never enters `by_key`).
    fn lookup(&self, key: &StorageKey, text: &str) -> Option<usize> {
        if let StorageKey::Number(i) = *key {
            if self.storages.get(i as usize).is_some_and(|s| s.key == *key) {
                return Some(i as usize);
            }
        }
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.get(text).copied()
    }
}

impl StorageSet for ZipStorages<'_> {
    fn into_storages(self) -> Vec<Storage> {
        self.storages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::zip::writer::{Entry as ZipEntry, Writer};

    /// A protocol-2 pickle of `{name: float32 tensor of 1 element in storage key}` items.
    fn state_dict_pickle(items: &[(&str, &str)]) -> Vec<u8> {
        fn unicode(out: &mut Vec<u8>, s: &str) {
            out.push(b'X');
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let mut p = b"\x80\x02}(".to_vec();
        for (name, key) in items {
            unicode(&mut p, name);
            p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            unicode(&mut p, "storage");
            p.extend_from_slice(b"ctorch\nFloatStorage\n");
            unicode(&mut p, key);
            unicode(&mut p, "cpu");
            p.extend_from_slice(b"K\x01tQ"); // numel 1, TUPLE, BINPERSID
            p.extend_from_slice(b"K\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR");
        }
        p.extend_from_slice(b"u.");
        p
    }

    #[test]
    fn storage_keys_resolve_by_exact_key_dense_or_not() {
        // Keys out of first-use order, a non-canonical "01", and a key used twice.
        let items = [("a", "1"), ("b", "0"), ("c", "01"), ("d", "1"), ("e", "x")];
        let mut entries = vec![ZipEntry::new(
            "archive/data.pkl",
            &state_dict_pickle(&items),
        )];
        for (key, value) in [("0", 0.0f32), ("1", 1.0), ("01", 2.0), ("x", 3.0)] {
            entries.push(ZipEntry::new(
                &format!("archive/data/{key}"),
                &value.to_le_bytes(),
            ));
        }
        let mut writer = Writer::new(entries);
        writer.align = 64;
        let built = writer.build();
        let ckpt = Checkpoint::from_bytes(&built.bytes, &OpenOptions::default()).unwrap();
        let value = |name: &str| {
            let t = ckpt.tensor(name).unwrap();
            (
                f32::from_le_bytes(t.bytes().try_into().unwrap()),
                t.storage.id,
                t.storage.key.to_string(),
            )
        };
        let (a, b, c, d, e) = (value("a"), value("b"), value("c"), value("d"), value("e"));
        assert_eq!((a.0, b.0, c.0, d.0, e.0), (1.0, 0.0, 2.0, 1.0, 3.0));
        assert_eq!((&*a.2, &*b.2, &*c.2, &*e.2), ("1", "0", "01", "x"));
        assert_eq!(a.1, d.1, "the same key is one storage");
        assert_eq!(ckpt.storages().len(), 4);
    }
}
