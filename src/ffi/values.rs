//! Non-tensor values by dotted path (`epoch`, `config.hidden_size`,
//! `optimizer.param_groups.0.lr`): kinds, scalars, text, and enumeration of containers.

use super::checkpoint::mmckpt_checkpoint;
use super::guard::*;
use crate::error::{Error, Result};
use crate::values::{ValueKind, ValueRef};
use std::ffi::{c_char, CStr};

/// What a value is. Values are never renumbered. Python's bytes and bytearray are both
/// MMCKPT_VALUE_BYTES, set and frozenset both MMCKPT_VALUE_SET, dict and OrderedDict both
/// MMCKPT_VALUE_DICT.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum mmckpt_value_kind {
    MMCKPT_VALUE_NONE = 0,
    MMCKPT_VALUE_BOOL = 1,
    /// an int that fits in int64_t
    MMCKPT_VALUE_INT = 2,
    /// an int outside int64_t: read its decimal text with mmckpt_checkpoint_value_string
    MMCKPT_VALUE_BIGINT = 3,
    MMCKPT_VALUE_FLOAT = 4,
    MMCKPT_VALUE_COMPLEX = 5,
    /// a Python str (UTF-8)
    MMCKPT_VALUE_STRING = 6,
    MMCKPT_VALUE_BYTES = 7,
    MMCKPT_VALUE_LIST = 8,
    MMCKPT_VALUE_TUPLE = 9,
    MMCKPT_VALUE_DICT = 10,
    MMCKPT_VALUE_SET = 11,
    /// an instance of a class mmckpt does not interpret (argparse.Namespace); its children are
    /// the attributes its pickled state set; mmckpt_checkpoint_value_class names the class
    MMCKPT_VALUE_OBJECT = 12,
    /// a tensor or Parameter: a leaf; mmckpt_checkpoint_tensor with the same path describes it
    MMCKPT_VALUE_TENSOR = 13,
    /// a reference to a class or function (torch.float32), never resolved
    MMCKPT_VALUE_GLOBAL = 14,
    /// anything else
    MMCKPT_VALUE_OTHER = 15,
}

impl From<ValueKind> for mmckpt_value_kind {
    fn from(kind: ValueKind) -> Self {
        use mmckpt_value_kind::*;
        match kind {
            ValueKind::None => MMCKPT_VALUE_NONE,
            ValueKind::Bool => MMCKPT_VALUE_BOOL,
            ValueKind::Int => MMCKPT_VALUE_INT,
            ValueKind::BigInt => MMCKPT_VALUE_BIGINT,
            ValueKind::Float => MMCKPT_VALUE_FLOAT,
            ValueKind::Complex => MMCKPT_VALUE_COMPLEX,
            ValueKind::Str => MMCKPT_VALUE_STRING,
            ValueKind::Bytes => MMCKPT_VALUE_BYTES,
            ValueKind::List => MMCKPT_VALUE_LIST,
            ValueKind::Tuple => MMCKPT_VALUE_TUPLE,
            ValueKind::Dict => MMCKPT_VALUE_DICT,
            ValueKind::Set => MMCKPT_VALUE_SET,
            ValueKind::Object => MMCKPT_VALUE_OBJECT,
            ValueKind::Tensor => MMCKPT_VALUE_TENSOR,
            ValueKind::Global => MMCKPT_VALUE_GLOBAL,
            ValueKind::Other => MMCKPT_VALUE_OTHER,
        }
    }
}

const KIND_NAMES: [&CStr; 16] = [
    c"none", c"bool", c"int", c"bigint", c"float", c"complex", c"str", c"bytes", c"list", c"tuple",
    c"dict", c"set", c"object", c"tensor", c"global", c"other",
];

/// The raw value of an `mmckpt_value_kind` as a C caller passes it.
pub type mmckpt_value_kind_value = u32;

/// Python's name of a value kind ("int", "str", "bigint", …): static text, never freed; NULL if
/// `kind` is not a mmckpt_value_kind value (as mmckpt_dtype_name for dtypes).
#[no_mangle]
pub extern "C" fn mmckpt_value_kind_name(kind: mmckpt_value_kind_value) -> *const c_char {
    guard_value(std::ptr::null(), || {
        KIND_NAMES
            .get(kind as usize)
            .map_or(std::ptr::null(), |n| n.as_ptr())
    })
}

