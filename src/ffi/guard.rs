//! Status codes, the thread's last error, and the guard every exported body runs in.

use crate::error::{Error, ErrorKind, Result};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Status of every fallible call. Values are never renumbered.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum mmckpt_status {
    MMCKPT_OK = 0,
    MMCKPT_ERR_NULL_ARGUMENT = 1,
    MMCKPT_ERR_INVALID_ARGUMENT = 2,
    /// open / stat / map / read failed
    MMCKPT_ERR_IO = 3,
    /// not a checkpoint, or corrupt
    MMCKPT_ERR_FORMAT = 4,
    /// valid, but a feature this version does not handle
    MMCKPT_ERR_UNSUPPORTED = 5,
    /// STRICT open: a global outside the allowlist
    MMCKPT_ERR_UNSAFE = 6,
    /// a resource limit was hit
    MMCKPT_ERR_LIMIT = 7,
    MMCKPT_ERR_NOT_FOUND = 8,
    /// strict load: missing / unexpected keys
    MMCKPT_ERR_KEY_MISMATCH = 9,
    MMCKPT_ERR_SHAPE_MISMATCH = 10,
    MMCKPT_ERR_DTYPE_MISMATCH = 11,
    MMCKPT_ERR_BUFFER_TOO_SMALL = 12,
    /// call not valid in the handle's current state
    MMCKPT_ERR_STATE = 13,
    /// a user callback asked to stop
    MMCKPT_ERR_CALLBACK = 14,
    MMCKPT_ERR_NO_MEMORY = 15,
    /// internal bug, caught at the boundary
    MMCKPT_ERR_PANIC = 99,
}

use mmckpt_status::*;

impl From<ErrorKind> for mmckpt_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NullArgument => MMCKPT_ERR_NULL_ARGUMENT,
            ErrorKind::InvalidArgument => MMCKPT_ERR_INVALID_ARGUMENT,
            ErrorKind::Io => MMCKPT_ERR_IO,
            ErrorKind::Format => MMCKPT_ERR_FORMAT,
            ErrorKind::Unsupported => MMCKPT_ERR_UNSUPPORTED,
            ErrorKind::Unsafe => MMCKPT_ERR_UNSAFE,
            ErrorKind::Limit => MMCKPT_ERR_LIMIT,
            ErrorKind::NotFound => MMCKPT_ERR_NOT_FOUND,
            ErrorKind::KeyMismatch => MMCKPT_ERR_KEY_MISMATCH,
            ErrorKind::ShapeMismatch => MMCKPT_ERR_SHAPE_MISMATCH,
            ErrorKind::DtypeMismatch => MMCKPT_ERR_DTYPE_MISMATCH,
            ErrorKind::BufferTooSmall => MMCKPT_ERR_BUFFER_TOO_SMALL,
            ErrorKind::State => MMCKPT_ERR_STATE,
            ErrorKind::Callback => MMCKPT_ERR_CALLBACK,
            ErrorKind::NoMemory => MMCKPT_ERR_NO_MEMORY,
            ErrorKind::Panic => MMCKPT_ERR_PANIC,
        }
    }
}

/// The raw value of an `mmckpt_status` as a C caller passes it.
pub type mmckpt_status_value = u32;

const STATUS_TEXT: &[(u32, &CStr)] = &[
    (0, c"MMCKPT_OK: success"),
    (
        1,
        c"MMCKPT_ERR_NULL_ARGUMENT: a required pointer argument was NULL",
    ),
    (
        2,
        c"MMCKPT_ERR_INVALID_ARGUMENT: an argument has an invalid value",
    ),
    (
        3,
        c"MMCKPT_ERR_IO: the file could not be opened, mapped or read",
    ),
    (4, c"MMCKPT_ERR_FORMAT: not a checkpoint, or a corrupt one"),
    (
        5,
        c"MMCKPT_ERR_UNSUPPORTED: valid, but not handled by this version",
    ),
    (
        6,
        c"MMCKPT_ERR_UNSAFE: a global outside the allowlist (strict open)",
    ),
    (7, c"MMCKPT_ERR_LIMIT: a resource limit was hit"),
    (8, c"MMCKPT_ERR_NOT_FOUND: no such entry"),
    (9, c"MMCKPT_ERR_KEY_MISMATCH: missing or unexpected keys"),
    (10, c"MMCKPT_ERR_SHAPE_MISMATCH: shapes differ"),
    (
        11,
        c"MMCKPT_ERR_DTYPE_MISMATCH: dtypes differ and cannot be converted",
    ),
    (12, c"MMCKPT_ERR_BUFFER_TOO_SMALL: the buffer is too small"),
    (
        13,
        c"MMCKPT_ERR_STATE: the call is not valid in the handle's current state",
    ),
    (14, c"MMCKPT_ERR_CALLBACK: a callback asked to stop"),
    (15, c"MMCKPT_ERR_NO_MEMORY: out of memory"),
    (99, c"MMCKPT_ERR_PANIC: internal error (a bug in mmckpt)"),
];

/// Static text describing a status: never NULL, never freed. Unknown values get a generic text.
#[no_mangle]
pub extern "C" fn mmckpt_status_str(status: mmckpt_status_value) -> *const c_char {
    let unknown = c"unknown mmckpt_status value".as_ptr();
    guard_value(unknown, || {
        STATUS_TEXT
            .iter()
            .find(|(code, _)| *code == status)
            .map_or(unknown, |(_, text)| text.as_ptr())
    })
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    let text = c_text(message);
    // try_with: during thread teardown the slot may be gone; the status still says what failed.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = text);
}

