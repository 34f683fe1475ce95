//! Meta modules and load: build a skeleton, give it storage, load a checkpoint into it.
//!
//! Re-entrancy: a load calls the caller's on_tensor callback while it holds the module, and C
//! code in the callback still has the module's handle. Rust's borrow rules make such a call
//! impossible in the Rust API (`Module::load_with` borrows the module mutably and the callback
//! sees only `&Entry`); here the handle carries a load-in-progress state outside the `Module`,
//! checked before any call turns the handle into a reference, so that every call on the module
//! being loaded is refused (MMCKPT_ERR_STATE, naming the call) instead of reaching a module
//! borrowed by the load. mmckpt_module_count answers, and mmckpt_module_free is carried out when
//! the load returns.

use super::checkpoint::{mmckpt_checkpoint, CheckpointHold};
use super::guard::*;
use super::options::{self as versioned, Versioned};
use super::types::{mmckpt_dtype_value, mmckpt_tensor};
use crate::container::BorrowedBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::module::{Entry, EntryKind, LoadOptions, LoadReport, Module, SplitRule, TensorParallel};
use std::ffi::{c_char, c_void, CString};
use std::ptr::{addr_of, addr_of_mut};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// A module: entry names, dtypes, shapes and kinds, and (after materialize, bind or load) their
/// data. Opaque; free it with mmckpt_module_free. One thread at a time may use a module; several
/// modules may be loaded from one checkpoint on several threads at once.
pub struct mmckpt_module {
    inner: Module,
    /// IDLE, or LOADING (with FREE_REQUESTED once freed from inside the load's callback).
    state: AtomicU32,
    /// The number of entries while LOADING (no call may read `inner` then).
    len_while_loading: AtomicUsize,
}

const IDLE: u32 = 0;
const LOADING: u32 = 1;
const FREE_REQUESTED: u32 = 2;

impl mmckpt_module {
    fn new(inner: Module) -> mmckpt_module {
        mmckpt_module {
            inner,
            state: AtomicU32::new(IDLE),
            len_while_loading: AtomicUsize::new(0),
        }
    }
}

/// The handle's state, read without touching `inner` (which a running load may hold mutably).
///
/// # Safety
/// `m` is non-null and a live handle.
unsafe fn state<'a>(m: *const mmckpt_module) -> &'a AtomicU32 {
    // SAFETY: the caller guarantees a live handle; `state` is a field apart from `inner`, so
    // this shared reference does not overlap the load's mutable borrow of `inner`.
    unsafe { &*addr_of!((*m).state) }
}

fn check_idle(m: *const mmckpt_module, call: &str) -> Result<()> {
    if m.is_null() {
        return Err(null_argument("m"));
    }
    // SAFETY: non-null, and the caller guarantees a live handle.
    if unsafe { state(m) }.load(Ordering::Acquire) != IDLE {
        return Err(Error::state(format!(
            "{call}: the module is being loaded (this is a call from inside its own on_tensor \
             callback); use the entry the callback receives, and change the module after the \
             load returns"
        )));
    }
    Ok(())
}

/// The module of a handle for a reading call named `call`; refused during the module's load.
pub(super) fn module_ref<'a>(m: *const mmckpt_module, call: &str) -> Result<&'a Module> {
    check_idle(m, call)?;
    // SAFETY: non-null and idle: no load holds `inner`, and the caller guarantees a live
    // handle that no other thread uses during the call.
    Ok(unsafe { &*addr_of!((*m).inner) })
}

/// The module of a handle for a changing call named `call`; refused during the module's load.
fn module_mut<'a>(m: *mut mmckpt_module, call: &str) -> Result<&'a mut Module> {
    check_idle(m, call)?;
    // SAFETY: as module_ref, and the caller does not use the module elsewhere during the call.
    Ok(unsafe { &mut *addr_of_mut!((*m).inner) })
}

/// mmckpt_module_add: the entry is a buffer (default: a parameter).
pub const MMCKPT_ENTRY_BUFFER: u32 = 1 << 0;
/// mmckpt_module_add: a non-persistent buffer (not in the state dict; never loaded). Implies
/// MMCKPT_ENTRY_BUFFER.
pub const MMCKPT_ENTRY_NON_PERSISTENT: u32 = 1 << 1;
const ENTRY_FLAGS: u32 = MMCKPT_ENTRY_BUFFER | MMCKPT_ENTRY_NON_PERSISTENT;

fn write_module(
    out: *mut *mut mmckpt_module,
    build: impl FnOnce() -> Result<Module>,
) -> Result<()> {
    let out = out_ptr(out, "out")?;
    let inner = build()?;
    out.write(Box::into_raw(Box::new(mmckpt_module::new(inner))));
    Ok(())
}

/// Creates an empty meta module. `name` (nullable: "Module") is used in load messages, as
/// torch uses the class name; it is copied. On success `*out` receives a new handle that the
/// caller frees with mmckpt_module_free.
#[no_mangle]
pub extern "C" fn mmckpt_module_new(
    name: *const c_char,
    out: *mut *mut mmckpt_module,
) -> mmckpt_status {
    guard(|| {
        let name = arg_opt_str(name, "name")?.unwrap_or("Module");
        write_module(out, || Ok(Module::new(name)))
    })
}

/// Builds a meta module from a JSON spec (`json`, `len` bytes, need not be NUL-terminated; read
/// during the call only; the format is docs/module-spec.md). No tensor memory is allocated. A
/// bad spec is MMCKPT_ERR_INVALID_ARGUMENT with a message naming the node's path; a spec that
/// expands past a bound (2^20 modules or entries, 64 MiB of names, 2^22 JSON values, 128
/// levels) is MMCKPT_ERR_LIMIT, checked before anything is built. On success `*out` receives a
/// new handle (free with mmckpt_module_free).
#[no_mangle]
pub extern "C" fn mmckpt_module_from_spec(
    json: *const c_char,
    len: usize,
    out: *mut *mut mmckpt_module,
) -> mmckpt_status {
    guard(|| {
        // `json` is required even when empty (an empty spec is not a spec).
        let json = arg_ref(json, "json")?;
        let bytes = arg_slice(std::ptr::from_ref(json).cast::<u8>(), len, "json")?;
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::invalid_argument(format!("module spec is not UTF-8: {e}")))?;
        write_module(out, || Module::from_spec(text))
    })
}

