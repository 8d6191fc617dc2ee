//! The syscall edge of the client's TCP use: std can neither bind a TCP
//! socket to a chosen source address before connecting nor connect without
//! waiting, and both the knock SYNs and the `--wait` probes need that (a
//! probe must come from the address the grant is for).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

enum Sa {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl Sa {
    fn new(a: SocketAddr) -> Sa {
        match a {
            SocketAddr::V4(a) => Sa::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => Sa::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            Sa::V4(s) => (
                (s as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            Sa::V6(s) => (
                (s as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// A non-blocking TCP socket (bound to `source` if given) whose connect to
/// `dst` has started: the SYN is out when this returns. `Ok(true)` in the
/// pair means the connect completed at once (loopback).
fn start_connect(dst: SocketAddr, source: Option<IpAddr>) -> io::Result<(OwnedFd, bool)> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new
    // descriptor that we own and hand to OwnedFd immediately.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Some(src) = source {
        let sa = Sa::new(SocketAddr::new(src, 0));
        let (ptr, len) = sa.as_ptr();
        // SAFETY: ptr/len describe `sa`, which lives until after the call.
        if unsafe { libc::bind(fd.as_raw_fd(), ptr, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let sa = Sa::new(dst);
    let (ptr, len) = sa.as_ptr();
    // SAFETY: ptr/len describe `sa`, which lives until after the call.
    // The kernel sends the SYN before a non-blocking connect returns.
    if unsafe { libc::connect(fd.as_raw_fd(), ptr, len) } == 0 {
        return Ok((fd, true));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINPROGRESS) => Ok((fd, false)),
        _ => Err(e),
    }
}

/// Sends one SYN to `dst` and abandons the connection attempt.
pub fn tcp_syn(dst: SocketAddr, source: Option<IpAddr>) -> io::Result<()> {
    match start_connect(dst, source) {
        // `fd` is closed on return: the attempt is abandoned.
        Ok(_) => Ok(()),
        // Refused by a RST that came back already: the SYN went out.
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What one connection attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The handshake completed: the port accepts new connections from here.
    Accepted,
    /// A RST came back (a REJECT rule, or nothing listening).
    Refused,
    /// No answer within the time given (a DROP rule, or a lost packet).
    NoAnswer,
    /// Any other failure (host or network unreachable...), by its errno text.
    Failed(i32),
}

impl Probe {
    /// How a person would say it, for the diagnosis.
    pub fn describe(self) -> String {
        match self {
            Probe::Accepted => "accepted".into(),
            Probe::Refused => "refused (RST)".into(),
            Probe::NoAnswer => "no answer".into(),
            Probe::Failed(errno) => io::Error::from_raw_os_error(errno).to_string(),
        }
    }
}

/// One plain TCP connect to `dst` from `source` (if given), closed at once:
/// does the port accept a new connection from here within `timeout`?
pub fn tcp_probe(dst: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Probe {
    let classify = |e: io::Error| match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Probe::Refused,
        Some(libc::ETIMEDOUT) => Probe::NoAnswer,
        Some(n) => Probe::Failed(n),
        None => Probe::Failed(libc::EIO),
    };
    let fd = match start_connect(dst, source) {
        Ok((_, true)) => return Probe::Accepted,
        Ok((fd, false)) => fd,
        Err(e) => return classify(e),
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is one valid pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        return classify(io::Error::last_os_error());
    }
    if n == 0 {
        return Probe::NoAnswer;
    }
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writes and sized as the
    // option's value (an int).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return classify(io::Error::last_os_error());
    }
    match err {
        0 => Probe::Accepted,
        e => classify(io::Error::from_raw_os_error(e)),
    }
    // `fd` is closed here; an accepted connection ends with a FIN.
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn probe_tells_accepted_from_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(tcp_probe(open, None, t), Probe::Accepted);
        let lo = Some("127.0.0.1".parse().unwrap());
        assert_eq!(tcp_probe(open, lo, t), Probe::Accepted);
        drop(l);
        // The port was just freed: nothing listens, the kernel answers RST.
        assert_eq!(tcp_probe(open, None, t), Probe::Refused);
    }
}
