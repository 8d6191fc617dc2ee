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
    /// The filter specification is unusable.
    Spec(String),
}

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
            _ => None,
        }
    }
}
