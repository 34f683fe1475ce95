//! Handing tensors to other languages' arrays: DLPack 1.x exports of checkpoint tensors and
//! module entries, and describing a range of the tensor table in one call (for bindings that
//! pay per call, such as ctypes).
//!
//! The DLPack structs are declared here with dlpack.h's layout (DLPack 1.3, the
//! `include/dlpack.h` shipped beside mmckpt.h) and are not emitted into mmckpt.h: the header
//! only forward-declares `struct DLManagedTensorVersioned`, so it can be included together
//! with any dlpack.h of major version 1.

use super::checkpoint::mmckpt_checkpoint;
use super::guard::*;
use super::module::{mmckpt_module, module_ref};
use super::types::mmckpt_tensor;
use crate::checkpoint::Backing;
use crate::container::AlignedBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::ffi::{c_char, c_void};

/// The DLPack version these exports are written against (dlpack.h 1.3).
const DLPACK_MAJOR: u32 = 1;
const DLPACK_MINOR: u32 = 3;
const DLPACK_FLAG_BITMASK_READ_ONLY: u64 = 1 << 0;
const DLPACK_FLAG_BITMASK_IS_COPIED: u64 = 1 << 1;
const KDL_CPU: i32 = 1;

#[repr(C)]
pub struct DLPackVersion {
    pub major: u32,
    pub minor: u32,
}

#[repr(C)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

#[repr(C)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    pub strides: *mut i64,
    pub byte_offset: u64,
}

#[repr(C)]
pub struct DLManagedTensorVersioned {
    pub version: DLPackVersion,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    pub flags: u64,
    pub dl_tensor: DLTensor,
}