/// Builds a meta module mirroring a checkpoint's tensor table (every tensor a parameter with the
/// checkpoint's name, dtype and shape; no data). The module does not reference the checkpoint.
/// On success `*out` receives a new handle (free with mmckpt_module_free).
#[no_mangle]
pub extern "C" fn mmckpt_module_from_checkpoint(
    ckpt: *const mmckpt_checkpoint,
    out: *mut *mut mmckpt_module,
) -> mmckpt_status {
    guard(|| {
        let ckpt = arg_ref(ckpt, "ckpt")?;
        write_module(out, || Module::from_checkpoint(&ckpt.inner))
    })
}

/// Adds a meta entry: `name` (dotted, copied), `dtype`, `shape` (`ndim` values, read during the
/// call; may be NULL when ndim == 0), `flags` MMCKPT_ENTRY_*. Fails with
/// MMCKPT_ERR_INVALID_ARGUMENT for a duplicate or malformed name, an unknown dtype, a negative
/// size or unknown flags; the module is then unchanged. Refused (MMCKPT_ERR_STATE) from inside
/// the on_tensor callback of a load into this module.
#[no_mangle]
pub extern "C" fn mmckpt_module_add(
    m: *mut mmckpt_module,
    name: *const c_char,
    dtype: mmckpt_dtype_value,
    shape: *const i64,
    ndim: u32,
    flags: u32,
) -> mmckpt_status {
    guard(|| {
        let m = module_mut(m, "mmckpt_module_add")?;
        let name = arg_str(name, "name")?;
        let dtype = DType::from_code(dtype).ok_or_else(|| {
            Error::invalid_argument(format!("dtype {dtype} is not an mmckpt_dtype"))
        })?;
        if flags & !ENTRY_FLAGS != 0 {
            return Err(Error::invalid_argument(format!(
                "flags has unknown bits 0x{:x}",
                flags & !ENTRY_FLAGS
            )));
        }
        // Bounds how much caller memory is read; the module's own limit is the same number.
        if ndim as usize > crate::torch::MAX_NDIM {
            return Err(Error::invalid_argument(format!(
                "ndim {ndim} is more than {}",
                crate::torch::MAX_NDIM
            )));
        }
        let shape = arg_slice(shape, ndim as usize, "shape")?;
        let kind = if flags & MMCKPT_ENTRY_NON_PERSISTENT != 0 {
            EntryKind::Buffer { persistent: false }
        } else if flags & MMCKPT_ENTRY_BUFFER != 0 {
            EntryKind::Buffer { persistent: true }
        } else {
            EntryKind::Parameter
        };
        m.add(name, dtype, shape, kind)
    })
}

/// Frees a module and the storage it owns (caller-bound memory is not freed). Views it holds
/// release their checkpoint mapping. NULL is a no-op; freeing twice is undefined behaviour.
/// Called from inside the on_tensor callback of a load into this module, it stops that load:
/// the callback's return value is ignored, mmckpt_module_load returns MMCKPT_ERR_CALLBACK, and
/// the module is freed just before it returns (so the handle must not be used after this call,
/// as always).
#[no_mangle]
pub extern "C" fn mmckpt_module_free(m: *mut mmckpt_module) {
    // Not Option<Box<_>> like mmckpt_load_report_free: a Box claims sole ownership, which a
    // handle whose load is still running does not give.
    guard_value((), || {
        if m.is_null() {
            return;
        }
        // SAFETY: non-null, and the caller guarantees a live handle.
        let state = unsafe { state(m) };
        if state.fetch_or(FREE_REQUESTED, Ordering::AcqRel) == IDLE {
            // SAFETY: no load holds the handle; it came from Box::into_raw in a module
            // constructor and, by the documented contract, is freed once.
            drop(unsafe { Box::from_raw(m) });
        }
    });
}

/// Number of entries (parameters and buffers, persistent or not); 0 for NULL. Also answers from
/// inside the on_tensor callback of a load into this module.
#[no_mangle]
pub extern "C" fn mmckpt_module_count(m: *const mmckpt_module) -> usize {
    guard_value(0, || {
        if m.is_null() {
            return 0;
        }
        // SAFETY: non-null, and the caller guarantees a live handle.
        if unsafe { state(m) }.load(Ordering::Acquire) != IDLE {
            // SAFETY: as above; like `state`, a field apart from the `inner` a load holds.
            return unsafe { &*addr_of!((*m).len_while_loading) }.load(Ordering::Relaxed);
        }
        module_ref(m, "mmckpt_module_count").map_or(0, Module::len)
    })
}

/// Describes entry `index` (in the order entries were added). The description borrows from the
/// module: valid until the module is freed or the entry is changed by a load, materialize or
/// bind. `data` is NULL for a meta entry. Refused (MMCKPT_ERR_STATE) from inside the on_tensor
/// callback of a load into this module: use the callback's `entry`.
#[no_mangle]
pub extern "C" fn mmckpt_module_at(
    m: *const mmckpt_module,
    index: usize,
    out: *mut mmckpt_tensor,
) -> mmckpt_status {
    guard(|| {
        let m = module_ref(m, "mmckpt_module_at")?;
        let out = out_ptr(out, "out")?;
        let entry = m.entry_at(index).ok_or_else(|| {
            Error::not_found(format!(
                "entry index {index} is out of range (the module has {} entries)",
                m.len()
            ))
        })?;
        out.write(mmckpt_tensor::from_module_entry(entry));
        Ok(())
    })
}

