//! The syscall edge of the capture: packet-socket options, bind, one
//! non-blocking batched receive, interface lookups. Every `unsafe` has its SAFETY
//! note; nothing here knows about classes, specs or the daemon.

use super::bpf::Insn;
use spa_proto::IpFamily;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Receive queue per socket, so a burst does not push out a legit datagram.
const RCVBUF: libc::c_int = 4 << 20;

/// The index of `name` at open, before any socket exists (still root).
pub(super) fn ifindex(name: &str) -> Option<libc::c_int> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    libc::c_int::try_from(index).ok().filter(|i| *i > 0)
}

/// An `ifreq` naming `name`, or None for a name the kernel cannot hold.
fn ifreq(name: &str) -> Option<libc::ifreq> {
    // SAFETY: all-zero bytes are a valid `ifreq` (a name and a union of
    // plain integers and pointers).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return None;
    }
    for (dst, &b) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = b as libc::c_char;
    }
    Some(req)
}

/// The index of `name` through SIOCGIFINDEX on one of our own sockets.
/// Not `if_nametoindex`: that opens a socket of its own, which the network
/// side's seccomp filter forbids, so a re-created interface could never be
/// found again after the privilege drop.
pub(super) fn ifindex_on(fd: &OwnedFd, name: &str) -> Option<libc::c_int> {
    let mut req = ifreq(name)?;
    // SAFETY: `req` is a valid, NUL-terminated ifreq that outlives the call;
    // SIOCGIFINDEX writes only `ifr_ifindex` inside it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) };
    if r != 0 {
        return None;
    }
    // SAFETY: after a successful SIOCGIFINDEX the union holds the index.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    (index > 0).then_some(index)
}

/// IFF_UP of `name`, through SIOCGIFFLAGS on one of our own sockets.
/// An error (the interface vanished meanwhile) counts as down.
pub(super) fn is_up(fd: &OwnedFd, name: &str) -> bool {
    let Some(mut req) = ifreq(name) else {
        return false;
    };
    // SAFETY: `req` is a valid, NUL-terminated ifreq that outlives the call;
    // SIOCGIFFLAGS writes only `ifr_flags` inside it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    // SAFETY: after a successful SIOCGIFFLAGS the union holds the flags.
    r == 0 && (i32::from(unsafe { req.ifr_ifru.ifru_flags }) & libc::IFF_UP) != 0
}

pub(super) fn ethertype(family: IpFamily) -> u16 {
    match family {
        IpFamily::V4 => libc::ETH_P_IP as u16,
        IpFamily::V6 => libc::ETH_P_IPV6 as u16,
    }
}

pub(super) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(super) fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live T of the size passed; the kernel copies it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN; without
/// it, SO_RCVBUF gives as much as rmem_max allows.
pub(super) fn set_rcvbuf(fd: &OwnedFd) -> io::Result<()> {
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF).is_ok() {
        return Ok(());
    }
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF)
}

pub(super) fn attach(fd: &OwnedFd, prog: &[Insn]) -> io::Result<()> {
    let mut filter: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        filter: filter.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `filter` outlives it.
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

pub(super) fn bind(fd: &OwnedFd, family: IpFamily, index: libc::c_int) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = ethertype(family).to_be();
    sll.sll_ifindex = index;
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Frames one [`recv_batch`] call reads at most.
pub(super) const MAX_BATCH: usize = 64;

/// One non-blocking `recvmmsg` of up to `data.len() / slot` frames (at
/// most [`MAX_BATCH`]), each into its own `slot`-byte piece of `data`, in
/// order; pushes each frame's (length, `sll_pkttype`) onto `out` and
/// returns how many. `Ok(0)` when nothing is queued. One system call per
/// batch instead of one per frame: under a flood the per-frame syscall was
/// a large part of the daemon's cost (docs/benchmarks.md, issue 14).
pub(super) fn recv_batch(
    fd: &OwnedFd,
    data: &mut [u8],
    slot: usize,
    out: &mut Vec<(usize, u8)>,
) -> io::Result<usize> {
    if slot == 0 {
        return Ok(0);
    }
    // SAFETY: sockaddr_ll, iovec and mmsghdr are plain data; all-zero is a
    // valid value of each (null pointers, zero lengths).
    let mut addrs: [libc::sockaddr_ll; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut iov: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut n = 0;
    for (i, piece) in data.chunks_exact_mut(slot).take(MAX_BATCH).enumerate() {
        iov[i] = libc::iovec {
            iov_base: piece.as_mut_ptr().cast(),
            iov_len: slot,
        };
        n = i + 1;
    }
    for ((h, a), v) in hdrs
        .iter_mut()
        .zip(addrs.iter_mut())
        .zip(iov.iter_mut())
        .take(n)
    {
        h.msg_hdr.msg_name = (a as *mut libc::sockaddr_ll).cast();
        h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers point at `n` live iovecs, each at its
    // own `slot` bytes of `data`, and at `n` live sockaddr_ll with their
    // size; all outlive the call. No timeout (null): MSG_DONTWAIT.
    let got = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        return Err(e);
    }
    let got = usize::try_from(got).unwrap_or(0).min(n);
    for (h, a) in hdrs.iter().zip(addrs.iter()).take(got) {
        out.push(((h.msg_len as usize).min(slot), a.sll_pkttype));
    }
    Ok(got)
}

/// PACKET_STATISTICS: reading resets the kernel's counters.
pub(super) fn packet_stats(fd: &OwnedFd) -> io::Result<libc::tpacket_stats> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `st` is writable for `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    })?;
    Ok(st)
}
