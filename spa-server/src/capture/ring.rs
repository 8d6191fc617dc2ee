//! The datagram sockets' receive ring (`PACKET_RX_RING`, `TPACKET_V2`,
//! issue 14): the kernel copies each frame that passes the filter into a
//! slot of memory shared with us, in the softirq that received it, and the
//! daemon reads the slots with no system call, no socket buffer and no
//! queue lock per frame. Under a forgery flood that per-frame hand-over was
//! ~45 % of the daemon's time with `recvmmsg` (docs/benchmarks.md "Scale").
//!
//! Why `TPACKET_V2` and not V3: V2 hands each frame over as soon as it is
//! written (its own status word), V3 only when its block retires, which for
//! a lone datagram means a block timer's delay. Why only the datagram
//! sockets: a knock flood costs no AEAD and the knock sockets' queue stays
//! as it was. Why a fixed, small geometry: the ring is resident in the
//! network side (every page is mapped at `mmap`, counted in RSS), so it is
//! [`RING_BYTES`] per datagram socket and no more.
//!
//! Who does what (privilege separation): the privileged side makes the
//! ring ([`setup`], after the filter, before the bind and the lock) because
//! the network side may not call `setsockopt` on a capture socket; the
//! network side maps it ([`Ring::map`]) after receiving the descriptor,
//! knowing the geometry because both are the same binary, and knowing
//! whether there is a ring from `PACKET_VERSION` (V1: no ring, the
//! `recvmmsg` path). Every `unsafe` has its SAFETY note.

use super::sys::{cvt, setsockopt};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// One frame slot: the V2 header (32 bytes), the `sockaddr_ll` and padding
/// put the network header at offset [`NET_AT`] for a cooked socket, so 240
/// bytes of packet fit; a datagram is at most 60 + 8 + 140 = 208 bytes
/// (IPv4 with options; IPv6 is 40 + 8 + 140, the filter walks no extension
/// header), and the datagram sockets' filter passes nothing longer. Five
/// cache lines, so a slot starts on a line.
pub(super) const FRAME_SIZE: usize = 320;
/// Where the kernel puts the network header in a frame of a cooked
/// (`SOCK_DGRAM`) socket: `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)`.
const NET_AT: usize = 80;
/// One block: 64 KiB, a whole number of pages on every page size Linux
/// uses (4, 16 or 64 KiB); frames never cross a block, so the last 256
/// bytes of each block are unused.
const BLOCK_SIZE: usize = 64 << 10;
/// Blocks per ring.
const BLOCK_NR: usize = 2;
/// Frames in one block.
const FRAMES_PER_BLOCK: usize = BLOCK_SIZE / FRAME_SIZE;
/// The ring's memory per datagram socket: 128 KiB, 408 frames, about a
/// millisecond of a saturating flood: what the daemon may be kept off its
/// core (the privileged side and its firewall tool run there too) before
/// the kernel drops. Its waits for the privileged side are covered apart
/// (spill.rs). 256 frames of 512 bytes lost a valid datagram in a flood
/// about once in twenty tries on a busy machine; 612 frames held but cost
/// 128 KiB more of resident memory per socket. The queue it replaces held
/// up to 4 MiB of socket buffers, but its memory was the kernel's, not
/// resident in the daemon: the ring is, and RSS at rest is held within
/// 10 % of before (issue 14, goal 5).
pub(super) const RING_BYTES: usize = BLOCK_SIZE * BLOCK_NR;
/// Frames per ring.
const FRAME_NR: usize = FRAMES_PER_BLOCK * BLOCK_NR;

// The largest datagram fits a frame, and the last frame ends inside the
// mapping: checked when this file compiles.
const _: () = assert!(NET_AT + 60 + 8 + 140 <= FRAME_SIZE);
const _: () = assert!(frame_at(FRAME_NR - 1) + FRAME_SIZE <= RING_BYTES);
const _: () = assert!(FRAME_SIZE % 64 == 0 && FRAME_SIZE % libc::TPACKET_ALIGNMENT == 0);

/// Where frame `i` (< [`FRAME_NR`]) starts in the mapping: frames never
/// cross a block.
const fn frame_at(i: usize) -> usize {
    (i / FRAMES_PER_BLOCK) * BLOCK_SIZE + (i % FRAMES_PER_BLOCK) * FRAME_SIZE
}