/// DLPack's pre-1.0 managed tensor (no version, no flags), for consumers that speak only the
/// unversioned protocol.
#[repr(C)]
pub struct DLManagedTensor {
    pub dl_tensor: DLTensor,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// DLPack's `DLDataTypeCode` values this module uses. `pub(super)`, not `pub`: cbindgen
/// would emit public constants into mmckpt.h as bare `#define INT 0` macros.
mod code {
    pub(super) const INT: u8 = 0;
    pub(super) const UINT: u8 = 1;
    pub(super) const FLOAT: u8 = 2;
    pub(super) const BFLOAT: u8 = 4;
    pub(super) const COMPLEX: u8 = 5;
    pub(super) const BOOL: u8 = 6;
    pub(super) const FLOAT8_E4M3FN: u8 = 10;
    pub(super) const FLOAT8_E4M3FNUZ: u8 = 11;
    pub(super) const FLOAT8_E5M2: u8 = 12;
    pub(super) const FLOAT8_E5M2FNUZ: u8 = 13;
    pub(super) const FLOAT8_E8M0FNU: u8 = 14;
    pub(super) const FLOAT4_E2M1FN: u8 = 17;
}

/// A dtype as DLPack spells it, as torch's own `__dlpack__` spells it; `None` for torch's
/// bits types, which DLPack has no code for (torch refuses them too).
fn dl_dtype(dtype: DType) -> Option<DLDataType> {
    let scalar = |code, bits| DLDataType {
        code,
        bits,
        lanes: 1,
    };
    Some(match dtype {
        DType::Float32 => scalar(code::FLOAT, 32),
        DType::Float64 => scalar(code::FLOAT, 64),
        DType::Float16 => scalar(code::FLOAT, 16),
        DType::BFloat16 => scalar(code::BFLOAT, 16),
        DType::Int8 => scalar(code::INT, 8),
        DType::Int16 => scalar(code::INT, 16),
        DType::Int32 => scalar(code::INT, 32),
        DType::Int64 => scalar(code::INT, 64),
        DType::UInt8 => scalar(code::UINT, 8),
        DType::UInt16 => scalar(code::UINT, 16),
        DType::UInt32 => scalar(code::UINT, 32),
        DType::UInt64 => scalar(code::UINT, 64),
        DType::Bool => scalar(code::BOOL, 8),
        DType::Complex32 => scalar(code::COMPLEX, 32),
        DType::Complex64 => scalar(code::COMPLEX, 64),
        DType::Complex128 => scalar(code::COMPLEX, 128),
        DType::Float8E4M3Fn => scalar(code::FLOAT8_E4M3FN, 8),
        DType::Float8E5M2 => scalar(code::FLOAT8_E5M2, 8),
        DType::Float8E4M3FnUz => scalar(code::FLOAT8_E4M3FNUZ, 8),
        DType::Float8E5M2FnUz => scalar(code::FLOAT8_E5M2FNUZ, 8),
        DType::Float8E8M0Fnu => scalar(code::FLOAT8_E8M0FNU, 8),
        // Two packed float4 per element: torch exports it as two lanes of 4 bits.
        DType::Float4E2M1FnX2 => DLDataType {
            code: code::FLOAT4_E2M1FN,
            bits: 4,
            lanes: 2,
        },
        DType::Bits8 | DType::Bits16 | DType::Bits1x8 | DType::Bits2x4 | DType::Bits4x2 => {
            return None
        }
    })
}

/// What keeps an export's bytes alive until the consumer calls the deleter.
enum Keep {
    /// The checkpoint's memory (the mapping, or a storage's aligned copy), shared.
    Shared(#[allow(dead_code)] Backing),
    /// A copy made for this export (a module's owned or bound entry).
    Copy(#[allow(dead_code)] AlignedBuf),
}

/// One export: the managed tensor first (its address is the export's), then what it points to.
#[repr(C)]
struct Export {
    managed: DLManagedTensorVersioned,
    /// Shape, then strides (2 × ndim).
    dims: Box<[i64]>,
    _keep: Keep,
}

unsafe extern "C" fn delete_export(managed: *mut DLManagedTensorVersioned) {
    if managed.is_null() {
        return;
    }
    // A panic must not unwind into the consumer; dropping an Export does not panic, but the
    // guard costs nothing.
    guard_value((), || {
        // SAFETY: `managed` is the first field of an Export made by Box::into_raw in
        // `export` (repr(C): same address), and DLPack calls the deleter once.
        drop(unsafe { Box::from_raw(managed.cast::<Export>()) });
    });
}

/// The deleter of an unversioned wrapper: frees the wrapper and deletes the versioned export
/// it owns.
unsafe extern "C" fn delete_unversioned(managed: *mut DLManagedTensor) {
    if managed.is_null() {
        return;
    }
    guard_value((), || {
        // SAFETY: `managed` was made by Box::into_raw in mmckpt_dlpack_unversioned, and DLPack
        // calls the deleter once.
        let wrapper = unsafe { Box::from_raw(managed) };
        let versioned = wrapper.manager_ctx.cast::<DLManagedTensorVersioned>();
        // SAFETY: the wrapper owns `versioned`, a live export nobody else deletes.
        if let Some(deleter) = unsafe { (*versioned).deleter } {
            // SAFETY: the export's own deleter, called once, as DLPack requires.
            unsafe { deleter(versioned) };
        }
    });
}

/// The parts of a tensor an export needs.
struct Description<'a> {
    dtype: DType,
    shape: &'a [i64],
    strides: &'a [i64],
    /// The start of the bytes `byte_offset` counts from.
    base: *const u8,
    byte_offset: u64,
    read_only: bool,
    keep: Keep,
}

fn export(what: &str, d: Description<'_>) -> Result<*mut DLManagedTensorVersioned> {
    let dtype = dl_dtype(d.dtype).ok_or_else(|| {
        Error::unsupported(format!(
            "{what} has dtype {}, which DLPack cannot express",
            d.dtype.name()
        ))
    })?;
    let ndim = d.shape.len();
    let mut dims = Vec::with_capacity(2 * ndim);
    dims.extend_from_slice(d.shape);
    dims.extend_from_slice(d.strides);
    let mut dims = dims.into_boxed_slice();
    let (shape, strides) = if ndim == 0 {
        (std::ptr::null_mut(), std::ptr::null_mut())
    } else {
        let base = dims.as_mut_ptr();
        (base, base.wrapping_add(ndim))
    };
    let mut flags = 0;
    if d.read_only {
        flags |= DLPACK_FLAG_BITMASK_READ_ONLY;
    }
    if matches!(d.keep, Keep::Copy(_)) {
        flags |= DLPACK_FLAG_BITMASK_IS_COPIED;
    }
    let export = Box::new(Export {
        managed: DLManagedTensorVersioned {
            version: DLPackVersion {
                major: DLPACK_MAJOR,
                minor: DLPACK_MINOR,
            },
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(delete_export),
            flags,
            dl_tensor: DLTensor {
                data: d.base.cast_mut().cast(),
                device: DLDevice {
                    device_type: KDL_CPU,
                    device_id: 0,
                },
                ndim: ndim as i32,
                dtype,
                shape,
                strides,
                byte_offset: d.byte_offset,
            },
        },
        dims,
        _keep: d.keep,
    });
    let raw = Box::into_raw(export);
    // SAFETY: just allocated; manager_ctx points at the export itself, as DLPack allows.
    unsafe { (*raw).managed.manager_ctx = raw.cast() };
    Ok(raw.cast())
}

/// Exports checkpoint tensor `index` (0-based, in table order) as a DLPack 1.x managed tensor
/// on the CPU: `data` is the start of the tensor's storage and `byte_offset` is storage_offset
/// × itemsize, so `data + byte_offset` is mmckpt_tensor's `data`; shape and strides (in
/// elements) are the tensor's, never NULL unless ndim is 0. Every dtype DLPack 1.3 has a code
/// for is exported as torch's `__dlpack__` writes it (bool is 8 bits; float4_e2m1fn_x2 is two
/// 4-bit lanes); torch's bits types are MMCKPT_ERR_UNSUPPORTED. The flags have
/// DLPACK_FLAG_BITMASK_READ_ONLY: the bytes are the checkpoint's (a mapped file, or a copy it
/// shares with every caller); writing into them is undefined unless the checkpoint was opened
/// with MMCKPT_OPEN_COPY_ON_WRITE (then a write changes a private copy of the page, as in
/// torch.load(mmap=True)). The lazy conjugate and negation bits (MMCKPT_TENSOR_CONJ/NEG) have no
/// DLPack field and are not applied. The export keeps the bytes alive (the mapping, or the
/// storage's copy) until its deleter is called, also after mmckpt_checkpoint_close; call
/// `(*out)->deleter(*out)` exactly once. On failure `*out` is not written; errors are as
/// mmckpt_checkpoint_tensor_at's.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_tensor_to_dlpack(
    ckpt: *const mmckpt_checkpoint,
    index: usize,
    out: *mut *mut DLManagedTensorVersioned,
) -> mmckpt_status {
    guard(|| {
        let ckpt = &arg_ref(ckpt, "ckpt")?.inner;
        let out = out_ptr(out, "out")?;
        let tensor = ckpt.tensor_at(index)?;
        let storage = tensor.storage;
        let description = Description {
            dtype: tensor.dtype(),
            shape: tensor.shape(),
            strides: tensor.strides(),
            base: storage.bytes().as_ptr(),
            byte_offset: tensor.desc.byte_offset(),
            read_only: true,
            keep: Keep::Shared(storage.backing().clone()),
        };
        out.write(export(&format!("tensor '{}'", tensor.name()), description)?);
        Ok(())
    })
}

/// Exports module entry `index` (0-based, in mmckpt_module_at's order) as a DLPack 1.x
/// managed tensor on the CPU, as mmckpt_checkpoint_tensor_to_dlpack does. An entry loaded with
/// MMCKPT_LOAD_ASSIGN shares the checkpoint's bytes (zero-copy, READ_ONLY, kept alive by the
/// export after mmckpt_module_free and mmckpt_checkpoint_close). An entry with owned or bound
/// memory (materialized, copy-loaded, converted, bound) is copied into memory the export owns
/// (DLPACK_FLAG_BITMASK_IS_COPIED, writable): a later load into the module cannot change or
/// free what the consumer holds. A meta entry (no data) is MMCKPT_ERR_STATE; an index out of
/// range MMCKPT_ERR_NOT_FOUND; refused (MMCKPT_ERR_STATE) from inside the module's own load.
#[no_mangle]
pub extern "C" fn mmckpt_module_entry_to_dlpack(
    m: *const mmckpt_module,
    index: usize,
    out: *mut *mut DLManagedTensorVersioned,
) -> mmckpt_status {
    guard(|| {
        let module = module_ref(m, "mmckpt_module_entry_to_dlpack")?;
        let out = out_ptr(out, "out")?;
        let entry = module.entry_at(index).ok_or_else(|| {
            Error::not_found(format!(
                "module entry index {index} is out of range (the module has {} entries)",
                module.len()
            ))
        })?;
        let what = format!("module entry '{}'", entry.name());
        let Some(bytes) = entry.bytes() else {
            return Err(Error::state(format!(
                "{what} has no data (meta): load, materialize or bind it first"
            )));
        };
        let description = match entry.shared_backing() {
            Some((backing, offset)) => {
                // The storage starts storage_offset elements before element [0, …, 0].
                let byte_offset = (entry.storage_offset() as usize)
                    .saturating_mul(entry.dtype().itemsize())
                    .min(offset);
                Description {
                    dtype: entry.dtype(),
                    shape: entry.shape(),
                    strides: entry.strides(),
                    base: backing.bytes()[offset - byte_offset..].as_ptr(),
                    byte_offset: byte_offset as u64,
                    read_only: true,
                    keep: Keep::Shared(backing.clone()),
                }
            }
            None => {
                let copy = AlignedBuf::from_slice(bytes)
                    .map_err(|e| e.context(format!("copying {what} for its DLPack export")))?;
                Description {
                    dtype: entry.dtype(),
                    shape: entry.shape(),
                    strides: entry.strides(),
                    base: copy.as_slice().as_ptr(),
                    byte_offset: 0,
                    read_only: false,
                    keep: Keep::Copy(copy),
                }
            }
        };
        out.write(export(&what, description)?);
        Ok(())
    })
}

/// Describes the table entries [first, first + count) in one call, for bindings that pay per
/// call: `out[i]` is what mmckpt_checkpoint_tensor_at(ckpt, first + i, …) writes and
/// `status[i]` its status (an entry that fails leaves `out[i]` unspecified; ask
/// mmckpt_checkpoint_tensor_at for its message). `storage_nbytes` (nullable) receives each
/// successful entry's whole storage's length in bytes; the storage starts storage_offset ×
/// itemsize bytes before `data`. `dims` (nullable when `dims_len` is 0)
/// receives, entry after entry, each successful entry's shape then strides (2 × ndim values).
/// `*dims_needed` (nullable) receives how many values that takes; when `dims` is given and
/// `dims_len` is smaller, the call fails with MMCKPT_ERR_BUFFER_TOO_SMALL, having written only
/// `*dims_needed`. A range past the table is MMCKPT_ERR_NOT_FOUND. Descriptions borrow from the
/// checkpoint as mmckpt_checkpoint_tensor_at's do.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_describe(
    ckpt: *const mmckpt_checkpoint,
    first: usize,
    count: usize,
    out: *mut mmckpt_tensor,
    status: *mut mmckpt_status_value,
    storage_nbytes: *mut u64,
    dims: *mut i64,
    dims_len: usize,
    dims_needed: *mut usize,
) -> mmckpt_status {
    guard(|| {
        let ckpt = &arg_ref(ckpt, "ckpt")?.inner;
        let end = table_range(ckpt, first, count)?;
        let out = arg_slice_mut(out, count, "out")?;
        let status = arg_slice_mut(status, count, "status")?;
        let mut storage_nbytes = if storage_nbytes.is_null() {
            None
        } else {
            Some(arg_slice_mut(storage_nbytes, count, "storage_nbytes")?)
        };
        let dims = arg_slice_mut(dims, dims_len, "dims")?;
        let mut needed = 0usize;
        for (slot, index) in (first..end).enumerate() {
            match ckpt.tensor_at(index) {
                Ok(tensor) => {
                    out[slot].write(mmckpt_tensor::from_checkpoint(&tensor));
                    status[slot].write(mmckpt_status::MMCKPT_OK as mmckpt_status_value);
                    if let Some(lengths) = storage_nbytes.as_deref_mut() {
                        lengths[slot].write(tensor.storage_nbytes() as u64);
                    }
                    needed += 2 * tensor.shape().len();
                }
                Err(e) => {
                    status[slot].write(mmckpt_status::from(e.kind) as mmckpt_status_value);
                }
            }
        }
        if !dims_needed.is_null() {
            out_ptr(dims_needed, "dims_needed")?.write(needed);
        }
        if dims_len == 0 {
            return Ok(());
        }
        if dims_len < needed {
            return Err(Error::buffer_too_small(format!(
                "dims has {dims_len} values; the entries' shapes and strides need {needed}"
            )));
        }
        let mut at = 0;
        for index in first..end {
            if let Ok(tensor) = ckpt.tensor_at(index) {
                for &v in tensor.shape().iter().chain(tensor.strides()) {
                    dims[at].write(v);
                    at += 1;
                }
            }
        }
        Ok(())
    })
}

