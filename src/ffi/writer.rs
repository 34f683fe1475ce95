//! Writing a checkpoint's tensor table to a new file (mmckpt::save).

use super::checkpoint::mmckpt_checkpoint;
use super::guard::*;
use super::options::{self as versioned, Versioned};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::writer::{save_with_progress, SaveFormat, SaveOptions};
use std::ffi::{c_char, c_void};

/// A torch.save zip archive: stored, 64-byte aligned records that torch.load(..., mmap=True,
/// weights_only=True) maps; tensors that share a storage still do.
pub const MMCKPT_SAVE_TORCH: u32 = 0;
/// A safetensors file as the safetensors project's convert.py writes it: of the tensors that
/// start at the same storage byte the first (in table order) is kept, the others are listed
/// in `__metadata__` (dropped name → kept name) beside "format": "pt"; every tensor row-major.
pub const MMCKPT_SAVE_SAFETENSORS: u32 = 1;

/// Torch format: write every tensor as its own row-major storage (tied weights still share).
pub const MMCKPT_SAVE_CONTIGUOUS: u32 = 1 << 0;
const SAVE_FLAGS: u32 = MMCKPT_SAVE_CONTIGUOUS;

/// Called as data is written with the bytes written so far and the total (known before the
/// first byte); returning 0 stops the save (MMCKPT_ERR_CALLBACK) and leaves the target as
/// it was; any other value goes on.
pub type mmckpt_progress_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, done: u64, total: u64) -> i32>;

/// The newest version of mmckpt_save_options this header declares. Version 1: `version`,
/// `flags`, `dtype`, `progress`, `user_data`.
pub const MMCKPT_SAVE_OPTIONS_VERSION: u32 = 1;

/// Options for mmckpt_checkpoint_save. Initialise with mmckpt_save_options_init(&opts,
/// MMCKPT_SAVE_OPTIONS_VERSION) or `= MMCKPT_SAVE_OPTIONS_INIT`; fields added in later
/// versions come after these, and the library reads only the fields of `version`.
#[repr(C)]
pub struct mmckpt_save_options {
    /// The version of this struct the caller was compiled against (MMCKPT_SAVE_OPTIONS_VERSION).
    pub version: u32,
    /// MMCKPT_SAVE_CONTIGUOUS.
    pub flags: u32,
    /// Write floating tensors (float64/32/16, bfloat16) as this floating mmckpt_dtype,
    /// rounded as torch's .to() rounds; 0 keeps every dtype.
    pub dtype: u32,
    /// Progress callback, or NULL.
    pub progress: mmckpt_progress_fn,
    /// Passed to progress as is.
    pub user_data: *mut c_void,
}

// SAFETY: repr(C), starts with the u32 version; u32s, a nullable function pointer and a raw
// pointer accept any bits.
unsafe impl Versioned for mmckpt_save_options {
    const NAME: &'static str = "mmckpt_save_options";
    const INIT: &'static str = "mmckpt_save_options_init";
    const CURRENT: u32 = MMCKPT_SAVE_OPTIONS_VERSION;
    fn prefix_len(_version: u32) -> usize {
        // Version 1 is every field.
        std::mem::offset_of!(mmckpt_save_options, user_data) + std::mem::size_of::<*mut c_void>()
    }
    fn defaults() -> Self {
        mmckpt_save_options {
            version: MMCKPT_SAVE_OPTIONS_VERSION,
            flags: 0,
            dtype: 0,
            progress: None,
            user_data: std::ptr::null_mut(),
        }
    }
}

/// Fills the fields of version `version` of `*opts` with the defaults (no flags, dtypes kept,
/// no callback) and sets `opts->version`. Pass MMCKPT_SAVE_OPTIONS_VERSION. A version this
/// library does not know is MMCKPT_ERR_INVALID_ARGUMENT naming both versions, and `*opts` is
/// not written; NULL is MMCKPT_ERR_NULL_ARGUMENT.
#[no_mangle]
pub extern "C" fn mmckpt_save_options_init(
    opts: *mut mmckpt_save_options,
    version: u32,
) -> mmckpt_status {
    guard(|| versioned::init(opts, version))
}

fn save_options(format: u32, opts: &mmckpt_save_options) -> Result<SaveOptions> {
    let format = match format {
        MMCKPT_SAVE_TORCH => SaveFormat::Torch,
        MMCKPT_SAVE_SAFETENSORS => SaveFormat::Safetensors,
        other => {
            return Err(Error::invalid_argument(format!(
                "format {other} is not MMCKPT_SAVE_TORCH (0) or MMCKPT_SAVE_SAFETENSORS (1)"
            )))
        }
    };
    if opts.flags & !SAVE_FLAGS != 0 {
        return Err(Error::invalid_argument(format!(
            "opts.flags has unknown bits 0x{:x}",
            opts.flags & !SAVE_FLAGS
        )));
    }
    let dtype = match opts.dtype {
        0 => None,
        code => Some(
            DType::from_code(code)
                .filter(|d| d.is_floating())
                .ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "opts.dtype {code} is not a floating mmckpt_dtype (float64, float32, \
                         float16, bfloat16) or 0"
                    ))
                })?,
        ),
    };
    Ok(SaveOptions {
        format,
        dtype,
        contiguous: opts.flags & MMCKPT_SAVE_CONTIGUOUS != 0,
    })
}

/// Writes the checkpoint to `path` as `format`: MMCKPT_SAVE_TORCH holds the whole saved
/// object as torch.load returns it (non-tensor values too) when torch's weights-only
/// unpickler can read all of it, else the tensor table as a state dict; MMCKPT_SAVE_SAFETENSORS
/// holds the table's tensors (non-tensor values are dropped). Tensors are streamed one at a time; the file is written under a
/// temporary name in `path`'s folder, synced and renamed over `path`, so `path` is never
/// half written (a crash may leave a stray `.NAME.mmckpt-tmp-*` file beside it). `opts` may be
/// NULL (defaults). Errors: the table entry's own error for a tensor mmckpt cannot represent,
/// MMCKPT_ERR_UNSUPPORTED for a tensor the format cannot hold (a conjugate or negative view, a
/// dtype safetensors has no name for, one storage viewed as two dtypes),
/// MMCKPT_ERR_INVALID_ARGUMENT for two tensors of one name or a bad option, MMCKPT_ERR_CALLBACK
/// when progress returned 0, MMCKPT_ERR_IO for the file.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_save(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    format: u32,
    opts: *const mmckpt_save_options,
) -> mmckpt_status {
    guard(|| {
        let ckpt = arg_ref(ckpt, "ckpt")?;
        let path = arg_str(path, "path")?;
        let opts = versioned::read(opts)?.unwrap_or_else(mmckpt_save_options::defaults);
        let options = save_options(format, &opts)?;
        let (callback, user_data) = (opts.progress, opts.user_data);
        let mut progress = |done: u64, total: u64| match callback {
            // SAFETY: the caller's function pointer with its own user_data, as documented.
            Some(f) => (unsafe { f(user_data, done, total) }) != 0,
            None => true,
        };
        save_with_progress(&ckpt.inner, path, &options, &mut progress)?;
        Ok(())
    })
}
