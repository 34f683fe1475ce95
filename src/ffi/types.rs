//! Version, dtypes, flags and the tensor description shared by checkpoints and modules.

use super::guard::guard_value;
use crate::checkpoint::Tensor;
use crate::dtype::DType;
use crate::module::Entry;
use std::ffi::{c_char, c_void, CStr};

pub const MMCKPT_VERSION_MAJOR: u32 = 0;
pub const MMCKPT_VERSION_MINOR: u32 = 1;
pub const MMCKPT_VERSION_PATCH: u32 = 0;
pub const MMCKPT_VERSION_NUMBER: u32 =
    MMCKPT_VERSION_MAJOR * 10000 + MMCKPT_VERSION_MINOR * 100 + MMCKPT_VERSION_PATCH;

/// The library's version as MAJOR*10000 + MINOR*100 + PATCH; equals MMCKPT_VERSION_NUMBER of
/// the header it was built with.
#[no_mangle]
pub extern "C" fn mmckpt_version_number() -> u32 {
    guard_value(MMCKPT_VERSION_NUMBER, || MMCKPT_VERSION_NUMBER)
}

/// The library's version as static text, e.g. "0.1.0". Never NULL, never freed.
#[no_mangle]
pub extern "C" fn mmckpt_version() -> *const c_char {
    guard_value(c"0.1.0".as_ptr(), || c"0.1.0".as_ptr())
}

/// Element types, spelled as torch spells them. Values are never renumbered.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum mmckpt_dtype {
    MMCKPT_DTYPE_FLOAT32 = 1,
    MMCKPT_DTYPE_FLOAT64 = 2,
    MMCKPT_DTYPE_FLOAT16 = 3,
    MMCKPT_DTYPE_BFLOAT16 = 4,
    MMCKPT_DTYPE_INT8 = 5,
    MMCKPT_DTYPE_UINT8 = 6,
    MMCKPT_DTYPE_INT16 = 7,
    MMCKPT_DTYPE_INT32 = 8,
    MMCKPT_DTYPE_INT64 = 9,
    MMCKPT_DTYPE_BOOL = 10,
    MMCKPT_DTYPE_COMPLEX64 = 11,
    MMCKPT_DTYPE_COMPLEX128 = 12,
    MMCKPT_DTYPE_UINT16 = 13,
    MMCKPT_DTYPE_UINT32 = 14,
    MMCKPT_DTYPE_UINT64 = 15,
    /// torch.complex32 (chalf): two float16
    MMCKPT_DTYPE_COMPLEX32 = 16,
    MMCKPT_DTYPE_FLOAT8_E4M3FN = 17,
    MMCKPT_DTYPE_FLOAT8_E5M2 = 18,
    MMCKPT_DTYPE_FLOAT8_E4M3FNUZ = 19,
    MMCKPT_DTYPE_FLOAT8_E5M2FNUZ = 20,
    MMCKPT_DTYPE_FLOAT8_E8M0FNU = 21,
    /// two float4 values packed in one byte
    MMCKPT_DTYPE_FLOAT4_E2M1FN_X2 = 22,
    MMCKPT_DTYPE_BITS8 = 23,
    MMCKPT_DTYPE_BITS16 = 24,
    MMCKPT_DTYPE_BITS1X8 = 25,
    MMCKPT_DTYPE_BITS2X4 = 26,
    MMCKPT_DTYPE_BITS4X2 = 27,
}

/// The raw value of an `mmckpt_dtype` as a C caller passes it.
pub type mmckpt_dtype_value = u32;