/// The names of the table entries [first, first + count) in one call, for bindings that pay
/// per string: each name followed by a NUL byte, entry after entry (failing entries too), into
/// `buf`. `*needed` (nullable) receives the bytes that takes; when `buf` is given and `len` is
/// smaller, the call fails with MMCKPT_ERR_BUFFER_TOO_SMALL, having written only `*needed`
/// (`buf` may be NULL when `len` is 0, to ask for the size). A range past the table is
/// MMCKPT_ERR_NOT_FOUND.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_describe_names(
    ckpt: *const mmckpt_checkpoint,
    first: usize,
    count: usize,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> mmckpt_status {
    guard(|| {
        let ckpt = &arg_ref(ckpt, "ckpt")?.inner;
        let end = table_range(ckpt, first, count)?;
        let names = || (first..end).map(|i| ckpt.name_c_at(i).unwrap_or_default());
        let total: usize = names().map(|n| n.to_bytes_with_nul().len()).sum();
        if !needed.is_null() {
            out_ptr(needed, "needed")?.write(total);
        }
        if len == 0 {
            return Ok(());
        }
        if len < total {
            return Err(Error::buffer_too_small(format!(
                "buf has {len} bytes; the entries' names need {total}"
            )));
        }
        let buf = arg_slice_mut(buf, total, "buf")?;
        let mut at = 0;
        for name in names() {
            for &byte in name.to_bytes_with_nul() {
                buf[at].write(byte as c_char);
                at += 1;
            }
        }
        Ok(())
    })
}

