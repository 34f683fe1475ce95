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
    /// Owned memory filled on first use from other storages (a tensor a distributed
    /// checkpoint saved in chunks): the checkpoint, which knows the chunks, fills it
    /// ([`Storage::assemble_with`]).
    Assembled(Arc<AssembledCopy>),
}

/// A copy made by the first use that needs it: `Backing::Owned` once made, never changed
/// afterwards (so `&[u8]` into it stay valid). Concurrent first uses make it once; a failure
/// is returned and the next use tries again (`OnceLock` alone would cache the failure).
#[derive(Default)]
struct OnceCopy {
    copy: OnceLock<Backing>,
    making: Mutex<()>,
}

impl OnceCopy {
    fn get(&self) -> Option<&Backing> {
        self.copy.get()
    }

    /// Unless the copy exists, runs `make` (one caller at a time) and keeps what it returns;
    /// `None`: nothing to make. True when this call made it.
    fn make_with(&self, make: impl FnOnce() -> Result<Option<Backing>>) -> Result<bool> {
        if self.copy.get().is_some() {
            return Ok(false);
        }
        // A panic while making the copy (none is expected) leaves nothing half-made behind.
        let _making = self
            .making
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.copy.get().is_some() {
            return Ok(false);
        }
        match make()? {
            Some(copy) => Ok(self.copy.set(copy).is_ok()),
            None => Ok(false),
        }
    }
}

/// A storage assembled on first use: empty until then.
pub(crate) struct AssembledCopy {
    /// The empty backing handed out until the copy is made.
    empty: Backing,
    copy: OnceCopy,
}

