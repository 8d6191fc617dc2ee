//! spa-proto: the single-packet-authorization datagram, v1 and v2 (v2.rs).
//!
//! Pure on purpose: no sockets, files or clocks. Callers pass the time and the
//! random number generator in, so every rule here is testable byte for byte
//! and the crate can be fuzzed without a network. The layout is in
//! docs/protocol.md and in the table at the top of [`wire`].

#![forbid(unsafe_code)]

mod aead;
pub mod error;
pub mod grant;
pub mod kdf;
pub mod knock;
pub mod replay;
pub mod v2;
pub mod wire;

pub use error::{Malformed, Reject, RequestError};
pub use grant::{Grant, GrantSyntax, Proto};
pub use kdf::{KeyId, KeySet, MasterKey, ServerId, KEY_ID_LEN, MASTER_KEY_LEN};
pub use knock::KnockParams;
pub use replay::{ReplayRecord, Seen, TimeWindow};
pub use v2::{
    seal_v2, seal_v2_with, verify_v2, verify_v2_admit, IdMap, KeySetV2, ServerKey, ServerUid,
    VERSION_V2,
};
pub use wire::version_of;
pub use wire::{
    parse_header, seal, seal_with, verify, verify_admit, Action, AllowAddr, Grants, Header,
    IpFamily, Opened, Request, DATAGRAM_LEN, MAGIC, MAX_GRANTS, VERSION,
};
