//! The other end of the control socket: `spa-server status` and
//! `spa-server revoke` send one request line and print the reply.

use super::request::Request;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The most of a reply read (a full grant table is well under this).
const MAX_REPLY: u64 = 64 << 20;

#[derive(Debug)]
pub enum ClientError {
    /// No socket, or nobody listening on it.
    NotRunning(String),
    /// The socket's mode or owner keeps this user out.
    Denied(String),
    /// The daemon answered `error: ...`.
    Refused(String),
    Io(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(m)
            | ClientError::Denied(m)
            | ClientError::Refused(m)
            | ClientError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ClientError {}

/// Sends `req` to the daemon at `path`; the reply's body on `ok`.
pub fn call(path: &Path, req: &Request) -> Result<String, ClientError> {
    let p = path.display();
    let mut s = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(format!(
                "no spa-server is running with this configuration: nothing answers at {p} ({e}); \
                 start it (systemctl start spa-server), or name its socket with --socket PATH"
            ))
        }
        std::io::ErrorKind::PermissionDenied => ClientError::Denied(format!(
            "{p}: permission denied: the control socket is for the daemon's user and root only"
        )),
        _ => ClientError::Io(format!("{p}: connect: {e}")),
    })?;
    let io = |what: &str, e: std::io::Error| ClientError::Io(format!("{p}: {what}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| io("set timeout", e))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| io("set timeout", e))?;
    // The daemon may refuse (another uid) and close before reading: a
    // failed write still leaves its reply to read.
    let _ = s.write_all(req.encode().as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    s.take(MAX_REPLY)
        .read_to_end(&mut reply)
        .map_err(|e| io("reading the reply", e))?;
    let text = String::from_utf8_lossy(&reply);
    if let Some(body) = text.strip_prefix("ok\n") {
        Ok(body.to_owned())
    } else if let Some(why) = text.strip_prefix("error: ") {
        Err(ClientError::Refused(format!(
            "the daemon refused: {}",
            why.trim_end()
        )))
    } else {
        Err(ClientError::Io(format!(
            "{p}: no reply (the daemon closed the connection)"
        )))
    }
}
