//! Checkpoint handles: open, close, the tensor table.

use super::guard::*;
use super::options::{self as versioned, Versioned};
use super::types::{dims_ptr, mmckpt_dtype, mmckpt_tensor};
use crate::checkpoint::{Checkpoint, OpenOptions};
use crate::container::OpenMode;
use crate::error::{Error, Result};
use std::ffi::c_char;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An open checkpoint: opaque, immutable after open, safe to read from any number of threads
/// at once. Free it with mmckpt_checkpoint_close.
pub struct mmckpt_checkpoint {
    pub(crate) inner: Checkpoint,
    /// Loads reading this checkpoint now, plus CLOSE_REQUESTED once it was closed during one
    /// (from an on_tensor callback): the last load to finish then frees it.
    loads: AtomicUsize,
}

const CLOSE_REQUESTED: usize = 1 << (usize::BITS - 1);

impl mmckpt_checkpoint {
    pub(crate) fn new(inner: Checkpoint) -> mmckpt_checkpoint {
        mmckpt_checkpoint {
            inner,
            loads: AtomicUsize::new(0),
        }
    }
}

/// A load's hold on a checkpoint handle: a close while any hold lives is carried out when the
/// last hold ends, so a callback that closes the checkpoint being loaded cannot free it under
/// the load.
pub(crate) struct CheckpointHold {
    handle: *const mmckpt_checkpoint,
}

impl CheckpointHold {
    pub(crate) fn new(ckpt: *const mmckpt_checkpoint) -> Result<CheckpointHold> {
        arg_ref(ckpt, "ckpt")?.loads.fetch_add(1, Ordering::AcqRel);
        Ok(CheckpointHold { handle: ckpt })
    }

    pub(crate) fn checkpoint(&self) -> &Checkpoint {
        // SAFETY: non-null (checked in new) and live: a close while this hold exists only marks
        // the handle, and the free happens in the last hold's drop.
        unsafe { &(*self.handle).inner }
    }
}

impl Drop for CheckpointHold {
    fn drop(&mut self) {
        // SAFETY: as in checkpoint(); this is the hold's last use of the handle before a free.
        let loads = unsafe { &(*self.handle).loads };
        if loads.fetch_sub(1, Ordering::AcqRel) == CLOSE_REQUESTED | 1 {
            // SAFETY: closed during the load, and this was the last hold: nothing else may use
            // the handle (using it after close is undefined by the header's contract), and it
            // came from Box::into_raw in mmckpt_checkpoint_open.
            drop(unsafe { Box::from_raw(self.handle.cast_mut()) });
        }
    }
}

