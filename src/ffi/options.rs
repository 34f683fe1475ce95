//! Versioned option structs, libgit2's way: a caller's struct starts with `uint32_t version`,
//! every version's fields are a prefix of the next version's, and the library reads (and its
//! initialisers write) only the bytes of the fields the caller's version has. A caller built
//! against an older header passes a shorter struct, which stays valid with a newer library; a
//! version the library does not know is refused, naming both versions.

use super::guard::null_argument;
use crate::error::{Error, Result};

/// A C options struct with versions 1..=CURRENT whose fields are prefixes of one another.
///
/// # Safety
/// `Self` is `#[repr(C)]`, starts with a `u32` version, and every bit pattern a C caller can
/// write into the first `prefix_len(v)` bytes is a valid value of those fields (integers, raw
/// pointers, nullable function pointers). `prefix_len(CURRENT) <= size_of::<Self>()`.
pub(crate) unsafe trait Versioned: Sized {
    /// The C type's name, for messages.
    const NAME: &'static str;
    /// The initialiser's name, for messages.
    const INIT: &'static str;
    /// The newest version: the header's `MMCKPT_*_OPTIONS_VERSION`.
    const CURRENT: u32;
    /// Bytes from the start of the struct to the end of version `version`'s last field
    /// (1 <= version <= CURRENT).
    fn prefix_len(version: u32) -> usize;
    /// The defaults of every field of the current version, `version` field included.
    fn defaults() -> Self;
}

/// Refuses a version outside 1..=CURRENT, naming both.
pub(crate) fn check_version<T: Versioned>(version: u32, what: &str) -> Result<()> {
    if (1..=T::CURRENT).contains(&version) {
        return Ok(());
    }
    Err(Error::invalid_argument(format!(
        "{what} is {version}, but this library knows {} versions 1 to {} (its header's \
         version is {}); initialise the options with {} or the header's static initialiser",
        T::NAME,
        T::CURRENT,
        T::CURRENT,
        T::INIT
    )))
}

/// The options at `ptr` (a caller's struct of any known version) as the current version: the
/// fields the caller's version has are read, the rest keep their defaults. No byte past the
/// caller's version is read. NULL is `None`.
pub(crate) fn read<T: Versioned>(ptr: *const T) -> Result<Option<T>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null, and the caller guarantees a struct of some version, all of which start
    // with a u32 version field (alignment of T is at least u32's).
    let version = unsafe { ptr.cast::<u32>().read() };
    check_version::<T>(version, "opts.version")?;
    let mut value = T::defaults();
    // SAFETY: the caller's struct holds at least the fields of `version` (prefix_len bytes),
    // `value` is a distinct local, and by the trait's contract any bytes in those fields are
    // valid values of them.
    unsafe {
        std::ptr::copy_nonoverlapping(
            ptr.cast::<u8>(),
            std::ptr::from_mut(&mut value).cast::<u8>(),
            T::prefix_len(version),
        );
    }
    Ok(Some(value))
}

/// Writes the defaults of version `version`'s fields (and `version` itself) into `ptr`; bytes
/// past that version are not touched.
pub(crate) fn init<T: Versioned>(ptr: *mut T, version: u32) -> Result<()> {
    if ptr.is_null() {
        return Err(null_argument("opts"));
    }
    check_version::<T>(version, "version")?;
    let mut value = T::defaults();
    // SAFETY: `value` is a local T that starts with its u32 version field.
    unsafe { std::ptr::from_mut(&mut value).cast::<u32>().write(version) };
    // SAFETY: non-null; the caller guarantees room for a struct of `version`, which is
    // prefix_len(version) bytes; copy_nonoverlapping copies bytes as they are (padding
    // included), and `value` is a distinct local.
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(&value).cast::<u8>(),
            ptr.cast::<u8>(),
            T::prefix_len(version),
        );
    }
    Ok(())
}