/// Checks the handle and the path and finds the value.
fn find<'a>(ckpt: *const mmckpt_checkpoint, path: *const c_char) -> Result<ValueRef<'a>> {
    let ckpt: &'a mmckpt_checkpoint = arg_ref(ckpt, "ckpt")?;
    let path = arg_str(path, "path")?;
    ckpt.inner.value(path)
}

/// Finds the value at `path` and writes what `read` makes of it to `out`; fails, in this
/// order, for a bad argument or path, a NULL `out`, or a value `read` refuses.
fn read_into<T>(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    out: *mut T,
    read: impl FnOnce(&ValueRef<'_>) -> Result<T>,
) -> mmckpt_status {
    guard(|| {
        let value = find(ckpt, path)?;
        let out = out_ptr(out, "out")?;
        out.write(read(&value)?);
        Ok(())
    })
}

/// Copies `bytes` and a terminating NUL into the caller's buffer. When `cap` is less than
/// `bytes.len() + 1`, writes only `*len` (the length without the NUL) and fails with
/// MMCKPT_ERR_BUFFER_TOO_SMALL.
fn write_text(
    bytes: &[u8],
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
    what: &str,
) -> Result<()> {
    let len = out_ptr(len, "len")?;
    let buf = arg_slice_mut(buf.cast::<u8>(), cap, "buf")?;
    if cap <= bytes.len() {
        len.write(bytes.len());
        return Err(Error::new(
            crate::ErrorKind::BufferTooSmall,
            format!(
                "{what} is {} bytes and needs a buffer of {} (with the NUL); cap is {cap}",
                bytes.len(),
                bytes.len() + 1
            ),
        ));
    }
    for (slot, &byte) in buf.iter_mut().zip(bytes.iter().chain([&0u8])) {
        slot.write(byte);
    }
    len.write(bytes.len());
    Ok(())
}

/// The kind of the value at `path`, a dotted name relative to the checkpoint's root, named as
/// the tensor table names tensors (dict keys as written, int keys and list/tuple indices in
/// decimal, object attributes); "" is the root itself. A path that names nothing gives
/// MMCKPT_ERR_NOT_FOUND, and the last error says which part of the path is missing.
///
/// Every mmckpt_checkpoint_value_* function reads `path` during the call only, finds the value
/// the same way, never changes the checkpoint, and may run on any number of threads at once.
/// When a value has the wrong kind for the call they fail with MMCKPT_ERR_INVALID_ARGUMENT and
/// a message naming the path and the value's kind.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_value_kind(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    out: *mut mmckpt_value_kind,
) -> mmckpt_status {
    read_into(ckpt, path, out, |value| Ok(value.kind().into()))
}

/// A bool as 0 or 1. Only MMCKPT_VALUE_BOOL values (an int is not a bool).
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_value_bool(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    out: *mut i32,
) -> mmckpt_status {
    read_into(ckpt, path, out, |value| Ok(value.as_bool()? as i32))
}

/// An int (MMCKPT_VALUE_INT), or a bool as 0 / 1 (Python's bool is an int). A
/// MMCKPT_VALUE_BIGINT does not fit: MMCKPT_ERR_LIMIT (read its decimal text with
/// mmckpt_checkpoint_value_string). Floats are not converted (MMCKPT_ERR_INVALID_ARGUMENT).
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_value_int(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    out: *mut i64,
) -> mmckpt_status {
    read_into(ckpt, path, out, |value| value.as_i64())
}

/// A float, or an int / bigint / bool converted as Python's float() does (rounded to nearest,
/// ties to even); an int too large for a double gives MMCKPT_ERR_LIMIT (Python raises
/// OverflowError). NaN and infinities are returned as they are.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_value_float(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    out: *mut f64,
) -> mmckpt_status {
    read_into(ckpt, path, out, |value| value.as_f64())
}

