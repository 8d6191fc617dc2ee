//! Capture sockets made by one process and read by another (privilege
//! separation, docs/design.md "Two processes"). The privileged side builds
//! the socket for one (interface, family, class) with [`open_locked`]: the
//! kernel filter for its own configuration's ports is attached before the
//! bind and then locked (`SO_LOCK_FILTER`), and the descriptor is handed over
//! with SCM_RIGHTS. The network side, which may not create a socket, builds
//! its [`super::Capture`] from such descriptors through an [`Opener`].
//!
//! Why the lock: the network side may call `setsockopt` (its seccomp filter
//! cannot tell one option from another usefully), and a packet socket
//! without a filter sees every IP packet to the host. With the filter
//! locked, the kernel refuses to detach or replace it (EPERM), so a
//! compromised network side holds sockets that pass exactly what the
//! privileged side's configuration lets through, and nothing else.

use super::sys::ifindex;
use super::sys::{bind, ifindex_on, is_up};
use super::{bpf, class_index, open_socket, Capture, CaptureError, CaptureStats, Class};
use super::{Batch, FilterSpec, Sock, Turn};
use spa_proto::IpFamily;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// One capture socket and the interface index it was bound to (0: every
/// interface).
#[derive(Debug)]
pub struct Handed {
    pub fd: OwnedFd,
    pub ifindex: libc::c_int,
}

/// Makes the socket for one interface (`None`: every interface), family and
/// class: in the daemon, a request to the privileged side.
pub type Opener<'a> = dyn FnMut(Option<&str>, IpFamily, Class) -> Result<Handed, CaptureError> + 'a;

/// The privileged side's half: the socket for `iface`, `family`, `class`
/// with the kernel filter of `spec` attached and locked. Fails, naming it,
/// if the interface does not exist.
pub fn open_locked(
    iface: Option<&str>,
    family: IpFamily,
    class: Class,
    spec: &FilterSpec,
) -> Result<Handed, CaptureError> {
    spec.validate()?;
    let prog = bpf::program_for(spec, family, class).map_err(|source| CaptureError::Filter {
        family: family.name(),
        source,
    })?;
    let index = match iface {
        None => 0,
        Some(name) => ifindex(name).ok_or_else(|| CaptureError::NoSuchInterface {
            name: name.to_owned(),
        })?,
    };
    open_socket(iface, index, family, class, &prog, true)
}

impl Capture {
    /// As [`Capture::open`], with every socket made by `open` (under
    /// privilege separation: by the privileged side, its filter locked,
    /// see [`open_locked`]). `spec` is what user space re-checks.
    pub fn open_with(
        interfaces: &[String],
        spec: &FilterSpec,
        open: &mut Opener<'_>,
    ) -> Result<Capture, CaptureError> {
        spec.validate()?;
        let mut targets: Vec<Option<String>> = Vec::new();
        if interfaces.is_empty() {
            targets.push(None);
        }
        for name in interfaces {
            if !targets.iter().any(|n| n.as_deref() == Some(name.as_str())) {
                targets.push(Some(name.clone()));
            }
        }
        let mut socks = Vec::new();
        let mut rings = 0;
        let mut turns: [Turn; 2] = Default::default();
        for iface in targets {
            for class in Class::ALL {
                for family in [IpFamily::V4, IpFamily::V6] {
                    let h = open(iface.as_deref(), family, class)?;
                    let ring = map_ring(&h.fd, iface.as_deref(), family, class)?;
                    rings += usize::from(ring.is_some());
                    turns[class_index(class)].socks.push(socks.len());
                    socks.push(Sock {
                        ring: ring.map(|r| Arc::new(Mutex::new(r))),
                        fd: Arc::new(h.fd),
                        family,
                        class,
                        iface: iface.clone(),
                        ifindex: h.ifindex,
                        down_logged: false,
                        flagged: libc::POLLIN,
                    });
                }
            }
        }
        tracing::info!(
            sockets = socks.len(),
            rings,
            spa_port = spec.spa_port,
            knock_tcp = spec.knock_tcp.len(),
            knock_udp = spec.knock_udp.len(),
            "capture open"
        );
        let capture = Capture {
            socks,
            spec: spec.clone(),
            batches: [Batch::new(), Batch::new()],
            turns,
            stats: CaptureStats::default(),
            needs_rebind: false,
            shared: Default::default(),
        };
        capture.publish_rings();
        Ok(capture)
    }

