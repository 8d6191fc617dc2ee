//! Capture of SPA datagrams and knocks without a listening socket.
//!
//! Why this shape (details in docs/capture.md):
//! - An `AF_PACKET`/`SOCK_DGRAM` ("cooked") socket sees IP packets before the
//!   firewall's INPUT chain, so the SPA port needs no listening socket and no
//!   firewall hole, and works on any link type (no link header to skip).
//! - One socket per address family (`ETH_P_IP`, `ETH_P_IPV6`) per interface
//!   (or per host when no interface is named). Protocol-specific packet
//!   sockets never see outgoing frames and do not make the kernel clone
//!   every transmitted packet, as an `ETH_P_ALL` tap would.
//! - A classic BPF filter ([`bpf`]) generated from the [`FilterSpec`] drops
//!   everything not for our ports in the kernel, before any copy.
//! - pnet's datalink channel is not used: in pnet_datalink 0.35 the socket is
//!   a private field of a private struct behind `Box<dyn DataLinkReceiver>`,
//!   so no filter can be attached after creation, and its receiver throws
//!   away `sll_pkttype`. pnet_packet still does the parsing ([`parse`]).

pub mod bpf;
mod error;
mod handover;
pub mod local;
mod parse;
mod recv;
mod ring;
mod spec;
mod spill;
mod sys;

pub use bpf::Class;
use bpf::Insn;
pub use error::{CaptureError, SpecError};
pub use handover::{open_locked, Handed, Opener};
use recv::Batch;
use spa_proto::IpFamily;
pub use spec::FilterSpec;
pub use spill::Spiller;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use sys::{attach, bind, cvt, ifindex, packet_stats, set_rcvbuf, setsockopt};

/// One captured packet that matched the [`FilterSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A UDP datagram to `spa_port` of exactly `spa_len` payload bytes,
    /// starting with the magic and a version byte we speak.
    Spa {
        src: IpAddr,
        dst: IpAddr,
        payload: &'a [u8],
    },
    /// A TCP SYN (without ACK) or any UDP datagram to a knock port.
    Knock {
        src: IpAddr,
        dst: IpAddr,
        proto: spa_proto::Proto,
        dport: u16,
        /// TCP flags byte; 0 for UDP.
        tcp_flags: u8,
    },
}

impl Packet<'_> {
    /// Which sockets carry this kind of packet.
    pub fn class(&self) -> Class {
        match self {
            Packet::Spa { .. } => Class::Spa,
            Packet::Knock { .. } => Class::Knock,
        }
    }
}

/// Classifies network-layer bytes (starting at the IP header) against
/// `spec`. Pure and total: the parse of hostile bytes.
pub fn parse<'a>(l3: &'a [u8], is_ipv6: bool, spec: &FilterSpec) -> Option<Packet<'a>> {
    parse::classify(l3, is_ipv6, spec)?.into_packet(l3)
}

/// Counters since [`Capture::open`], for logs and the flood measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames copied to user space (passed the kernel filter).
    pub frames: u64,
    /// Bytes copied to user space.
    pub bytes: u64,
    /// Frames skipped because the kernel marked them outgoing.
    pub outgoing: u64,
    /// Frames that passed the kernel filter but not [`parse`].
    pub unparsed: u64,
    /// Frames the kernel dropped because the receive queue was full
    /// (`PACKET_STATISTICS`, summed over sockets; updated by `stats()`).
    pub kernel_drops: u64,
}

/// Room for one frame in a batch: the most the kernel filter ever copies.
const SLOT: usize = bpf::SNAPLEN as usize;
#[derive(Debug)]
struct Sock {
    /// The datagram socket's receive ring, mapped (docs/capture.md); `None`
    /// for knock sockets and where the ring could not be made.
    ring: Option<Arc<Mutex<ring::Ring>>>,
    /// Shared with the [`Spiller`] while a ring is in it, so the
    /// descriptor it polls stays open as long as it does.
    fd: Arc<OwnedFd>,
    family: IpFamily,
    class: Class,
    /// `None`: bound to all interfaces (ifindex 0).
    iface: Option<String>,
    ifindex: libc::c_int,
    /// An ENETDOWN was logged and no frame arrived since.
    down_logged: bool,
    /// poll(2)'s `revents` for it at the last wake-up ([`Capture::mark_ready`]),
    /// cleared when a read finds it drained.
    flagged: i16,
}