/// Text for C: a NUL inside it (C could not see past it) is written as `\x00`, the rule the
/// tensor table and value paths follow, so a name reads the same in every string mmckpt returns.
pub(crate) fn c_text(text: &str) -> CString {
    CString::new(crate::tree::sanitize(text).into_owned()).expect("every NUL was escaped")
}

/// The message of this thread's last failed mmckpt call: what was wrong, naming the argument,
/// entry, path or file. Per thread: a failure on one thread never changes another thread's
/// text. Every call that returns a status other than MMCKPT_OK sets it; successful calls and
/// calls that return no status leave it as it is (success does not clear it), so it may
/// describe a call several calls back: read it only right after a call returned an error.
/// "" when no call on this thread has failed yet. Never NULL. The text (and the pointer) stays
/// valid and unchanged until this thread's next failed call or its exit; copy it to keep it.
#[no_mangle]
pub extern "C" fn mmckpt_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), || {
        LAST_ERROR
            .try_with(|slot| slot.borrow().as_ptr())
            .unwrap_or(c"".as_ptr())
    })
}

/// Runs an exported body: errors become a status plus the thread's last error text, and a
/// panic never crosses the C boundary.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> mmckpt_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MMCKPT_OK,
        Ok(Err(error)) => {
            set_last_error(&error.message);
            error.kind.into()
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(&format!("internal error (please report): {what}"));
            MMCKPT_ERR_PANIC
        }
    }
}

/// For exports that return a value instead of a status (getters, destructors, option
/// initialisers): a panic yields `fallback`.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

pub(crate) fn null_argument(what: &str) -> Error {
    Error::new(
        ErrorKind::NullArgument,
        format!("argument '{what}' is NULL"),
    )
}

/// Borrows a non-null pointer argument.
pub(crate) fn arg_ref<'a, T>(ptr: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: the C caller guarantees that a non-null pointer points to a valid T for the
    // duration of the call (the header documents every pointer argument).
    unsafe { ptr.as_ref() }.ok_or_else(|| null_argument(what))
}

/// Reads a NUL-terminated UTF-8 string argument.
pub(crate) fn arg_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(null_argument(what));
    }
    // SAFETY: non-null, and the caller guarantees a NUL-terminated string valid for the call.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str()
        .map_err(|_| Error::invalid_argument(format!("argument '{what}' is not valid UTF-8")))
}

/// Like `arg_str`, but NULL is allowed and means "not given".
pub(crate) fn arg_opt_str<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        Ok(None)
    } else {
        arg_str(ptr, what).map(Some)
    }
}

/// Borrows `len` elements at `ptr`, an input array read during the call only. NULL is allowed
/// for an empty array; NULL with `len > 0` is MMCKPT_ERR_NULL_ARGUMENT naming the argument (the
/// header's rule for every pointer argument).
pub(crate) fn arg_slice<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null_argument(what));
    }
    // SAFETY: non-null, and the caller guarantees `len` readable, initialised elements at `ptr`
    // that nothing writes during the call (the header documents every array argument).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// `arg_slice` for an output buffer of `len` elements that mmckpt writes during the call (its
/// old contents, possibly uninitialised, are never read).
pub(crate) fn arg_slice_mut<'a, T>(
    ptr: *mut T,
    len: usize,
    what: &str,
) -> Result<&'a mut [MaybeUninit<T>]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(null_argument(what));
    }
    // SAFETY: non-null, and the caller guarantees `len` writable elements at `ptr` that nothing
    // else uses during the call; MaybeUninit makes no claim about their contents.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<MaybeUninit<T>>(), len) })
}

/// Writes an output argument (only ever on success, by the callers' convention).
pub(crate) fn out_ptr<T>(out: *mut T, what: &str) -> Result<OutPtr<T>> {
    if out.is_null() {
        Err(null_argument(what))
    } else {
        Ok(OutPtr(out))
    }
}

pub(crate) struct OutPtr<T>(*mut T);

impl<T> OutPtr<T> {
    pub(crate) fn write(self, value: T) {
        // SAFETY: non-null (checked in out_ptr) and the caller guarantees it points to writable
        // memory for a T; `write` does not read or drop the old (possibly uninitialised) value.
        unsafe { self.0.write(value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_text_escapes_nul_as_the_table_does() {
        assert_eq!(c_text("nul\0inside").to_bytes(), b"nul\\x00inside");
        assert_eq!(c_text("plain").to_bytes(), b"plain");
        set_last_error("a\0b");
        // SAFETY: mmckpt_last_error returns a valid NUL-terminated string.
        let text = unsafe { CStr::from_ptr(mmckpt_last_error()) };
        assert_eq!(text.to_bytes(), b"a\\x00b");
    }

    #[test]
    fn arg_slice_allows_null_only_when_empty() {
        assert!(arg_slice::<i64>(std::ptr::null(), 0, "shape")
            .unwrap()
            .is_empty());
        let err = arg_slice::<i64>(std::ptr::null(), 2, "shape").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NullArgument);
        assert!(err.message.contains("'shape'"), "{}", err.message);
        let values = [3i64, 4];
        assert_eq!(arg_slice(values.as_ptr(), 2, "shape").unwrap(), [3, 4]);
        assert!(arg_slice_mut::<u8>(std::ptr::null_mut(), 0, "buf").is_ok());
        let err = arg_slice_mut::<u8>(std::ptr::null_mut(), 1, "buf").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NullArgument);
    }
}
