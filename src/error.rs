//! One error type for every layer: a kind (mapped 1:1 to a C status code) and a message that
//! names what was wrong (the record, the tensor, the byte offset).

use std::fmt;

/// What went wrong, independent of the C spelling. The ffi layer maps each kind to its
/// `mmckpt_status` value; the numbering there is the stable one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A required pointer argument was NULL (C API only).
    NullArgument,
    /// An argument is not valid: a bad option combination, a value of the wrong kind, a malformed
    /// spec or path.
    InvalidArgument,
    /// The file could not be opened or read (the message has the OS error).
    Io,
    /// The input is malformed: not a checkpoint, a corrupt archive or pickle, a view out of bounds.
    Format,
    /// Valid, but a feature mmckpt does not read (a sparse or quantized tensor, an encrypted
    /// record).
    Unsupported,
    /// A strict open met a global outside the allowlist (or a persistent id that is not a storage).
    Unsafe,
    /// A bound of [`Limits`](crate::Limits) (or another documented bound) was reached.
    Limit,
    /// No tensor, value, entry or file of that name.
    NotFound,
    /// A strict load found missing or unexpected keys (the message is torch's).
    KeyMismatch,
    /// A checkpoint tensor's shape differs from the module entry's (torch's wording).
    ShapeMismatch,
    /// The dtypes differ and the load does not convert, or cannot convert between them.
    DtypeMismatch,
    /// A buffer the caller lent is smaller than the entry needs.
    BufferTooSmall,
    /// The call is not valid in the object's current state (a module being loaded, an entry without
    /// data).
    State,
    /// The caller's callback asked to stop (returned false).
    Callback,
    /// An allocation failed.
    NoMemory,
    /// A bug: a panic was caught at the C boundary.
    Panic,
}

impl ErrorKind {
    /// The C status name, used by the CLI and in messages.
    pub fn status_name(self) -> &'static str {
        match self {
            ErrorKind::NullArgument => "MMCKPT_ERR_NULL_ARGUMENT",
            ErrorKind::InvalidArgument => "MMCKPT_ERR_INVALID_ARGUMENT",
            ErrorKind::Io => "MMCKPT_ERR_IO",
            ErrorKind::Format => "MMCKPT_ERR_FORMAT",
            ErrorKind::Unsupported => "MMCKPT_ERR_UNSUPPORTED",
            ErrorKind::Unsafe => "MMCKPT_ERR_UNSAFE",
            ErrorKind::Limit => "MMCKPT_ERR_LIMIT",
            ErrorKind::NotFound => "MMCKPT_ERR_NOT_FOUND",
            ErrorKind::KeyMismatch => "MMCKPT_ERR_KEY_MISMATCH",
            ErrorKind::ShapeMismatch => "MMCKPT_ERR_SHAPE_MISMATCH",
            ErrorKind::DtypeMismatch => "MMCKPT_ERR_DTYPE_MISMATCH",
            ErrorKind::BufferTooSmall => "MMCKPT_ERR_BUFFER_TOO_SMALL",
            ErrorKind::State => "MMCKPT_ERR_STATE",
            ErrorKind::Callback => "MMCKPT_ERR_CALLBACK",
            ErrorKind::NoMemory => "MMCKPT_ERR_NO_MEMORY",
            ErrorKind::Panic => "MMCKPT_ERR_PANIC",
        }
    }
}

/// An error: what kind (one per C status) and a message naming what was wrong (the record,
/// the tensor, the byte offset). `Display` writes `STATUS_NAME: message`.
///
/// ```
/// use mmckpt::{Checkpoint, ErrorKind, OpenOptions};
///
/// let err = Checkpoint::open("/no/such/file.pt", &OpenOptions::default()).unwrap_err();
/// assert_eq!(err.kind, ErrorKind::Io);
/// assert!(err.to_string().starts_with("MMCKPT_ERR_IO: "));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// What was wrong and where, for a person to read.
    pub message: String,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    /// Adds context in front of the message, keeping the kind: `while reading X: <message>`.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.status_name(), self.message)
    }
}

impl std::error::Error for Error {}

/// `Result` with mmckpt's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

macro_rules! constructors {
    ($($fn_name:ident => $kind:ident),* $(,)?) => {
        impl Error {
            $(#[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
            pub fn $fn_name(message: impl Into<String>) -> Self {
                Error::new(ErrorKind::$kind, message)
            })*
        }
    };
}

constructors! {
    invalid_argument => InvalidArgument,
    io => Io,
    format => Format,
    unsupported => Unsupported,
    unsafe_global => Unsafe,
    limit => Limit,
    not_found => NotFound,
    key_mismatch => KeyMismatch,
    shape_mismatch => ShapeMismatch,
    dtype_mismatch => DtypeMismatch,
    buffer_too_small => BufferTooSmall,
    state => State,
    callback => Callback,
    no_memory => NoMemory,
}