impl Sock {
    fn label(&self) -> String {
        label(self.iface.as_deref())
    }
}

fn label(iface: Option<&str>) -> String {
    match iface {
        Some(name) => format!("interface {name}"),
        None => "all interfaces".to_string(),
    }
}

/// The capture sockets. Owns the fds (closed on drop) and one batch of
/// frames per class.
#[derive(Debug)]
pub struct Capture {
    socks: Vec<Sock>,
    spec: FilterSpec,
    /// Per class (index [`class_index`]): frames read, not yet handed out.
    batches: [Batch; 2],
    /// Per class: the indexes into `socks` of its sockets, and whose turn
    /// it is.
    turns: [Turn; 2],
    stats: CaptureStats,
    needs_rebind: bool,
    /// The rings, for the [`Spiller`]: kept the same `Arc` across
    /// [`Capture::replace_with`], refreshed whenever a socket changes.
    shared: spill::Shared,
}

#[derive(Debug, Default)]
struct Turn {
    socks: Vec<usize>,
    next: usize,
}

fn class_index(class: Class) -> usize {
    match class {
        Class::Spa => 0,
        Class::Knock => 1,
    }
}

/// Both programs of one class, per family.
struct Programs {
    v4: Vec<Insn>,
    v6: Vec<Insn>,
}

impl Programs {
    fn get(&self, family: IpFamily) -> &[Insn] {
        match family {
            IpFamily::V4 => &self.v4,
            IpFamily::V6 => &self.v6,
        }
    }
}

impl Capture {
    /// Opens one socket per family and [`Class`] on each named interface
    /// (all interfaces when `interfaces` is empty), each with the kernel
    /// filter for its part of `spec`. Knock sockets exist even with no knock
    /// port (their filter then passes nothing), so a reload that adds knocks
    /// only swaps filters. Fails, naming it, if an interface does not exist.
    pub fn open(interfaces: &[String], spec: &FilterSpec) -> Result<Capture, CaptureError> {
        let progs = programs(spec)?;
        Capture::open_with(interfaces, spec, &mut |iface, family, class| {
            let index = match iface {
                None => 0,
                Some(name) => ifindex(name).ok_or_else(|| CaptureError::NoSuchInterface {
                    name: name.to_owned(),
                })?,
            };
            let prog = progs[class_index(class)].get(family);
            open_socket(iface, index, family, class, prog, false)
        })
    }

    /// Replaces the filter on every socket. `SO_ATTACH_FILTER` on a socket
    /// that has a filter swaps it atomically, so no frame is ever unfiltered.
    /// Frames already queued were accepted by the old filter; `recv` judges
    /// them by the new spec.
    pub fn set_filter(&mut self, spec: &FilterSpec) -> Result<(), CaptureError> {
        let progs = programs(spec)?;
        for s in &self.socks {
            let prog = progs[class_index(s.class)].get(s.family);
            attach(&s.fd, prog).map_err(|e| s.err("setsockopt(SO_ATTACH_FILTER)", e))?;
        }
        self.spec = spec.clone();
        tracing::info!(
            spa_port = spec.spa_port,
            knock_tcp = spec.knock_tcp.len(),
            knock_udp = spec.knock_udp.len(),
            "capture filter replaced"
        );
        Ok(())
    }

