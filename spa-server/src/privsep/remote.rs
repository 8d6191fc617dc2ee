//! The network side's end of the socketpair: every request is one frame
//! out and one reply back, in order (a batch costs the firewall tool's time
//! either way). While it waits for the reply the network side keeps the
//! capture's receive rings from overflowing ([`crate::capture::Spiller`]):
//! it judges nothing meanwhile, it only moves frames into user space.
//!
//! Through [`Remote`] the engine's `GrantTable` reach
//! the firewall exactly as they reached a backend before: the ordering
//! guarantees (replay entry durable first, table changed only on success)
//! are the engine's and stay where they were.

use super::proto::{read_frame, Reply, Request};
use crate::capture::{CaptureError, Class, Handed, Spiller};
use crate::config::ConfigSource;
use crate::config::{Config, ConfigError};
use crate::firewall::{Access, BackendKind, Firewall, FwError};
use spa_proto::IpFamily;
use std::collections::HashSet;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

const WHO: &str = "privileged side";

#[derive(Clone)]
pub struct Remote {
    sock: Arc<Mutex<UnixStream>>,
    backend: BackendKind,
    /// Set once the capture is open ([`Remote::spill_while_waiting`]).
    spiller: Arc<Mutex<Option<Spiller>>>,
}

impl Remote {
    pub fn new(sock: UnixStream, backend: BackendKind) -> Remote {
        Remote {
            sock: Arc::new(Mutex::new(sock)),
            backend,
            spiller: Arc::new(Mutex::new(None)),
        }
    }

    /// From now on every wait for a reply drains the capture's rings
    /// (issue 14): set by the daemon once the capture is open; every
    /// clone of this `Remote` (the grant table's) shares it.
    pub fn spill_while_waiting(&self, spiller: Spiller) {
        *self.spiller.lock().unwrap_or_else(|p| p.into_inner()) = Some(spiller);
    }

    /// Blocks until the reply is there, draining the rings meanwhile if
    /// a [`Spiller`] is set.
    fn wait(&self, s: &UnixStream) -> io::Result<()> {
        let spiller = self.spiller.lock().unwrap_or_else(|p| p.into_inner());
        match spiller.as_ref() {
            Some(sp) => sp.wait_readable(s.as_raw_fd()),
            None => Ok(()),
        }
    }

    /// The socket, for the event loop's poll: readable (end of stream)
    /// when the privileged side is gone.
    pub fn raw_fd(&self) -> RawFd {
        self.sock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_raw_fd()
    }

