//! `torch.save` zip archives (since torch 1.6) and `torch.jit.save` archives: `data.pkl`, the
//! storages as stored records `data/<key>`, an optional `byteorder` record; TorchScript adds
//! `constants.pkl` and `code/` (see [`super::torchscript`]). The directory is read by
//! [`crate::container::zip`]; this file turns its records into a checkpoint.

use crate::checkpoint::plain::{self, Plain};
use crate::checkpoint::storage::fix_storages;
use crate::checkpoint::storage::{Locations, Storage, StorageKey, StorageSet, SwapUnits};
use crate::checkpoint::verify::{self, CrcReport};
use crate::checkpoint::{finish, Checkpoint, Format, OpenOptions, Parsed, ValueTree};
use crate::container::zip::{self, ZipArchive, ZipRecord};
use crate::container::{PageVec, Source};
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
            // Per tensor, local headers are not in memory: every one is read.
            min_spacing: if source.is_per_tensor() {
                0
            } else {
                zip::HeaderReads::SPARSE
            },
        };
        zip::parse_with(bytes, &options.limits.zip, Some(reads))
    };
    // A large archive's directory and its pickle are parsed at once, on two threads,
    // when data.pkl is where torch puts it; the pickle is used only if the directory
    // then names exactly those bytes (otherwise it is parsed again from the record).
    let guess = zip::guess_first_record(bytes, "data.pkl").filter(|&(_, size, entries)| {
        entries >= PARALLEL_MIN_RECORDS
            && size <= options.limits.max_pickle_bytes
            && !source.is_per_tensor()
    });
    // A plain state dict is read straight into its table (see `plain`), unless the open asks
    // for what only the value tree gives at once (a strict check of every global, a root
    // below the saved object) or the pickle's bytes are not the file's (read per tensor).
    let plain_allowed = plain::enabled()
        && !options.strict
        && options.root.as_deref().unwrap_or("").is_empty()
        && !source.is_per_tensor();
    let (archive, early) = match guess {
        Some((offset, size, _)) => std::thread::scope(|scope| {
            let directory = scope.spawn(parse_archive);
            let pickle_bytes = &bytes[offset as usize..(offset + size) as usize];
            source.populate_range(offset as usize, size as usize);
            let early = (
                offset,
                size,
                read_pickle(pickle_bytes, options, plain_allowed),
            );
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
    // For a deflated pickle, the size it declares inflated: it is never inflated past that.
    if pkl.uncompressed_size > options.limits.max_pickle_bytes {
        return Err(Error::limit(format!(
            "data.pkl is {} bytes; the limit is {}",
            pkl.uncompressed_size, options.limits.max_pickle_bytes
        )));
    }
    // A corrupt pickle or byte order is reported as such, before either is read.
    let metadata_crc = if options.verify_crc {
        // A deflated record's CRC-32 is checked as it is inflated.
        let mut records = vec![pkl];
        records.extend(archive.get("byteorder"));
        records.retain(|record| !record.is_deflated());
        Some(verify::check_records(source, &records)?)
    } else {
        None
    };
    let byte_order_big = byte_order_big(&archive, bytes)?;
    let pickle_bytes = record_bytes(&archive, bytes, pkl)?;
    let pickle_range = pkl.data_offset as usize..(pkl.data_offset + pkl.size) as usize;
    let read = match early {
        Some((offset, size, read))
            if !pkl.is_deflated() && (offset, size) == (pkl.data_offset, pkl.size) =>
        {
            read
        }
        // A deflated pickle is not the file's bytes: its tree could not be read again later.
        _ => read_pickle(&pickle_bytes, options, plain_allowed && !pkl.is_deflated()),
    };
    let new_storages = || ZipStorages {
        source,
        archive: &archive,
        storages: PageVec::with_capacity(archive.records().len()),
        // Only a big-endian archive is swapped: a little-endian one records no units.
        swap_units: if byte_order_big {
            SwapUnits::with_capacity(archive.records().len())
        } else {
            SwapUnits::default()
        },
        record_swap_units: byte_order_big,
        by_key: HashMap::default(),
        locations: Locations::default(),
        misfits: Vec::new(),
        resolved: 0,
        last_persistent: None,
        in_order: true,
        max_inflated_bytes: options.limits.max_inflated_bytes,
    };
    let (mut arena, top) = match read {
        Read::Plain(plain) if format == Format::Zip => {
            let finished = finish_plain(
                source,
                plain,
                new_storages(),
                byte_order_big,
                options,
                pickle_range,
            );
            match finished {
                Some(mut ckpt) => {
                    if let Some(metadata) = metadata_crc {
                        ckpt.crc_report =
                            Some(metadata.add(verify_storage_records(&ckpt, &archive)?));
                    }
                    return Ok(ckpt);
                }
                // Something the generic path words (or answers) itself: it opens the file.
                None => parse_pickle(&pickle_bytes, options),
            }
        }
        Read::Plain(_) => parse_pickle(&pickle_bytes, options),
        Read::Tree(tree) => tree,
    }?;
    if format == Format::TorchScript {
        super::torchscript::ScriptClasses::read(&archive, bytes)?
            .prune_plain_tensor_attributes(&mut arena);
    }
    let storages = new_storages();
    let parsed = Parsed {
        format,
        arena,
        top,
        byte_order_big,
        storages,
    };
    let mut ckpt = finish(source.clone(), parsed, options)?;
    if let Some(metadata) = metadata_crc {
        ckpt.crc_report = Some(metadata.add(verify_storage_records(&ckpt, &archive)?));
    }
    Ok(ckpt)
}

/// The rest of the CRC-32 check of `OpenOptions::verify_crc` (the pickle and `byteorder` were
/// checked before they were read): the record of every storage the table views.
fn verify_storage_records(ckpt: &Checkpoint, archive: &ZipArchive) -> Result<CrcReport> {
    let mut records = Vec::with_capacity(ckpt.storages.len());
    for storage in &ckpt.storages {
        let key = storage.key.to_string();
        let record = archive
            .storage_record(&key)
            .ok_or_else(|| Error::format(format!("storage '{key}' has no record to verify")))?;
        // A deflated record's CRC-32 is checked when it is inflated (on first use).
        if !record.is_deflated() {
            records.push(record);
        }
    }
    verify::check_records(&ckpt.source, &records)
}

/// The `byteorder` record, compared byte for byte as torch does (`serialization.py`, `_load`:
/// `if byteorderdata not in [b"little", b"big"]: raise ValueError("Unknown endianness type")`):
/// no trimming, no case folding. No record is little-endian.
fn byte_order_big(archive: &ZipArchive, bytes: &[u8]) -> Result<bool> {
    let Some(record) = archive.get("byteorder") else {
        return Ok(false);
    };
    // torch reads any size of record here; more than "little" is refused without reading it.
    if record.is_deflated() && record.uncompressed_size > 64 {
        return Err(Error::format(format!(
            "byteorder record is {} bytes; torch accepts exactly 'little' or 'big'",
            record.uncompressed_size
        )));
    }
    match &*record_bytes(archive, bytes, record)? {
        b"little" => Ok(false),
        b"big" => Ok(true),
        other => Err(Error::format(format!(
            "byteorder record is \"{}\"{}; torch accepts exactly 'little' or 'big'",
            other[..other.len().min(32)].escape_ascii(),
            if other.len() > 32 { "..." } else { "" }
        ))),
    }
}

/// A record's bytes: a slice of the file when stored, inflated into memory when deflated (a
/// size the caller bounded); `Unsupported` for another compression method.
fn record_bytes<'b>(
    archive: &ZipArchive,
    bytes: &'b [u8],
    record: ZipRecord<'_>,
) -> Result<std::borrow::Cow<'b, [u8]>> {
    if record.is_deflated() {
        let compressed = archive.raw_data(bytes, record)?;
        return Ok(std::borrow::Cow::Owned(zip::inflate_to_vec(
            record, compressed,
        )?));
    }
    Ok(std::borrow::Cow::Borrowed(archive.data(bytes, record)?))
}

