//! One error type for everything that can go wrong with a key file. Every
//! message names the file, and the line when the content is at fault, so a
//! user can fix it without reading the source.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a key file could not be read, parsed or written.
#[derive(Debug)]
pub enum KeyError {
    /// The file does not exist. Separate from [`KeyError::Io`] so callers can
    /// say where they looked and how to create a key.
    Missing { path: PathBuf },
    /// Any other I/O failure; `action` says what was being done.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// A directory, FIFO, device...: only a regular file can be a key file.
    NotRegular { path: PathBuf, kind: &'static str },
    /// Group or others may read or write the file.
    UnsafePermissions { path: PathBuf, mode: u32 },
    /// The file (after symlinks) belongs to a user other than the reader.
    WrongOwner {
        path: PathBuf,
        owner: u32,
        reader: u32,
    },
    /// Far larger than any key file; refuse before reading it into memory.
    TooLarge { path: PathBuf, len: u64 },
    /// TOML syntax or schema (unknown or missing field, wrong type).
    Parse {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Not a spa key file at all (a WireGuard or SSH key, an empty file):
    /// say what one is instead of where the TOML parser stumbled.
    NotAKeyFile {
        path: PathBuf,
        looks_like: &'static str,
    },
    /// Well-formed TOML but a field's value is unusable.
    Invalid {
        path: PathBuf,
        line: usize,
        field: &'static str,
        message: String,
    },
    /// `write_new` without `force` found a file in the way.
    Exists { path: PathBuf },
    /// `$HOME` is unset, so the default key location is unknown.
    NoHome,
    /// A keygen option (name, server id) is unusable.
    BadOption {
        option: &'static str,
        error: LabelError,
    },
}

/// Why [`check_label`](crate::check_label) refused a name or server id, with
/// the fact that broke it; each caller puts its field or option in front of
/// the text made here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelError {
    /// Empty or only white space.
    Empty,
    /// Longer than 255 bytes; `len` is its length in bytes.
    TooLong { len: usize },
    /// Holds a control character (`ch`, the first one): it would break a
    /// log line or a terminal.
    Control { ch: char },
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelError::Empty => f.write_str("must not be empty"),
            LabelError::TooLong { len } => {
                write!(f, "is {len} bytes long, at most 255 are allowed")
            }
            LabelError::Control { .. } => f.write_str("must not contain control characters"),
        }
    }
}

impl std::error::Error for LabelError {}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Missing { path } => {
                write!(f, "key file {}: no such file", path.display())
            }
            KeyError::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} key file {}: {source}", path.display()),
            KeyError::NotRegular { path, kind } => write!(
                f,
                "key file {} is a {kind}, not a regular file",
                path.display()
            ),
            KeyError::UnsafePermissions { path, mode } => write!(
                f,
                "UNPROTECTED KEY FILE: permissions {mode:04o} for '{p}' are too open; a key file \
                 must not be accessible by group or others, so it is ignored (fix: chmod 600 {p})",
                p = path.display()
            ),
            KeyError::WrongOwner {
                path,
                owner,
                reader,
            } => write!(
                f,
                "key file {p} is owned by uid {owner}, not by uid {reader} that reads it; a key file \
                 must belong to the user who uses it, so it is ignored (fix, if it is the right file: \
                 chown {reader} {p}, keeping mode 600)",
                p = path.display()
            ),
            KeyError::TooLarge { path, len } => write!(
                f,
                "key file {} is {len} bytes, far larger than a key file; refusing to read it",
                path.display()
            ),
            KeyError::Parse {
                path,
                line,
                column,
                message,
            } => {
                write!(f, "{}", path.display())?;
                if let Some(l) = line {
                    write!(f, ":{l}")?;
                    if let Some(c) = column {
                        write!(f, ":{c}")?;
                    }
                }
                write!(f, ": {message}")
            }
            KeyError::NotAKeyFile { path, looks_like } => write!(
                f,
                "{} is not a spa key file ({looks_like}); {}",
                path.display(),
                crate::sniff::WHAT_A_KEY_FILE_IS
            ),
            KeyError::Invalid {
                path,
                line,
                field,
                message,
            } => write!(f, "{}:{line}: field `{field}`: {message}", path.display()),
            KeyError::Exists { path } => write!(
                f,
                "{} already exists; refusing to overwrite a key (use --force to replace it)",
                path.display()
            ),
            KeyError::NoHome => {
                f.write_str("cannot find the default key location ~/.config/spa/: $HOME is not set")
            }
            KeyError::BadOption { option, error } => write!(f, "{option}: {error}"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Io { source, .. } => Some(source),
            KeyError::BadOption { error, .. } => Some(error),
            _ => None,
        }
    }
}