/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where the `sockaddr_ll`
/// starts in a frame.
const SLL_AT: usize = (std::mem::size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT - 1)
    & !(libc::TPACKET_ALIGNMENT - 1);
/// Offset of `sll_pkttype` in a frame.
const PKTTYPE_AT: usize = SLL_AT + std::mem::offset_of!(libc::sockaddr_ll, sll_pkttype);

const TPACKET_V1: libc::c_int = libc::tpacket_versions::TPACKET_V1 as libc::c_int;
const TPACKET_V2: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;

/// Set once the privileged side has logged that a ring could not be made.
static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// The privileged side: `PACKET_VERSION` V2, then the ring, on a socket
/// that has its filter and is not yet bound. On failure (an old kernel,
/// memory) the socket is put back to V1 with no ring, so it reads through
/// `recvmmsg` as before; that is logged once per process. An error only
/// if the socket could not be put back (it would receive nothing).
pub(super) fn setup(fd: &OwnedFd, at: &str) -> io::Result<()> {
    let req = libc::tpacket_req {
        tp_block_size: BLOCK_SIZE as libc::c_uint,
        tp_block_nr: BLOCK_NR as libc::c_uint,
        tp_frame_size: FRAME_SIZE as libc::c_uint,
        tp_frame_nr: FRAME_NR as libc::c_uint,
    };
    setup_with(fd, at, &req)
}

/// [`setup`] with a given geometry: a test asks for one the kernel
/// refuses, to see the fallback.
fn setup_with(fd: &OwnedFd, at: &str, req: &libc::tpacket_req) -> io::Result<()> {
    let made = setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2)
        .and_then(|()| setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, req));
    let Err(e) = made else {
        return Ok(());
    };
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V1)?;
    if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            on = at,
            error = %e,
            "capture: no receive ring (PACKET_RX_RING), reading datagrams with recvmmsg instead: \
             slower under a flood; needs Linux >= 2.6.27 and {} KiB of kernel memory per socket",
            RING_BYTES >> 10
        );
    }
    Ok(())
}

/// Frames a ring may hold in user space while the daemon waits for the
/// privileged side ([`Ring::spill`]): 8,192, about what the 4 MiB receive
/// buffer of a socket without a ring held. Beyond that the ring fills and
/// the kernel drops (and counts) as it did with the buffer.
const SPILL_MAX: usize = 8192;

/// The ring of one datagram socket, mapped into this process; unmapped on
/// drop. Frames are read in order from `next`, as the kernel fills them,
/// after any frames spilled out of the ring earlier.
#[derive(Debug)]
pub(super) struct Ring {
    slots: Slots,
    spill: Spill,
}

/// The mapping itself and the next slot to read.
#[derive(Debug)]
struct Slots {
    base: NonNull<u8>,
    next: usize,
}

/// Frames moved out of the ring while the daemon waited for a firewall
/// batch (issue 14): the ring is 408 frames, under a millisecond of a
/// flood, and a batch takes 2-20 ms. While it is not empty, the ring's new
/// frames join its end before its head is handed out, so the ring cannot
/// overflow while the daemon catches up either. Allocated at the first
/// spill and freed once empty, so it costs nothing at rest.
#[derive(Debug, Default)]
struct Spill {
    frames: VecDeque<Spilled>,
}

/// One frame's bytes (at most what a ring frame holds), its length and
/// `sll_pkttype`.
#[derive(Debug)]
struct Spilled {
    bytes: [u8; SPILLED_MAX],
    len: u16,
    pkttype: u8,
}

/// The most of a frame a spill keeps: what a ring frame holds after the
/// kernel's header.
const SPILLED_MAX: usize = FRAME_SIZE - NET_AT;

// SAFETY: the mapping is owned by this value alone (nothing else holds its
// address), so moving it to another thread moves the only way to reach it.
unsafe impl Send for Slots {}