/// Records from which a zip archive's directory is parsed on a thread of its own, beside the
/// pickle (below, a thread costs more than it saves).
const PARALLEL_MIN_RECORDS: u64 = 4096;

/// A pickle read: a plain state dict's table, or the value tree.
enum Read<'p> {
    Plain(Plain<'p>),
    Tree(Result<(Arena, NodeId)>),
}

/// `data.pkl` read as a plain state dict when `plain_allowed` and it is one, else parsed.
fn read_pickle<'p>(pickle_bytes: &'p [u8], options: &OpenOptions, plain_allowed: bool) -> Read<'p> {
    if plain_allowed {
        if let Some(plain) = plain::read(pickle_bytes, &options.limits.pickle) {
            return Read::Plain(plain);
        }
    }
    Read::Tree(parse_pickle(pickle_bytes, options))
}

/// A plain state dict's checkpoint: its storages resolved in table order (the order the
/// generic path's walk resolves them, as every persistent id is one tensor's), each tensor
/// checked against its storage, the value tree deferred. `None` when any of that fails, or a
/// bound of the table is reached: the generic path then opens the file and words the error.
fn finish_plain(
    source: &Arc<Source>,
    plain: Plain<'_>,
    mut resolver: ZipStorages<'_>,
    byte_order_big: bool,
    options: &OpenOptions,
    pickle: std::ops::Range<usize>,
) -> Option<Checkpoint> {
    let Plain {
        table,
        mut descs,
        refs,
    } = plain;
    let limits = &options.limits.table;
    // The walk counts every name twice (its segment and the row's name).
    let name_bytes = 2 * table.name_bytes();
    if table.len() > limits.max_tensors
        || table.len() > limits.max_walk_steps
        || name_bytes > limits.max_name_bytes
        || limits.max_depth == 0
    {
        return None;
    }
    for (i, (desc, storage)) in descs.iter_mut().zip(&refs).enumerate() {
        let id = StorageId {
            key: std::borrow::Cow::Borrowed(storage.key),
            dtype: Some(desc.dtype),
            class: ("torch", desc.dtype.storage_class()?),
            numel: storage.numel,
            location: storage.location,
            legacy_view: None,
        };
        let (index, bytes) = resolver.resolve(i as NodeId, &id).ok()?;
        desc.storage = index;
        crate::torch::check_bounds(desc, bytes, storage.key).ok()?;
    }
    if !resolver.misfits.is_empty() {
        return None;
    }
    let (mut storages, swap_units) = resolver.into_storages();
    fix_storages(
        &mut storages,
        &swap_units,
        &descs,
        byte_order_big,
        options.accept_unaligned,
    )
    .ok()?;
    Some(Checkpoint {
        source: source.clone(),
        format: Format::Zip,
        tree: ValueTree::deferred(pickle, options.limits.pickle.clone()),
        storages,
        tensors: descs,
        table,
        byte_order_big,
        crc_report: None,
        chunks: Default::default(),
    })
}

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
    storages: PageVec<Storage>,
    swap_units: SwapUnits,
    record_swap_units: bool,
    by_key: HashMap<String, usize>,
    locations: Locations,
    /// References whose declared length is not their record's (see `note_reference`).
    misfits: Vec<Misfit>,
    /// References the table's walk resolved, and whether their persistent id nodes came in
    /// increasing order (then they were all different).
    resolved: usize,
    last_persistent: Option<NodeId>,
    in_order: bool,
    max_inflated_bytes: u64,
}