/// Fail the open if the pickle names any global outside the allowlist (MMCKPT_ERR_UNSAFE).
pub const MMCKPT_OPEN_STRICT: u32 = 1 << 0;
/// Read the file into memory instead of mapping it: results are identical, tensors are not
/// flagged MAPPED, and the file may change or vanish afterwards without harm.
pub const MMCKPT_OPEN_READ: u32 = 1 << 1;
/// Map the file and prefault every page now (MAP_POPULATE).
pub const MMCKPT_OPEN_POPULATE: u32 = 1 << 2;
/// Expose a little-endian storage that is misaligned in the file (legacy files have no
/// alignment) as the mapping's own bytes instead of copying it into aligned memory when one of
/// its tensors is first asked for: such a tensor keeps MMCKPT_TENSOR_MAPPED and its `data` may
/// be misaligned for its dtype (check `(uintptr_t)data % itemsize`). For engines that read
/// unaligned data (x86 loads, their own copies). Big-endian storages are still copied.
pub const MMCKPT_OPEN_UNALIGNED: u32 = 1 << 3;
/// Map the file copy-on-write (MAP_PRIVATE, readable and writable), as torch.load(mmap=True)
/// does: a consumer that writes into a mapped tensor (through a DLPack export, say) changes a
/// private copy of that page, never the file, and does not fault. A written page costs
/// anonymous memory. Excludes the other ways of bringing the file in (MMCKPT_OPEN_READ,
/// MMCKPT_OPEN_POPULATE, MMCKPT_OPEN_PREAD, MMCKPT_OPEN_AUTO).
pub const MMCKPT_OPEN_COPY_ON_WRITE: u32 = 1 << 4;
/// Verify the CRC-32 of every zip record the checkpoint uses (the pickle, `byteorder`, each
/// storage the table views) while opening: every byte of those records is read once (see
/// BENCHMARKS.md for the cost). A mismatch fails the open with MMCKPT_ERR_FORMAT naming the
/// record and both checksums; records written without a CRC (torch's
/// `set_crc32_options(False)` writes 0) are skipped. A legacy file records no checksums: the
/// open fails with MMCKPT_ERR_UNSUPPORTED.
pub const MMCKPT_OPEN_VERIFY_CRC: u32 = 1 << 5;
/// Per-tensor reads, no mapping: the metadata is read with pread at open (a zip archive's
/// directory, pickle and other non-storage records; a legacy file whole), and each storage is
/// read with pread into owned 64-byte-aligned memory the first time one of its tensors is
/// asked for (mmckpt_checkpoint_tensor_at / _tensor, a load), once even when threads ask at
/// once. A load costs exactly the bytes it loads, and no access can fault (SIGBUS): a failed
/// read is MMCKPT_ERR_IO from the call that needed it. Tensors are not flagged MAPPED. For
/// network and parallel filesystems (NFS, SMB, FUSE, Lustre, …), where mapping is slow or
/// unsafe. Excludes MMCKPT_OPEN_READ, MMCKPT_OPEN_POPULATE and MMCKPT_OPEN_COPY_ON_WRITE.
pub const MMCKPT_OPEN_PREAD: u32 = 1 << 6;
/// MMCKPT_OPEN_PREAD when the file is on a network, parallel or user-space filesystem
/// (`statfs` type NFS, CIFS/SMB, FUSE, Lustre, GPFS, BeeGFS, 9p, Ceph, AFS, OCFS2, GFS2), else
/// a mapping. Excludes MMCKPT_OPEN_READ, MMCKPT_OPEN_POPULATE, MMCKPT_OPEN_COPY_ON_WRITE and
/// MMCKPT_OPEN_PREAD.
pub const MMCKPT_OPEN_AUTO: u32 = 1 << 7;
const OPEN_FLAGS: u32 = MMCKPT_OPEN_STRICT
    | MMCKPT_OPEN_READ
    | MMCKPT_OPEN_POPULATE
    | MMCKPT_OPEN_UNALIGNED
    | MMCKPT_OPEN_COPY_ON_WRITE
    | MMCKPT_OPEN_VERIFY_CRC
    | MMCKPT_OPEN_PREAD
    | MMCKPT_OPEN_AUTO;
/// The flags that choose how the file's bytes are brought in: at most one may be set.
const MODE_FLAGS: [(u32, &str); 5] = [
    (MMCKPT_OPEN_READ, "MMCKPT_OPEN_READ"),
    (MMCKPT_OPEN_POPULATE, "MMCKPT_OPEN_POPULATE"),
    (MMCKPT_OPEN_COPY_ON_WRITE, "MMCKPT_OPEN_COPY_ON_WRITE"),
    (MMCKPT_OPEN_PREAD, "MMCKPT_OPEN_PREAD"),
    (MMCKPT_OPEN_AUTO, "MMCKPT_OPEN_AUTO"),
];

/// The newest version of mmckpt_open_options this header declares. Version 1: `version`,
/// `flags`, `root`. The library accepts every version from 1 to its own.
pub const MMCKPT_OPEN_OPTIONS_VERSION: u32 = 1;

