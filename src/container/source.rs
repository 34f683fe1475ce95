//! The bytes behind a checkpoint: a read-only (or copy-on-write) file mapping or an owned, 64-byte-aligned buffer.
//! With `container::aligned`, the mapping code: the only `unsafe` outside the ffi layer.

// AlignedBuf lived here; the old path keeps working.
pub use super::aligned::AlignedBuf;
use crate::error::{Error, Result};
use std::fs::File;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Memory the caller lent to a module (`mmckpt_module_bind`): mmckpt writes into it but never
/// frees it.
pub struct BorrowedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the creator of a BorrowedBuf promises exclusive use of the memory for its lifetime.
unsafe impl Send for BorrowedBuf {}
// SAFETY: shared access only reads; writes need &mut self.
unsafe impl Sync for BorrowedBuf {}

impl BorrowedBuf {
    /// # Safety
    /// `ptr` must be non-null, valid for reads and writes of `len` bytes, and not used by
    /// anyone else for as long as the returned value (and what it is moved into) lives.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> BorrowedBuf {
        BorrowedBuf {
            ptr: NonNull::new(ptr).expect("BorrowedBuf::from_raw: null pointer"),
            len,
        }
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the from_raw contract makes ptr valid for len bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the from_raw contract makes ptr valid and exclusively ours for len bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
    pub fn len(&self) -> usize {
        self.len
    }
}

/// How to bring a file's bytes into memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Map the file read-only (the default): pages load on first touch.
    #[default]
    Map,
    /// Map and prefault every page now (MAP_POPULATE).
    MapPopulate,
    /// Read the whole file into owned memory: immune to the file changing underneath.
    Read,
    /// Map the file copy-on-write (`MAP_PRIVATE`, readable and writable), as
    /// `torch.load(mmap=True)` does: a consumer that writes into a tensor's bytes changes its
    /// own private copy of that page, never the file, and does not fault. Pages load on first
    /// touch as with [`OpenMode::Map`]; a written page costs anonymous memory.
    MapCopyOnWrite,
    /// No mapping of the file: its metadata is read with `pread` at open (a zip archive's
    /// directory, pickle and other non-storage records; a legacy file, whose storages sit
    /// between its pickles, is read whole as [`OpenMode::Read`] reads it), and each
    /// storage's bytes are read with `pread` into owned aligned memory the first time one of its
    /// tensors is asked for. A load costs the bytes it loads, and no access can fault (SIGBUS)
    /// when the file changes or the network filesystem fails: errors are `Io` statuses.
    PerTensor,
    /// [`OpenMode::PerTensor`] on filesystems where mapping is slow or unsafe (NFS, CIFS/SMB,
    /// FUSE, Lustre, GPFS, BeeGFS, 9p, Ceph, AFS, ...: `statfs`'s `f_type`), else
    /// [`OpenMode::Map`].
    Auto,
}

/// The `f_type` values (`statfs`, linux/magic.h) of network, parallel and user-space
/// filesystems, where [`OpenMode::Auto`] reads per tensor instead of mapping.
const PER_TENSOR_FILESYSTEMS: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x517B, "smb"),
    (0x6573_5546, "fuse"),
    (0x0BD0_0BD0, "lustre"),
    (0x4750_4653, "gpfs"),
    (0x1903_0301, "beegfs"),
    (0x0102_1997, "9p"),
    (0x00C3_6400, "ceph"),
    (0x5346_414F, "afs"),
    (0x6B41_4653, "kafs"),
    (0x7461_636F, "ocfs2"),
    (0x0116_1970, "gfs2"),
];