    /// The spec currently in force.
    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Non-blocking fds for the daemon's poll(2). [`Capture::rebind`] keeps
    /// them; [`Capture::reopen_moved`] replaces a moved interface's.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.socks.iter().map(|s| s.fd.as_raw_fd()).collect()
    }

    /// True once a named interface reported a link error (down, deleted)
    /// and until [`Capture::rebind`] finds it present and up again; the
    /// daemon calls `rebind` every few seconds meanwhile.
    pub fn needs_rebind(&self) -> bool {
        self.needs_rebind
    }

    /// Re-resolves every named interface and re-binds (the same fd) any
    /// whose ifindex changed, e.g. a deleted and re-created VLAN or veth.
    /// Returns the names still missing; cheap (two ioctls per name), safe
    /// to call at any time. A merely down-then-up interface needs no
    /// rebind: the kernel re-attaches the socket when the link comes back,
    /// but while it is down (it may yet be deleted and re-created) the
    /// check stays armed.
    pub fn rebind(&mut self) -> Result<Vec<String>, CaptureError> {
        self.follow(None)
    }

    /// How many sockets read through a receive ring (the datagram
    /// sockets, unless the privileged side fell back to `recvmmsg`).
    pub fn rings(&self) -> usize {
        self.socks.iter().filter(|s| s.ring.is_some()).count()
    }

    /// What waits for the privileged side's replies while keeping the
    /// rings drained ([`spill`]).
    pub fn spiller(&self) -> Spiller {
        Spiller {
            rings: self.shared.clone(),
        }
    }

    /// Tells the [`Spiller`] which rings there are now.
    fn publish_rings(&self) {
        let list = self
            .socks
            .iter()
            .filter_map(|s| Some((s.fd.clone(), s.ring.clone()?)))
            .collect();
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = list;
    }

    /// Counters; also collects kernel queue drops from every socket.
    pub fn stats(&mut self) -> CaptureStats {
        for s in &self.socks {
            if let Ok(st) = packet_stats(&s.fd) {
                self.stats.kernel_drops += u64::from(st.tp_drops);
            }
        }
        self.stats
    }
}

impl Sock {
    fn err(&self, call: &'static str, source: io::Error) -> CaptureError {
        CaptureError::Syscall {
            call,
            interface: format!(
                "{} ({} {})",
                self.label(),
                self.family.name(),
                self.class.name()
            ),
            source,
        }
    }
}

fn is_link_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENETDOWN) | Some(libc::ENODEV) | Some(libc::ENXIO) | Some(libc::ENETRESET)
    )
}

/// Every program for `spec`, indexed by [`class_index`]: all generated and
/// checked before any socket is touched.
fn programs(spec: &FilterSpec) -> Result<[Programs; 2], CaptureError> {
    spec.validate()?;
    let gen = |family: IpFamily, class: Class| {
        bpf::program_for(spec, family, class).map_err(|source| CaptureError::Filter {
            family: family.name(),
            source,
        })
    };
    let both = |class| -> Result<Programs, CaptureError> {
        Ok(Programs {
            v4: gen(IpFamily::V4, class)?,
            v6: gen(IpFamily::V6, class)?,
        })
    };
    Ok([both(Class::Spa)?, both(Class::Knock)?])
}

/// socket(protocol 0) -> buffer -> filter -> (datagram sockets) receive
/// ring -> bind(protocol) -> (`lock`) filter locked: a socket with protocol
/// 0 receives nothing, so no frame is queued before the filter. The ring is
/// made before the bind: the kernel refuses to make one while frames are
/// queued.
fn open_socket(
    iface: Option<&str>,
    index: libc::c_int,
    family: IpFamily,
    class: Class,
    prog: &[Insn],
    lock: bool,
) -> Result<Handed, CaptureError> {
    let where_ = format!("{} ({} {})", label(iface), family.name(), class.name());
    let err = |call: &'static str, source: io::Error| CaptureError::Syscall {
        call,
        interface: where_.clone(),
        source,
    };
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })
    .map_err(|e| err("socket(AF_PACKET, SOCK_DGRAM)", e))?;
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_rcvbuf(&fd).map_err(|e| err("setsockopt(SO_RCVBUF)", e))?;
    attach(&fd, prog).map_err(|e| err("setsockopt(SO_ATTACH_FILTER)", e))?;
    if class == Class::Spa {
        ring::setup(&fd, &where_).map_err(|e| err("setsockopt(PACKET_VERSION)", e))?;
    }
    bind(&fd, family, index).map_err(|e| err("bind", e))?;
    if lock {
        setsockopt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_LOCK_FILTER,
            &1 as &libc::c_int,
        )
        .map_err(|e| err("setsockopt(SO_LOCK_FILTER)", e))?;
    }
    Ok(Handed { fd, ifindex: index })
}

#[cfg(test)]
mod tests;