/// Describes the entry with this dotted name (MMCKPT_ERR_NOT_FOUND if none); borrowed as in
/// mmckpt_module_at, and refused during the module's own load as mmckpt_module_at is.
#[no_mangle]
pub extern "C" fn mmckpt_module_get(
    m: *const mmckpt_module,
    name: *const c_char,
    out: *mut mmckpt_tensor,
) -> mmckpt_status {
    guard(|| {
        let m = module_ref(m, "mmckpt_module_get")?;
        let name = arg_str(name, "name")?;
        let out = out_ptr(out, "out")?;
        let entry = m
            .get(name)
            .ok_or_else(|| Error::not_found(format!("module has no entry named '{name}'")))?;
        out.write(mmckpt_tensor::from_module_entry(entry));
        Ok(())
    })
}

/// Like torch's to_empty(): gives every entry without data module-owned, zeroed, 64-byte
/// aligned, contiguous storage of its declared dtype (freed with the module). Entries with data
/// keep it. On failure (MMCKPT_ERR_NO_MEMORY) the module is unchanged. Refused
/// (MMCKPT_ERR_STATE) from inside the on_tensor callback of a load into this module.
#[no_mangle]
pub extern "C" fn mmckpt_module_materialize(m: *mut mmckpt_module) -> mmckpt_status {
    guard(|| module_mut(m, "mmckpt_module_materialize")?.materialize())
}

/// Binds caller memory as entry `name`'s contiguous storage, replacing any data it had. `data`
/// must hold at least numel × itemsize bytes of the entry's dtype (MMCKPT_ERR_BUFFER_TOO_SMALL
/// otherwise, module unchanged). mmckpt writes into it during copy loads and never frees it; it
/// must stay valid and unused by others until the module is freed or the entry is re-bound or
/// replaced by an assign load. Refused (MMCKPT_ERR_STATE) from inside the on_tensor callback of
/// a load into this module.
#[no_mangle]
pub extern "C" fn mmckpt_module_bind(
    m: *mut mmckpt_module,
    name: *const c_char,
    data: *mut c_void,
    nbytes: usize,
) -> mmckpt_status {
    guard(|| {
        let m = module_mut(m, "mmckpt_module_bind")?;
        let name = arg_str(name, "name")?;
        if data.is_null() {
            return Err(null_argument("data"));
        }
        // SAFETY: non-null; the caller guarantees `nbytes` writable bytes that only this module
        // uses for as long as it holds them (documented above).
        let buf = unsafe { BorrowedBuf::from_raw(data as *mut u8, nbytes) };
        m.bind(name, buf)
    })
}

/// Per-tensor callback of mmckpt_module_load: called once per loaded entry, after it is bound
/// or copied, in file-offset order. `entry` is valid during the call only. Return 0 to go on;
/// non-zero stops the load with MMCKPT_ERR_CALLBACK. It must not unwind (throw) into mmckpt.
///
/// From inside the callback, every call that only reads works: the checkpoint being loaded
/// (tensors, names, values, mmckpt_module_from_checkpoint), other modules and checkpoints (even
/// loads into other modules), mmckpt_last_error, mmckpt_status_str, the dtype and version
/// helpers, and mmckpt_module_count of the module being loaded. Calls on the module being
/// loaded are refused with MMCKPT_ERR_STATE naming the call (mmckpt_module_add, _materialize,
/// _bind, _load, _at, _get), except mmckpt_module_free, which stops the load and frees the
/// module when mmckpt_module_load returns. mmckpt_checkpoint_close of the checkpoint being
/// loaded lets the load finish and frees the checkpoint when it returns.
///
/// Streaming to a device through a reusable staging buffer (entries bound alternately to two
/// pinned slots, the upload of one overlapped with the copy into the other): docs/streaming.md
/// and examples/staging.c.
pub type mmckpt_tensor_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, entry: *const mmckpt_tensor) -> i32>;

/// Bind views into the checkpoint instead of copying (torch's assign=True).
pub const MMCKPT_LOAD_ASSIGN: u32 = 1 << 0;
/// Missing or unexpected keys fail the load (on after mmckpt_load_options_init).
pub const MMCKPT_LOAD_STRICT: u32 = 1 << 1;
/// With ASSIGN: keep the module's dtypes, converting (into owned storage) where the
/// checkpoint's differ; matching entries stay zero-copy.
pub const MMCKPT_LOAD_CONVERT: u32 = 1 << 2;
/// Every loaded entry is row-major contiguous, so its `data` may be read as a plain C array.
/// With ASSIGN, an entry whose checkpoint tensor is already row-major stays a zero-copy view;
/// a strided one (transposed, permuted, as_strided) is copied into module-owned row-major
/// memory in the checkpoint's dtype (with CONVERT, the declared one).
/// mmckpt_load_report_copied lists the copies. Copy loads (materialize / bind, no ASSIGN)
/// always write row-major memory, so for them this flag changes nothing.
pub const MMCKPT_LOAD_CONTIGUOUS: u32 = 1 << 3;
/// Bring the loaded entries' storages in ahead of the copy, in file order and at most
/// 256 MiB ahead of it: a mapped file is advised (MADV_WILLNEED), a file opened per tensor
/// has those storages read (pread) on a thread that ends before the load returns. A cold load
/// then streams the file. Results are the same; an assign load that reads no tensor byte
/// (no CONVERT, no CONTIGUOUS) fetches nothing.
pub const MMCKPT_LOAD_PREFETCH: u32 = 1 << 4;
/// A copy load (no ASSIGN) reads each entry's bytes from the file straight into new
/// module-owned memory, bypassing the page cache (O_DIRECT), in parallel: a cold file is read
/// at the device's speed. The bytes are the same. It applies to an entry that is materialized
/// (owned; the new memory replaces it, so its old `data` pointer is stale), at least 64 KiB,
/// whose checkpoint tensor has the declared dtype, is row-major contiguous, starts on a
/// 64-byte boundary of a mapped file and is loaded whole; every other entry is copied as
/// without the flag (conversions, strided views, tensor-parallel shares, bound memory,
/// misaligned, big-endian or deflated storages, MMCKPT_OPEN_READ, a copy-on-write mapping, a
/// file replaced since it was opened). A file system without O_DIRECT (tmpfs) is read with pread instead. All direct
/// reads happen before the module changes: a failed or short read (a file truncated since it
/// was opened) is MMCKPT_ERR_IO naming the entry and byte, and the module is as it was. With
/// PREFETCH, only the entries copied as usual are prefetched.
pub const MMCKPT_LOAD_DIRECT_READS: u32 = 1 << 5;
const LOAD_FLAGS: u32 = MMCKPT_LOAD_ASSIGN
    | MMCKPT_LOAD_STRICT
    | MMCKPT_LOAD_CONVERT
    | MMCKPT_LOAD_CONTIGUOUS
    | MMCKPT_LOAD_PREFETCH
    | MMCKPT_LOAD_DIRECT_READS;

