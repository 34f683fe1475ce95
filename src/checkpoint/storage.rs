//! Storages: byte ranges of the file (or of a private copy), each with a process-wide identity,
//! and the fix-ups for the few a caller could not use in place (misaligned or big-endian). A
//! fix-up is decided at open but made on first use: opening costs metadata only, and a
//! storage is copied (once, whichever thread asks first) when one of its tensors is asked for.

use crate::container::zip::{canonical_index, inflate_into, ZipRecord, METHOD_DEFLATE};
use crate::container::{AlignedBuf, PageVec, Source};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::torch::{StorageResolver, TensorDesc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The memory a storage's bytes live in; cloning shares it.
#[derive(Clone)]
pub enum Backing {
    /// The file's bytes (mapped or read in): the zero-copy case.
    File(Arc<Source>),
    /// A private, aligned copy (misaligned or byte-swapped data).
    Owned(Arc<AlignedBuf>),
}

impl Backing {
    /// All the bytes of the backing (the whole file, or the whole copy).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::File(source) => source.bytes(),
            Backing::Owned(buf) => buf.as_slice(),
        }
    }
}

static NEXT_STORAGE_ID: AtomicU64 = AtomicU64::new(1);

/// A process-wide unique, non-zero storage identity (equal ids ⇔ same storage).
pub fn new_storage_id() -> u64 {
    NEXT_STORAGE_ID.fetch_add(1, Ordering::Relaxed)
}

/// A storage's key in its file: `"0"`, `"17"`, or in principle any string. torch numbers its
/// storages, so a key in canonical decimal is kept as its number (no allocation per storage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageKey {
    Number(u32),
    Text(Box<str>),
}

impl StorageKey {
    pub fn new(key: &str) -> StorageKey {
        match canonical_index(key) {
            Some(n) => StorageKey::Number(n),
            None => StorageKey::Text(key.into()),
        }
    }
}

impl PartialEq<str> for StorageKey {
    fn eq(&self, key: &str) -> bool {
        match self {
            StorageKey::Number(n) => canonical_index(key) == Some(*n),
            StorageKey::Text(text) => **text == *key,
        }
    }
}

impl std::fmt::Display for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageKey::Number(n) => write!(f, "{n}"),
            StorageKey::Text(text) => f.write_str(text),
        }
    }
}

/// One storage: a byte range of its backing.
pub struct Storage {
    pub key: StorageKey,
    pub id: u64,
    /// Where torch saved it from (`cpu`, `cuda:0`): shared by the storages that name it.
    pub location: Arc<str>,
    bytes: StorageBytes,
    /// Offset of the first byte in the file's bytes (in the copy, once made: 0).
    start: usize,
    len: usize,
}

/// Where a storage's bytes are. Kept to 16 bytes (the size of a `Backing`): a wider
/// `Storage` costs heap at every open (see [`SwapUnits`]).
enum StorageBytes {
    /// Usable as they are: the file's bytes, or a copy made at open (`Checkpoint::concat`
    /// keeps what its parts hold).
    Ready(Backing),
    /// The file's bytes, copied (and byte-swapped) on first use.
    Deferred(Arc<DeferredCopy>),
}

/// A copy decided at open and made by the first [`Storage::make_ready`].
struct DeferredCopy {
    /// The file's bytes (`Backing::File`).
    file: Backing,
    /// Reverse each run of this many bytes (a big-endian storage's unit); 1: copy as is.
    swap_unit: u8,
    /// `Backing::Owned` once made; never changes afterwards, so `&[u8]` into it stay valid.
    copy: OnceLock<Backing>,
    /// Held while the copy is made: concurrent first uses make it once. (`OnceLock` alone
    /// cannot report an allocation failure without caching it.)
    making: Mutex<()>,
    /// Set for a deflated record: the copy is the record inflated, not the file's bytes.
    deflated: Option<DeflatedRecord>,
}

/// A deflated zip record a storage's bytes are inflated from (its data starts at the
/// storage's `start`; the storage's `len` is its declared uncompressed size).
struct DeflatedRecord {
    name: Box<str>,
    compressed_len: u64,
    crc: u32,
}