/// The mode [`OpenMode::Auto`] picks for `file`: per-tensor reads on the filesystems above,
/// else a mapping (also when `fstatfs` fails).
fn auto_mode(file: &File) -> OpenMode {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: fstatfs writes one statfs into the buffer, which is large enough and
        // zero-initialised; the descriptor is open for the call's duration.
        if unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) } == 0 {
            // f_type's integer type differs between targets (i64, u32, ...).
            #[allow(clippy::unnecessary_cast)]
            // SAFETY: fstatfs succeeded, so the struct is initialised.
            let f_type = unsafe { stat.assume_init() }.f_type as i64;
            if is_per_tensor_filesystem(f_type) {
                return OpenMode::PerTensor;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    OpenMode::Map
}

/// True for a filesystem type (`statfs` `f_type`) where [`OpenMode::Auto`] reads per tensor.
pub fn is_per_tensor_filesystem(f_type: i64) -> bool {
    // f_type is signed on some targets: compare the low 32 bits.
    PER_TENSOR_FILESYSTEMS
        .iter()
        .any(|&(magic, _)| magic == f_type & 0xFFFF_FFFF)
}

/// Where the file's bytes are: mapped or read in (not to be confused with a storage's
/// `checkpoint::Backing`, which says whether its bytes are the file's or a private copy).
enum FileBytes {
    Mapped(memmap2::Mmap),
    /// [`OpenMode::MapCopyOnWrite`]: mmckpt itself only reads it.
    MappedCopyOnWrite(memmap2::MmapMut),
    Owned(AlignedBuf),
    /// [`OpenMode::PerTensor`]: an anonymous mapping of the file's length holding only the
    /// metadata read at open; the rest is zero pages never touched (storages are read with
    /// `pread` when first used, see [`Source::is_per_tensor`]).
    Sparse(memmap2::MmapMut),
}

/// A file's path, kept as given and as a C string (for the C API's offset index).
struct SourcePath {
    path: Box<Path>,
    c: Option<std::ffi::CString>,
}

impl SourcePath {
    fn new(path: &Path) -> SourcePath {
        #[cfg(unix)]
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
        #[cfg(not(unix))]
        let bytes = path.to_string_lossy().into_owned().into_bytes();
        SourcePath {
            path: path.into(),
            c: std::ffi::CString::new(bytes).ok(),
        }
    }
}

/// The whole file's bytes, shared (through `Arc`) by everything that points into them.
pub struct Source {
    backing: FileBytes,
    /// The path it was opened from (`None` for bytes given in memory): what an offset index
    /// names as each tensor's file.
    path: Option<SourcePath>,
    /// The mapped file, kept open only while the checkpoint is being opened (see
    /// [`Source::read_at`]); [`Source::release_file`] closes it.
    file: Mutex<Option<File>>,
    /// The file in per-tensor mode, open as long as the source: storages are read from it by
    /// any number of threads at once (`pread` needs no lock).
    kept: Option<File>,
    /// Bytes read with [`Source::read_exact_at`] (storages in per-tensor mode, CRC checks);
    /// header reads during the parse are not counted.
    bytes_read: AtomicU64,
    /// The opened file's device and inode (`None` for bytes given in memory): a file opened
    /// again by path is the same one only if these match ([`Source::is_same_file`]).
    identity: Option<(u64, u64)>,
}

impl Source {
    /// Maps (or reads) the regular file at `path`. Anything else — a FIFO, a device, a
    /// socket, a directory — is refused without blocking (see [`open_regular_file`]).
    pub fn open(path: &Path, mode: OpenMode) -> Result<Source> {
        let shown = path.display();
        let (file, meta) = open_regular_file(path)?;
        if meta.len() == 0 {
            return Err(Error::format(format!("'{shown}' is empty (0 bytes)")));
        }
        let mode = match mode {
            OpenMode::Auto => auto_mode(&file),
            other => other,
        };
        let backing = match mode {
            OpenMode::PerTensor | OpenMode::Auto => {
                let len = usize::try_from(meta.len())
                    .map_err(|_| Error::no_memory(format!("'{shown}' is too large to read")))?;
                read_metadata(&file, len, &shown.to_string())?
            }
            OpenMode::Read => {
                let len = usize::try_from(meta.len())
                    .map_err(|_| Error::no_memory(format!("'{shown}' is too large to read")))?;
                let mut buf = AlignedBuf::zeroed(len)?;
                use std::io::Read;
                (&file)
                    .read_exact(buf.as_mut_slice())
                    .map_err(|e| Error::io(format!("cannot read '{shown}': {e}")))?;
                FileBytes::Owned(buf)
            }
            OpenMode::Map | OpenMode::MapPopulate => {
                let mut options = memmap2::MmapOptions::new();
                if mode == OpenMode::MapPopulate {
                    options.populate();
                }
                // SAFETY: the mapping is read-only. If another process truncates or rewrites the
                // file while it is mapped, reads can fault (SIGBUS) or see new bytes: this hazard
                // is documented, and OpenMode::Read exists for callers who cannot rule it out.
                let map = unsafe { options.map(&file) }
                    .map_err(|e| Error::io(format!("cannot map '{shown}': {e}")))?;
                FileBytes::Mapped(map)
            }
            OpenMode::MapCopyOnWrite => {
                // SAFETY: a private mapping: writes through it never reach the file. The file
                // changing underneath has the same hazard as for OpenMode::Map.
                let map = unsafe { memmap2::MmapOptions::new().map_copy(&file) }
                    .map_err(|e| Error::io(format!("cannot map '{shown}': {e}")))?;
                FileBytes::MappedCopyOnWrite(map)
            }
        };
        let (file, kept) = match backing {
            FileBytes::Mapped(_) | FileBytes::MappedCopyOnWrite(_) => (Some(file), None),
            FileBytes::Sparse(_) => (None, Some(file)),
            FileBytes::Owned(_) => (None, None),
        };
        Ok(Source {
            backing,
            path: Some(SourcePath::new(path)),
            file: Mutex::new(file),
            kept,
            bytes_read: AtomicU64::new(0),
            identity: file_identity(&meta),
        })
    }

    /// Reads `buf.len()` bytes at `offset` from the file behind a mapping (`pread`), without
    /// touching the mapping's pages; false when there is no file (owned bytes, or released)
    /// or the read fails, and the caller reads the bytes instead.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            if let Some(file) = &self.kept {
                return file.read_exact_at(buf, offset).is_ok();
            }
            match self.file.lock() {
                Ok(file) => file
                    .as_ref()
                    .is_some_and(|f| f.read_exact_at(buf, offset).is_ok()),
                Err(_) => false,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (offset, buf);
            false
        }
    }

    /// Reads `buf.len()` bytes at `offset` of the file (`pread`): an `Io` error naming the
    /// range when there is no file or the read fails.
    /// Large reads in per-tensor mode are split into pieces read on several threads at once
    /// (network and parallel filesystems serve concurrent reads faster than one stream).
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        const PIECE: usize = 16 << 20;
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(8);
        if self.kept.is_some() && buf.len() >= 2 * PIECE && threads > 1 {
            let per_thread = buf.len().div_ceil(threads).max(PIECE);
            let failed = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                for (i, part) in buf.chunks_mut(per_thread).enumerate() {
                    let failed = &failed;
                    scope.spawn(move || {
                        let at = offset + (i * per_thread) as u64;
                        if !self.read_in_chunks(at, part) {
                            failed.store(true, Ordering::Relaxed);
                        }
                    });
                }
            });
            if !failed.load(Ordering::Relaxed) {
                self.bytes_read
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                return Ok(());
            }
        } else if self.read_in_chunks(offset, buf) {
            self.bytes_read
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            return Ok(());
        }
        Err(Error::io(format!(
            "cannot read bytes {offset}..+{} of '{}'",
            buf.len(),
            self.path()
                .map_or("the file".into(), |p| p.display().to_string())
        )))
    }

    /// [`Source::read_at`] a few MiB at a time: one huge `pread` waits for all its pages
    /// before copying any, while a run of smaller ones lets the kernel's read-ahead fetch the
    /// next chunk during the copy (measured: 4 MiB reads of a cold file run at the device's
    /// speed, a single 64 MiB read at a third of it).
    fn read_in_chunks(&self, offset: u64, buf: &mut [u8]) -> bool {
        const CHUNK: usize = 4 << 20;
        buf.chunks_mut(CHUNK)
            .enumerate()
            .all(|(i, chunk)| self.read_at(offset + (i * CHUNK) as u64, chunk))
    }

    /// The whole file's bytes when they are in memory (mapped or read in); `None` in per-tensor
    /// mode, where only the metadata is.
    pub fn bytes_in_memory(&self) -> Option<&[u8]> {
        match self.backing {
            FileBytes::Sparse(_) => None,
            _ => Some(self.bytes()),
        }
    }

    /// Opened with [`OpenMode::PerTensor`]: [`Source::bytes`] holds the metadata only, and
    /// storages must be read with [`Source::read_exact_at`].
    pub fn is_per_tensor(&self) -> bool {
        matches!(self.backing, FileBytes::Sparse(_))
    }

    /// Bytes read from the file with `pread` since open, besides the metadata (per-tensor
    /// mode's storages, a CRC check's pieces).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Closes the file kept for [`Source::read_at`]; the mapping stays valid without it. In
    /// per-tensor mode the file stays open (storages are read from it when first used).
    pub fn release_file(&self) {
        if self.is_per_tensor() {
            return;
        }
        if let Ok(mut file) = self.file.lock() {
            file.take();
        }
    }

    /// Wraps bytes already in memory (tests, fuzzing, callers with their own buffer).
    pub fn from_bytes(bytes: &[u8]) -> Result<Source> {
        Ok(Source {
            backing: FileBytes::Owned(AlignedBuf::from_slice(bytes)?),
            path: None,
            file: Mutex::new(None),
            kept: None,
            bytes_read: AtomicU64::new(0),
            identity: None,
        })
    }

    /// True when `meta` (of a file opened again by [`Source::path`]) describes the file this
    /// source was opened from: same device and inode (its length may have changed since).
    /// False for bytes in memory.
    pub fn is_same_file(&self, meta: &std::fs::Metadata) -> bool {
        self.identity.is_some() && self.identity == file_identity(meta)
    }

    /// True when the bytes are a shared read-only mapping of the file ([`OpenMode::Map`],
    /// [`OpenMode::MapPopulate`]): always the file's contents, which reading the file again
    /// gives too. Not for a copy-on-write mapping, which its user may have written to.
    pub fn maps_file_contents(&self) -> bool {
        matches!(self.backing, FileBytes::Mapped(_))
    }

    /// The path the file was opened from; `None` for bytes given in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_ref().map(|p| &*p.path)
    }

    /// [`Source::path`] as a C string (`None` too for a path with a NUL byte, which no file
    /// opened by path has).
    pub fn path_c(&self) -> Option<&std::ffi::CStr> {
        self.path.as_ref().and_then(|p| p.c.as_deref())
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            FileBytes::Mapped(map) => map,
            FileBytes::MappedCopyOnWrite(map) => map,
            FileBytes::Owned(buf) => buf.as_slice(),
            FileBytes::Sparse(map) => map,
        }
    }

    /// True when the bytes are the file's page-cache pages (zero-copy), false when owned.
    pub fn is_mapped(&self) -> bool {
        matches!(
            self.backing,
            FileBytes::Mapped(_) | FileBytes::MappedCopyOnWrite(_)
        )
    }

    /// Drops the mapping's pages that lie wholly inside `bytes()[start..start + len]` from the
    /// process's resident set (`MADV_DONTNEED`); a no-op for owned bytes. For a range the
    /// caller has copied and will not read through the mapping again: the mapping is
    /// read-only, so nothing is lost, and a later touch re-reads the page from the page cache.
    /// Pages shared with bytes outside the range are kept.
    pub fn release_pages(&self, start: usize, len: usize) {
        let map_len = match &self.backing {
            FileBytes::Mapped(map) => map.len(),
            FileBytes::MappedCopyOnWrite(map) => map.len(),
            FileBytes::Owned(_) | FileBytes::Sparse(_) => return,
        };
        let page = page_size();
        let first = start.div_ceil(page) * page;
        let end = start.saturating_add(len).min(map_len) / page * page;
        if end <= first {
            return;
        }
        #[cfg(unix)]
        // SAFETY: the range is inside the mapping (clamped to its length) and page-aligned
        // (the mapping starts on a page). A read-only file mapping is never written, so
        // MADV_DONTNEED discards no data: references into these pages stay valid and read the
        // file's bytes (from the page cache) again on the next touch. In a copy-on-write
        // mapping it would also drop private writes, but the range is a storage that was
        // copied before any tensor of it was handed out, so no one wrote into these pages.
        let _ = unsafe {
            match &self.backing {
                FileBytes::Mapped(map) => map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first,
                    end - first,
                ),
                FileBytes::MappedCopyOnWrite(map) => map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first,
                    end - first,
                ),
                FileBytes::Owned(_) | FileBytes::Sparse(_) => Ok(()),
            }
        };
    }

    /// Tells the kernel how the mapping will be read; a no-op for owned bytes.
    pub fn advise_sequential(&self) {
        self.advise(memmap2::Advice::Sequential);
    }

    pub fn advise_will_need(&self) {
        self.advise(memmap2::Advice::WillNeed);
    }

    /// Maps the pages holding `bytes()[start..start + len]` now, in one call
    /// (`MADV_POPULATE_READ`), for a range about to be read whole (a pickle, a zip
    /// directory): one fault per 16 pages otherwise, each a microsecond or more in a virtual
    /// machine. Waits for pages not yet cached; a no-op for owned bytes and where the kernel
    /// (before 5.14) does not know the advice.
    pub fn populate_range(&self, start: usize, len: usize) {
        let page = page_size();
        let first = start / page * page;
        let len = start.saturating_add(len) - first;
        let _ = match &self.backing {
            FileBytes::Mapped(map) => map.advise_range(memmap2::Advice::PopulateRead, first, len),
            FileBytes::MappedCopyOnWrite(map) => {
                map.advise_range(memmap2::Advice::PopulateRead, first, len)
            }
            FileBytes::Owned(_) | FileBytes::Sparse(_) => Ok(()),
        };
    }

    /// Asks the kernel to start reading `bytes()[start..start + len]` in now
    /// (`MADV_WILLNEED` on the pages holding it; a private mapping reads the same page cache);
    /// a no-op for owned bytes.
    pub fn advise_will_need_range(&self, start: usize, len: usize) {
        let map_len = match &self.backing {
            FileBytes::Mapped(map) => map.len(),
            FileBytes::MappedCopyOnWrite(map) => map.len(),
            FileBytes::Owned(_) | FileBytes::Sparse(_) => return,
        };
        let page = page_size();
        let first = start / page * page;
        let end = start.saturating_add(len).min(map_len);
        // One call per piece: the kernel reads at most one read-ahead window per MADV_WILLNEED
        // (`force_page_cache_ra`) and silently drops the rest of a longer range.
        let advice = memmap2::Advice::WillNeed;
        for piece in (first..end).step_by(WILL_NEED_PIECE_BYTES) {
            let len = WILL_NEED_PIECE_BYTES.min(end - piece);
            let _ = match &self.backing {
                FileBytes::Mapped(map) => map.advise_range(advice, piece, len),
                FileBytes::MappedCopyOnWrite(map) => map.advise_range(advice, piece, len),
                FileBytes::Owned(_) | FileBytes::Sparse(_) => Ok(()),
            };
        }
    }

    fn advise(&self, advice: memmap2::Advice) {
        let _ = match &self.backing {
            FileBytes::Mapped(map) => map.advise(advice),
            FileBytes::MappedCopyOnWrite(map) => map.advise(advice),
            FileBytes::Owned(_) | FileBytes::Sparse(_) => Ok(()),
        };
    }
}

