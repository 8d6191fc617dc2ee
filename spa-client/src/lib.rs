//! spa-client: builds, seals and sends one SPA datagram.
//!
//! The server never answers (it has no open socket to answer from), so the
//! client's job is to make every local mistake (no key, unsafe key, bad
//! port, unknown host, bad client.toml) a clear error before anything is
//! sent, to send exactly one datagram per server otherwise, and with
//! `--wait` to find out for itself whether the ports opened (wait.rs).
//!
//! The pieces other subcommands reuse (key lookup, server address parsing,
//! one-datagram send) are public here, and so is the command line
//! ([`cli`]); `main.rs` only dispatches.

pub mod cli;
pub mod enroll;
mod error;
pub mod grants;
pub mod key;
pub mod knock;
pub mod knock_cli;
pub mod profile;
pub mod raw;
pub mod send;
mod sock;
pub mod target;
pub mod wait;

pub use enroll::{run_server_key, ServerKeyArgs};
pub use error::ClientError;
pub use grants::{parse_grant, parse_grants};
pub use key::{load_key, KeyChoice};
pub use knock_cli::{run_knock, run_knock_seq, KnockArgs};
pub use raw::{run_raw_send, RawSendArgs};
pub use send::{build_request, run_send, Outcome, SendArgs, EXIT_NOT_OPENED};
pub use target::{parse_server, resolve, send_datagram, Family, DEFAULT_SPA_PORT};
