//! Storages: byte ranges of the file (or of a private copy), each with a process-wide identity,
//! and the fix-ups that copy the few a caller could not use in place.

use crate::container::zip::canonical_index;
use crate::container::{AlignedBuf, Source};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::torch::{StorageResolver, TensorDesc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    backing: Backing,
    start: usize,
    len: usize,
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        &self.backing.bytes()[self.start..self.start + self.len]
    }
    pub fn backing(&self) -> &Backing {
        &self.backing
    }
    /// Offset of the first byte within the backing's bytes.
    pub fn start(&self) -> usize {
        self.start
    }
    pub fn len(&self) -> usize {
        self.len
    }
    /// Absolute file offset of the first byte, when the bytes are the file's.
    pub fn file_offset(&self) -> Option<u64> {
        match self.backing {
            Backing::File(_) => Some(self.start as u64),
            Backing::Owned(_) => None,
        }
    }
    /// True when the bytes are pages of a file mapping (not a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(&self.backing, Backing::File(s) if s.is_mapped())
    }
}

impl Storage {
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
            backing: Backing::File(source.clone()),
            start,
            len,
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
    fn into_storages(self) -> (Vec<Storage>, SwapUnits);
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

/// Copies storages that cannot be handed out as they are: misaligned for one of their views'
/// dtypes, or in big-endian byte order. A big-endian storage is swapped by its storage
/// class's unit, as torch's `load_tensor` does (`storage.byteswap(dtype)` with the class's
/// dtype), never by the dtype of the tensors that view it.
pub(crate) fn fix_storages(
    storages: &mut [Storage],
    swap_units: &SwapUnits,
    tensors: &[TensorDesc],
    big_endian: bool,
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
        if !misaligned && !swap {
            continue;
        }
        let mut buf = AlignedBuf::from_slice(storage.bytes())?;
        if swap {
            for chunk in buf.as_mut_slice().chunks_exact_mut(usize::from(swap_unit)) {
                chunk.reverse();
            }
        }
        storage.backing = Backing::Owned(Arc::new(buf));
        storage.start = 0;
    }
    Ok(())
}
