//! Every way the client can fail, each with the cause and, where there is
//! one, the fix. Printed as one `error: ...` line.

use spa_keys::KeyError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug)]
pub enum ClientError {
    /// No key file at the place looked; `how` says why that place.
    NoKey {
        path: PathBuf,
        how: &'static str,
    },
    /// The key file exists but could not be used (permissions, syntax...).
    Key(KeyError),
    /// `$HOME` unset and no `--key` / `$SPA_KEY`.
    NoKeyLocation,
    /// Neither `--server-id` nor the key file names the server.
    NoServerId {
        key_path: PathBuf,
    },
    /// The key file holds a server's v2 key (`server_uid` set), not a
    /// master key.
    ServerKeyFile {
        path: PathBuf,
    },
    /// A port list entry or `--port` is unusable.
    BadPort {
        spec: String,
        reason: String,
    },
    /// The request cannot be encoded (no port, too many ports).
    Request(spa_proto::RequestError),
    /// The SERVER argument is malformed.
    BadServer {
        spec: String,
        reason: String,
    },
    /// Name resolution failed.
    UnknownHost {
        host: String,
        source: io::Error,
    },
    /// The host resolved, but not to an address of the wanted family.
    NoAddress {
        host: String,
        wanted: &'static str,
    },
    Bind {
        addr: SocketAddr,
        source: io::Error,
    },
    Send {
        addr: SocketAddr,
        source: io::Error,
    },
    /// The kernel accepted fewer bytes than the datagram has.
    ShortSend {
        addr: SocketAddr,
        sent: usize,
        len: usize,
    },
    /// The system clock is before 1970: the server would reject the request.
    Clock,
    /// Reading or writing a datagram file (`--output`, `raw-send`).
    File {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// `raw-send` got a file that cannot be one UDP datagram.
    TooBig {
        path: PathBuf,
        len: u64,
    },
    /// client.toml is unusable: file, line and field when known.
    Config {
        path: PathBuf,
        line: Option<usize>,
        field: Option<String>,
        message: String,
    },
    /// `send` without --open/--close, and no profile default to use.
    NothingToOpen {
        server: Option<String>,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoKey { path, how } => write!(
                f,
                "no key: {} does not exist ({how}); make one with `spa-keygen` or \
                 `spa-client keygen`, or choose a key with --key FILE or $SPA_KEY",
                path.display()
            ),
            ClientError::Key(e) => write!(f, "{e}"),
            ClientError::NoKeyLocation => f.write_str(
                "no key: $HOME is not set, so the default key ~/.config/spa/default.key cannot \
                 be found; choose a key with --key FILE or $SPA_KEY",
            ),
            ClientError::NoServerId { key_path } => write!(
                f,
                "no server id: the key file {} has no server_id and --server-id was not given; \
                 pass --server-id NAME, NAME being the server's `server_id` setting (by default \
                 the server's host name)",
                key_path.display()
            ),
            ClientError::ServerKeyFile { path } => write!(
                f,
                "{} is a server's key file (it has server_uid: made by `spa-client server-key` \
                 for one server); send with your own key file (the one server-key read)",
                path.display()
            ),
            ClientError::BadPort { spec, reason } => write!(f, "invalid port '{spec}': {reason}"),
            ClientError::Request(e) => write!(f, "{e}"),
            ClientError::BadServer { spec, reason } => {
                write!(f, "invalid SERVER '{spec}': {reason}")
            }
            ClientError::UnknownHost { host, source } => {
                write!(f, "unknown host '{host}': {source}")
            }
            ClientError::NoAddress { host, wanted } => {
                write!(f, "host '{host}' has no {wanted} address")
            }
            ClientError::Bind { addr, source } => {
                write!(f, "cannot bind the sending socket to {addr}: {source}")
            }
            ClientError::Send { addr, source } => write!(f, "cannot send to {addr}: {source}"),
            ClientError::ShortSend { addr, sent, len } => {
                write!(f, "sent only {sent} of {len} bytes to {addr}")
            }
            ClientError::Clock => {
                f.write_str("the system clock is before 1970; set the time (the server checks it)")
            }
            ClientError::File {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            ClientError::TooBig { path, len } => write!(
                f,
                "{} is {len} bytes; one UDP datagram carries at most 65507",
                path.display()
            ),
            ClientError::Config {
                path,
                line,
                field,
                message,
            } => {
                write!(f, "{}", path.display())?;
                if let Some(l) = line {
                    write!(f, ":{l}")?;
                }
                if let Some(field) = field {
                    write!(f, ": field `{field}`")?;
                }
                write!(f, ": {message}")
            }
            ClientError::NothingToOpen { server: Some(s) } => write!(
                f,
                "nothing to open: give --open PORTS (or --close PORTS), or make '{s}' a profile \
                 with `open = [...]` in client.toml (see `spa-client list`)"
            ),
            ClientError::NothingToOpen { server: None } => {
                f.write_str("nothing to open: give --open PORTS or --close PORTS")
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Key(e) => Some(e),
            ClientError::UnknownHost { source, .. }
            | ClientError::Bind { source, .. }
            | ClientError::Send { source, .. }
            | ClientError::File { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<spa_proto::RequestError> for ClientError {
    fn from(e: spa_proto::RequestError) -> Self {
        ClientError::Request(e)
    }
}