/// Bytes at the end of a zip archive that hold its end records: the end of central directory
/// (22 bytes and a comment of up to 65,535), the zip64 locator (20) and zip64 record (56).
const END_RECORDS_MAX: usize = 22 + 65_535 + 20 + 56;

/// [`OpenMode::PerTensor`]'s image of a file: an anonymous mapping of its length (untouched
/// pages cost nothing) holding, read with `pread`, what opening parses. For a zip archive: the
/// end records, the central directory and every record outside `data/` (the pickle,
/// `byteorder`, TorchScript's `code/` and constants); local headers are read with `pread`
/// by the parse itself. Anything else (a legacy stream, a shard index) is read whole into
/// owned memory, as [`OpenMode::Read`] reads it. The
/// parse here only plans the reads: the open parses the archive again and reports any error.
fn read_metadata(file: &File, len: usize, shown: &str) -> Result<FileBytes> {
    read_metadata_io(file, len).map_err(|e| match e.downcast::<Error>() {
        Ok(e) => e,
        Err(e) => Error::io(format!("cannot read '{shown}': {e}")),
    })
}

fn read_metadata_io(file: &File, len: usize) -> std::io::Result<FileBytes> {
    use std::os::unix::fs::FileExt;
    let mut image = memmap2::MmapMut::map_anon(len)?;
    let read = |image: &mut memmap2::MmapMut, start: u64, size: u64| -> std::io::Result<()> {
        let range = usize::try_from(start)
            .ok()
            .and_then(|s| Some(s..s.checked_add(usize::try_from(size).ok()?)?))
            .filter(|r| r.end <= len);
        match range {
            Some(range) => file.read_exact_at(&mut image[range], start),
            None => Ok(()), // out of the file: the parse reports it
        }
    };
    read(&mut image, 0, 9.min(len) as u64)?;
    // A safetensors file: its metadata is the 8-byte length and the JSON header after it.
    if len >= 9 && image[8] == b'{' {
        let header = u64::from_le_bytes(image[..8].try_into().unwrap_or_default());
        if header.checked_add(8).is_some_and(|end| end <= len as u64) {
            read(&mut image, 8, header)?;
            return Ok(FileBytes::Sparse(image));
        }
    }
    if !crate::container::zip::looks_like_zip(&image) {
        // A legacy stream's storages sit between its pickles, and a shard index is small:
        // read whole, as OpenMode::Read does (still no mapping, no SIGBUS).
        drop(image);
        let mut buf = AlignedBuf::zeroed(len).map_err(std::io::Error::other)?;
        file.read_exact_at(buf.as_mut_slice(), 0)?;
        return Ok(FileBytes::Owned(buf));
    }
    let tail = END_RECORDS_MAX.min(len);
    read(&mut image, (len - tail) as u64, tail as u64)?;
    if let Some((offset, size)) = crate::container::zip::directory_range(&image) {
        read(&mut image, offset, size)?;
    }
    let read_at = |offset: u64, buf: &mut [u8]| file.read_exact_at(buf, offset).is_ok();
    let reads = crate::container::zip::HeaderReads {
        read_at: &read_at,
        min_spacing: 0,
    };
    let limits = crate::container::zip::ZipLimits::default();
    if let Ok(archive) = crate::container::zip::parse_with(&image, &limits, Some(reads)) {
        let data = format!("{}/data/", archive.prefix());
        let wanted: Vec<(u64, u64)> = archive
            .records()
            .filter(|r| !r.name.starts_with(&data))
            .map(|r| (r.data_offset, r.size))
            .collect();
        for (offset, size) in wanted {
            read(&mut image, offset, size)?;
        }
    }
    Ok(FileBytes::Sparse(image))
}