impl From<DType> for mmckpt_dtype {
    fn from(d: DType) -> Self {
        use mmckpt_dtype::*;
        const ALL: [mmckpt_dtype; 27] = [
            MMCKPT_DTYPE_FLOAT32,
            MMCKPT_DTYPE_FLOAT64,
            MMCKPT_DTYPE_FLOAT16,
            MMCKPT_DTYPE_BFLOAT16,
            MMCKPT_DTYPE_INT8,
            MMCKPT_DTYPE_UINT8,
            MMCKPT_DTYPE_INT16,
            MMCKPT_DTYPE_INT32,
            MMCKPT_DTYPE_INT64,
            MMCKPT_DTYPE_BOOL,
            MMCKPT_DTYPE_COMPLEX64,
            MMCKPT_DTYPE_COMPLEX128,
            MMCKPT_DTYPE_UINT16,
            MMCKPT_DTYPE_UINT32,
            MMCKPT_DTYPE_UINT64,
            MMCKPT_DTYPE_COMPLEX32,
            MMCKPT_DTYPE_FLOAT8_E4M3FN,
            MMCKPT_DTYPE_FLOAT8_E5M2,
            MMCKPT_DTYPE_FLOAT8_E4M3FNUZ,
            MMCKPT_DTYPE_FLOAT8_E5M2FNUZ,
            MMCKPT_DTYPE_FLOAT8_E8M0FNU,
            MMCKPT_DTYPE_FLOAT4_E2M1FN_X2,
            MMCKPT_DTYPE_BITS8,
            MMCKPT_DTYPE_BITS16,
            MMCKPT_DTYPE_BITS1X8,
            MMCKPT_DTYPE_BITS2X4,
            MMCKPT_DTYPE_BITS4X2,
        ];
        ALL[d.code() as usize - 1]
    }
}

/// Bytes per element of a dtype; 0 if the value is not a known mmckpt_dtype.
#[no_mangle]
pub extern "C" fn mmckpt_dtype_itemsize(dtype: mmckpt_dtype_value) -> usize {
    guard_value(0, || DType::from_code(dtype).map_or(0, |d| d.itemsize()))
}

/// torch's name of a dtype ("bfloat16"): static text, never freed; NULL if `dtype` is not a
/// mmckpt_dtype value (as mmckpt_value_kind_name for value kinds). Status codes have
/// mmckpt_status_str instead, which is for printing and so is never NULL.
#[no_mangle]
pub extern "C" fn mmckpt_dtype_name(dtype: mmckpt_dtype_value) -> *const c_char {
    guard_value(std::ptr::null(), || {
        DType::from_code(dtype).map_or(std::ptr::null(), dtype_name_c)
    })
}

fn dtype_name_c(d: DType) -> *const c_char {
    const NAMES: [&CStr; 27] = [
        c"float32",
        c"float64",
        c"float16",
        c"bfloat16",
        c"int8",
        c"uint8",
        c"int16",
        c"int32",
        c"int64",
        c"bool",
        c"complex64",
        c"complex128",
        c"uint16",
        c"uint32",
        c"uint64",
        c"complex32",
        c"float8_e4m3fn",
        c"float8_e5m2",
        c"float8_e4m3fnuz",
        c"float8_e5m2fnuz",
        c"float8_e8m0fnu",
        c"float4_e2m1fn_x2",
        c"bits8",
        c"bits16",
        c"bits1x8",
        c"bits2x4",
        c"bits4x2",
    ];
    NAMES[d.code() as usize - 1].as_ptr()
}

/// `file_offset` of a tensor whose bytes are not the file's (copied, converted, caller-bound).
pub const MMCKPT_NO_OFFSET: u64 = u64::MAX;

/// `data` points into the file mapping (zero-copy).
pub const MMCKPT_TENSOR_MAPPED: u32 = 1 << 0;
/// Row-major contiguous.
pub const MMCKPT_TENSOR_CONTIGUOUS: u32 = 1 << 1;
/// Saved as an nn.Parameter (or declared a parameter in a module).
pub const MMCKPT_TENSOR_PARAMETER: u32 = 1 << 2;
pub const MMCKPT_TENSOR_REQUIRES_GRAD: u32 = 1 << 3;
/// torch's lazy conjugate bit: the values are the conjugates of the stored bytes.
pub const MMCKPT_TENSOR_CONJ: u32 = 1 << 4;
/// torch's lazy negation bit: the values are the negations of the stored bytes.
pub const MMCKPT_TENSOR_NEG: u32 = 1 << 5;
/// A module entry that is a buffer rather than a parameter.
pub const MMCKPT_TENSOR_BUFFER: u32 = 1 << 6;