    /// Takes `new`'s sockets and spec (a reload), keeping the counters and
    /// the list the [`super::Spiller`] reads (now `new`'s rings). Frames
    /// the old sockets held, spilled or not, go with them.
    pub fn replace_with(&mut self, new: Capture) {
        let stats = self.stats();
        let shared = self.shared.clone();
        *self = new;
        self.stats = stats;
        self.shared = shared;
        self.publish_rings();
    }

    /// As [`Capture::rebind`], but a moved interface gets new sockets from
    /// `open` instead of a `bind` of the old ones: under privilege
    /// separation the network side may not bind, and the privileged side
    /// makes the sockets (filter attached and locked).
    pub fn reopen_moved(&mut self, open: &mut Opener<'_>) -> Result<Vec<String>, CaptureError> {
        self.follow(Some(open))
    }

    pub(super) fn follow(
        &mut self,
        mut open: Option<&mut Opener<'_>>,
    ) -> Result<Vec<String>, CaptureError> {
        let mut missing: Vec<String> = Vec::new();
        let mut down = false;
        let mut reopened = false;
        for s in &mut self.socks {
            let Some(name) = s.iface.clone() else {
                continue;
            };
            match ifindex_on(&s.fd, &name) {
                None => {
                    if !missing.contains(&name) {
                        missing.push(name);
                    }
                    continue;
                }
                Some(index) if index != s.ifindex => {
                    let old = s.ifindex;
                    match open.as_mut() {
                        None => {
                            bind(&s.fd, s.family, index).map_err(|e| s.err("bind", e))?;
                            s.ifindex = index;
                            tracing::info!(interface = %name, family = s.family.name(), old, new = index, "capture re-bound to re-created interface");
                        }
                        Some(open) => {
                            let h = open(Some(&name), s.family, s.class)?;
                            // The old ring is unmapped before its socket
                            // closes; the new socket's is mapped.
                            s.ring = map_ring(&h.fd, Some(&name), s.family, s.class)?
                                .map(|r| Arc::new(Mutex::new(r)));
                            s.fd = Arc::new(h.fd);
                            s.flagged = libc::POLLIN;
                            reopened = true;
                            s.ifindex = h.ifindex;
                            tracing::info!(interface = %name, family = s.family.name(), class = s.class.name(), old, new = h.ifindex, "capture re-opened on re-created interface");
                        }
                    }
                }
                Some(_) => {}
            }
            down |= !is_up(&s.fd, &name);
        }
        self.needs_rebind = down || !missing.is_empty();
        if reopened {
            self.publish_rings();
        }
        Ok(missing)
    }
}

/// The receive ring of a socket just received (or made), mapped: `None`
/// when it has none (a knock socket, or the privileged side fell back to
/// `recvmmsg`). A ring that exists and cannot be mapped is an error: the
/// socket would receive nothing.
fn map_ring(
    fd: &OwnedFd,
    iface: Option<&str>,
    family: IpFamily,
    class: Class,
) -> Result<Option<super::ring::Ring>, CaptureError> {
    super::ring::Ring::map(fd).map_err(|source| CaptureError::Syscall {
        call: "mmap(PACKET_RX_RING)",
        interface: format!(
            "{} ({} {}; the address space limit, RLIMIT_AS, must leave {} KiB per datagram socket)",
            super::label(iface),
            family.name(),
            class.name(),
            super::ring::RING_BYTES >> 10
        ),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// SO_DETACH_FILTER on `fd`: Ok, or the errno.
    fn detach(fd: &OwnedFd) -> Result<(), i32> {
        let zero: libc::c_int = 0;
        // SAFETY: plain setsockopt with a live int of the size passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DETACH_FILTER,
                (&zero as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    }

    /// What the privileged side hands over keeps its filter: whoever holds
    /// the descriptor can neither detach nor replace it. (Needs
    /// CAP_NET_RAW, as the e2e tests do; skipped without it.)
    #[test]
    fn a_handed_socket_cannot_lose_its_filter() {
        let spec = FilterSpec::v1(62201);
        let h = match open_locked(None, IpFamily::V4, Class::Spa, &spec) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("skipped (no CAP_NET_RAW?): {e}");
                return;
            }
        };
        assert_eq!(h.ifindex, 0);
        assert_eq!(detach(&h.fd), Err(libc::EPERM), "a locked filter came off");
        let prog = bpf::program_for(&spec, IpFamily::V4, Class::Knock).unwrap();
        let e = super::super::sys::attach(&h.fd, &prog).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EPERM),
            "a locked filter was replaced"
        );
        match open_locked(Some("spa-no-such0"), IpFamily::V6, Class::Knock, &spec) {
            Err(CaptureError::NoSuchInterface { name }) => assert_eq!(name, "spa-no-such0"),
            other => panic!("{other:?}"),
        }
    }
}
