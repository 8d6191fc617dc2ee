//! Reading frames out of the capture sockets: one batch per class, the
//! sockets of a class in turns, a datagram socket's receive ring before any
//! system call, and a system call only on a socket poll(2) flagged.
//!
//! Why the flags (issue 14): under a flood, `recvmmsg` on the empty knock
//! sockets and on the empty rings (how a link error is read) at every turn
//! was ~20 % of the daemon's time. Now a socket without a ring is read
//! when poll(2) flagged it and until a read comes back short; a ring is
//! memory, looked at every turn, and its socket is read only when poll(2)
//! reports an error on it.

use super::parse;
use super::sys::recv_batch;
use super::{class_index, is_link_error, Capture, CaptureError, Class, Packet, SLOT};
use spa_proto::IpFamily;
use std::io;

/// Frames one `recv` call reads before returning `Ok(None)`, so a stream of
/// frames that fail `parse` cannot starve the daemon's other work.
const RECV_BUDGET: usize = 256;
/// Frames read in one `recvmmsg` from one socket, after which the next
/// socket of the class gets its turn. Why a batch: one system call per
/// frame was most of the daemon's cost under a flood (issue 14). Why
/// bounded: a flood on one socket must not keep a legit datagram waiting on
/// another (the other family, say) for long. Before the batch this was a
/// streak of 32 `recvfrom` calls on one socket.
pub(super) const BATCH: usize = 32;

/// Frames read by one `recvmmsg` and not yet handed out: every class has
/// its own, so a knock batch never delays a datagram batch.
#[derive(Debug)]
pub(super) struct Batch {
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
    pub(super) fn new() -> Batch {
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

impl Capture {
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
            || self.socks.iter().any(|s| {
                s.ring
                    .as_ref()
                    .is_some_and(|r| r.lock().unwrap_or_else(|p| p.into_inner()).has_spilled())
            })
    }

    /// Which sockets poll(2) flagged, in [`Capture::raw_fds`] order
    /// (`revents` of each): only those are read with a system call.
    pub fn mark_ready(&mut self, revents: &[i16]) {
        for (s, &r) in self.socks.iter_mut().zip(revents) {
            s.flagged = r;
        }
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
            if budget == 0 || idle >= n {
                return Ok(None);
            }
            let turn = &mut self.turns[ci];
            let k = turn.next % n;
            let i = turn.socks[k];
            turn.next = (k + 1) % n;
            match self.fill(ci, i, BATCH.min(budget)) {
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

    /// Reads up to `max` frames of socket `i` into class `ci`'s batch: its
    /// ring (spilled frames first) if it has one, else `recvmmsg` if poll
    /// flagged it. A ring's socket is read with `recvmmsg` only when poll
    /// reported an error on it: that call is how a link error is reported
    /// and cleared (poll flags the socket until then; the ring never shows
    /// it).
    fn fill(&mut self, ci: usize, i: usize, max: usize) -> io::Result<usize> {
        let batch = &mut self.batches[ci];
        batch.frames.clear();
        batch.next = 0;
        batch.sock = i;
        let room = &mut batch.data[..max * SLOT];
        let sock = &mut self.socks[i];
        if let Some(ring) = &sock.ring {
            let mut ring = ring.lock().unwrap_or_else(|p| p.into_inner());
            let got = ring.recv_batch(room, SLOT, &mut batch.frames);
            if got > 0 || sock.flagged & libc::POLLERR == 0 {
                return Ok(got);
            }
            sock.flagged = 0;
            return recv_batch(&sock.fd, room, SLOT, &mut batch.frames);
        }
        if sock.flagged == 0 {
            return Ok(0);
        }
        let got = recv_batch(&sock.fd, room, SLOT, &mut batch.frames);
        if !matches!(got, Ok(n) if n == max) {
            // Drained (or in error, reported now): poll says when to look
            // again.
            sock.flagged = 0;
        }
        got
    }
}