/// Wraps a DLPack 1.x export as a pre-1.0 `DLManagedTensor` (dlpack.h's unversioned struct),
/// for consumers that speak only the unversioned protocol (JAX's `from_dlpack` asks for it).
/// `*out`'s `dl_tensor` is `versioned`'s; the wrapper takes ownership of `versioned`: calling
/// `(*out)->deleter(*out)` once deletes both, and `versioned` must not be deleted otherwise.
/// The unversioned struct has no flags, so a consumer cannot see
/// DLPACK_FLAG_BITMASK_READ_ONLY: wrap only exports whose bytes may be written — those flagged
/// DLPACK_FLAG_BITMASK_IS_COPIED, and mapped tensors of a checkpoint opened with
/// MMCKPT_OPEN_COPY_ON_WRITE (a write changes a private copy of the page) — or hand it to a
/// consumer that never writes. A versioned export without a deleter is
/// MMCKPT_ERR_INVALID_ARGUMENT. On failure `*out` is not written and `versioned` is not taken.
#[no_mangle]
pub extern "C" fn mmckpt_dlpack_unversioned(
    versioned: *mut DLManagedTensorVersioned,
    out: *mut *mut DLManagedTensor,
) -> mmckpt_status {
    guard(|| {
        let source = arg_ref(versioned.cast_const(), "versioned")?;
        let out = out_ptr(out, "out")?;
        if source.deleter.is_none() {
            return Err(Error::invalid_argument(
                "the versioned export has no deleter: nothing could free it",
            ));
        }
        let t = &source.dl_tensor;
        let wrapper = Box::new(DLManagedTensor {
            dl_tensor: DLTensor {
                data: t.data,
                device: DLDevice {
                    device_type: t.device.device_type,
                    device_id: t.device.device_id,
                },
                ndim: t.ndim,
                dtype: t.dtype,
                shape: t.shape,
                strides: t.strides,
                byte_offset: t.byte_offset,
            },
            manager_ctx: versioned.cast::<c_void>(),
            deleter: Some(delete_unversioned),
        });
        out.write(Box::into_raw(wrapper));
        Ok(())
    })
}

