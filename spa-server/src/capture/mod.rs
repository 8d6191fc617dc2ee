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
mod ring;
mod spec;
mod sys;

pub use bpf::Class;
use bpf::Insn;
pub use error::CaptureError;
pub use handover::{open_locked, Handed, Opener};
use spa_proto::IpFamily;
pub use spec::FilterSpec;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use sys::{attach, bind, cvt, ifindex, packet_stats, recv_batch, set_rcvbuf};

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
/// Frames one `recv` call reads before returning `Ok(None)`, so a stream of
/// frames that fail `parse` cannot starve the daemon's other work.
const RECV_BUDGET: usize = 256;
/// Frames read in one `recvmmsg` from one socket, after which the next
/// socket of the class gets its turn. Why a batch: one system call per
/// frame was most of the daemon's cost under a flood (issue 14). Why
/// bounded: a flood on one socket must not keep a legit datagram waiting on
/// another (the other family, say) for long. Before the batch this was a
/// streak of 32 `recvfrom` calls on one socket.
const BATCH: usize = 32;

/// Frames read by one `recvmmsg` and not yet handed out: every class has
/// its own, so a knock batch never delays a datagram batch.
#[derive(Debug)]
struct Batch {
    /// `BATCH` slots of `SLOT` bytes.
    data: Vec<u8>,
    /// (length, `sll_pkttype`) of each frame read, in order.
    frames: Vec<(usize, u8)>,
    /// The next frame to hand out.
    next: usize,
    /// Index into `socks` of the socket they came from.
    sock: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            data: vec![0; BATCH * SLOT],
            frames: Vec::with_capacity(BATCH),
            next: 0,
            sock: 0,
        }
    }

    fn pending(&self) -> bool {
        self.next < self.frames.len()
    }

    /// Slot index, length and packet type of the next frame, if any.
    fn take(&mut self) -> Option<(usize, usize, u8)> {
        let (len, pkttype) = *self.frames.get(self.next)?;
        self.next += 1;
        Some((self.next - 1, len, pkttype))
    }

    fn frame(&self, slot: usize, len: usize) -> &[u8] {
        let start = slot * SLOT;
        self.data.get(start..start + len.min(SLOT)).unwrap_or(&[])
    }
}

#[derive(Debug)]
struct Sock {
    /// The datagram socket's receive ring, mapped (docs/capture.md); `None`
    /// for knock sockets and where the ring could not be made.
    ring: Option<ring::Ring>,
    fd: OwnedFd,
    family: IpFamily,
    class: Class,
    /// `None`: bound to all interfaces (ifindex 0).
    iface: Option<String>,
    ifindex: libc::c_int,
    /// An ENETDOWN was logged and no frame arrived since.
    down_logged: bool,
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
            let s = open_socket(iface.map(str::to_owned), index, family, class, prog)?;
            Ok(Handed {
                fd: s.fd,
                ifindex: index,
            })
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

    /// Next packet that parses, datagrams before knocks: `recv_class` of
    /// [`Class::Spa`], then of [`Class::Knock`].
    pub fn recv(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        let found = match self.recv_meta(Class::Spa)? {
            Some(f) => Some((Class::Spa, f)),
            None => self.recv_meta(Class::Knock)?.map(|f| (Class::Knock, f)),
        };
        Ok(found.and_then(|(class, (meta, slot, len))| {
            meta.into_packet(self.batches[class_index(class)].frame(slot, len))
        }))
    }