/// A complex as its real and imaginary parts; a real number (as mmckpt_checkpoint_value_float
/// accepts) gives imag 0.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_value_complex(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    real: *mut f64,
    imag: *mut f64,
) -> mmckpt_status {
    guard(|| {
        let value = find(ckpt, path)?;
        let real = out_ptr(real, "real")?;
        let imag = out_ptr(imag, "imag")?;
        let (re, im) = value.as_complex()?;
        real.write(re);
        imag.write(im);
        Ok(())
    })
}

/// Copies the text of a value into the caller's buffer `buf` of `cap` bytes, followed by a NUL:
/// the UTF-8 bytes of a str (MMCKPT_VALUE_STRING), the raw bytes of bytes / bytearray
/// (MMCKPT_VALUE_BYTES: may contain NUL bytes, so use `*len`), or the decimal digits of an int
/// of any size (MMCKPT_VALUE_INT, MMCKPT_VALUE_BIGINT, e.g. "1180591620717411303424"; at most
/// about 4300 digits, as Python, else MMCKPT_ERR_LIMIT). Other kinds: MMCKPT_ERR_INVALID_ARGUMENT.
///
/// On success `*len` is the length without the NUL. When `cap < length + 1` nothing is copied,
/// `*len` still receives the length, and the call returns MMCKPT_ERR_BUFFER_TOO_SMALL: call
/// with `buf = NULL, cap = 0` to ask for the size. `buf` may be NULL only when `cap` is 0.
/// The caller owns the buffer; nothing is retained.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_value_string(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mmckpt_status {
    guard(|| {
        let value = find(ckpt, path)?;
        let text = value.text()?;
        write_text(&text, buf, cap, len, &format!("value '{}'", value.path()))
    })
}

/// The dotted class name of a MMCKPT_VALUE_OBJECT ("argparse.Namespace"), or the name a
/// MMCKPT_VALUE_GLOBAL refers to ("torch.float32"), copied into `buf` as
/// mmckpt_checkpoint_value_string does (same buffer rules). Other kinds:
/// MMCKPT_ERR_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_value_class(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mmckpt_status {
    guard(|| {
        let value = find(ckpt, path)?;
        let name = value.class_name()?;
        write_text(
            name.as_bytes(),
            buf,
            cap,
            len,
            &format!("the class name of '{}'", value.path()),
        )
    })
}

/// Number of children of a container (list, tuple, dict, set, object); 0 for every other kind,
/// tensors included. Dict children are its items (not an OrderedDict's attributes); an object's
/// children are the attributes of its pickled state, then any list / dict items.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_value_child_count(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    out: *mut usize,
) -> mmckpt_status {
    guard(|| {
        let value = find(ckpt, path)?;
        out_ptr(out, "out")?.write(value.child_count());
        Ok(())
    })
}

/// The name segment of child `index` (0-based, in walk order) of the value at `path`, as it
/// appears in paths: a dict key as written (int keys in decimal), a list / tuple / set index in
/// decimal, an attribute name. The child's own path is `path + "." + key` ("key" alone when
/// `path` is ""). Copied into `buf` as mmckpt_checkpoint_value_string does (same buffer rules).
/// An index past the last child: MMCKPT_ERR_NOT_FOUND.
///
/// Keys may contain dots. A path then resolves to the first value, in walk order, whose full
/// name equals it, exactly as the tensor table keeps the first tensor of a name.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_value_child_key(
    ckpt: *const mmckpt_checkpoint,
    path: *const c_char,
    index: usize,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mmckpt_status {
    guard(|| {
        let value = find(ckpt, path)?;
        let key = value.child_key(index)?;
        write_text(
            key.as_bytes(),
            buf,
            cap,
            len,
            &format!("key {index} of '{}'", value.path()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_match_the_core() {
        use ValueKind::*;
        for kind in [
            None, Bool, Int, BigInt, Float, Complex, Str, Bytes, List, Tuple, Dict, Set, Object,
            Tensor, Global, Other,
        ] {
            let c = mmckpt_value_kind::from(kind) as u32;
            // SAFETY: a static NUL-terminated string for every known kind.
            let name = unsafe { CStr::from_ptr(mmckpt_value_kind_name(c)) };
            assert_eq!(name.to_str().unwrap(), kind.name());
        }
        assert!(mmckpt_value_kind_name(16).is_null());
    }
}