/// Options for mmckpt_checkpoint_open. Initialise with mmckpt_open_options_init(&opts,
/// MMCKPT_OPEN_OPTIONS_VERSION) or `= MMCKPT_OPEN_OPTIONS_INIT`; fields added in later
/// versions come after these, and the library reads only the fields of `version`.
#[repr(C)]
pub struct mmckpt_open_options {
    /// The version of this struct the caller was compiled against (MMCKPT_OPEN_OPTIONS_VERSION).
    pub version: u32,
    /// MMCKPT_OPEN_STRICT, MMCKPT_OPEN_READ, MMCKPT_OPEN_POPULATE, MMCKPT_OPEN_UNALIGNED,
    /// MMCKPT_OPEN_COPY_ON_WRITE, MMCKPT_OPEN_VERIFY_CRC, MMCKPT_OPEN_PREAD, MMCKPT_OPEN_AUTO.
    pub flags: u32,
    /// Dotted path of the sub-object whose tensors form the table ("model", "state_dict");
    /// NULL = the whole object. Read during the call only.
    pub root: *const c_char,
}

// SAFETY: repr(C), starts with the u32 version; u32 and a raw pointer accept any bits.
unsafe impl Versioned for mmckpt_open_options {
    const NAME: &'static str = "mmckpt_open_options";
    const INIT: &'static str = "mmckpt_open_options_init";
    const CURRENT: u32 = MMCKPT_OPEN_OPTIONS_VERSION;
    fn prefix_len(_version: u32) -> usize {
        // Version 1 is every field.
        std::mem::offset_of!(mmckpt_open_options, root) + std::mem::size_of::<*const c_char>()
    }
    fn defaults() -> Self {
        mmckpt_open_options {
            version: MMCKPT_OPEN_OPTIONS_VERSION,
            flags: 0,
            root: std::ptr::null(),
        }
    }
}

/// Fills the fields of version `version` of `*opts` with the defaults (no flags, the whole
/// object) and sets `opts->version`; nothing past that version's fields is written. Pass
/// MMCKPT_OPEN_OPTIONS_VERSION. A version this library does not know (0, or newer than the
/// library) is MMCKPT_ERR_INVALID_ARGUMENT naming both versions, and `*opts` is not written;
/// NULL is MMCKPT_ERR_NULL_ARGUMENT.
#[no_mangle]
pub extern "C" fn mmckpt_open_options_init(
    opts: *mut mmckpt_open_options,
    version: u32,
) -> mmckpt_status {
    guard(|| versioned::init(opts, version))
}

fn open_options(opts: *const mmckpt_open_options) -> Result<OpenOptions> {
    let mut options = OpenOptions::default();
    let Some(opts) = versioned::read(opts)? else {
        return Ok(options);
    };
    if opts.flags & !OPEN_FLAGS != 0 {
        return Err(Error::invalid_argument(format!(
            "opts.flags has unknown bits 0x{:x}",
            opts.flags & !OPEN_FLAGS
        )));
    }
    let modes: Vec<&str> = MODE_FLAGS
        .iter()
        .filter(|(bit, _)| opts.flags & bit != 0)
        .map(|&(_, name)| name)
        .collect();
    if modes.len() > 1 {
        return Err(Error::invalid_argument(format!(
            "{} exclude each other",
            modes.join(" and ")
        )));
    }
    options.strict = opts.flags & MMCKPT_OPEN_STRICT != 0;
    options.accept_unaligned = opts.flags & MMCKPT_OPEN_UNALIGNED != 0;
    options.verify_crc = opts.flags & MMCKPT_OPEN_VERIFY_CRC != 0;
    options.mode = if opts.flags & MMCKPT_OPEN_READ != 0 {
        OpenMode::Read
    } else if opts.flags & MMCKPT_OPEN_POPULATE != 0 {
        OpenMode::MapPopulate
    } else if opts.flags & MMCKPT_OPEN_COPY_ON_WRITE != 0 {
        OpenMode::MapCopyOnWrite
    } else if opts.flags & MMCKPT_OPEN_PREAD != 0 {
        OpenMode::PerTensor
    } else if opts.flags & MMCKPT_OPEN_AUTO != 0 {
        OpenMode::Auto
    } else {
        OpenMode::Map
    };
    options.root = arg_opt_str(opts.root, "opts.root")?.map(str::to_owned);
    Ok(options)
}

