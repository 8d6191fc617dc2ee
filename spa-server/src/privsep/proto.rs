//! The messages between the network side and the privileged side, in a
//! fixed binary layout: a closed set of requests, each decoded in full or
//! refused, no serde, no lengths taken on trust. One frame is
//! `len u32 BE | tag u8 | body`, `len` counting tag and body, at most
//! [`MAX_FRAME`].
//!
//! The privileged side decodes requests (bytes a compromised network side
//! controls): [`Request::decode`] must reject anything malformed without
//! panicking (`fuzz/fuzz_targets/privsep_request.rs`). The network side
//! decodes replies from the privileged side, which it trusts.

use crate::capture::Class;
use crate::firewall::Access;
use spa_proto::{Grant, IpFamily, Proto};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// No frame is larger: a batch of [`MAX_BATCH`] adds and as many removes,
/// or a configuration bundle (key files are tiny, the config file capped).
pub const MAX_FRAME: usize = 4 << 20;
/// Adds (and, separately, removes) in one batch at most: the largest grant
/// table (`max_grants_total` is capped at this) re-added after a firewall
/// reload.
pub const MAX_BATCH: usize = 65_536;
/// Files in one reload bundle at most (the configuration and every key
/// file): the frame's bytes are the real bound; this only caps the count
/// before anything is read. 4,096 refused a reload with 10,000 keys (issue
/// 14); [`MAX_FRAME`] still holds about 13,000 keys as spa-keygen writes
/// them.
pub const MAX_FILES: usize = 65_536;
/// One access on the wire: family, address (16), protocol, port, expiry,
/// then the forward target: family (0: none), address (16), port.
pub const ACCESS_LEN: usize = 1 + 16 + 1 + 2 + 8 + 1 + 16 + 2;

/// The longest interface name the kernel holds (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// What the network side may ask. Nothing else exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// One firewall batch: remove these, add these (all or nothing).
    Apply {
        add: Vec<Access>,
        remove: Vec<Access>,
    },
    /// Are our chain/jump/sets still in place (after a ruleset change)?
    Intact,
    /// Install our chain/sets again (they were gone); grants follow as an
    /// `Apply`.
    Setup,
    /// Re-read the configuration and keys (SIGHUP), and reply with the
    /// files read, for the network side to parse the same bytes. The new
    /// configuration is held aside (capture sockets for it may be asked)
    /// until [`Request::Settle`].
    Reload,
    /// The end of a reload: take the configuration read by `Reload` as our
    /// own (`commit`), or drop it (the network side refused the reload).
    Settle { commit: bool },
    /// This host's addresses (the knock check; the network side may not
    /// open a netlink socket).
    LocalAddrs,
    /// Remove every grant and our chain/sets (stop).
    Teardown,
    /// A capture socket for one configured interface (`None`: every
    /// interface, only when none is configured), family and class, its
    /// kernel filter made from the privileged side's own configuration and
    /// locked; answered with [`Reply::Capture`] and the descriptor
    /// (SCM_RIGHTS).
    OpenCapture {
        interface: Option<String>,
        family: IpFamily,
        class: Class,
    },
}

/// What the privileged side answers, one reply per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    Refused(String),
    Intact(bool),
    /// The files the privileged side read for a reload, path and bytes.
    Files(Vec<(PathBuf, Vec<u8>)>),
    Addrs(Vec<IpAddr>),
    /// The capture socket travels beside this reply (SCM_RIGHTS); bound to
    /// this interface index (0: every interface).
    Capture {
        ifindex: i32,
    },
}

/// Why a frame was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    UnknownTag(u8),
    Truncated,
    TrailingBytes,
    TooLarge(usize),
    BadFamily(u8),
    BadProto(u8),
    ZeroPort,
    BadText,
    BadClass(u8),
    BadFlag(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty message"),
            DecodeError::UnknownTag(t) => write!(f, "unknown message tag {t}"),
            DecodeError::Truncated => f.write_str("message truncated"),
            DecodeError::TrailingBytes => f.write_str("bytes after the message"),
            DecodeError::TooLarge(n) => write!(f, "a count or length of {n} is over the limit"),
            DecodeError::BadFamily(b) => write!(f, "address family {b} unknown"),
            DecodeError::BadProto(b) => write!(f, "protocol {b} unknown"),
            DecodeError::ZeroPort => f.write_str("port 0"),
            DecodeError::BadText => f.write_str("text is not UTF-8"),
            DecodeError::BadClass(b) => write!(f, "capture class {b} unknown"),
            DecodeError::BadFlag(b) => write!(f, "flag {b} is neither 0 nor 1"),
        }
    }
}

impl std::error::Error for DecodeError {}

const T_APPLY: u8 = 1;
const T_INTACT: u8 = 2;
const T_SETUP: u8 = 3;
const T_RELOAD: u8 = 4;
const T_LOCAL: u8 = 5;
const T_TEARDOWN: u8 = 6;
const T_CAPTURE: u8 = 7;
const T_SETTLE: u8 = 8;