/// The newest version of mmckpt_load_options this header declares. Version 1: `version`,
/// `flags`, `prefix`, `on_tensor`, `user_data`; version 2 adds `tp_rank`, `tp_world`,
/// `split_rules`, `split_rule_count` (tensor-parallel loads). The library accepts every
/// version from 1 to its own.
pub const MMCKPT_LOAD_OPTIONS_VERSION: u32 = 2;

/// A tensor-parallel split rule (mmckpt_load_options version 2): the entries whose name
/// matches `pattern` are split along `dim`.
#[repr(C)]
pub struct mmckpt_split_rule {
    /// A glob matched against the whole entry name (the module's, after the prefix is stripped
    /// from the checkpoint's key): `*` matches any run of characters, dots included; every
    /// other character matches itself ("*.q_proj.weight"). Not NULL, not empty.
    pub pattern: *const c_char,
    /// The dimension the matching entries are split along; negative counts from the end.
    pub dim: i64,
}

/// Options for mmckpt_module_load. Initialise with mmckpt_load_options_init(&opts,
/// MMCKPT_LOAD_OPTIONS_VERSION) or `= MMCKPT_LOAD_OPTIONS_INIT`; fields added in later
/// versions come after these, and the library reads only the fields of `version`.
#[repr(C)]
pub struct mmckpt_load_options {
    /// The version of this struct the caller was compiled against (MMCKPT_LOAD_OPTIONS_VERSION).
    pub version: u32,
    /// MMCKPT_LOAD_ASSIGN, MMCKPT_LOAD_STRICT, MMCKPT_LOAD_CONVERT, MMCKPT_LOAD_CONTIGUOUS,
    /// MMCKPT_LOAD_PREFETCH, MMCKPT_LOAD_DIRECT_READS; other bits are
    /// MMCKPT_ERR_INVALID_ARGUMENT.
    pub flags: u32,
    /// Nullable. Only checkpoint keys under this prefix are considered, and it is stripped
    /// ("module." of DataParallel); a missing final '.' is implied. Read during the call only.
    pub prefix: *const c_char,
    /// Nullable: called per loaded entry, in file order.
    pub on_tensor: mmckpt_tensor_fn,
    /// Passed to on_tensor as is.
    pub user_data: *mut c_void,
    /// Version 2. This process's tensor-parallel rank, 0 <= tp_rank < tp_world.
    pub tp_rank: u32,
    /// Version 2. The tensor-parallel world size. 0 (with tp_rank 0 and no rules, the
    /// defaults) loads every entry whole. Otherwise an entry matching a rule in `split_rules`
    /// (the first that matches wins) receives `torch.chunk(t, tp_world, dim)[tp_rank]` of the
    /// checkpoint tensor `t` and must be declared with that (local) shape; entries matching
    /// no rule are loaded whole (replicated). ASSIGN binds the share as a view (a split along
    /// a dimension after the first is a strided view; CONTIGUOUS copies only its bytes); a
    /// copy load copies only the share's bytes. A rank torch.chunk gives no chunk, or a
    /// declared shape other than the share's, is MMCKPT_ERR_SHAPE_MISMATCH in torch's words;
    /// a world of 0 with a rank or rules, tp_rank >= tp_world, an empty pattern or a dim out
    /// of range for a matched tensor is MMCKPT_ERR_INVALID_ARGUMENT.
    pub tp_world: u32,
    /// Version 2. Nullable when split_rule_count is 0; read during the call only.
    pub split_rules: *const mmckpt_split_rule,
    /// Version 2. Number of rules at split_rules.
    pub split_rule_count: usize,
}

// SAFETY: repr(C), starts with the u32 version; u32, usize, raw pointers and a nullable
// function pointer accept any bits a C caller can write.
unsafe impl Versioned for mmckpt_load_options {
    const NAME: &'static str = "mmckpt_load_options";
    const INIT: &'static str = "mmckpt_load_options_init";
    const CURRENT: u32 = MMCKPT_LOAD_OPTIONS_VERSION;
    fn prefix_len(version: u32) -> usize {
        if version == 1 {
            std::mem::offset_of!(mmckpt_load_options, user_data)
                + std::mem::size_of::<*mut c_void>()
        } else {
            std::mem::offset_of!(mmckpt_load_options, split_rule_count)
                + std::mem::size_of::<usize>()
        }
    }
    fn defaults() -> Self {
        mmckpt_load_options {
            version: MMCKPT_LOAD_OPTIONS_VERSION,
            flags: MMCKPT_LOAD_STRICT,
            prefix: std::ptr::null(),
            on_tensor: None,
            user_data: std::ptr::null_mut(),
            tp_rank: 0,
            tp_world: 0,
            split_rules: std::ptr::null(),
            split_rule_count: 0,
        }
    }
}

