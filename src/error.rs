//! The one error type of the crate. Every message says what was expected and what was found.

use std::fmt;

/// What kind of thing went wrong; the message carries the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The bytes are not a valid model file (container, header, offsets, dtypes, shapes).
    Format,
    /// A config value is valid for diffusers but not implemented here.
    Unsupported,
    /// A config value is impossible or out of the accepted range.
    Config,
    /// A caller-supplied argument is wrong (shape, class label, steps, ...).
    InvalidArgument,
    /// The compute backend failed (device lost, readback failed, no adapter).
    Backend,
    /// Reading or writing a file failed.
    Io,
    /// The operation was cancelled by the caller.
    Aborted,
    /// A model or run needs more memory than the budget allows (wasm32 heap, GPU buffer limits).
    MemoryLimit,
}

impl ErrorKind {
    /// The `Error.name` a JS caller sees, so it can branch on the kind.
    pub fn js_name(self) -> &'static str {
        match self {
            ErrorKind::Format => "FormatError",
            ErrorKind::Unsupported => "UnsupportedError",
            ErrorKind::Config => "ConfigError",
            ErrorKind::InvalidArgument => "InvalidArgumentError",
            ErrorKind::Backend => "BackendError",
            ErrorKind::Io => "IoError",
            ErrorKind::Aborted => "AbortError",
            ErrorKind::MemoryLimit => "MemoryLimitError",
        }
    }
}

/// The crate's error: a kind and a message that says what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn format(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Format, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Backend, message)
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }
    pub fn memory(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MemoryLimit, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.kind {
            ErrorKind::Format => "invalid model file",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Config => "invalid config",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Backend => "backend error",
            ErrorKind::Io => "i/o error",
            ErrorKind::Aborted => "aborted",
            ErrorKind::MemoryLimit => "not enough memory",
        };
        write!(f, "{prefix}: {}", self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