impl Storage {
    /// The storage's bytes. For a storage whose copy is deferred and not made yet, the file's
    /// bytes as they are (misaligned, or in big-endian order): every [`crate::Tensor`] has had
    /// its storage made ready ([`Storage::make_ready`]), so its bytes are the usable ones.
    /// A deflated storage not inflated yet has no bytes (empty).
    pub fn bytes(&self) -> &[u8] {
        if self.inflation_pending() {
            return &[];
        }
        let start = self.start();
        &self.backing().bytes()[start..start + self.len]
    }
    /// The backing of [`Storage::bytes`]: the file, or the private copy once it is made.
    pub fn backing(&self) -> &Backing {
        match &self.bytes {
            StorageBytes::Ready(backing) => backing,
            StorageBytes::Deferred(deferred) => deferred.copy.get().unwrap_or(&deferred.file),
        }
    }
    /// Offset of the first byte within the backing's bytes.
    pub fn start(&self) -> usize {
        match &self.bytes {
            StorageBytes::Deferred(deferred) if deferred.copy.get().is_some() => 0,
            _ => self.start,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    /// True while the storage waits to be inflated from its deflated record.
    fn inflation_pending(&self) -> bool {
        matches!(&self.bytes, StorageBytes::Deferred(d)
            if d.deflated.is_some() && d.copy.get().is_none())
    }
    /// Absolute file offset of the first byte, when the bytes are the file's.
    pub fn file_offset(&self) -> Option<u64> {
        if self.inflation_pending() {
            return None;
        }
        match self.backing() {
            Backing::File(_) => Some(self.start as u64),
            Backing::Owned(_) => None,
        }
    }
    /// Where the storage was saved in its file, whatever memory holds it now (the file's
    /// bytes, or a copy made on first use): the file's bytes and the offset of the first
    /// byte, and the runs of bytes reversed between the file and what the tensors hold (a
    /// big-endian storage's unit; 1: none). `None` for bytes that never were the file's.
    pub fn saved_at(&self) -> Option<(&Arc<Source>, u64, u8)> {
        match &self.bytes {
            StorageBytes::Ready(Backing::File(source)) => Some((source, self.start as u64, 1)),
            StorageBytes::Deferred(deferred) if deferred.deflated.is_some() => None,
            StorageBytes::Deferred(deferred) => match &deferred.file {
                Backing::File(source) => {
                    Some((source, self.start as u64, deferred.swap_unit.max(1)))
                }
                Backing::Owned(_) => None,
            },
            StorageBytes::Ready(Backing::Owned(_)) => None,
        }
    }
    /// True when the bytes are pages of a file mapping (not a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing(), Backing::File(s) if s.is_mapped())
    }
    /// True while the storage waits for its deferred copy.
    pub fn copy_pending(&self) -> bool {
        matches!(&self.bytes, StorageBytes::Deferred(d) if d.copy.get().is_none())
    }
    /// True once its deferred copy is made.
    pub fn copy_made(&self) -> bool {
        matches!(&self.bytes, StorageBytes::Deferred(d) if d.copy.get().is_some())
    }

    /// Makes the deferred copy if there is one and it is not made yet: aligned memory, byte-
    /// swapped for a big-endian storage, then the mapping's pages that lie wholly inside the
    /// storage are released (the file is never read through them again). Several threads may
    /// call this at once: the copy is made once, and all see the same bytes. An allocation
    /// failure is returned (and the next call tries again).
    pub(crate) fn make_ready(&self) -> Result<()> {
        let StorageBytes::Deferred(deferred) = &self.bytes else {
            return Ok(());
        };
        if deferred.copy.get().is_some() {
            return Ok(());
        }
        // A panic while making the copy (none is expected) leaves nothing half-made behind.
        let _making = deferred
            .making
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if deferred.copy.get().is_some() {
            return Ok(());
        }
        let Backing::File(source) = &deferred.file else {
            return Ok(());
        };
        if let Some(record) = &deferred.deflated {
            let mut buf = self.inflate(source, record)?;
            swap_bytes(&mut buf, deferred.swap_unit);
            let _ = deferred.copy.set(Backing::Owned(Arc::new(buf)));
            return Ok(());
        }
        let what = || {
            format!(
                "copying storage '{}' ({} bytes) into aligned memory",
                self.key, self.len
            )
        };
        let mut buf = if source.is_per_tensor() {
            // Per-tensor mode: the bytes are read from the file now, never mapped.
            let mut buf = AlignedBuf::zeroed(self.len).map_err(|e| e.context(what()))?;
            source
                .read_exact_at(self.start as u64, buf.as_mut_slice())
                .map_err(|e| e.context(format!("reading storage '{}'", self.key)))?;
            buf
        } else {
            let file_bytes = &source.bytes()[self.start..self.start + self.len];
            AlignedBuf::from_slice(file_bytes).map_err(|e| e.context(what()))?
        };
        swap_bytes(&mut buf, deferred.swap_unit);
        let _ = deferred.copy.set(Backing::Owned(Arc::new(buf)));
        source.release_pages(self.start, self.len);
        Ok(())
    }
}

/// Reverses each run of `unit` bytes (a big-endian storage's elements); 0 or 1: nothing.
fn swap_bytes(buf: &mut AlignedBuf, unit: u8) {
    if unit > 1 {
        for chunk in buf.as_mut_slice().chunks_exact_mut(usize::from(unit)) {
            chunk.reverse();
        }
    }
}

impl Storage {
    /// Inflates the storage's deflated record into aligned memory of the storage's length,
    /// checking the inflated size and CRC-32 (see [`crate::container::zip::inflate_into`]).
    fn inflate(&self, source: &Source, record: &DeflatedRecord) -> Result<AlignedBuf> {
        let zip_record = ZipRecord {
            name: &record.name,
            data_offset: self.start as u64,
            size: record.compressed_len,
            uncompressed_size: self.len as u64,
            method: METHOD_DEFLATE,
            crc: record.crc,
        };
        let mut buf = AlignedBuf::zeroed(self.len).map_err(|e| {
            e.context(format!(
                "inflating storage '{}' ({} bytes) from record '{}'",
                self.key, self.len, record.name
            ))
        })?;
        let compressed_len = record.compressed_len as usize;
        let read;
        let compressed = if source.is_per_tensor() {
            let mut bytes = Vec::new();
            bytes.try_reserve_exact(compressed_len).map_err(|_| {
                Error::no_memory(format!(
                    "out of memory reading record '{}' ({compressed_len} bytes)",
                    record.name
                ))
            })?;
            bytes.resize(compressed_len, 0);
            source
                .read_exact_at(self.start as u64, &mut bytes)
                .map_err(|e| e.context(format!("reading record '{}'", record.name)))?;
            read = bytes;
            &read[..]
        } else {
            &source.bytes()[self.start..self.start + compressed_len]
        };
        inflate_into(zip_record, compressed, buf.as_mut_slice())?;
        Ok(buf)
    }