/// A copy decided at open and made by the first [`Storage::make_ready`].
struct DeferredCopy {
    /// The file's bytes (`Backing::File`).
    file: Backing,
    /// Reverse each run of this many bytes (a big-endian storage's unit); 1: copy as is.
    swap_unit: u8,
    copy: OnceCopy,
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
            StorageBytes::Assembled(assembled) => assembled.copy.get().unwrap_or(&assembled.empty),
        }
    }
    /// Offset of the first byte within the backing's bytes.
    pub fn start(&self) -> usize {
        match &self.bytes {
            StorageBytes::Deferred(deferred) if deferred.copy.get().is_some() => 0,
            StorageBytes::Assembled(_) => 0,
            _ => self.start,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    /// True while the storage waits to be inflated from its deflated record.
    fn inflation_pending(&self) -> bool {
        match &self.bytes {
            StorageBytes::Deferred(d) => d.deflated.is_some() && d.copy.get().is_none(),
            StorageBytes::Assembled(a) => a.copy.get().is_none(),
            StorageBytes::Ready(_) => false,
        }
    }
    /// True for a storage assembled from others whose copy is not made yet.
    pub(crate) fn assembly_pending(&self) -> bool {
        matches!(&self.bytes, StorageBytes::Assembled(a) if a.copy.get().is_none())
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
            StorageBytes::Ready(Backing::Owned(_)) | StorageBytes::Assembled(_) => None,
        }
    }
    /// True when the bytes are pages of a file mapping (not a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing(), Backing::File(s) if s.is_mapped())
    }
    /// True while the storage waits for its deferred copy.
    pub fn copy_pending(&self) -> bool {
        match &self.bytes {
            StorageBytes::Deferred(d) => d.copy.get().is_none(),
            StorageBytes::Assembled(a) => a.copy.get().is_none(),
            StorageBytes::Ready(_) => false,
        }
    }
    /// True once its deferred copy is made.
    pub fn copy_made(&self) -> bool {
        match &self.bytes {
            StorageBytes::Deferred(d) => d.copy.get().is_some(),
            StorageBytes::Assembled(a) => a.copy.get().is_some(),
            StorageBytes::Ready(_) => false,
        }
    }

    /// A storage of `len` bytes assembled on first use by [`Storage::assemble_with`].
    pub(crate) fn assembled(key: StorageKey, location: Arc<str>, len: usize) -> Result<Storage> {
        Ok(Storage {
            key,
            id: new_storage_id(),
            location,
            bytes: StorageBytes::Assembled(Arc::new(AssembledCopy {
                empty: Backing::Owned(Arc::new(AlignedBuf::zeroed(0)?)),
                copy: OnceCopy::default(),
            })),
            start: 0,
            len,
        })
    }

    /// A storage that shares `other`'s bytes as they are now (its backing, its identity):
    /// what a slice that outlives the borrow of its checkpoint holds.
    pub(crate) fn sharing(other: &Storage) -> Storage {
        Storage {
            key: other.key.clone(),
            id: other.id,
            location: other.location.clone(),
            bytes: StorageBytes::Ready(other.backing().clone()),
            start: other.start(),
            len: other.len,
        }
    }

    /// A storage over owned bytes (a copy made for one caller, not part of any file).
    pub(crate) fn owned(key: StorageKey, location: Arc<str>, buf: AlignedBuf) -> Storage {
        let len = buf.as_slice().len();
        Storage {
            key,
            id: new_storage_id(),
            location,
            bytes: StorageBytes::Ready(Backing::Owned(Arc::new(buf))),
            start: 0,
            len,
        }
    }

    /// Makes an assembled storage's copy if it is not made yet: `fill` writes its bytes into
    /// zeroed aligned memory of the storage's length. Concurrent first uses fill it once; a
    /// failure is returned (and the next call tries again). Nothing for other storages.
    pub(crate) fn assemble_with(&self, fill: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<()> {
        let StorageBytes::Assembled(assembled) = &self.bytes else {
            return Ok(());
        };
        assembled.copy.make_with(|| {
            let mut buf = AlignedBuf::zeroed(self.len).map_err(|e| {
                e.context(format!(
                    "assembling tensor '{}' ({} bytes) from its chunks",
                    self.key, self.len
                ))
            })?;
            fill(buf.as_mut_slice())?;
            Ok(Some(Backing::Owned(Arc::new(buf))))
        })?;
        Ok(())
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
        let Backing::File(source) = &deferred.file else {
            return Ok(());
        };
        let made = deferred.copy.make_with(|| {
            if let Some(record) = &deferred.deflated {
                let mut buf = self.inflate(source, record)?;
                swap_bytes(&mut buf, deferred.swap_unit);
                return Ok(Some(Backing::Owned(Arc::new(buf))));
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
            Ok(Some(Backing::Owned(Arc::new(buf))))
        })?;
        // The file is never read through the copied range's pages again. (Not for an inflated
        // record: its pages are the compressed bytes.)
        if made && deferred.deflated.is_none() {
            source.release_pages(self.start, self.len);
        }
        Ok(())
    }
}

/// Bytes of scratch a storage whose copy is pending is streamed through
/// ([`Storage::for_each_usable_piece`]): a power of two, so pieces hold whole elements.
pub(crate) const STREAM_PIECE: usize = 1 << 20;

impl Storage {
    /// Calls `f` with the usable bytes of `range` (offsets within the storage, as
    /// [`Storage::bytes`] will hold them once ready: byte-swapped, inflated) in consecutive
    /// pieces, without making the deferred copy and without keeping anything: a storage that is
    /// ready is passed as one slice; a pending big-endian, misaligned or per-tensor one is read
    /// and swapped through one scratch buffer of at most [`STREAM_PIECE`] bytes (pieces hold
    /// whole elements: `range` starts at an element); a pending deflated one is inflated
    /// whole into memory released on return (the storage's size, bounded by
    /// `max_inflated_bytes`). What readers see is unchanged: a copy made before is used.
    pub(crate) fn for_each_usable_piece(
        &self,
        range: std::ops::Range<usize>,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let deferred = match &self.bytes {
            StorageBytes::Deferred(deferred) if deferred.copy.get().is_none() => deferred,
            _ => return f(&self.bytes()[range]),
        };
        let Backing::File(source) = &deferred.file else {
            return f(&self.bytes()[range]);
        };
        if let Some(record) = &deferred.deflated {
            let mut buf = self.inflate(source, record)?;
            swap_bytes(&mut buf, deferred.swap_unit);
            return f(&buf.as_slice()[range]);
        }
        let unit = usize::from(deferred.swap_unit.max(1));
        if unit == 1 && !source.is_per_tensor() {
            // Misaligned only: a writer needs no alignment, the mapping's bytes do.
            return f(&source.bytes()[self.start + range.start..self.start + range.end]);
        }
        // Swapped runs start at the storage's first byte; a piece is whole runs.
        let piece = STREAM_PIECE / unit * unit;
        let mut scratch = Vec::new();
        let mut at = range.start / unit * unit;
        while at < range.end {
            let end = (at + piece)
                .min(range.end.next_multiple_of(unit))
                .min(self.len);
            scratch.resize(end - at, 0);
            let (from, to) = (self.start + at, self.start + end);
            if source.is_per_tensor() {
                source
                    .read_exact_at(from as u64, &mut scratch)
                    .map_err(|e| e.context(format!("reading storage '{}'", self.key)))?;
            } else {
                scratch.copy_from_slice(&source.bytes()[from..to]);
            }
            if unit > 1 {
                for run in scratch.chunks_exact_mut(unit) {
                    run.reverse();
                }
            }
            f(&scratch[range.start.max(at) - at..range.end.min(end) - at])?;
            at = end;
        }
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
                copy: OnceCopy::default(),
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
    /// The storage that is zip record `record`: in the file where the record is stored,
    /// inflated on first use where it is deflated.
    pub(crate) fn of_record(
        key: StorageKey,
        location: Arc<str>,
        source: &Arc<Source>,
        record: ZipRecord<'_>,
    ) -> Storage {
        if record.is_deflated() {
            Storage::deflated(key, location, source, record)
        } else {
            let (start, len) = (
                record.data_offset as usize,
                record.uncompressed_size as usize,
            );
            Storage::in_file(key, location, source, start, len)
        }
    }

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
                copy: OnceCopy::default(),
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

/// Alignment callers may rely on for a dtype's elements: the itemsize, at most 16 — what
/// torch's element types declare (`c10::complex<double>` is `alignas(16)`: torch's vectorised
/// complex128 kernels load it 16 bytes at a time and fault on an 8-aligned one).
pub(crate) fn required_alignment(dtype: DType) -> usize {
    dtype.itemsize().min(16)
}

/// Marks the storages that cannot be handed out as they are, for a copy on first use: every
/// storage of a file opened per tensor (read with `pread` then), and those misaligned for one
/// of their views' dtypes (unless `accept_unaligned`: the caller takes
/// misaligned pointers into the mapping), or in big-endian byte order. A big-endian storage is
/// swapped by its storage class's unit, as torch's `load_tensor` does (`storage.byteswap(dtype)`
/// with the class's dtype), never by the dtype of the tensors that view it. Nothing is copied
/// here, and no page of the file is touched: alignment is the mapping address's.
/// [`fix_storages`] for a little-endian format with one storage class per storage (safetensors,
/// DCP): only misaligned storages are marked.
pub(crate) fn fix_little_endian_storages(
    storages: &mut [Storage],
    tensors: &[TensorDesc],
    accept_unaligned: bool,
) -> Result<()> {
    fix_storages(
        storages,
        &SwapUnits::default(),
        tensors,
        false,
        accept_unaligned,
    )
}

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