    pub fn call(&self, req: &Request) -> io::Result<Reply> {
        let mut s = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        s.write_all(&req.encode())?;
        self.wait(&s)?;
        let msg = read_frame(&mut *s)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the privileged side is gone")
        })?;
        Reply::decode(&msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn done(&self, req: &Request) -> Result<(), FwError> {
        match self.call(req) {
            Ok(Reply::Done) => Ok(()),
            Ok(other) => Err(refused(other)),
            Err(error) => Err(FwError::Spawn {
                cmd: WHO.into(),
                error,
            }),
        }
    }

    /// A capture socket for `interface` (`None`: every interface), made by
    /// the privileged side with its filter locked, received with
    /// SCM_RIGHTS: this side may not create a socket.
    pub fn open_capture(
        &self,
        interface: Option<&str>,
        family: IpFamily,
        class: Class,
    ) -> Result<Handed, CaptureError> {
        let req = Request::OpenCapture {
            interface: interface.map(str::to_owned),
            family,
            class,
        };
        let gone = |e: io::Error| CaptureError::Privileged(e.to_string());
        let mut s = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        s.write_all(&req.encode()).map_err(gone)?;
        self.wait(&s).map_err(gone)?;
        let (msg, fd) = super::fdpass::recv_with_fd(&mut s)
            .map_err(gone)?
            .ok_or_else(|| CaptureError::Privileged("it is gone".into()))?;
        match (Reply::decode(&msg), fd) {
            (Ok(Reply::Capture { ifindex }), Some(fd)) => Ok(Handed {
                fd: above_base(fd)?,
                ifindex,
            }),
            (Ok(Reply::Refused(why)), _) => Err(CaptureError::Privileged(why)),
            (other, _) => Err(CaptureError::Privileged(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// The end of a reload: the privileged side takes the configuration it
    /// read for `load_config` (`commit`) or keeps its old one.
    pub fn settle(&self, commit: bool) -> Result<(), FwError> {
        self.done(&Request::Settle { commit })
    }

    /// This host's addresses, read by the privileged side.
    pub fn local_addrs(&self) -> io::Result<HashSet<IpAddr>> {
        match self.call(&Request::LocalAddrs)? {
            Reply::Addrs(a) => Ok(a.into_iter().collect()),
            other => Err(io::Error::other(format!("{other:?}"))),
        }
    }

    /// SIGHUP: the privileged side re-reads the configuration and keys;
    /// this side parses the same bytes. Ends with [`Remote::settle`].
    pub fn load_config(&self, source: &ConfigSource) -> Result<Config, ConfigError> {
        let err = |msg: String| ConfigError {
            file: source
                .path
                .clone()
                .unwrap_or_else(|| "<command line>".into()),
            line: None,
            field: None,
            msg,
        };
        match self.call(&Request::Reload) {
            Ok(Reply::Files(files)) => {
                Config::load_from(source.path.as_deref(), &source.overrides, &files)
            }
            Ok(Reply::Refused(why)) => Err(err(why)),
            Ok(other) => Err(err(format!("unexpected reply {other:?}"))),
            Err(e) => Err(err(format!("{WHO}: {e}"))),
        }
    }
}

/// The capture socket moved to a number at or above
/// [`super::sandbox::CAPTURE_FD_BASE`], where the seccomp filter lets it
/// receive and nothing more; the number it arrived with is closed.
fn above_base(fd: OwnedFd) -> Result<OwnedFd, CaptureError> {
    let base = super::sandbox::CAPTURE_FD_BASE;
    // SAFETY: fcntl on a descriptor we own; the new one is ours alone.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, base) };
    if high < 0 {
        return Err(CaptureError::Privileged(format!(
            "cannot keep the capture socket at descriptor {base} or above: {} \
             (raise the open-file limit, LimitNOFILE=)",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: `high` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

fn refused(r: Reply) -> FwError {
    FwError::Failed {
        cmd: WHO.into(),
        status: "refused".into(),
        stderr: match r {
            Reply::Refused(why) => why,
            other => format!("unexpected reply {other:?}"),
        },
    }
}

impl Firewall for Remote {
    fn name(&self) -> &'static str {
        self.backend.as_str()
    }

    /// The privileged side runs this backend kind (its own configuration's,
    /// which a reload cannot change), so the answer needs no round trip.
    fn expires_itself(&self, a: &Access) -> bool {
        self.backend.expires_itself(a)
    }

    fn setup(&mut self) -> Result<(), FwError> {
        self.done(&Request::Setup)
    }

    fn apply(&mut self, add: &[Access], remove: &[Access]) -> Result<(), FwError> {
        self.done(&Request::Apply {
            add: add.to_vec(),
            remove: remove.to_vec(),
        })
    }

    fn teardown(&mut self) -> Result<(), FwError> {
        self.done(&Request::Teardown)
    }

    /// The privileged side keeps silent what its own configuration says.
    fn set_silence(&mut self, _: &crate::firewall::Silence) -> Result<(), FwError> {
        Ok(())
    }

    fn intact(&mut self) -> Result<bool, FwError> {
        match self.call(&Request::Intact) {
            Ok(Reply::Intact(b)) => Ok(b),
            Ok(other) => Err(refused(other)),
            Err(error) => Err(FwError::Spawn {
                cmd: WHO.into(),
                error,
            }),
        }
    }
}