/// Fills the fields of version `version` of `*opts` with the defaults (a strict copy load, no
/// prefix, no callback) and sets `opts->version`; nothing past that version's fields is
/// written. Pass MMCKPT_LOAD_OPTIONS_VERSION. A version this library does not know is
/// MMCKPT_ERR_INVALID_ARGUMENT naming both versions, and `*opts` is not written; NULL is
/// MMCKPT_ERR_NULL_ARGUMENT.
#[no_mangle]
pub extern "C" fn mmckpt_load_options_init(
    opts: *mut mmckpt_load_options,
    version: u32,
) -> mmckpt_status {
    guard(|| versioned::init(opts, version))
}

/// The outcome of a successful load: missing and unexpected keys and torch's wording. Opaque;
/// free it with mmckpt_load_report_free. Strings it returns live as long as the report.
pub struct mmckpt_load_report {
    missing: Vec<CString>,
    unexpected: Vec<CString>,
    copied: Vec<CString>,
    message: CString,
}

impl mmckpt_load_report {
    fn new(r: &LoadReport) -> mmckpt_load_report {
        mmckpt_load_report {
            missing: r.missing_keys().iter().map(|k| c_text(k)).collect(),
            unexpected: r.unexpected_keys().iter().map(|k| c_text(k)).collect(),
            copied: r.copied_keys().iter().map(|k| c_text(k)).collect(),
            message: c_text(&r.message()),
        }
    }
}

/// C load options as the core's, and the callback with its user data.
type Callback = (
    unsafe extern "C" fn(*mut c_void, *const mmckpt_tensor) -> i32,
    *mut c_void,
);

fn load_options(opts: *const mmckpt_load_options) -> Result<(LoadOptions, Option<Callback>)> {
    let mut options = LoadOptions::default();
    let Some(opts) = versioned::read(opts)? else {
        return Ok((options, None));
    };
    if opts.flags & !LOAD_FLAGS != 0 {
        return Err(Error::invalid_argument(format!(
            "opts.flags has unknown bits 0x{:x}",
            opts.flags & !LOAD_FLAGS
        )));
    }
    options.assign = opts.flags & MMCKPT_LOAD_ASSIGN != 0;
    options.strict = opts.flags & MMCKPT_LOAD_STRICT != 0;
    options.convert = opts.flags & MMCKPT_LOAD_CONVERT != 0;
    options.contiguous = opts.flags & MMCKPT_LOAD_CONTIGUOUS != 0;
    options.prefetch = opts.flags & MMCKPT_LOAD_PREFETCH != 0;
    options.direct_reads = opts.flags & MMCKPT_LOAD_DIRECT_READS != 0;
    options.prefix = arg_opt_str(opts.prefix, "opts.prefix")?
        .unwrap_or("")
        .to_string();
    options.tensor_parallel = tensor_parallel(&opts)?;
    Ok((options, opts.on_tensor.map(|f| (f, opts.user_data))))
}

/// The version-2 fields as the core's options: `None` when all are the defaults (a version-1
/// caller's, too); otherwise as given, for the core to check (a world of 0 included).
fn tensor_parallel(opts: &mmckpt_load_options) -> Result<Option<TensorParallel>> {
    if opts.tp_world == 0 && opts.tp_rank == 0 && opts.split_rule_count == 0 {
        return Ok(None);
    }
    let rules = arg_slice(opts.split_rules, opts.split_rule_count, "opts.split_rules")?
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let pattern = arg_str(rule.pattern, &format!("opts.split_rules[{i}].pattern"))?;
            Ok(SplitRule::new(pattern, rule.dim))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(TensorParallel::new(
        opts.tp_rank as usize,
        opts.tp_world as usize,
        rules,
    )))
}

/// Marks a module handle as being loaded for as long as it lives; on drop (also when a panic
/// unwinds) makes it idle again, or frees it if mmckpt_module_free was called meanwhile.
struct LoadInProgress {
    handle: *mut mmckpt_module,
}

impl LoadInProgress {
    /// `m` must be an idle, live handle (module_mut checked it).
    fn start(m: *mut mmckpt_module, len: usize) -> LoadInProgress {
        // SAFETY: live (module_mut checked it is non-null and idle); fields apart from `inner`.
        unsafe {
            (*addr_of!((*m).len_while_loading)).store(len, Ordering::Relaxed);
            state(m).store(LOADING, Ordering::Release);
        }
        LoadInProgress { handle: m }
    }

    fn free_requested(&self) -> bool {
        // SAFETY: live until this guard's drop.
        unsafe { state(self.handle) }.load(Ordering::Acquire) & FREE_REQUESTED != 0
    }
}

impl Drop for LoadInProgress {
    fn drop(&mut self) {
        // SAFETY: live until here; the load's borrow of `inner` has ended.
        let previous = unsafe { state(self.handle) }.swap(IDLE, Ordering::AcqRel);
        if previous & FREE_REQUESTED != 0 {
            // SAFETY: mmckpt_module_free was called on this handle during the load and left the
            // free to us; it came from Box::into_raw in a module constructor.
            drop(unsafe { Box::from_raw(self.handle) });
        }
    }
}