impl Ring {
    /// Maps `fd`'s ring if it has one (`PACKET_VERSION` is V2: the
    /// privileged side made it); `Ok(None)` for a socket without (V1). A
    /// socket that has a ring which cannot be mapped is an error: its
    /// frames go to the ring only, `recvmmsg` would never see one.
    pub(super) fn map(fd: &OwnedFd) -> io::Result<Option<Ring>> {
        let mut version: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `version` is writable for `len` bytes.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_VERSION,
                (&mut version as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        if version != TPACKET_V2 {
            return Ok(None);
        }
        // SAFETY: a fresh shared mapping of the socket's ring, at an
        // address the kernel chooses; the result is checked below. The
        // kernel refuses (EINVAL) a length other than the ring's.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RING_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(Some(Ring {
            slots: Slots { base, next: 0 },
            spill: Spill::default(),
        }))
    }

    /// Copies up to `data.len() / slot` frames (at most
    /// [`super::sys::MAX_BATCH`]) into `slot`-byte pieces of `data`, in
    /// order: spilled frames first, then ready frames of the ring, each
    /// handed back to the kernel at once; pushes each frame's (length,
    /// `sll_pkttype`) onto `out`; returns how many. 0: nothing spilled and
    /// the next slot is still the kernel's. A copy, not a borrow of the
    /// slot: a frame is ~200 bytes, and the slot is free again before the
    /// verdict runs, so a slow verdict never holds the ring.
    pub(super) fn recv_batch(
        &mut self,
        data: &mut [u8],
        slot: usize,
        out: &mut Vec<(usize, u8)>,
    ) -> usize {
        if slot == 0 {
            return 0;
        }
        if !self.spill.frames.is_empty() {
            // Catching up after a wait: the ring's newest frames go behind
            // the spilled ones first, so neither order nor the ring is lost.
            self.spill();
        }
        let mut got = 0;
        for piece in data.chunks_exact_mut(slot).take(super::sys::MAX_BATCH) {
            let taken = match self.spill.take() {
                Some(f) => {
                    let len = usize::from(f.len).min(slot).min(SPILLED_MAX);
                    piece[..len].copy_from_slice(&f.bytes[..len]);
                    Some((len, f.pkttype))
                }
                None => self.slots.pop(|bytes, pkttype| {
                    let len = bytes.len().min(slot);
                    piece[..len].copy_from_slice(&bytes[..len]);
                    (len, pkttype)
                }),
            };
            let Some(frame) = taken else {
                break;
            };
            out.push(frame);
            got += 1;
        }
        got
    }

    /// Moves every ready frame of the ring into user space (up to
    /// [`SPILL_MAX`] unread), handing the slots back to the kernel, so the
    /// ring does not overflow while the daemon waits for the privileged
    /// side. Returns how many frames moved; 0 also when the spill is full.
    pub(super) fn spill(&mut self) -> usize {
        let mut moved = 0;
        while self.spill.frames.len() < SPILL_MAX {
            let spill = &mut self.spill;
            if self
                .slots
                .pop(|bytes, pkttype| spill.push(bytes, pkttype))
                .is_none()
            {
                break;
            }
            moved += 1;
        }
        moved
    }

    /// Frames spilled and not yet handed out: poll(2) cannot see them.
    pub(super) fn has_spilled(&self) -> bool {
        !self.spill.frames.is_empty()
    }
}

