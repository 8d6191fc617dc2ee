//! Why a door's `tcpflags` or `sequence`, or a whole door, is refused: the
//! value as written and which rule it breaks. Shared by both door sources
//! (knockd.conf puts `file:line: key:` in front, `[legacy]` the TOML path).

use super::MAX_SEQUENCE_LEN;
use std::fmt;

/// A refused `tcpflags` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagsError {
    /// `word` (trimmed, as written) names no TCP flag.
    UnknownFlag { word: String },
    /// `text` requires and forbids the same flag.
    Contradiction { text: String },
    /// `text` is valid but no bare SYN satisfies it: the door could never open.
    NeverBareSyn { text: String },
}

impl fmt::Display for FlagsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagsError::UnknownFlag { word } => write!(
                f,
                "unknown TCP flag {word:?} (fin, syn, rst, psh, ack, urg, or !flag)"
            ),
            FlagsError::Contradiction { text } => {
                write!(f, "{text:?} both requires and forbids the same flag")
            }
            FlagsError::NeverBareSyn { text } => write!(
                f,
                "{text:?} never matches a bare SYN, and spa captures TCP knocks as bare SYNs \
                 (what knock clients send): this door could never open; use \"syn\" or remove the line"
            ),
        }
    }
}

impl std::error::Error for FlagsError {}

/// A refused `sequence` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceError {
    /// `text` (the whole sequence) has an empty step.
    EmptyStep { text: String },
    /// `port` (as written) is not 1..=65535.
    BadPort { port: String },
    /// `proto` (lower-cased) is neither tcp nor udp.
    UnknownProto { proto: String },
    /// More than knockd's `MAX_SEQUENCE_LEN` steps.
    TooLong,
}

impl fmt::Display for SequenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceError::EmptyStep { text } => write!(f, "empty step in sequence {text:?}"),
            SequenceError::BadPort { port } => {
                write!(f, "{port:?} is not a port number 1..=65535")
            }
            SequenceError::UnknownProto { proto } => {
                write!(f, "unknown protocol {proto:?} (tcp or udp)")
            }
            SequenceError::TooLong => {
                write!(f, "more than {MAX_SEQUENCE_LEN} steps (knockd's limit)")
            }
        }
    }
}

impl std::error::Error for SequenceError {}

/// A door that breaks a shape rule both sources share (`Door::check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorError {
    EmptySequence,
    /// More than `MAX_SEQUENCE_LEN` steps.
    TooLong,
    /// `seq_timeout` of 0: no knock could ever complete it.
    ZeroTimeout,
    /// A step on port 0.
    ZeroPort,
}

impl fmt::Display for DoorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DoorError::EmptySequence => write!(f, "empty knock sequence"),
            DoorError::TooLong => write!(f, "more than {MAX_SEQUENCE_LEN} steps"),
            DoorError::ZeroTimeout => write!(f, "seq_timeout must be at least 1 s"),
            DoorError::ZeroPort => write!(f, "port 0 in sequence"),
        }
    }
}

impl std::error::Error for DoorError {}