/// Opens a checkpoint: maps the file and parses its metadata; no tensor byte is read.
/// `opts` may be NULL (defaults). On success `*out` receives a new handle that the caller
/// frees with mmckpt_checkpoint_close; on failure `*out` is left unchanged.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_open(
    path: *const c_char,
    opts: *const mmckpt_open_options,
    out: *mut *mut mmckpt_checkpoint,
) -> mmckpt_status {
    guard(|| {
        let path = arg_str(path, "path")?;
        let out = out_ptr(out, "out")?;
        let options = open_options(opts)?;
        let inner = Checkpoint::open(path, &options)?;
        out.write(Box::into_raw(Box::new(mmckpt_checkpoint::new(inner))));
        Ok(())
    })
}

/// Closes a checkpoint. NULL is a no-op. Modules that were assign-loaded from it keep the
/// mapping alive and stay valid. Closing the same handle twice, or using it after close, is
/// undefined behaviour (as with free()). Closing it from inside the on_tensor callback of a load
/// that reads it is allowed: the load goes on, and the checkpoint is freed when it returns.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_close(ckpt: *mut mmckpt_checkpoint) {
    // Not Option<Box<_>> like mmckpt_load_report_free: a Box claims sole ownership, which a
    // handle that a running load still reads does not give.
    guard_value((), || {
        let Ok(handle) = arg_ref(ckpt, "ckpt") else {
            return;
        };
        if handle.loads.fetch_or(CLOSE_REQUESTED, Ordering::AcqRel) == 0 {
            // SAFETY: no load holds the handle, it came from Box::into_raw in
            // mmckpt_checkpoint_open and, by the documented contract, is closed once.
            drop(unsafe { Box::from_raw(ckpt) });
        }
    });
}

/// Number of entries in the tensor table; 0 for NULL.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_tensor_count(ckpt: *const mmckpt_checkpoint) -> usize {
    guard_value(0, || arg_ref(ckpt, "ckpt").map_or(0, |c| c.inner.len()))
}

/// Describes entry `index` (0-based, in table order). The description borrows from the
/// checkpoint and stays valid while it is open. A tensor mmckpt cannot represent (quantized,
/// sparse, unknown dtype) gives MMCKPT_ERR_UNSUPPORTED naming it; other entries are unaffected.
/// `data` is aligned to the dtype's itemsize, at most 16 (complex128: 16, as torch's
/// `c10::complex<double>` requires), unless MMCKPT_OPEN_UNALIGNED was given.
/// The first call for a tensor whose storage is misaligned in the file or big-endian copies
/// that storage (only it) into aligned memory, once even when threads ask at once; when that
/// memory cannot be allocated the call fails with MMCKPT_ERR_NO_MEMORY and may be retried.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_tensor_at(
    ckpt: *const mmckpt_checkpoint,
    index: usize,
    out: *mut mmckpt_tensor,
) -> mmckpt_status {
    guard(|| {
        let ckpt = arg_ref(ckpt, "ckpt")?;
        let out = out_ptr(out, "out")?;
        let tensor = ckpt.inner.tensor_at(index)?;
        out.write(mmckpt_tensor::from_checkpoint(&tensor));
        Ok(())
    })
}

/// Describes the tensor with this full dotted name (MMCKPT_ERR_NOT_FOUND if none).
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_tensor(
    ckpt: *const mmckpt_checkpoint,
    name: *const c_char,
    out: *mut mmckpt_tensor,
) -> mmckpt_status {
    guard(|| {
        let ckpt = arg_ref(ckpt, "ckpt")?;
        let name = arg_str(name, "name")?;
        let out = out_ptr(out, "out")?;
        let tensor = ckpt.inner.tensor(name)?;
        out.write(mmckpt_tensor::from_checkpoint(&tensor));
        Ok(())
    })
}

/// Name of entry `index`, also for entries whose tensor cannot be represented; NULL if out of
/// range. Borrowed from the checkpoint: valid until mmckpt_checkpoint_close.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_name_at(
    ckpt: *const mmckpt_checkpoint,
    index: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        arg_ref(ckpt, "ckpt")
            .ok()
            .and_then(|c| c.inner.name_c_at(index))
            .map_or(std::ptr::null(), |n| n.as_ptr())
    })
}

