//! The control socket: a Unix stream socket in the runtime directory (or
//! the state directory when there is none), mode 0600, owned by the
//! daemon's user, served by the event loop itself: no thread, and no
//! timeout while no client is connected, so an idle daemon stays asleep.
//! It is the only socket the daemon listens on, and it is not on the
//! network.
//!
//! One request per connection (request.rs), one reply: `ok\n` and the
//! body, or `error: <why>\n`; then the daemon closes. Every connection is
//! non-blocking with a deadline, and at most [`MAX_CONNS`] are open, so a
//! slow, silent or hostile client can neither stall the loop nor pile up
//! memory. Peers whose uid is neither the daemon's nor root are refused
//! even if they reach the socket (the mode already keeps them out).
//!
//! Syscalls (for the seccomp allow-list): socket(AF_UNIX, SOCK_STREAM),
//! bind, listen, accept4, getsockopt(SO_PEERCRED), read, write, close,
//! unlink, umask, fchmodat (and connect, once at start, to find a live
//! daemon on the path).

pub mod client;
pub mod metrics;
pub mod publish;
pub mod request;
pub mod status;

pub use request::{Format, Request, Selector};

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The socket's file name in its directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Connections open at once; more are answered `error: busy` and closed.
pub const MAX_CONNS: usize = 8;
/// A client has this long to send its request line.
const READ_DEADLINE: Duration = Duration::from_secs(2);
/// And this long to read the reply (a long grant list is a few hundred kB).
const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// Where a daemon with this configuration listens: the runtime directory
/// if set (tmpfs, as systemd's RuntimeDirectory), else the state directory
/// (private, and unique per daemon: the instance lock is on it).
pub fn socket_path(cfg: &crate::config::Config) -> PathBuf {
    cfg.runtime_dir
        .as_deref()
        .unwrap_or(&cfg.state_dir)
        .join(SOCKET_NAME)
}

#[derive(Debug)]
pub enum ControlError {
    /// Longer than a Unix socket address holds (107 bytes).
    PathTooLong(PathBuf),
    /// Another daemon answers on this path.
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    NotASocket(PathBuf),
    Io(PathBuf, &'static str, std::io::Error),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::PathTooLong(p) => write!(
                f,
                "control socket {}: the path is longer than 107 bytes; set a shorter runtime_dir",
                p.display()
            ),
            ControlError::InUse(p) => write!(
                f,
                "control socket {}: another spa-server answers there; give each daemon its own \
                 runtime_dir",
                p.display()
            ),
            ControlError::NotASocket(p) => write!(
                f,
                "control socket {}: a file that is not a socket is in the way; remove it",
                p.display()
            ),
            ControlError::Io(p, what, e) => {
                write!(f, "control socket {}: {what}: {e}", p.display())
            }
        }
    }
}

impl std::error::Error for ControlError {}

enum Stage {
    Reading(Vec<u8>),
    Waiting,
    Writing(Vec<u8>, usize),
    /// The reply is out and our side shut: what the peer still sends is
    /// read and dropped until its end, so closing never resets the
    /// connection before the peer read the reply.
    Draining,
}

struct Conn {
    token: u64,
    stream: UnixStream,
    stage: Stage,
    deadline: Instant,
    /// A peer of another uid: its request is read (closing on unread
    /// bytes would reset the connection before it sees why) and answered
    /// with this error.
    refused: Option<String>,
}

/// The listening socket and its open connections.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<Conn>,
    next_token: u64,
    uid: u32,
}

/// A request the daemon must answer with [`Control::reply`].
#[derive(Debug)]
pub struct Pending {
    pub token: u64,
    pub request: Request,
}

/// SO_PEERCRED's uid of a connected Unix stream.
fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred is a valid ucred of `len` bytes; the kernel writes at
    // most that much.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

fn error_reply(why: &str) -> Vec<u8> {
    format!("error: {}\n", crate::logging::one_line(why)).into_bytes()
}

