//! Capture failures, typed up to `main` (`DaemonError::Capture`).

use super::bpf::BpfError;
use std::fmt;
use std::io;

/// Capture failures, each naming the interface and the call that failed.
#[derive(Debug)]
pub enum CaptureError {
    /// An interface named in the configuration does not exist.
    NoSuchInterface { name: String },
    /// A system call failed.
    Syscall {
        call: &'static str,
        interface: String,
        source: io::Error,
    },
    /// The privileged side refused a capture socket or could not make one
    /// (its reason), or could not be asked.
    Privileged(String),
    /// The filter program could not be generated.
    Filter {
        family: &'static str,
        source: BpfError,
    },
    /// The filter specification is unusable: which field, and its value.
    Spec(SpecError),
}

/// Why a [`super::FilterSpec`] cannot be expressed by the kernel filter,
/// with the offending field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// `spa_port` is 0.
    ZeroSpaPort,
    /// `spa_len` leaves no room for the magic and version bytes the filter reads.
    SpaLenTooShort { spa_len: usize },
    /// `spa_len` plus the UDP header exceeds a UDP datagram.
    SpaLenTooLong { spa_len: usize },
    /// A knock port is 0.
    ZeroKnockPort,
    /// `knock_tcp` or `knock_udp` (`field`) is not strictly ascending.
    Unsorted { field: &'static str },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::ZeroSpaPort => write!(f, "spa_port must not be 0"),
            SpecError::SpaLenTooShort { spa_len } => write!(
                f,
                "spa_len {spa_len} is shorter than the magic and version bytes"
            ),
            SpecError::SpaLenTooLong { spa_len } => {
                write!(f, "spa_len {spa_len} does not fit a UDP datagram")
            }
            SpecError::ZeroKnockPort => write!(f, "knock port 0 is not a valid port"),
            SpecError::Unsorted { field } => {
                write!(f, "{field} must be sorted ascending without duplicates")
            }
        }
    }
}

impl std::error::Error for SpecError {}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::NoSuchInterface { name } => {
                write!(f, "capture: interface {name:?} does not exist")
            }
            CaptureError::Syscall {
                call,
                interface,
                source,
            } => {
                write!(f, "capture on {interface}: {call} failed: {source}")?;
                if source.raw_os_error() == Some(libc::EPERM) {
                    write!(f, " (packet sockets need CAP_NET_RAW)")?;
                }
                Ok(())
            }
            CaptureError::Filter { family, source } => {
                write!(f, "capture: {family} filter: {source}")
            }
            CaptureError::Spec(why) => write!(f, "capture filter spec: {why}"),
            CaptureError::Privileged(why) => write!(f, "privileged side: {why}"),
        }
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CaptureError::Syscall { source, .. } => Some(source),
            CaptureError::Spec(e) => Some(e),
            _ => None,
        }
    }
}
