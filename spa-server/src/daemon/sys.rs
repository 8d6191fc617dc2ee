//! The event loop's own syscalls: the signalfd and poll(2). Kept apart so
//! the loop reads as what it does, not how the kernel is asked.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Blocks SIGTERM, SIGINT and SIGHUP and returns a signalfd for them, so
/// signals arrive as readable events in the poll loop instead of
/// interrupting it. Children (iptables) start with an empty mask: std resets
/// it in `Command::spawn`.
pub(super) fn signal_fd() -> std::io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it,
    // sigprocmask and signalfd only read it. The returned fd is owned here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads one pending signal number from the signalfd, if any.
pub(super) fn read_signal(fd: RawFd) -> Option<i32> {
    let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::uninit();
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reads at most `size` bytes into a buffer of that size; the
    // value is used only when the kernel wrote a whole record.
    let n = unsafe { libc::read(fd, info.as_mut_ptr().cast(), size) };
    if n as usize != size {
        return None;
    }
    // SAFETY: a full record was written above.
    Some(unsafe { info.assume_init() }.ssi_signo as i32)
}

/// poll(2) over `fds` (descriptor, events), up to `timeout` (None =
/// forever); the `revents` of each, non-zero where the descriptor is ready
/// (or in error).
pub(super) fn poll_fds(
    fds: &[(RawFd, i16)],
    timeout: Option<Duration>,
) -> std::io::Result<Vec<i16>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
    };
    // SAFETY: pfds is a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(vec![0; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents).collect())
}