/// "zip", "torchscript", …: static text; NULL for a NULL handle.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_format(ckpt: *const mmckpt_checkpoint) -> *const c_char {
    guard_value(std::ptr::null(), || {
        arg_ref(ckpt, "ckpt")
            .ok()
            .map_or(std::ptr::null(), |c| c.inner.format().name_c().as_ptr())
    })
}

/// `mmckpt_tensor_range.flags`: the range holds exactly the tensor's elements, row-major,
/// little-endian and stored (uncompressed): reading it gives the tensor, nothing to gather or
/// byte-swap. Not set for a strided or expanded view, nor for a big-endian file.
pub const MMCKPT_RANGE_EXACT: u32 = 1 << 0;
/// `mmckpt_tensor_range.flags`: the range is the whole of its storage (no other tensor's
/// bytes around it; a slice of a larger storage may still be exact).
pub const MMCKPT_RANGE_WHOLE_STORAGE: u32 = 1 << 1;

/// Where a tensor's bytes are in its file (mmckpt_checkpoint_tensor_range): the offset index
/// a range-reading loader needs. Borrowed like mmckpt_tensor: valid while the checkpoint is
/// open.
#[repr(C)]
pub struct mmckpt_tensor_range {
    /// The file holding the bytes (a shard's file for a sharded checkpoint), NUL-terminated,
    /// as given to mmckpt_checkpoint_open (or named by the shard index); NULL for a checkpoint
    /// opened from memory (the offsets are then into that memory).
    pub path: *const c_char,
    /// Absolute offset of element [0, …, 0] in the file.
    pub offset: u64,
    /// Bytes from element [0, …, 0] to the end of the last reachable element (strides apply).
    pub length: u64,
    /// Absolute offset of the whole storage the tensor views.
    pub storage_offset: u64,
    /// Bytes of that storage.
    pub storage_length: u64,
    /// Equal ids <=> same storage (as in mmckpt_tensor).
    pub storage_id: u64,
    pub dtype: mmckpt_dtype,
    pub ndim: u32,
    /// ndim entries (NULL when ndim == 0).
    pub shape: *const i64,
    /// ndim entries, in elements (NULL when ndim == 0).
    pub strides: *const i64,
    /// The file stores the storage big-endian: reverse each run of this many bytes (its
    /// storage class's element size) to get the values; 1 for little-endian bytes.
    pub byte_swap_unit: u32,
    /// MMCKPT_RANGE_* bits.
    pub flags: u32,
}

/// Describes where entry `index`'s bytes are in its file, from the metadata alone: no tensor
/// byte is read, mapped or copied (unlike mmckpt_checkpoint_tensor_at, this never copies a
/// misaligned or big-endian storage). Read `length` bytes at `offset` of `path` with pread (or
/// an HTTP range request) to get the tensor's bytes in storage order; with
/// MMCKPT_RANGE_EXACT they are its row-major little-endian elements. MMCKPT_ERR_NOT_FOUND
/// past the end, the entry's own error for a tensor mmckpt cannot represent.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_tensor_range(
    ckpt: *const mmckpt_checkpoint,
    index: usize,
    out: *mut mmckpt_tensor_range,
) -> mmckpt_status {
    guard(|| {
        let ckpt = arg_ref(ckpt, "ckpt")?;
        let out = out_ptr(out, "out")?;
        let range = ckpt.inner.tensor_range(index)?;
        let mut flags = 0;
        if range.exact {
            flags |= MMCKPT_RANGE_EXACT;
        }
        if range.whole_storage {
            flags |= MMCKPT_RANGE_WHOLE_STORAGE;
        }
        out.write(mmckpt_tensor_range {
            path: range.path_c.map_or(std::ptr::null(), |p| p.as_ptr()),
            offset: range.offset,
            length: range.length,
            storage_offset: range.storage_offset,
            storage_length: range.storage_length,
            storage_id: range.storage_id,
            dtype: range.dtype.into(),
            ndim: range.shape.len() as u32,
            shape: dims_ptr(range.shape),
            strides: dims_ptr(range.strides),
            byte_swap_unit: u32::from(range.byte_swap_unit),
            flags,
        });
        Ok(())
    })
}
