//! One error type for every layer: a kind (mapped 1:1 to a C status code) and a message that
//! names what was wrong (the record, the tensor, the byte offset).

use std::fmt;

/// What went wrong, independent of the C spelling. The ffi layer maps each kind to its
/// `mmckpt_status` value; the numbering there is the stable one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    NullArgument,
    InvalidArgument,
    Io,
    Format,
    Unsupported,
    Unsafe,
    Limit,
    NotFound,
    KeyMismatch,
    ShapeMismatch,
    DtypeMismatch,
    BufferTooSmall,
    State,
    Callback,
    NoMemory,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    /// Adds context in front of the message, keeping the kind: "while reading X: <message>".
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

pub type Result<T> = std::result::Result<T, Error>;

macro_rules! constructors {
    ($($fn_name:ident => $kind:ident),* $(,)?) => {
        impl Error {
            $(pub fn $fn_name(message: impl Into<String>) -> Self {
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