const R_DONE: u8 = 0x81;
const R_REFUSED: u8 = 0x82;
const R_INTACT: u8 = 0x83;
const R_FILES: u8 = 0x84;
const R_ADDRS: u8 = 0x85;
const R_CAPTURE: u8 = 0x86;

/// A cursor that never reads past the end.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (a, b) = self.0.split_at_checked(n).ok_or(DecodeError::Truncated)?;
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn count(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLarge(n));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count(MAX_FRAME)?;
        self.take(n)
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

fn put_access(out: &mut Vec<u8>, a: &Access) {
    put_ip(out, a.addr);
    out.push(match a.grant.proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    });
    out.extend_from_slice(&a.grant.port.get().to_be_bytes());
    out.extend_from_slice(&a.expires_at.to_be_bytes());
    // The forward target (issue 15): family 0 = none, else as the address.
    match a.forward {
        None => out.extend_from_slice(&[0; 19]),
        Some(to) => {
            put_ip(out, to.ip());
            out.extend_from_slice(&to.port().to_be_bytes());
        }
    }
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.to_ipv6_mapped().octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn get_access(r: &mut Rd<'_>) -> Result<Access, DecodeError> {
    let family = r.u8()?;
    let mut o = [0u8; 16];
    o.copy_from_slice(r.take(16)?);
    let v6 = Ipv6Addr::from(o);
    let addr = match family {
        // An IPv4 address travels mapped; anything else under family 4 is
        // refused rather than guessed at.
        4 => IpAddr::V4(v6.to_ipv4_mapped().ok_or(DecodeError::BadFamily(4))?),
        6 => IpAddr::V6(v6),
        b => return Err(DecodeError::BadFamily(b)),
    };
    let proto = match r.u8()? {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        b => return Err(DecodeError::BadProto(b)),
    };
    let p = r.take(2)?;
    let port = u16::from_be_bytes([p[0], p[1]]);
    let grant = Grant::new(proto, port).map_err(|_| DecodeError::ZeroPort)?;
    let expires_at = r.u64()?;
    let fam = r.u8()?;
    let mut o = [0u8; 16];
    o.copy_from_slice(r.take(16)?);
    let p = r.take(2)?;
    let fport = u16::from_be_bytes([p[0], p[1]]);
    let v6 = Ipv6Addr::from(o);
    let forward = match fam {
        0 if o == [0; 16] && fport == 0 => None,
        4 if fport != 0 => Some(std::net::SocketAddr::new(
            IpAddr::V4(v6.to_ipv4_mapped().ok_or(DecodeError::BadFamily(4))?),
            fport,
        )),
        6 if fport != 0 => Some(std::net::SocketAddr::new(IpAddr::V6(v6), fport)),
        0 | 4 | 6 => return Err(DecodeError::ZeroPort),
        b => return Err(DecodeError::BadFamily(b)),
    };
    Ok(Access {
        addr,
        grant,
        expires_at,
        forward,
    })
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(tag);
    out.extend_from_slice(body);
    out
}