    /// A storage whose bytes are the deflated `record` of `source`, inflated on first use
    /// (its range was checked against the file by the zip parse).
    pub(crate) fn deflated(
        key: StorageKey,
        location: Arc<str>,
        source: &Arc<Source>,
        record: ZipRecord<'_>,
    ) -> Storage {
        Storage {
            key,
            id: new_storage_id(),
            location,
            bytes: StorageBytes::Deferred(Arc::new(DeferredCopy {
                file: Backing::File(source.clone()),
                swap_unit: 1,
                copy: OnceLock::new(),
                making: Mutex::new(()),
                deflated: Some(DeflatedRecord {
                    name: record.name.into(),
                    compressed_len: record.size,
                    crc: record.crc,
                }),
            })),
            start: record.data_offset as usize,
            len: record.uncompressed_size as usize,
        }
    }

    /// A storage whose bytes are `source.bytes()[start..start + len]` (bounds checked by the
    /// format that found them).
    pub(crate) fn in_file(
        key: StorageKey,
        location: Arc<str>,
        source: &Arc<Source>,
        start: usize,
        len: usize,
    ) -> Storage {
        Storage {
            key,
            id: new_storage_id(),
            location,
            bytes: StorageBytes::Ready(Backing::File(source.clone())),
            start,
            len,
        }
    }

    /// Defers a copy of the file's bytes (misaligned, or big-endian with `swap_unit` > 1) to
    /// the first [`Storage::make_ready`].
    fn defer_copy(&mut self, swap_unit: u8) {
        if let StorageBytes::Ready(file @ Backing::File(_)) = &self.bytes {
            self.bytes = StorageBytes::Deferred(Arc::new(DeferredCopy {
                file: file.clone(),
                swap_unit,
                copy: OnceLock::new(),
                making: Mutex::new(()),
                deflated: None,
            }));
        }
    }
}

/// The unit each storage's bytes are reversed by in a big-endian archive, by storage index:
/// the storage class's (see [`crate::torch::StorageId::swap_unit`]), 0 when references
/// disagree on it. Only opening needs it, so it lives beside the storages rather than in
/// [`Storage`]: a wider `Storage` enlarges the per-open heap enough (100,000 storages: 0.8 MB)
/// to push glibc past its trim threshold, so every open re-faults its heap pages.
#[derive(Default)]
pub(crate) struct SwapUnits(Vec<u8>);

impl SwapUnits {
    pub(crate) fn with_capacity(capacity: usize) -> SwapUnits {
        SwapUnits(Vec::with_capacity(capacity))
    }