impl Control {
    /// Binds the socket at `path`, mode 0600 from the start (umask), after
    /// removing a stale one (no daemon answers there).
    pub fn open(path: &Path) -> Result<Control, ControlError> {
        let p = path.to_path_buf();
        if path.as_os_str().len() > 107 {
            return Err(ControlError::PathTooLong(p));
        }
        match std::fs::symlink_metadata(path) {
            Ok(md) if !md.file_type().is_socket() => return Err(ControlError::NotASocket(p)),
            Ok(_) => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ControlError::InUse(p));
                }
                std::fs::remove_file(path).map_err(|e| {
                    ControlError::Io(p.clone(), "cannot remove the stale socket", e)
                })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ControlError::Io(p, "cannot stat", e)),
        }
        // SAFETY: umask only swaps the process's file mode mask; the loop
        // is single-threaded, so no other file is created meanwhile.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|e| ControlError::Io(p.clone(), "cannot bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ControlError::Io(p.clone(), "cannot set mode 0600", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ControlError::Io(p.clone(), "cannot set non-blocking", e))?;
        Ok(Control {
            listener,
            path: p,
            conns: Vec::new(),
            next_token: 0,
            // SAFETY: geteuid has no preconditions and cannot fail.
            uid: unsafe { libc::geteuid() },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What to poll: the listener for a new connection, then each
    /// connection for its request (POLLIN) or its reply's room (POLLOUT).
    pub fn poll_set(&self) -> Vec<(i32, i16)> {
        let mut v = vec![(self.listener.as_raw_fd(), libc::POLLIN)];
        for c in &self.conns {
            let ev = match c.stage {
                Stage::Reading(_) | Stage::Draining => libc::POLLIN,
                Stage::Waiting => 0,
                Stage::Writing(..) => libc::POLLOUT,
            };
            v.push((c.stream.as_raw_fd(), ev));
        }
        v
    }

    /// Until the earliest connection deadline; `None` with no client, so
    /// an idle daemon sleeps.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.conns
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
    }

    /// Serves what `ready` (in [`Control::poll_set`]'s order) says is
    /// ready, and drops connections past their deadline. Returns the
    /// requests the daemon must answer; malformed ones are answered here.
    pub fn serve(&mut self, ready: &[bool]) -> Vec<Pending> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (i, c) in self.conns.iter_mut().enumerate() {
            if !ready.get(i + 1).copied().unwrap_or(false) {
                continue;
            }
            match &mut c.stage {
                Stage::Reading(buf) => {
                    if let Some(r) = read_request(&mut c.stream, buf) {
                        let r = match c.refused.take() {
                            Some(why) => Err(why),
                            None => r,
                        };
                        match r {
                            Ok(request) => {
                                c.stage = Stage::Waiting;
                                out.push(Pending {
                                    token: c.token,
                                    request,
                                });
                            }
                            Err(why) => {
                                tracing::info!(
                                    "control socket: request refused: {}",
                                    crate::logging::one_line(&why)
                                );
                                c.stage = Stage::Writing(error_reply(&why), 0);
                                c.deadline = now + WRITE_DEADLINE;
                            }
                        }
                    }
                }
                Stage::Draining => {
                    let mut sink = [0u8; 4096];
                    // Bounded per wake-up: a peer that never stops sending
                    // meets its deadline.
                    for _ in 0..16 {
                        match c.stream.read(&mut sink) {
                            Ok(0) => {
                                c.deadline = now;
                                break;
                            }
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                c.deadline = now;
                                break;
                            }
                        }
                    }
                }
                Stage::Writing(..) | Stage::Waiting => {}
            }
        }
        self.flush_writes();
        self.conns.retain(|c| {
            let keep = c.deadline > now;
            if !keep && !matches!(c.stage, Stage::Draining) {
                tracing::info!("control socket: a client took too long, connection closed");
            }
            keep
        });
        if ready.first().copied().unwrap_or(false) {
            self.accept(now);
        }
        out
    }

    /// Accepts what is queued (bounded), checking each peer's uid.
    fn accept(&mut self, now: Instant) {
        for _ in 0..MAX_CONNS {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("control socket: accept: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let refuse = match peer_uid(&stream) {
                Ok(uid) if uid == self.uid || uid == 0 => None,
                Ok(uid) => Some(format!(
                    "uid {uid} may not use this socket (only uid {} and root)",
                    self.uid
                )),
                Err(e) => Some(format!("cannot read the peer's credentials: {e}")),
            };
            if let Some(why) = &refuse {
                tracing::warn!("control socket: connection refused: {why}");
            }
            if self.conns.len() >= MAX_CONNS {
                let _ = (&stream).write(&error_reply("busy: too many control connections"));
                continue;
            }
            self.next_token += 1;
            self.conns.push(Conn {
                token: self.next_token,
                stream,
                stage: Stage::Reading(Vec::new()),
                deadline: now + READ_DEADLINE,
                refused: refuse,
            });
        }
    }

    /// Queues the reply to `token`'s request and starts writing it.
    pub fn reply(&mut self, token: u64, result: Result<String, String>) {
        let bytes = match result {
            Ok(body) => format!("ok\n{body}").into_bytes(),
            Err(why) => error_reply(&why),
        };
        if let Some(c) = self.conns.iter_mut().find(|c| c.token == token) {
            c.stage = Stage::Writing(bytes, 0);
            c.deadline = Instant::now() + WRITE_DEADLINE;
        }
        self.flush_writes();
    }

    /// Writes what each socket takes now; a finished or broken connection
    /// is closed.
    fn flush_writes(&mut self) {
        self.conns.retain_mut(|c| {
            let Stage::Writing(buf, off) = &mut c.stage else {
                return true;
            };
            while *off < buf.len() {
                match c.stream.write(&buf[*off..]) {
                    Ok(0) => return false,
                    Ok(n) => *off += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            c.stage = Stage::Draining;
            c.deadline = c.deadline.min(Instant::now() + READ_DEADLINE);
            true
        });
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads what is there; `Some` once the request is complete (a newline, or
/// the peer's end of writing) or refused (too long, unreadable).
fn read_request(s: &mut UnixStream, buf: &mut Vec<u8>) -> Option<Result<Request, String>> {
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Some(request::parse(buf).map_err(|e| e.to_string())),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.contains(&b'\n') || buf.len() > request::MAX_REQUEST {
                    return Some(request::parse(buf).map_err(|e| e.to_string()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(format!("read: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_refuses_a_live_socket_and_other_files_and_removes_a_stale_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(SOCKET_NAME);
        let c = Control::open(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(Control::open(&p), Err(ControlError::InUse(_))));
        // A socket nobody answers on (a killed daemon's) is replaced.
        std::mem::forget(c);
        let _ = std::fs::remove_file(&p);
        let stale = UnixListener::bind(&p).unwrap();
        drop(stale);
        let c = Control::open(&p).unwrap();
        drop(c);
        assert!(!p.exists(), "removed at drop");
        std::fs::write(&p, "x").unwrap();
        assert!(matches!(
            Control::open(&p),
            Err(ControlError::NotASocket(_))
        ));
        let long = d.path().join("x".repeat(120));
        assert!(matches!(
            Control::open(&long),
            Err(ControlError::PathTooLong(_))
        ));
    }

    #[test]
    fn a_request_is_read_answered_and_the_connection_closed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(SOCKET_NAME);
        let mut c = Control::open(&p).unwrap();
        let mut client = UnixStream::connect(&p).unwrap();
        client.write_all(b"revoke key alice\n").unwrap();
        // Accept, then read: two turns of the loop.
        assert!(c.serve(&[true]).is_empty());
        let ready = vec![true; c.poll_set().len()];
        let got = c.serve(&ready);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].request,
            Request::Revoke(Selector::Key("alice".into()))
        );
        c.reply(got[0].token, Ok("revoked 0 grant(s)\n".into()));
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        assert_eq!(out, "ok\nrevoked 0 grant(s)\n");
        // Draining sees the end and the connection goes; no timeout left.
        let ready = vec![true; c.poll_set().len()];
        c.serve(&ready);
        assert!(c.conns.is_empty() && c.timeout(Instant::now()).is_none());
    }
}
