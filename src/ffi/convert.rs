//! Element conversion: a buffer of one float dtype into another, bit for bit as torch's
//! `.to()` (the rules are `mmckpt::convert_elements`'s).

use super::guard::*;
use super::types::mmckpt_dtype_value;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::module::convert::{can_convert, convert_elements};
use std::ffi::c_void;

fn dtype_arg(code: mmckpt_dtype_value, what: &str) -> Result<DType> {
    DType::from_code(code)
        .ok_or_else(|| Error::invalid_argument(format!("{what} {code} is not an mmckpt_dtype")))
}

/// Converts `count` elements of `src_dtype` at `src` into `dst_dtype` elements at `dst`, bit
/// for bit as torch's `.to(dst_dtype)` on the CPU: any two of float64, float32, float16 and
/// bfloat16 (round to nearest even; float64 into float16 / bfloat16 through float32, as torch;
/// NaN payloads, subnormals and infinities as torch keeps them), each float8 kind into float32
/// (exact), and any dtype into itself (a copy). Elements are little-endian, and neither buffer
/// needs any alignment. Other pairs (into a float8 kind, integers, complex) are
/// MMCKPT_ERR_UNSUPPORTED naming both dtypes. `src` holds count × itemsize(src_dtype) bytes,
/// `dst` count × itemsize(dst_dtype); they must not overlap (MMCKPT_ERR_INVALID_ARGUMENT).
/// `src` and `dst` may be NULL only when `count` is 0. On failure `dst` is not written.
#[no_mangle]
pub extern "C" fn mmckpt_convert(
    dst: *mut c_void,
    dst_dtype: mmckpt_dtype_value,
    src: *const c_void,
    src_dtype: mmckpt_dtype_value,
    count: usize,
) -> mmckpt_status {
    guard(|| {
        let to = dtype_arg(dst_dtype, "dst_dtype")?;
        let from = dtype_arg(src_dtype, "src_dtype")?;
        let bytes = |d: DType| {
            count
                .checked_mul(d.itemsize())
                .filter(|&n| n <= isize::MAX as usize)
                .ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "{count} {d} elements overflow the address space"
                    ))
                })
        };
        let (src_len, dst_len) = (bytes(from)?, bytes(to)?);
        let src = arg_slice(src.cast::<u8>(), src_len, "src")?;
        let (dst_start, src_start) = (dst as usize, src.as_ptr() as usize);
        if src_len > 0
            && dst_len > 0
            && dst_start < src_start.saturating_add(src_len)
            && src_start < dst_start.saturating_add(dst_len)
        {
            return Err(Error::invalid_argument("src and dst overlap"));
        }
        let dst = arg_slice_mut(dst.cast::<u8>(), dst_len, "dst")?;
        if !can_convert(from, to) {
            // Refused before `dst` is touched; convert_elements words the message.
            return convert_elements(&[], from, &mut [], to);
        }
        // The caller's memory may be uninitialised: zero it so that it is valid as bytes.
        dst.fill(std::mem::MaybeUninit::new(0));
        // SAFETY: every byte of `dst` was just initialised, and u8 accepts any value.
        let dst = unsafe { &mut *(std::ptr::from_mut(dst) as *mut [u8]) };
        convert_elements(src, from, dst, to)
    })
}