/// The system's page size (4096 where it cannot be asked).
/// The range of one `MADV_WILLNEED` call: the smallest read-ahead window a device has by
/// default (128 KiB), since the kernel reads at most one window per call.
pub(crate) const WILL_NEED_PIECE_BYTES: usize = 128 << 10;

fn page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads a system constant.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size > 0 {
            return size as usize;
        }
    }
    4096
}

/// A file's device and inode (`None` elsewhere than on Unix).
fn file_identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Opens `path` for reading if it is a regular file, and returns it with its metadata; any
/// other file type is an `Io` error naming the path and the type.
///
/// The type is checked on the opened file (`fstat`), so a path swapped after a check cannot
/// slip through, and the open itself never waits: opening a FIFO for reading blocks until a
/// writer appears (a device may block too), so the file is opened with `O_NONBLOCK` and the
/// flag is cleared once the file is known to be regular.
pub fn open_regular_file(path: &Path) -> Result<(File, std::fs::Metadata)> {
    let shown = path.display();
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options
        .open(path)
        .map_err(|e| Error::io(format!("cannot open '{shown}': {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat '{shown}': {e}")))?;
    if !meta.is_file() {
        return Err(Error::io(format!(
            "'{shown}' is {}, not a regular file",
            file_type_name(&meta.file_type())
        )));
    }
    #[cfg(unix)]
    clear_nonblocking(&file).map_err(|e| Error::io(format!("cannot open '{shown}': {e}")))?;
    Ok((file, meta))
}