struct Misfit {
    key: String,
    class: String,
    declared: u64,
    record_size: u64,
    dtype_bit: u64,
    /// The storage's index, or `None` for a key only unreached references name.
    storage: Option<usize>,
}

/// The bytes a reference declares (its element count times its class's element size).
fn declared_bytes(id: &StorageId<'_>) -> Result<u64> {
    id.declared_bytes()
        .ok_or_else(|| Error::format(format!("storage '{}': declared size overflows", id.key)))
}

fn dtype_bit(id: &StorageId<'_>) -> u64 {
    1u64 << (id.class_dtype() as u32 % 64)
}

impl StorageResolver for ZipStorages<'_> {
    fn resolve(&mut self, persistent: NodeId, id: &StorageId<'_>) -> Result<(usize, u64)> {
        self.resolved += 1;
        self.in_order &= self.last_persistent < Some(persistent);
        self.last_persistent = Some(persistent);
        let key = StorageKey::new(&id.key);
        if let Some(index) = self.lookup(&key, &id.key) {
            self.note_reference(index, id)?;
            return Ok((index, self.storages[index].len() as u64));
        }
        let (record, declared) = self.record_of(id)?;
        let record_size = record.uncompressed_size;
        let index = self.storages.len();
        if key != StorageKey::Number(index as u32) {
            self.by_key.insert(id.key.to_string(), index);
        }
        // The record's length: whenever torch loads the file, the storage is exactly the
        // record (see `misfit_error`; a reference declaring another length refuses the open).
        let location = self.locations.intern(id.location);
        self.storages
            .push(Storage::of_record(key, location, self.source, record));
        if self.record_swap_units {
            self.swap_units.push_first(id.swap_unit());
        }
        if declared != record_size {
            self.misfits
                .push(Misfit::new(id, declared, record_size, Some(index)));
        }
        Ok((index, record_size))
    }

    fn expected_storages(&self) -> usize {
        self.storages.capacity()
    }

    /// torch runs `persistent_load` for every persistent id, reached or not: one the walk did
    /// not reach must name a record torch can load, and its length counts as every other
    /// reference's does. When the walk resolved every persistent id once, in pickle order (a
    /// file torch wrote) and every reference declared its record's length, nothing is parsed
    /// again; otherwise every id is gone through again, which also gives the dtypes that
    /// declare each record's length (see `misfit_error`; the walk keeps no per-storage record
    /// of them: with 100,000 storages that took 1.6 MB more heap at every open).
    fn finish_references(&mut self, arena: &Arena) -> Result<()> {
        let walked_all = self.in_order && self.resolved == arena.persistent_ids().len();
        if walked_all && self.misfits.is_empty() {
            return Ok(());
        }
        let mut fitting_dtypes = vec![0u64; self.storages.len()];
        // Per key only unreached references name: the dtypes declaring its record's length.
        let mut unreached: HashMap<String, u64> = HashMap::default();
        for &node in arena.persistent_ids() {
            // An id mmckpt cannot parse is no storage it could read; a strict open names
            // the globals torch refuses.
            let Ok(id) = crate::torch::parse_storage_pid(arena, node) else {
                continue;
            };
            let key = StorageKey::new(&id.key);
            if let Some(index) = self.lookup(&key, &id.key) {
                // The walk noted the references it resolved; noting one again changes nothing.
                if !walked_all {
                    self.note_reference(index, &id)?;
                }
                if declared_bytes(&id)? == self.storages[index].len() as u64 {
                    fitting_dtypes[index] |= dtype_bit(&id);
                }
                continue;
            }
            let (record, declared) = self
                .record_of(&id)
                .map_err(|e| e.context("a storage no tensor reaches"))?;
            let record_size = record.uncompressed_size;
            let fitting = unreached.entry(id.key.to_string()).or_insert(0);
            if declared == record_size {
                *fitting |= dtype_bit(&id);
            } else {
                self.misfits
                    .push(Misfit::new(&id, declared, record_size, None));
            }
        }
        self.misfit_error(&fitting_dtypes, &unreached)
    }
}