/// The layouts (shape and strides) of the table entries [first, first + count) in one call,
/// each distinct layout once, for bindings that pay per object: a state dict of 100,000 tensors
/// has a few hundred distinct layouts, so a binding builds a few hundred shape and stride
/// tuples and shares them. `layout[i]` receives the index of entry `first + i`'s layout among
/// the distinct ones, numbered in order of first appearance, or UINT32_MAX for an entry that
/// fails (ask mmckpt_checkpoint_tensor_at for its message). `dims` (nullable when `dims_len`
/// is 0) receives the distinct layouts one after another, each as ndim, the shape, then the
/// strides (1 + 2 × ndim values); `*dims_needed` (nullable) receives how many values that
/// takes and `*layout_count` (nullable) how many distinct layouts there are. When `dims` is
/// given and `dims_len` is smaller than needed, the call fails with
/// MMCKPT_ERR_BUFFER_TOO_SMALL, having written only `*dims_needed` and `*layout_count`. A range
/// past the table is MMCKPT_ERR_NOT_FOUND.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_describe_layouts(
    ckpt: *const mmckpt_checkpoint,
    first: usize,
    count: usize,
    layout: *mut u32,
    dims: *mut i64,
    dims_len: usize,
    dims_needed: *mut usize,
    layout_count: *mut usize,
) -> mmckpt_status {
    guard(|| {
        let ckpt = &arg_ref(ckpt, "ckpt")?.inner;
        let end = table_range(ckpt, first, count)?;
        let layout = arg_slice_mut(layout, count, "layout")?;
        // The distinct layouts back to back as they are written to `dims`, and each one's
        // index by its values (shape then strides, ndim implied by the length).
        let mut pool: Vec<i64> = Vec::new();
        let mut known: crate::hash::HashMap<Vec<i64>, u32> = Default::default();
        let mut key: Vec<i64> = Vec::with_capacity(16);
        for (slot, index) in (first..end).enumerate() {
            let Ok(tensor) = ckpt.tensor_at(index) else {
                layout[slot].write(u32::MAX);
                continue;
            };
            key.clear();
            key.extend_from_slice(tensor.shape());
            key.extend_from_slice(tensor.strides());
            let id = match known.get(key.as_slice()) {
                Some(&id) => id,
                None => {
                    let id = known.len() as u32; // at most one per entry: below u32::MAX
                    pool.push(tensor.shape().len() as i64);
                    pool.extend_from_slice(&key);
                    known.insert(key.clone(), id);
                    id
                }
            };
            layout[slot].write(id);
        }
        if !dims_needed.is_null() {
            out_ptr(dims_needed, "dims_needed")?.write(pool.len());
        }
        if !layout_count.is_null() {
            out_ptr(layout_count, "layout_count")?.write(known.len());
        }
        if dims_len == 0 {
            return Ok(());
        }
        if dims_len < pool.len() {
            return Err(Error::buffer_too_small(format!(
                "dims has {dims_len} values; the entries' {} distinct layouts need {}",
                known.len(),
                pool.len()
            )));
        }
        let dims = arg_slice_mut(dims, pool.len(), "dims")?;
        for (slot, &value) in dims.iter_mut().zip(&pool) {
            slot.write(value);
        }
        Ok(())
    })
}