/// Loads a checkpoint into a module, as load_state_dict does. `opts` NULL means the defaults (a
/// strict copy load). Without ASSIGN every entry the checkpoint fills needs storage (materialize
/// or bind first, else MMCKPT_ERR_STATE); floating dtypes convert as torch's .to() does, other
/// dtype pairs are MMCKPT_ERR_DTYPE_MISMATCH. A strict load that fails changes nothing, and
/// mmckpt_last_error() holds torch's `"Error(s) in loading state_dict for <Name>:"` text for key
/// (MMCKPT_ERR_KEY_MISMATCH) and size (MMCKPT_ERR_SHAPE_MISMATCH) mismatches. Views bound by an
/// assign load keep the checkpoint's memory alive after mmckpt_checkpoint_close. `report`
/// (nullable) receives, on success only, a new report the caller frees with
/// mmckpt_load_report_free. What the on_tensor callback may call is listed at mmckpt_tensor_fn;
/// a load into a module from inside that module's own callback is refused (MMCKPT_ERR_STATE).
#[no_mangle]
pub extern "C" fn mmckpt_module_load(
    m: *mut mmckpt_module,
    ckpt: *const mmckpt_checkpoint,
    opts: *const mmckpt_load_options,
    report: *mut *mut mmckpt_load_report,
) -> mmckpt_status {
    guard(|| {
        let module = module_mut(m, "mmckpt_module_load")?;
        let ckpt = CheckpointHold::new(ckpt)?;
        let (options, callback) = load_options(opts)?;
        let loading = LoadInProgress::start(m, module.len());
        let mut call = |entry: &Entry| -> bool {
            let Some((f, user_data)) = callback else {
                return true;
            };
            let t = mmckpt_tensor::from_module_entry(entry);
            // SAFETY: the caller supplied a function of this signature; `t` and everything it
            // points to stay valid for the duration of the call.
            let go_on = unsafe { f(user_data, &t) == 0 };
            go_on && !loading.free_requested()
        };
        let on_tensor: Option<&mut dyn FnMut(&Entry) -> bool> = if callback.is_some() {
            Some(&mut call)
        } else {
            None
        };
        let outcome = module.load_with(ckpt.checkpoint(), &options, on_tensor);
        let freed = loading.free_requested();
        drop(loading);
        if freed {
            return Err(Error::callback(
                "the on_tensor callback called mmckpt_module_free on the module being loaded: \
                 the load stopped and the module is freed",
            ));
        }
        let outcome = outcome?;
        if !report.is_null() {
            out_ptr(report, "report")?
                .write(Box::into_raw(Box::new(mmckpt_load_report::new(&outcome))));
        }
        Ok(())
    })
}

/// Key `i` of one of a report's lists, borrowed from the report; NULL if out of range or NULL.
fn report_key(
    r: *const mmckpt_load_report,
    i: usize,
    list: impl FnOnce(&mmckpt_load_report) -> &[CString],
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        arg_ref(r, "r")
            .ok()
            .and_then(|r| list(r).get(i))
            .map_or(std::ptr::null(), |s| s.as_ptr())
    })
}

/// Number of missing keys (module entries the checkpoint did not provide); 0 for NULL.
#[no_mangle]
pub extern "C" fn mmckpt_load_report_missing_count(r: *const mmckpt_load_report) -> usize {
    guard_value(0, || arg_ref(r, "r").map_or(0, |r| r.missing.len()))
}

/// Missing key `i` in torch's order, borrowed from the report; NULL if out of range or NULL.
#[no_mangle]
pub extern "C" fn mmckpt_load_report_missing(
    r: *const mmckpt_load_report,
    i: usize,
) -> *const c_char {
    report_key(r, i, |r| &r.missing)
}

/// Number of unexpected keys (checkpoint keys under the prefix that match no entry); 0 for NULL.
#[no_mangle]
pub extern "C" fn mmckpt_load_report_unexpected_count(r: *const mmckpt_load_report) -> usize {
    guard_value(0, || arg_ref(r, "r").map_or(0, |r| r.unexpected.len()))
}

/// Unexpected key `i` (prefix stripped), borrowed from the report; NULL if out of range or NULL.
#[no_mangle]
pub extern "C" fn mmckpt_load_report_unexpected(
    r: *const mmckpt_load_report,
    i: usize,
) -> *const c_char {
    report_key(r, i, |r| &r.unexpected)
}

/// Number of entries an assign load copied instead of binding a zero-copy view (converted with
/// MMCKPT_LOAD_CONVERT, or strided and re-laid out with MMCKPT_LOAD_CONTIGUOUS); 0 for copy
/// loads and for NULL.
#[no_mangle]
pub extern "C" fn mmckpt_load_report_copied_count(r: *const mmckpt_load_report) -> usize {
    guard_value(0, || arg_ref(r, "r").map_or(0, |r| r.copied.len()))
}

/// Copied entry `i` (its module name), in load order, borrowed from the report; NULL if out of
/// range or NULL.
#[no_mangle]
pub extern "C" fn mmckpt_load_report_copied(
    r: *const mmckpt_load_report,
    i: usize,
) -> *const c_char {
    report_key(r, i, |r| &r.copied)
}

/// torch's wording of the result: `"<All keys matched successfully>"` or
/// "_IncompatibleKeys(missing_keys=[...], unexpected_keys=[...])". Borrowed from the report;
/// NULL for NULL.
#[no_mangle]
pub extern "C" fn mmckpt_load_report_message(r: *const mmckpt_load_report) -> *const c_char {
    guard_value(std::ptr::null(), || {
        arg_ref(r, "r").map_or(std::ptr::null(), |r| r.message.as_ptr())
    })
}

