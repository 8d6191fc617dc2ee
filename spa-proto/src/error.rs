//! One enum for every reason a datagram is turned away.
//!
//! The server logs the reason and never answers, so these values exist for
//! the operator, not for the peer: each one names the first check that failed.

use std::fmt;

/// Why a datagram was rejected. The order of the variants follows the order
/// of the checks in [`crate::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Every v1 datagram is exactly [`crate::DATAGRAM_LEN`] bytes.
    WrongLength { got: usize },
    /// The first four bytes are not [`crate::MAGIC`].
    BadMagic,
    /// A version this build does not speak; there is no negotiation.
    UnknownVersion(u8),
    /// No configured key has this key-id.
    UnknownKeyId,
    /// The AEAD tag did not verify: forged, corrupted, or the wrong key.
    AuthFailed,
    /// Authentic, but the plaintext breaks a rule of the format. Only a buggy
    /// or hostile key holder can produce this.
    Malformed(Malformed),
    /// Authentic, but sealed for another server.
    WrongServer,
    /// The timestamp is older than the acceptance window.
    TooOld { age_secs: u64 },
    /// The timestamp is further in the future than the window allows.
    InFuture { ahead_secs: u64 },
    /// This exact datagram (key-id, nonce, timestamp) was accepted before.
    Replayed,
    /// This key's share of the replay record is full of live entries; fail
    /// closed rather than forget one that could then be replayed.
    ReplayRecordFull,
    /// Authentic and new, but over its key's rate limit (the server's token
    /// bucket): one key holder cannot take all of the daemon's time.
    RateLimited,
}

/// Which rule of the plaintext layout an authentic datagram broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Action(u8),
    AllowKind(u8),
    GrantCount(u8),
    Protocol(u8),
    PortZero,
    /// A grant slot past `grant_count` or an unused address byte is not zero.
    NonZeroPadding,
}

impl Reject {
    /// A short stable token for logs and metrics (`reason=auth_failed`).
    pub fn code(&self) -> &'static str {
        match self {
            Reject::WrongLength { .. } => "wrong_length",
            Reject::BadMagic => "bad_magic",
            Reject::UnknownVersion(_) => "unknown_version",
            Reject::UnknownKeyId => "unknown_key_id",
            Reject::AuthFailed => "auth_failed",
            Reject::Malformed(_) => "malformed",
            Reject::WrongServer => "wrong_server",
            Reject::TooOld { .. } => "too_old",
            Reject::InFuture { .. } => "in_future",
            Reject::Replayed => "replayed",
            Reject::ReplayRecordFull => "replay_record_full",
            Reject::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::WrongLength { got } => write!(
                f,
                "wrong length: {got} bytes, a v1 datagram is {}",
                crate::DATAGRAM_LEN
            ),
            Reject::BadMagic => f.write_str("bad magic"),
            Reject::UnknownVersion(v) => write!(f, "unknown version {v}"),
            Reject::UnknownKeyId => f.write_str("unknown key-id"),
            Reject::AuthFailed => f.write_str("authentication failed"),
            Reject::Malformed(m) => write!(f, "malformed plaintext: {m}"),
            Reject::WrongServer => f.write_str("sealed for another server id"),
            Reject::TooOld { age_secs } => write!(f, "too old: {age_secs} s"),
            Reject::InFuture { ahead_secs } => write!(f, "in the future: {ahead_secs} s"),
            Reject::Replayed => f.write_str("replayed"),
            Reject::ReplayRecordFull => f.write_str("replay record full for this key"),
            Reject::RateLimited => f.write_str("over this key's rate limit"),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Action(v) => write!(f, "action {v}"),
            Malformed::AllowKind(v) => write!(f, "allow kind {v}"),
            Malformed::GrantCount(v) => write!(f, "grant count {v}"),
            Malformed::Protocol(v) => write!(f, "protocol {v}"),
            Malformed::PortZero => f.write_str("port 0"),
            Malformed::NonZeroPadding => f.write_str("non-zero padding"),
        }
    }
}

impl std::error::Error for Reject {}

/// Why a request could not be sealed. Only a caller bug gets here: the
/// builder refuses what the format cannot carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    NoGrants,
    TooManyGrants { got: usize },
    PortZero,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NoGrants => f.write_str("a request needs at least one port"),
            RequestError::TooManyGrants { got } => write!(
                f,
                "{got} ports requested, one datagram carries at most {}",
                crate::MAX_GRANTS
            ),
            RequestError::PortZero => f.write_str("port 0 cannot be requested"),
        }
    }
}

impl std::error::Error for RequestError {}