impl Request {
    /// One frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Apply { add, remove } => {
                let mut b = Vec::with_capacity(8 + (add.len() + remove.len()) * ACCESS_LEN);
                b.extend_from_slice(&(add.len() as u32).to_be_bytes());
                b.extend_from_slice(&(remove.len() as u32).to_be_bytes());
                for a in add.iter().chain(remove) {
                    put_access(&mut b, a);
                }
                frame(T_APPLY, &b)
            }
            Request::Intact => frame(T_INTACT, &[]),
            Request::Setup => frame(T_SETUP, &[]),
            Request::Reload => frame(T_RELOAD, &[]),
            Request::Settle { commit } => frame(T_SETTLE, &[u8::from(*commit)]),
            Request::LocalAddrs => frame(T_LOCAL, &[]),
            Request::Teardown => frame(T_TEARDOWN, &[]),
            Request::OpenCapture {
                interface,
                family,
                class,
            } => {
                let name = interface.as_deref().unwrap_or("").as_bytes();
                let mut b = vec![
                    match family {
                        IpFamily::V4 => 4,
                        IpFamily::V6 => 6,
                    },
                    match class {
                        Class::Spa => 1,
                        Class::Knock => 2,
                    },
                    // Never longer than MAX_IFNAME from a configuration
                    // (the privileged side refuses any other name anyway).
                    name.len().min(255) as u8,
                ];
                b.extend_from_slice(name.get(..255).unwrap_or(name));
                frame(T_CAPTURE, &b)
            }
        }
    }

    /// One frame's content (tag and body, without the length prefix).
    pub fn decode(msg: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Rd(msg);
        let tag = r.u8().map_err(|_| DecodeError::Empty)?;
        let req = match tag {
            T_APPLY => {
                let nadd = r.count(MAX_BATCH)?;
                let nrem = r.count(MAX_BATCH)?;
                // Counts are checked against the bytes before anything is
                // allocated for them.
                if r.0.len() != (nadd + nrem) * ACCESS_LEN {
                    return Err(DecodeError::Truncated);
                }
                let add = (0..nadd)
                    .map(|_| get_access(&mut r))
                    .collect::<Result<_, _>>()?;
                let remove = (0..nrem)
                    .map(|_| get_access(&mut r))
                    .collect::<Result<_, _>>()?;
                Request::Apply { add, remove }
            }
            T_INTACT => Request::Intact,
            T_SETUP => Request::Setup,
            T_RELOAD => Request::Reload,
            T_SETTLE => Request::Settle {
                commit: match r.u8()? {
                    0 => false,
                    1 => true,
                    b => return Err(DecodeError::BadFlag(b)),
                },
            },
            T_LOCAL => Request::LocalAddrs,
            T_TEARDOWN => Request::Teardown,
            T_CAPTURE => {
                let family = match r.u8()? {
                    4 => IpFamily::V4,
                    6 => IpFamily::V6,
                    b => return Err(DecodeError::BadFamily(b)),
                };
                let class = match r.u8()? {
                    1 => Class::Spa,
                    2 => Class::Knock,
                    b => return Err(DecodeError::BadClass(b)),
                };
                let n = usize::from(r.u8()?);
                if n > MAX_IFNAME {
                    return Err(DecodeError::TooLarge(n));
                }
                let name = std::str::from_utf8(r.take(n)?).map_err(|_| DecodeError::BadText)?;
                Request::OpenCapture {
                    // An empty name is "every interface": one spelling.
                    interface: (!name.is_empty()).then(|| name.to_owned()),
                    family,
                    class,
                }
            }
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end()?;
        Ok(req)
    }
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Done => frame(R_DONE, &[]),
            Reply::Refused(why) => {
                let mut b = Vec::new();
                b.extend_from_slice(&(why.len() as u32).to_be_bytes());
                b.extend_from_slice(why.as_bytes());
                frame(R_REFUSED, &b)
            }
            Reply::Intact(ok) => frame(R_INTACT, &[u8::from(*ok)]),
            Reply::Files(files) => {
                use std::os::unix::ffi::OsStrExt;
                let mut b = Vec::new();
                b.extend_from_slice(&(files.len() as u32).to_be_bytes());
                for (p, data) in files {
                    let p = p.as_os_str().as_bytes();
                    b.extend_from_slice(&(p.len() as u32).to_be_bytes());
                    b.extend_from_slice(p);
                    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
                    b.extend_from_slice(data);
                }
                frame(R_FILES, &b)
            }
            Reply::Addrs(addrs) => {
                let mut b = Vec::new();
                b.extend_from_slice(&(addrs.len() as u32).to_be_bytes());
                for a in addrs {
                    let (fam, o) = match a {
                        IpAddr::V4(v4) => (4u8, v4.to_ipv6_mapped().octets()),
                        IpAddr::V6(v6) => (6u8, v6.octets()),
                    };
                    b.push(fam);
                    b.extend_from_slice(&o);
                }
                frame(R_ADDRS, &b)
            }
            Reply::Capture { ifindex } => frame(R_CAPTURE, &ifindex.to_be_bytes()),
        }
    }

    pub fn decode(msg: &[u8]) -> Result<Reply, DecodeError> {
        let mut r = Rd(msg);
        let tag = r.u8().map_err(|_| DecodeError::Empty)?;
        let reply = match tag {
            R_DONE => Reply::Done,
            R_REFUSED => Reply::Refused(
                String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError::BadText)?,
            ),
            R_INTACT => Reply::Intact(r.u8()? != 0),
            R_FILES => {
                use std::os::unix::ffi::OsStrExt;
                let n = r.count(MAX_FILES)?;
                let mut files = Vec::new();
                for _ in 0..n {
                    let p = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
                    files.push((p, r.bytes()?.to_vec()));
                }
                Reply::Files(files)
            }
            R_ADDRS => {
                let n = r.count(MAX_BATCH)?;
                let mut addrs = Vec::new();
                for _ in 0..n {
                    let fam = r.u8()?;
                    let mut o = [0u8; 16];
                    o.copy_from_slice(r.take(16)?);
                    let v6 = Ipv6Addr::from(o);
                    addrs.push(match fam {
                        4 => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
                        _ => IpAddr::V6(v6),
                    });
                }
                Reply::Addrs(addrs)
            }
            R_CAPTURE => Reply::Capture {
                ifindex: r.u32()? as i32,
            },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end()?;
        Ok(reply)
    }
}

/// Reads one frame's content from a stream: `Ok(None)` at a clean end of
/// stream (the other side is gone).
pub fn read_frame(r: &mut impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 || n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {n} bytes"),
        ));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests;