impl Misfit {
    fn new(id: &StorageId<'_>, declared: u64, record_size: u64, storage: Option<usize>) -> Misfit {
        Misfit {
            key: id.key.to_string(),
            class: id.class_name(),
            declared,
            record_size,
            dtype_bit: dtype_bit(id),
            storage,
        }
    }
}

impl<'a> ZipStorages<'a> {
    /// Another reference to storage `index`: its swap unit, and a misfit when it declares
    /// another length than the storage's record.
    #[inline]
    fn note_reference(&mut self, index: usize, id: &StorageId<'_>) -> Result<()> {
        let declared = declared_bytes(id)?;
        if self.record_swap_units {
            self.swap_units.note_again(index, id.swap_unit());
        }
        let record_size = self.storages[index].len() as u64;
        if declared != record_size {
            self.misfits
                .push(Misfit::new(id, declared, record_size, Some(index)));
        }
        Ok(())
    }

    /// torch 2.15's `persistent_load` (`serialization.py:2186-2226`) loads a key's record at
    /// its first reference in unpickling order, and `get_storage_from_record` requires the
    /// declared length to be the record's ("record size (N bytes) does not match expected
    /// size"); a later reference of the same dtype gets that storage whatever it declares, one
    /// of another dtype shares it when the lengths agree and is loaded again (and so fails)
    /// when they do not. So references that all declare the record's length share one
    /// storage, in any order. A reference that does not: torch fails for certain unless a
    /// reference of the same dtype declares the record's length (`FORMAT`); with one, torch
    /// reads the file when such a reference comes first, an order the table's walk does not
    /// follow (`UNSUPPORTED`).
    /// `fitting_dtypes`: per storage, the dtypes (bit `dtype as u32` each) of the references
    /// that declare its record's length; `unreached`: the same for keys only unreached
    /// references name.
    fn misfit_error(&self, fitting_dtypes: &[u64], unreached: &HashMap<String, u64>) -> Result<()> {
        let fits_dtype = |m: &Misfit| {
            let fitting = match m.storage {
                Some(i) => fitting_dtypes.get(i).copied(),
                None => unreached.get(&m.key).copied(),
            };
            fitting.is_some_and(|f| f & m.dtype_bit != 0)
        };
        if let Some(m) = self.misfits.iter().find(|m| !fits_dtype(m)) {
            return Err(Error::format(format!(
                "storage '{}' is referenced as {} of {} bytes, but its record holds {} bytes \
                 (torch: \"record size ({} bytes) does not match expected size ({} bytes)\")",
                m.key, m.class, m.declared, m.record_size, m.record_size, m.declared
            )));
        }
        if let Some(m) = self.misfits.first() {
            return Err(Error::unsupported(format!(
                "storage '{}' is referenced as {} of {} bytes beside references of its record's \
                 {} bytes: torch reads it only when one of the latter comes first in unpickling \
                 order, which mmckpt does not follow",
                m.key, m.class, m.declared, m.record_size
            )));
        }
        Ok(())
    }