/// Reads the whole regular file at `path` (a module spec): [`open_regular_file`]'s checks,
/// then its bytes (as many as the file holds: memory is the file's size).
pub fn read_regular_file(path: &Path) -> Result<Vec<u8>> {
    let (mut file, meta) = open_regular_file(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    use std::io::Read;
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read '{}': {e}", path.display())))?;
    Ok(bytes)
}

/// The file type in words, for messages ("a directory", "a FIFO").
pub fn file_type_name(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// Clears `O_NONBLOCK` (set by [`open_regular_file`] only so that the open cannot wait).
#[cfg(unix)]
fn clear_nonblocking(file: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_GETFL/F_SETFL on a descriptor this function borrows (open for the
    // call's duration) reads and sets its status flags only; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to back the memory of `vec` (its capacity, used or not) with transparent
/// huge pages where the system allows it (THP in `madvise` mode): a large vector of metadata
/// is then faulted in 2 MiB at a time instead of 4 KiB, a fault per 512 pages. A hint only:
/// the contents never change, and small vectors (under 4 MiB) are left alone.
pub fn advise_huge_pages<T>(vec: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let bytes = vec.capacity().saturating_mul(std::mem::size_of::<T>());
        if bytes < 4 << 20 {
            return;
        }
        let start = (vec.as_mut_ptr() as usize).next_multiple_of(PAGE);
        let end = (vec.as_mut_ptr() as usize + bytes) & !(PAGE - 1);
        // SAFETY: [start, end) is whole pages inside the vector's allocation, which this
        // process owns; MADV_HUGEPAGE changes only how later faults there are served, never
        // the contents or validity of the memory. Its result is ignored (a hint).
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = vec;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_reads_per_tensor_on_network_filesystems_only() {
        // nfs, cifs, fuse, lustre, 9p; then ext4, xfs, btrfs, tmpfs, overlayfs.
        for magic in [0x6969, 0xFF53_4D42, 0x6573_5546, 0x0BD0_0BD0, 0x0102_1997] {
            assert!(is_per_tensor_filesystem(magic), "{magic:x}");
        }
        for magic in [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630] {
            assert!(!is_per_tensor_filesystem(magic), "{magic:x}");
        }
        // A sign-extended 32-bit magic (f_type is signed on some targets) still matches.
        assert!(is_per_tensor_filesystem(0xFF53_4D42_u32 as i32 as i64));
    }

    #[test]
    fn open_reports_missing_files_and_directories() {
        let err = Source::open(Path::new("/nonexistent/x.pt"), OpenMode::Map)
            .err()
            .unwrap();
        assert_eq!(err.kind, crate::error::ErrorKind::Io);
        assert!(err.message.contains("/nonexistent/x.pt"));
        let err = Source::open(Path::new("/tmp"), OpenMode::Map)
            .err()
            .unwrap();
        assert_eq!(err.kind, crate::error::ErrorKind::Io);
    }
}