    /// Records the unit of the storage class the first reference to a new storage names.
    pub(crate) fn push_first(&mut self, unit: usize) {
        self.0.push(u8::try_from(unit).unwrap_or(0));
    }

    /// Records the unit a later reference to storage `index` names: another unit than the
    /// first marks the storage as ambiguous (torch swaps by the class of the reference it
    /// unpickles first, an order the table's walk does not follow).
    pub(crate) fn note_again(&mut self, index: usize, unit: usize) {
        let unit = u8::try_from(unit).unwrap_or(0);
        if let Some(known) = self.0.get_mut(index) {
            if *known != unit {
                *known = 0;
            }
        }
    }

    /// The unit of storage `index`; 1 (no swap) for a storage no reference gave one.
    fn get(&self, index: usize) -> u8 {
        self.0.get(index).copied().unwrap_or(1)
    }
}

/// What a format hands to the shared finishing step for its storages: a resolver that creates
/// them as the table's walk meets their persistent ids, then gives them up with their swap
/// units (empty unless the archive is big-endian).
pub(crate) trait StorageSet: StorageResolver {
    fn into_storages(self) -> (PageVec<Storage>, SwapUnits);
}

/// The distinct location strings of a checkpoint (nearly always one or two): each storage
/// shares its location instead of copying it.
#[derive(Default)]
pub(crate) struct Locations(Vec<Arc<str>>);

impl Locations {
    pub(crate) fn intern(&mut self, location: &str) -> Arc<str> {
        if let Some(known) = self.0.iter().find(|l| &***l == location) {
            return known.clone();
        }
        let new: Arc<str> = location.into();
        // A file may name many locations; only the first few are worth searching.
        if self.0.len() < 8 {
            self.0.push(new.clone());
        }
        new
    }
}

/// Alignment C callers may rely on for a dtype's elements.
fn required_alignment(dtype: DType) -> usize {
    dtype.itemsize().min(8)
}

/// Marks the storages that cannot be handed out as they are, for a copy on first use: every
/// storage of a file opened per tensor (read with `pread` then), and those misaligned for one
/// of their views' dtypes (unless `accept_unaligned`: the caller takes
/// misaligned pointers into the mapping), or in big-endian byte order. A big-endian storage is
/// swapped by its storage class's unit, as torch's `load_tensor` does (`storage.byteswap(dtype)`
/// with the class's dtype), never by the dtype of the tensors that view it. Nothing is copied
/// here, and no page of the file is touched: alignment is the mapping address's.
pub(crate) fn fix_storages(
    storages: &mut [Storage],
    swap_units: &SwapUnits,
    tensors: &[TensorDesc],
    big_endian: bool,
    accept_unaligned: bool,
) -> Result<()> {
    let mut align = vec![1usize; storages.len()];
    for t in tensors {
        let a = &mut align[t.storage];
        *a = (*a).max(required_alignment(t.dtype));
    }
    for (i, storage) in storages.iter_mut().enumerate() {
        let swap_unit = swap_units.get(i);
        // An empty storage has nothing to swap, whatever its references' classes say.
        if big_endian && swap_unit == 0 && storage.len > 0 {
            return Err(Error::unsupported(format!(
                "big-endian storage '{}' is referenced with storage classes of different \
                 element sizes (torch swaps it by the class of the first reference it \
                 unpickles)",
                storage.key
            )));
        }
        let misaligned = (storage.bytes().as_ptr() as usize) % align[i] != 0;
        let swap = big_endian && swap_unit > 1;
        // Per-tensor mode: every storage is read from the file on first use.
        let unread =
            matches!(&storage.bytes, StorageBytes::Ready(Backing::File(s)) if s.is_per_tensor());
        if let StorageBytes::Deferred(deferred) = &mut storage.bytes {
            // A deflated storage: inflated on first use, into aligned memory, then swapped.
            if let Some(deferred) = Arc::get_mut(deferred).filter(|d| d.deflated.is_some()) {
                deferred.swap_unit = if swap { swap_unit } else { 1 };
                continue;
            }
        }
        if swap || unread || (misaligned && !accept_unaligned) {
            storage.defer_copy(if swap { swap_unit } else { 1 });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_stays_72_bytes() {
        // Growing it re-faults the heap at every open of a many-tensor file (see SwapUnits).
        assert_eq!(std::mem::size_of::<Storage>(), 72);
    }
}
