//! Keeping the receive rings from overflowing while the daemon waits for
//! the privileged side (issue 14).
//!
//! A datagram socket's ring is its whole queue: 408 frames, under a
//! millisecond of a saturating flood, where the 4 MiB receive buffer it
//! replaced held several milliseconds. A firewall batch through the
//! privileged side takes 2-20 ms, and a client's next datagram (its close,
//! or `--wait`'s resend) is sent exactly then, when its port has just
//! opened. With nothing reading the ring meanwhile, that datagram was lost
//! 3 times in 20 under a flood (docs/benchmarks.md "Scale").
//!
//! So the wait for a reply is not a blocking read: [`Spiller::wait_readable`]
//! polls the privileged side's socket and the rings, and moves whatever the
//! rings hold into user space (bounded, freed once read) until the reply is
//! there. The capture hands the spilled frames out first, in order. Nothing
//! is judged during the wait: the engine is in the middle of a decision.

use super::ring::Ring;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

/// One ring and the socket it belongs to.
pub(super) type Entry = (Arc<OwnedFd>, Arc<Mutex<Ring>>);

/// The capture's rings as the [`Spiller`] sees them: the capture rewrites
/// the list whenever its sockets change.
pub(super) type Shared = Arc<Mutex<Vec<Entry>>>;

/// Waits for the privileged side's reply while draining the rings; given
/// to [`crate::privsep::Remote`] by the daemon. Clones share the rings.
#[derive(Debug, Clone)]
pub struct Spiller {
    pub(super) rings: Shared,
}

impl Spiller {
    /// Returns once `fd` is readable (or in error: the read that follows
    /// reports it), having moved ring frames into user space meanwhile. A
    /// ring whose socket poll flags but which yields nothing (an error on
    /// the socket, or its spill full) is left out of the rest of this wait,
    /// so the wait never spins.
    pub fn wait_readable(&self, fd: RawFd) -> io::Result<()> {
        let rings: Vec<Entry> = self.rings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut live: Vec<bool> = vec![true; rings.len()];
        let t0 = std::time::Instant::now();
        let mut total = 0usize;
        let mut wakes = 0usize;
        // Bounded: each turn either returns, or moves at least one frame,
        // or takes a ring out of the set; the reply ends it.
        loop {
            let mut pfds = vec![libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            let mut which = Vec::new();
            for (k, (sock, _)) in rings.iter().enumerate() {
                if live[k] {
                    pfds.push(libc::pollfd {
                        fd: sock.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    which.push(k);
                }
            }
            // SAFETY: `pfds` is a valid array of that many pollfd.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            wakes += 1;
            if pfds[0].revents != 0 {
                if total > 0 {
                    tracing::debug!(
                        frames = total,
                        wakes,
                        us = t0.elapsed().as_micros() as u64,
                        "capture frames kept in user space while the privileged side answered"
                    );
                }
                return Ok(());
            }
            for (p, &k) in pfds[1..].iter().zip(&which) {
                if p.revents == 0 {
                    continue;
                }
                let moved = rings[k].1.lock().unwrap_or_else(|p| p.into_inner()).spill();
                total += moved;
                if moved == 0 {
                    live[k] = false;
                }
            }
        }
    }
}
