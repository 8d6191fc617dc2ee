//! One frame with one descriptor beside it (SCM_RIGHTS), both ways: how a
//! capture socket the privileged side made reaches the network side, which
//! may not create sockets. Only [`super::proto::Reply::Capture`] carries a
//! descriptor; every other frame goes as plain bytes.
//!
//! On a stream socket the descriptor rides with the first byte of the data
//! it was sent with, so the receiver reads the frame's length prefix with
//! recvmsg(2) and the rest as usual. Requests and replies strictly
//! alternate, so no other frame's bytes can be in between.

use super::proto::MAX_FRAME;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Room for a few descriptors: more than one is an error, but every one
/// that arrives is taken (and closed), none left in the kernel's queue.
const MAX_FDS: usize = 4;

/// Writes `frame` (length prefix included) with `fd` beside it.
pub fn send_with_fd(sock: &mut UnixStream, frame: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let fd_bytes = std::mem::size_of_val(&fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    // u64 elements: the control buffer must be aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` writable, aligned bytes, so the
    // first header fits; its data area holds exactly `fds`.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), fd_bytes);
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The descriptor went with the first byte; the rest is plain data.
    sock.write_all(frame.get(sent as usize..).unwrap_or(&[]))
}

/// Reads one frame's content (as [`super::proto::read_frame`]) and the
/// descriptor sent beside it, if any. `Ok(None)` at a clean end of stream.
/// More than one descriptor, or a truncated control message, is an error
/// (every descriptor received is closed).
pub fn recv_with_fd(sock: &mut UnixStream) -> io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    let mut len = [0u8; 4];
    let fd_bytes = MAX_FDS * std::mem::size_of::<libc::c_int>();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: len.as_mut_ptr().cast(),
        iov_len: len.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: iov and control point to live buffers of the sizes given.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed headers; CMSG_NXTHDR stays inside them. Each SCM_RIGHTS
    // descriptor is new in this process and owned by nobody else.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    let raw = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 {
        return Ok(None);
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} descriptor(s) with one frame", fds.len()),
        ));
    }
    sock.read_exact(len.get_mut(n..).unwrap_or(&mut []))?;
    let size = u32::from_be_bytes(len) as usize;
    if size == 0 || size > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {size} bytes"),
        ));
    }
    let mut buf = vec![0u8; size];
    sock.read_exact(&mut buf)?;
    Ok(Some((buf, fds.pop())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privsep::proto::{read_frame, Reply};
    use std::os::fd::AsFd;

    /// One end of another socketpair crosses beside a `Capture` reply and
    /// still talks to its peer.
    #[test]
    fn a_descriptor_crosses_with_its_frame() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let (x, mut y) = UnixStream::pair().unwrap();
        let frame = Reply::Capture { ifindex: 3 }.encode();
        send_with_fd(&mut a, &frame, x.as_fd()).unwrap();
        drop(x);
        let (msg, fd) = recv_with_fd(&mut b).unwrap().unwrap();
        assert_eq!(Reply::decode(&msg), Ok(Reply::Capture { ifindex: 3 }));
        let mut x = UnixStream::from(fd.expect("a descriptor"));
        x.write_all(b"ok").unwrap();
        drop(x);
        let mut got = String::new();
        y.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ok");
        // A plain frame after it: no descriptor, and read_frame still works.
        a.write_all(&Reply::Done.encode()).unwrap();
        let (msg, fd) = recv_with_fd(&mut b).unwrap().unwrap();
        assert_eq!((Reply::decode(&msg), fd.is_none()), (Ok(Reply::Done), true));
        a.write_all(&Reply::Done.encode()).unwrap();
        assert!(read_frame(&mut b).unwrap().is_some());
        drop(a);
        assert!(recv_with_fd(&mut b).unwrap().is_none());
    }
}