/// `first..first + count` as the end of a range of the table, or NotFound past its end.
fn table_range(ckpt: &crate::checkpoint::Checkpoint, first: usize, count: usize) -> Result<usize> {
    first
        .checked_add(count)
        .filter(|&end| end <= ckpt.len())
        .ok_or_else(|| {
            Error::not_found(format!(
                "entries [{first}, {first} + {count}) are past the table's {} entries",
                ckpt.len()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_but_the_bits_types_has_a_dlpack_code() {
        for d in DType::ALL {
            let bits = matches!(
                d,
                DType::Bits8 | DType::Bits16 | DType::Bits1x8 | DType::Bits2x4 | DType::Bits4x2
            );
            match dl_dtype(d) {
                None => assert!(bits, "{d:?}"),
                Some(dl) => {
                    assert!(!bits, "{d:?}");
                    let size = (usize::from(dl.bits) * usize::from(dl.lanes)).div_ceil(8);
                    assert_eq!(size, d.itemsize(), "{d:?}");
                }
            }
        }
    }

    #[test]
    fn the_struct_layout_is_dlpack_1s() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<DLDataType>(), 4);
        assert_eq!(size_of::<DLTensor>(), 48);
        assert_eq!(offset_of!(DLManagedTensorVersioned, flags), 24);
        assert_eq!(offset_of!(DLManagedTensorVersioned, dl_tensor), 32);
        assert_eq!(offset_of!(Export, managed), 0);
    }
}