/// A tensor description. Borrowed: every pointer in it stays valid while the handle it came
/// from (checkpoint or module) lives and, for modules, until the entry is next changed by a
/// load, materialize or bind.
#[repr(C)]
pub struct mmckpt_tensor {
    /// Full dotted name, NUL-terminated.
    pub name: *const c_char,
    pub dtype: mmckpt_dtype,
    pub ndim: u32,
    /// ndim entries (NULL when ndim == 0).
    pub shape: *const i64,
    /// ndim entries, in elements (NULL when ndim == 0).
    pub strides: *const i64,
    /// In elements.
    pub storage_offset: i64,
    pub numel: u64,
    /// Element [0, …, 0]; NULL when there is no data yet (meta).
    pub data: *const c_void,
    /// Bytes from data to the end of the last reachable element.
    pub nbytes: u64,
    /// Equal non-zero ids <=> same storage (aliasing); 0 when there is no data.
    pub storage_id: u64,
    /// Absolute file offset of *data, or MMCKPT_NO_OFFSET.
    pub file_offset: u64,
    /// MMCKPT_TENSOR_* bits.
    pub flags: u32,
}

pub(crate) fn dims_ptr(dims: &[i64]) -> *const i64 {
    if dims.is_empty() {
        std::ptr::null()
    } else {
        dims.as_ptr()
    }
}

impl mmckpt_tensor {
    pub(crate) fn from_module_entry(e: &Entry) -> mmckpt_tensor {
        let mut flags = if e.is_parameter() {
            MMCKPT_TENSOR_PARAMETER
        } else {
            MMCKPT_TENSOR_BUFFER
        };
        if e.is_mapped() {
            flags |= MMCKPT_TENSOR_MAPPED;
        }
        if e.is_contiguous() {
            flags |= MMCKPT_TENSOR_CONTIGUOUS;
        }
        mmckpt_tensor {
            name: e.name_c().as_ptr(),
            dtype: e.dtype().into(),
            ndim: e.shape().len() as u32,
            shape: dims_ptr(e.shape()),
            strides: dims_ptr(e.strides()),
            storage_offset: e.storage_offset(),
            numel: e.numel(),
            data: e.data_ptr() as *const c_void,
            nbytes: e.nbytes() as u64,
            storage_id: e.storage_id(),
            file_offset: match e.file_offset() {
                Some(offset) if e.is_mapped() => offset,
                _ => MMCKPT_NO_OFFSET,
            },
            flags,
        }
    }

    pub(crate) fn from_checkpoint(t: &Tensor<'_>) -> mmckpt_tensor {
        let mut flags = 0;
        if t.is_mapped() {
            flags |= MMCKPT_TENSOR_MAPPED;
        }
        if t.is_contiguous() {
            flags |= MMCKPT_TENSOR_CONTIGUOUS;
        }
        if t.is_parameter() {
            flags |= MMCKPT_TENSOR_PARAMETER;
        }
        if t.requires_grad() {
            flags |= MMCKPT_TENSOR_REQUIRES_GRAD;
        }
        if t.is_conj() {
            flags |= MMCKPT_TENSOR_CONJ;
        }
        if t.is_neg() {
            flags |= MMCKPT_TENSOR_NEG;
        }
        mmckpt_tensor {
            name: t.name_c().as_ptr(),
            dtype: t.dtype().into(),
            ndim: t.shape().len() as u32,
            shape: dims_ptr(t.shape()),
            strides: dims_ptr(t.strides()),
            storage_offset: t.storage_offset(),
            numel: t.numel(),
            data: t.data_ptr() as *const c_void,
            nbytes: t.span_bytes(),
            storage_id: t.storage_id(),
            file_offset: if t.is_mapped() {
                t.file_offset().unwrap_or(MMCKPT_NO_OFFSET)
            } else {
                MMCKPT_NO_OFFSET
            },
            flags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_dtype_values_match_the_core_table() {
        for d in DType::ALL {
            assert_eq!(mmckpt_dtype::from(d) as u32, d.code());
            // SAFETY: dtype_name_c returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(dtype_name_c(d)) };
            assert_eq!(name.to_str().unwrap(), d.name());
        }
        assert!(mmckpt_dtype_name(0).is_null());
        assert_eq!(mmckpt_dtype_itemsize(999), 0);
    }

    #[test]
    fn version_matches_the_crate() {
        let expected = format!(
            "{}.{}.{}",
            MMCKPT_VERSION_MAJOR, MMCKPT_VERSION_MINOR, MMCKPT_VERSION_PATCH
        );
        assert_eq!(expected, env!("CARGO_PKG_VERSION"));
        // SAFETY: static NUL-terminated string.
        let text = unsafe { CStr::from_ptr(mmckpt_version()) };
        assert_eq!(text.to_str().unwrap(), expected);
    }
}