impl Slots {
    /// The next ready frame, if any: `f` sees its network-layer bytes
    /// (bounds checked, whatever the kernel's header says) and its packet
    /// type, then the slot goes back to the kernel.
    fn pop<T>(&mut self, f: impl FnOnce(&[u8], u8) -> T) -> Option<T> {
        let at = frame_at(self.next);
        // SAFETY: `at` + FRAME_SIZE <= RING_BYTES (next < FRAME_NR), so `frame` is
        // inside the mapping, which lives as long as `self`.
        let frame = unsafe { self.base.as_ptr().add(at) };
        // SAFETY: the status word is the frame's first 4 bytes, aligned
        // (frames start on 64-byte lines of a page-aligned mapping); the
        // kernel writes it concurrently, hence an atomic. Acquire pairs
        // with the kernel's barrier before it sets TP_STATUS_USER, so the
        // frame's header and bytes are visible once it is seen.
        let status = unsafe { &*frame.cast::<AtomicU32>() };
        if status.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        let after = (self.next + 1) % FRAME_NR;
        // SAFETY: `after` < FRAME_NR: inside the mapping.
        prefetch_frame(unsafe { self.base.as_ptr().add(frame_at(after)) });
        // SAFETY: the frame is ours until we store TP_STATUS_KERNEL: the
        // kernel does not write it meanwhile. The header is in bounds and
        // read unaligned-safe; the pkttype byte is in bounds.
        let (hdr, pkttype) = unsafe {
            (
                std::ptr::read_unaligned(frame.cast::<libc::tpacket2_hdr>()),
                *frame.add(PKTTYPE_AT),
            )
        };
        // Checked, not trusted: whatever the header says, the bytes stay
        // inside this frame.
        let net = usize::from(hdr.tp_net).min(FRAME_SIZE);
        let len = usize::try_from(hdr.tp_snaplen)
            .unwrap_or(0)
            .min(FRAME_SIZE - net);
        // SAFETY: net + len <= FRAME_SIZE (above): inside this frame, which
        // the kernel leaves alone until the store below; the slice does
        // not outlive `f`.
        let bytes = unsafe { std::slice::from_raw_parts(frame.add(net), len) };
        let out = f(bytes, pkttype);
        status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = after;
        Some(out)
    }
}

impl Spill {
    /// Keeps what a ring frame can hold ([`SPILLED_MAX`]: all of it, since
    /// `pop` bounds the bytes by the frame).
    fn push(&mut self, bytes: &[u8], pkttype: u8) {
        let len = bytes.len().min(SPILLED_MAX);
        let mut f = Spilled {
            bytes: [0; SPILLED_MAX],
            len: len as u16,
            pkttype,
        };
        f.bytes[..len].copy_from_slice(&bytes[..len]);
        self.frames.push_back(f);
    }

    /// The oldest spilled frame; the memory is freed once every frame is
    /// read, so a flood leaves nothing resident behind.
    fn take(&mut self) -> Option<Spilled> {
        let f = self.frames.pop_front();
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
        f
    }
}

/// The 64-byte lines of a frame: its header and a datagram (network header
/// at 80, at most 208 bytes) fill 0..288 of its 320.
#[cfg(target_arch = "x86_64")]
const PREFETCH_LINES: usize = 5;

/// Asks for the next frame's cache lines while this one is judged: the
/// kernel wrote them on the sender's core, and the copy out of the ring
/// waited for them (~16 % of the daemon under a flood, docs/benchmarks.md).
fn prefetch_frame(frame: *const u8) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..PREFETCH_LINES {
        // SAFETY: a prefetch is a hint that never faults; the address is
        // inside the mapping (line * 64 < FRAME_SIZE).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                frame.add(line * 64).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = frame;
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: `base` is the start of a RING_BYTES mapping made in
        // `map`, unmapped once, here; nothing borrows it past `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), RING_BYTES) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A datagram-class packet socket as the privileged side makes one:
    /// protocol 0 (receives nothing), not bound. Needs CAP_NET_RAW.
    fn packet_socket() -> OwnedFd {
        // SAFETY: plain syscall with constant arguments; checked below.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(
            raw >= 0,
            "socket(AF_PACKET): {} (run as root)",
            io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor nothing else owns.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }

    /// The ring as made, and the fallback when the kernel refuses it: the
    /// socket is back at V1 with no ring, so the network side maps nothing
    /// and reads it with `recvmmsg` (as the knock sockets are read).
    #[test]
    fn a_refused_ring_falls_back_to_the_socket_queue() {
        let fd = packet_socket();
        setup(&fd, "test").expect("ring made");
        assert!(Ring::map(&fd).expect("mapped").is_some(), "V2 with a ring");

        let fd = packet_socket();
        let refused = libc::tpacket_req {
            tp_block_size: BLOCK_SIZE as libc::c_uint,
            tp_block_nr: BLOCK_NR as libc::c_uint,
            tp_frame_size: FRAME_SIZE as libc::c_uint,
            // Not blocks x frames per block: the kernel says EINVAL.
            tp_frame_nr: FRAME_NR as libc::c_uint + 1,
        };
        setup_with(&fd, "test", &refused).expect("fallback, not an error");
        assert!(
            Ring::map(&fd).expect("no ring, no error").is_none(),
            "back at V1"
        );
    }
}