    /// Next packet of `class` that parses; `Ok(None)` when every socket of
    /// the class would block (or after [`RECV_BUDGET`] frames: then frames
    /// may be left read and not handed out, see [`Capture::pending`]).
    /// Frames that do not parse are counted and skipped. An interface going
    /// down (ENETDOWN) is logged once and skipped, never an error.
    pub fn recv_class(&mut self, class: Class) -> Result<Option<Packet<'_>>, CaptureError> {
        let found = self.recv_meta(class)?;
        let batch = &self.batches[class_index(class)];
        Ok(found.and_then(|(meta, slot, len)| meta.into_packet(batch.frame(slot, len))))
    }

    /// Frames already read from the kernel and not yet handed out. poll(2)
    /// cannot see them: the daemon must call `recv` again without sleeping.
    pub fn pending(&self) -> bool {
        self.batches.iter().any(Batch::pending)
    }

    /// The next frame of `class` that parses: its classification, and its
    /// slot and length in the class's batch. Hands out the batch's frames
    /// first, then reads the next batch from the socket whose turn it is.
    fn recv_meta(
        &mut self,
        class: Class,
    ) -> Result<Option<(parse::Meta, usize, usize)>, CaptureError> {
        let ci = class_index(class);
        let n = self.turns[ci].socks.len();
        let mut idle = 0;
        let mut budget = RECV_BUDGET;
        // Whether the empty rings were read once with `recvmmsg` in this
        // call (below).
        let mut sweep = false;
        loop {
            while budget > 0 {
                let Some((slot, len, pkttype)) = self.batches[ci].take() else {
                    break;
                };
                budget -= 1;
                if pkttype == libc::PACKET_OUTGOING {
                    self.stats.outgoing += 1;
                    continue;
                }
                self.stats.frames += 1;
                self.stats.bytes += len as u64;
                let batch = &self.batches[ci];
                let is_v6 = self.socks.get(batch.sock).map(|s| s.family) == Some(IpFamily::V6);
                match parse::classify(batch.frame(slot, len), is_v6, &self.spec) {
                    // The class check is the user-space authority, as
                    // parse is for the filter as a whole.
                    Some(meta) if meta.class() == class => return Ok(Some((meta, slot, len))),
                    _ => self.stats.unparsed += 1,
                }
            }
            if budget == 0 {
                return Ok(None);
            }
            if idle >= n {
                // Every socket of the class is empty. An empty ring is read
                // once more with `recvmmsg`, here and not at every empty
                // turn: that call is how a link error is reported and
                // cleared (poll flags the socket until then, the ring never
                // shows it), and under a flood it was ~20 % of the daemon's
                // time when made at every turn.
                let rings = self.turns[ci]
                    .socks
                    .iter()
                    .any(|&i| self.socks[i].ring.is_some());
                if sweep || !rings {
                    return Ok(None);
                }
                sweep = true;
                idle = 0;
            }
            let turn = &mut self.turns[ci];
            let k = turn.next % n;
            let i = turn.socks[k];
            turn.next = (k + 1) % n;
            let batch = &mut self.batches[ci];
            batch.frames.clear();
            batch.next = 0;
            batch.sock = i;
            let room = BATCH.min(budget) * SLOT;
            // The ring first: no system call while it has frames; an empty
            // one is read with `recvmmsg` only in the sweep (above).
            let sock = &mut self.socks[i];
            let from_ring = match sock.ring.as_mut() {
                Some(r) => r.recv_batch(&mut batch.data[..room], SLOT, &mut batch.frames),
                None => 0,
            };
            let got = match from_ring {
                0 if sock.ring.is_none() || sweep => {
                    recv_batch(&sock.fd, &mut batch.data[..room], SLOT, &mut batch.frames)
                }
                0 => Ok(0),
                n => Ok(n),
            };
            match got {
                Ok(0) => idle += 1,
                Ok(_) => {
                    idle = 0;
                    let sock = &mut self.socks[i];
                    if sock.down_logged {
                        sock.down_logged = false;
                        tracing::info!(on = %sock.label(), family = sock.family.name(), "capture receiving again");
                    }
                }
                Err(e) if is_link_error(&e) => {
                    idle += 1;
                    let sock = &mut self.socks[i];
                    if !sock.down_logged {
                        sock.down_logged = true;
                        tracing::warn!(on = %sock.label(), family = sock.family.name(), error = %e, "capture: interface down, waiting for it");
                    }
                    // Any link error on a named interface arms the check:
                    // the error can arrive while a deleted interface is
                    // still being unregistered (its name still resolves),
                    // and no second error follows. `rebind` disarms it
                    // once the interface is back and up.
                    if sock.iface.is_some() {
                        self.needs_rebind = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => budget -= 1,
                Err(e) => return Err(self.socks[i].err("recvmmsg", e)),
            }
        }
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
/// ring -> bind(protocol): a socket with protocol 0 receives nothing, so no
/// frame is queued before the filter. The ring is made before the bind: the
/// kernel refuses to make one while frames are queued.
fn open_socket(
    iface: Option<String>,
    index: libc::c_int,
    family: IpFamily,
    class: Class,
    prog: &[Insn],
) -> Result<Sock, CaptureError> {
    let where_ = format!(
        "{} ({} {})",
        label(iface.as_deref()),
        family.name(),
        class.name()
    );
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
    Ok(Sock {
        ring: None,
        fd,
        family,
        class,
        iface,
        ifindex: index,
        down_logged: false,
    })
}

#[cfg(test)]
mod tests;
