//! spa-proto: the v1 single-packet-authorization datagram.
//!
//! Pure on purpose: no sockets, files or clocks. Callers pass the time and the
//! random number generator in, so every rule here is testable byte for byte
//! and the crate can be fuzzed without a network. The layout is in
//! docs/protocol.md and in the table at the top of [`wire`].

#![forbid(unsafe_code)]

mod aead;
pub mod error;
pub mod kdf;
pub mod knock;
pub mod replay;
pub mod wire;

pub use error::{Malformed, Reject, RequestError};
pub use kdf::{KeyId, KeySet, MasterKey, ServerId, KEY_ID_LEN, MASTER_KEY_LEN};
pub use knock::KnockParams;
pub use replay::{ReplayRecord, Seen, TimeWindow};
pub use wire::{
    parse_header, seal, seal_with, verify, verify_admit, Action, AllowAddr, Grant, GrantSyntax,
    Grants, Header, Opened, Proto, Request, DATAGRAM_LEN, MAGIC, MAX_GRANTS, VERSION,
};