    /// The record a new storage reads (stored, or deflated within `max_inflated_bytes`), and
    /// the bytes the reference declares, checked as torch's loader needs them.
    #[inline(always)]
    fn record_of(&self, id: &StorageId<'_>) -> Result<(ZipRecord<'a>, u64)> {
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
        record.require_readable()?;
        if record.is_deflated() && record.uncompressed_size > self.max_inflated_bytes {
            return Err(Error::limit(format!(
                "storage '{}': record '{}' inflates to {} bytes; the limit is {} \
                 (Limits::max_inflated_bytes)",
                id.key, record.name, record.uncompressed_size, self.max_inflated_bytes
            )));
        }
        let declared = declared_bytes(id)?;
        if declared > record.uncompressed_size {
            return Err(Error::format(format!(
                "storage '{}' declares {} elements of {} ({declared} bytes) but its record holds {} bytes",
                id.key, id.numel, id.class_name(), record.uncompressed_size
            )));
        }
        Ok((record, declared))
    }

    /// The storage with this key. torch numbers storages "0", "1", … in first-use order, so a
    /// key that is its own index is found without hashing (and never enters `by_key`).
    #[inline(always)]
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
    fn into_storages(self) -> (PageVec<Storage>, SwapUnits) {
        (self.storages, self.swap_units)
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
