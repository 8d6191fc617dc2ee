//! Why the `[legacy]` section is refused: the field (its TOML path) and
//! what is wrong with it as values; the text is made here only, and
//! `crate::config` puts the file and line in front of it.

use super::super::tracker::{DoorSetError, FlagsError, SequenceError, MAX_DOORS};
use super::super::KnockdConfError;
use super::{MAX_MAX_SOURCES, MAX_SECS, MIN_HMAC_KNOCK_BITS};
use spa_proto::knock::MAX_KNOCK_PORTS;
use spa_proto::GrantSyntax;
use std::fmt;
use std::sync::Arc;

/// A `[legacy]` problem. `field` is the TOML path (`legacy.door[1].open`).
#[derive(Debug)]
pub enum LegacyConfigError {
    Field {
        field: String,
        problem: FieldProblem,
    },
    Knockd(KnockdConfError),
}

impl fmt::Display for LegacyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegacyConfigError::Field { field, problem } => write!(f, "{field}: {problem}"),
            LegacyConfigError::Knockd(e) => write!(f, "legacy.knockd_conf: {e}"),
        }
    }
}

impl std::error::Error for LegacyConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LegacyConfigError::Field { problem, .. } => Some(problem),
            LegacyConfigError::Knockd(e) => Some(e),
        }
    }
}

pub(in crate::legacy) fn field_err(
    field: impl Into<String>,
    problem: FieldProblem,
) -> LegacyConfigError {
    LegacyConfigError::Field {
        field: field.into(),
        problem,
    }
}

/// What is wrong with one `[legacy]` field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldProblem {
    /// A `seq_timeout` or `duration` outside 1..=`MAX_SECS`.
    Secs {
        value: u32,
    },
    /// A `max_sources` outside 1..=`MAX_MAX_SOURCES`.
    MaxSources {
        value: usize,
    },
    EmptyName,
    /// A door name that cannot go into a log line (`spa_keys::check_label`'s reason).
    BadName {
        why: spa_keys::LabelError,
    },
    Sequence(SequenceError),
    Flags(FlagsError),
    Grant(DoorGrantError),
    DurationOnClose,
    OpenAndClose,
    NoAction,
    NameTwice {
        name: Arc<str>,
        prev: Arc<str>,
    },
    SameSequence {
        prev: Arc<str>,
    },
    TooManyDoors,
    /// `[legacy.hmac] ports` outside 1..=`MAX_KNOCK_PORTS`.
    HmacPorts {
        value: usize,
    },
    HmacTooFewPorts,
    HmacStep {
        value: u64,
    },
    /// spa-proto's `KnockParams::validate` refused the range.
    HmacRange {
        why: &'static str,
    },
    HmacNarrowRange,
    HmacProtocol {
        value: String,
    },
    /// Fewer than `MIN_HMAC_KNOCK_BITS` against a guesser; `fix`: the ports
    /// that would reach it and their bits, or None (only a wider range helps).
    HmacWeak {
        ports: usize,
        span: u32,
        keys: usize,
        bits: f64,
        fix: Option<(usize, f64)>,
    },
    DoorSet(DoorSetError),
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FieldProblem as P;
        match self {
            P::Secs { value } => write!(f, "{value} is not 1..={MAX_SECS} seconds"),
            P::MaxSources { value } => write!(f, "{value} is not 1..={MAX_MAX_SOURCES}"),
            P::EmptyName => write!(f, "empty name"),
            P::BadName { why } => write!(f, "{why}"),
            P::Sequence(e) => write!(f, "{e}"),
            P::Flags(e) => write!(f, "{e}"),
            P::Grant(e) => write!(f, "{e}"),
            P::DurationOnClose => write!(f, "only an open door has a duration"),
            P::OpenAndClose => write!(f, "a door either opens or closes, not both"),
            P::NoAction => write!(f, "a door needs open = \"tcp/22\" or close = \"tcp/22\""),
            P::NameTwice { name, prev } => write!(f, "door name {name:?} used twice (also {prev})"),
            P::SameSequence { prev } => write!(f, "same sequence as door {prev:?}"),
            P::TooManyDoors => write!(f, "more than {MAX_DOORS} doors"),
            P::HmacPorts { value } => write!(f, "{value} is not 1..={MAX_KNOCK_PORTS}"),
            P::HmacTooFewPorts => write!(f, "fewer than 3 knocks is too easy to guess"),
            P::HmacStep { value } => write!(f, "{value} is not 1..=3600 seconds"),
            P::HmacRange { why } => write!(f, "{why}"),
            P::HmacNarrowRange => write!(f, "fewer than 1000 ports makes sequences guessable"),
            P::HmacProtocol { value } => write!(f, "{value:?} is not tcp or udp"),
            P::HmacWeak {
                ports,
                span,
                keys,
                bits,
                fix,
            } => {
                write!(
                    f,
                    "{ports} knocks over {span} ports with {keys} key(s) give {bits:.1} bits \
                     against a guesser, fewer than {MIN_HMAC_KNOCK_BITS}: "
                )?;
                match fix {
                    Some((n, b)) => write!(
                        f,
                        "set legacy.hmac.ports = {n} ({b:.1} bits) or widen legacy.hmac.range"
                    )?,
                    None => write!(
                        f,
                        "widen legacy.hmac.range (e.g. [10000, 60000] with ports = 5) or use \
                         fewer keys"
                    )?,
                }
                write!(f, " (clients need the same --ports/--range)")
            }
            P::DoorSet(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FieldProblem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FieldProblem::Sequence(e) => Some(e),
            FieldProblem::Flags(e) => Some(e),
            FieldProblem::Grant(e) => Some(e),
            FieldProblem::DoorSet(e) => Some(e),
            FieldProblem::BadName { why } => Some(why),
            _ => None,
        }
    }
}

/// Why a door's `open`/`close` is not `proto/port`; `text` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoorGrantError {
    /// No `/`: our doors always name the protocol, as knockd's commands do.
    NoProtocol { text: String },
    /// The grant grammar refused it; `text` trimmed.
    Syntax { text: String, error: GrantSyntax },
}

impl fmt::Display for DoorGrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DoorGrantError::NoProtocol { text } => {
                write!(f, "{text:?} is not proto/port, e.g. \"tcp/22\"")
            }
            DoorGrantError::Syntax { text, error } => write!(f, "`{text}`: {error}"),
        }
    }
}

impl std::error::Error for DoorGrantError {}