/// Frees a report. NULL is a no-op; freeing twice is undefined behaviour.
#[no_mangle]
pub extern "C" fn mmckpt_load_report_free(r: Option<Box<mmckpt_load_report>>) {
    guard_value((), || drop(r));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::ffi::guard::mmckpt_status::*;
    use crate::ffi::types::{
        MMCKPT_TENSOR_BUFFER, MMCKPT_TENSOR_CONTIGUOUS, MMCKPT_TENSOR_PARAMETER,
    };
    use crate::torch::TensorDesc;
    use std::ffi::CStr;

    fn last_error() -> String {
        // SAFETY: mmckpt_last_error returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(mmckpt_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    fn checkpoint() -> mmckpt_checkpoint {
        let bytes: Vec<u8> = [1.5f32, 2.5, 3.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let desc = |shape: &[i64], offset| TensorDesc {
            dtype: DType::Float32,
            shape: shape.into(),
            strides: vec![1; shape.len()].into(),
            storage_offset: offset,
            numel: shape.iter().product::<i64>() as u64,
            storage: 0,
            requires_grad: false,
            is_parameter: false,
            conj: false,
            neg: false,
        };
        mmckpt_checkpoint::new(
            Checkpoint::from_parts(
                &bytes,
                &[(0, 12)],
                vec![
                    ("module.w".into(), desc(&[2], 0)),
                    ("module.b".into(), desc(&[1], 2)),
                ],
            )
            .unwrap(),
        )
    }

    extern "C" fn count_calls(user_data: *mut c_void, entry: *const mmckpt_tensor) -> i32 {
        // SAFETY: the test passes a pointer to a live u32 and mmckpt a valid entry.
        unsafe {
            *(user_data as *mut u32) += 1;
            assert!(!(*entry).data.is_null());
        }
        0
    }

    #[test]
    fn c_api_builds_materializes_binds_and_loads() {
        let mut m: *mut mmckpt_module = std::ptr::null_mut();
        assert_eq!(mmckpt_module_new(c"Net".as_ptr(), &mut m), MMCKPT_OK);
        let shape = [2i64];
        let flags = MMCKPT_ENTRY_BUFFER;
        assert_eq!(
            mmckpt_module_add(m, c"w".as_ptr(), 1, shape.as_ptr(), 1, 0),
            MMCKPT_OK
        );
        assert_eq!(
            mmckpt_module_add(m, c"b".as_ptr(), 1, std::ptr::null(), 0, flags),
            MMCKPT_OK
        );
        assert_eq!(
            mmckpt_module_add(m, c"w".as_ptr(), 1, shape.as_ptr(), 1, 0),
            MMCKPT_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("duplicate entry name 'w'"));
        assert_eq!(
            mmckpt_module_add(m, c"x".as_ptr(), 99, shape.as_ptr(), 1, 0),
            MMCKPT_ERR_INVALID_ARGUMENT
        );
        assert_eq!(mmckpt_module_count(m), 2);
        let mut slot = std::mem::MaybeUninit::<mmckpt_tensor>::uninit();
        assert_eq!(mmckpt_module_at(m, 1, slot.as_mut_ptr()), MMCKPT_OK);
        // SAFETY: mmckpt_module_at returned OK, so it wrote the whole struct.
        let mut t = unsafe { slot.assume_init() };
        assert!(t.data.is_null());
        assert_eq!(t.storage_id, 0);
        assert_eq!(t.flags, MMCKPT_TENSOR_BUFFER | MMCKPT_TENSOR_CONTIGUOUS);
        assert_eq!(mmckpt_module_at(m, 2, &mut t), MMCKPT_ERR_NOT_FOUND);

        let ckpt = checkpoint();
        // NULL options: a strict copy load; the keys carry a prefix, so torch's key error.
        assert_eq!(
            mmckpt_module_load(m, &ckpt, std::ptr::null(), std::ptr::null_mut()),
            MMCKPT_ERR_KEY_MISMATCH
        );
        let expected = "Error(s) in loading state_dict for Net:\n\tMissing key(s) in state_dict: \"w\", \"b\". ";
        assert!(last_error().starts_with(expected), "{}", last_error());
        let mut opts: mmckpt_load_options = mmckpt_load_options {
            version: 0,
            flags: 0,
            prefix: std::ptr::null(),
            on_tensor: None,
            user_data: std::ptr::null_mut(),
            tp_rank: 7,
            tp_world: 7,
            split_rules: std::ptr::null(),
            split_rule_count: 0,
        };
        assert_eq!(
            mmckpt_load_options_init(&mut opts, MMCKPT_LOAD_OPTIONS_VERSION),
            MMCKPT_OK
        );
        assert_eq!(opts.flags, MMCKPT_LOAD_STRICT);
        assert_eq!((opts.tp_rank, opts.tp_world), (0, 0));
        opts.prefix = c"module".as_ptr();
        assert_eq!(
            mmckpt_module_load(m, &ckpt, &opts, std::ptr::null_mut()),
            MMCKPT_ERR_STATE
        );
        assert!(last_error().contains("materialize"), "{}", last_error());

        let mut mem = [0f32; 2];
        assert_eq!(
            mmckpt_module_bind(m, c"w".as_ptr(), std::ptr::null_mut(), 8),
            MMCKPT_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            mmckpt_module_bind(m, c"w".as_ptr(), mem.as_mut_ptr().cast(), 7),
            MMCKPT_ERR_BUFFER_TOO_SMALL
        );
        assert_eq!(
            mmckpt_module_bind(m, c"w".as_ptr(), mem.as_mut_ptr().cast(), 8),
            MMCKPT_OK
        );
        assert_eq!(mmckpt_module_materialize(m), MMCKPT_OK);
        assert_eq!(mmckpt_module_get(m, c"b".as_ptr(), &mut t), MMCKPT_OK);
        assert_eq!(t.data as usize % 64, 0);

        let mut calls = 0u32;
        opts.on_tensor = Some(count_calls);
        opts.user_data = (&mut calls as *mut u32).cast();
        let mut report: *mut mmckpt_load_report = std::ptr::null_mut();
        assert_eq!(
            mmckpt_module_load(m, &ckpt, &opts, &mut report),
            MMCKPT_OK,
            "{}",
            last_error()
        );
        assert_eq!(calls, 2);
        assert_eq!(mem, [1.5, 2.5]);
        // SAFETY: the report's strings are valid NUL-terminated text while it lives.
        let message = unsafe { CStr::from_ptr(mmckpt_load_report_message(report)) };
        assert_eq!(message.to_str().unwrap(), "<All keys matched successfully>");
        assert_eq!(mmckpt_load_report_missing_count(report), 0);
        assert!(mmckpt_load_report_missing(report, 0).is_null());
        // SAFETY: a report mmckpt_module_load created, freed once.
        mmckpt_load_report_free(Some(unsafe { Box::from_raw(report) }));

        // Assign load, then close the checkpoint: the views stay valid.
        opts.flags |= MMCKPT_LOAD_ASSIGN;
        opts.on_tensor = None;
        assert_eq!(
            mmckpt_module_load(m, &ckpt, &opts, std::ptr::null_mut()),
            MMCKPT_OK
        );
        drop(ckpt);
        assert_eq!(mmckpt_module_get(m, c"w".as_ptr(), &mut t), MMCKPT_OK);
        assert_eq!(t.flags & MMCKPT_TENSOR_PARAMETER, MMCKPT_TENSOR_PARAMETER);
        // SAFETY: the view points to 2 valid floats kept alive by the module.
        let values = unsafe { std::slice::from_raw_parts(t.data as *const f32, 2) };
        assert_eq!(values, [1.5, 2.5]);
        mmckpt_module_free(m);
        mmckpt_module_free(std::ptr::null_mut());
    }

    #[test]
    fn the_prefetch_flag_sets_the_load_option() {
        let mut opts = mmckpt_load_options::defaults();
        opts.flags = MMCKPT_LOAD_STRICT | MMCKPT_LOAD_PREFETCH;
        let (options, _) = load_options(&opts).unwrap();
        assert!(options.prefetch && options.strict && !options.assign);
        opts.flags = MMCKPT_LOAD_STRICT;
        assert!(!load_options(&opts).unwrap().0.prefetch);
        assert!(!load_options(&opts).unwrap().0.direct_reads);
        opts.flags = MMCKPT_LOAD_DIRECT_READS;
        let (options, _) = load_options(&opts).unwrap();
        assert!(options.direct_reads && !options.prefetch && !options.strict);
        opts.flags = 1 << 6;
        assert!(
            load_options(&opts).is_err(),
            "the next bit is still unknown"
        );
    }

    #[test]
    fn version_2_fields_set_the_tensor_parallel_option() {
        // A version-1 caller's struct (shorter) still reads, with no tensor parallelism.
        #[repr(C)]
        struct Version1 {
            version: u32,
            flags: u32,
            prefix: *const c_char,
            on_tensor: mmckpt_tensor_fn,
            user_data: *mut c_void,
        }
        let v1 = Version1 {
            version: 1,
            flags: MMCKPT_LOAD_STRICT | MMCKPT_LOAD_ASSIGN,
            prefix: std::ptr::null(),
            on_tensor: None,
            user_data: std::ptr::null_mut(),
        };
        let (options, _) = load_options(std::ptr::from_ref(&v1).cast()).unwrap();
        assert!(options.assign && options.tensor_parallel.is_none());

        let rules = [
            mmckpt_split_rule {
                pattern: c"*.q_proj.weight".as_ptr(),
                dim: 0,
            },
            mmckpt_split_rule {
                pattern: c"*.o_proj.weight".as_ptr(),
                dim: -1,
            },
        ];
        let mut opts = mmckpt_load_options::defaults();
        opts.tp_rank = 1;
        opts.tp_world = 4;
        opts.split_rules = rules.as_ptr();
        opts.split_rule_count = 2;
        let tp = load_options(&opts).unwrap().0.tensor_parallel.unwrap();
        assert_eq!(
            tp,
            TensorParallel::new(
                1,
                4,
                vec![
                    SplitRule::new("*.q_proj.weight", 0),
                    SplitRule::new("*.o_proj.weight", -1)
                ]
            )
        );
        // The ffi passes a world of 0 on; the core refuses it.
        opts.tp_world = 0;
        let options = load_options(&opts).unwrap().0;
        assert_eq!(
            options.validate().unwrap_err().kind,
            crate::error::ErrorKind::InvalidArgument
        );
        opts.split_rules = std::ptr::null();
        assert!(load_options(&opts)
            .unwrap_err()
            .message
            .contains("opts.split_rules"));
        let null_pattern = [mmckpt_split_rule {
            pattern: std::ptr::null(),
            dim: 0,
        }];
        opts.split_rules = null_pattern.as_ptr();
        opts.split_rule_count = 1;
        assert!(load_options(&opts)
            .unwrap_err()
            .message
            .contains("opts.split_rules[0].pattern"));
    }

    #[test]
    fn c_api_specs_and_null_arguments() {
        let mut m: *mut mmckpt_module = std::ptr::null_mut();
        let bad = b"{\"type\":\"Module\",\"children\":{\"l\":{\"type\":\"Nope\"}}}";
        assert_eq!(
            mmckpt_module_from_spec(bad.as_ptr().cast(), bad.len(), &mut m),
            MMCKPT_ERR_INVALID_ARGUMENT
        );
        assert!(m.is_null());
        assert!(last_error().contains("'l'"));
        let good = b"{\"type\":\"Linear\",\"in_features\":2,\"out_features\":3}trailing";
        assert_eq!(
            mmckpt_module_from_spec(good.as_ptr().cast(), good.len() - 8, &mut m),
            MMCKPT_OK
        );
        assert_eq!(mmckpt_module_count(m), 2);
        assert_eq!(
            mmckpt_module_from_spec(std::ptr::null(), 0, &mut m),
            MMCKPT_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            mmckpt_module_load(m, std::ptr::null(), std::ptr::null(), std::ptr::null_mut()),
            MMCKPT_ERR_NULL_ARGUMENT
        );
        mmckpt_module_free(m);
        assert_eq!(mmckpt_module_count(std::ptr::null()), 0);
        mmckpt_load_report_free(None);
    }
}
