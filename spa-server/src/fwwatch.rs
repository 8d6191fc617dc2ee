//! Noticing a firewall reload without polling (issue 10, item 1).
//!
//! Debian's `/etc/nftables.conf` starts with `flush ruleset`, and
//! `iptables-restore` of the admin's rules replaces the whole filter table:
//! either way our chain, jump or sets are gone and every later open would
//! fail. nf_tables announces every table, chain, rule and set change on the
//! netlink group `NFNLGRP_NFTABLES`, and iptables-nft (Debian's default)
//! goes through nf_tables too, so one socket subscribed to that group sees
//! both. A deletion (or, while the last repair failed, a creation: the
//! admin's table coming back) schedules a check [`SETTLE`] later, so the
//! burst of one reload is one check; the daemon then asks the backend
//! whether our objects are intact and re-installs them if not.
//!
//! With iptables-legacy nothing is announced (it does not use nf_tables):
//! there the first batch that fails because our chain is gone re-installs
//! it and retries (grants.rs), which is also the fallback for everything
//! this watch misses.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long after the first interesting message the check runs: one
/// reload's messages arrive within microseconds of each other.
pub const SETTLE: Duration = Duration::from_millis(100);

const NETLINK_NETFILTER: i32 = 12;
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// NFT_MSG_NEWTABLE, NEWCHAIN, NEWRULE, NEWSET.
const NEW: [u16; 4] = [0, 3, 6, 9];
/// NFT_MSG_DELTABLE, DELCHAIN, DELRULE, DELSET.
const DEL: [u16; 4] = [2, 5, 8, 11];
/// At most this many reads per wake-up: a flood of ruleset changes by
/// someone else must not keep the loop from datagrams.
const MAX_READS: usize = 256;

pub struct FwWatch {
    sock: Option<OwnedFd>,
    due: Option<Instant>,
    /// The last repair failed (e.g. the admin's table was gone): then a
    /// creation is interesting too, as the table may be back.
    pub broken: bool,
}

impl FwWatch {
    /// Subscribes to nf_tables' notifications. Without them (no nf_tables,
    /// no permission) the watch stays idle and the batch fallback remains.
    pub fn open() -> (FwWatch, Option<String>) {
        match subscribe() {
            Ok(fd) => (
                FwWatch {
                    sock: Some(fd),
                    due: None,
                    broken: false,
                },
                None,
            ),
            Err(e) => (
                FwWatch {
                    sock: None,
                    due: None,
                    broken: false,
                },
                Some(e.to_string()),
            ),
        }
    }

    pub fn raw_fd(&self) -> Option<RawFd> {
        self.sock.as_ref().map(|s| s.as_raw_fd())
    }

    /// Reads what is pending; schedules a check when a message concerns
    /// tables, chains, rules or sets (not set elements: grants come and go
    /// as elements) or when messages were lost.
    pub fn on_readable(&mut self) {
        let Some(fd) = self.raw_fd() else { return };
        let mut buf = vec![0u8; 65536];
        for _ in 0..MAX_READS {
            // SAFETY: recv into a buffer of the given length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::EINTR) => continue,
                    // ENOBUFS: the kernel dropped messages; look anyway.
                    _ => {
                        self.schedule();
                        if e.raw_os_error() != Some(libc::ENOBUFS) {
                            return;
                        }
                        continue;
                    }
                }
            }
            if n == 0 {
                return;
            }
            if interesting(&buf[..n as usize], self.broken) {
                self.schedule();
            }
        }
    }

    fn schedule(&mut self) {
        if self.due.is_none() {
            self.due = Some(Instant::now() + SETTLE);
        }
    }

    /// Time until the scheduled check, for the poll timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.due
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True (once) when the scheduled check is due.
    pub fn take_due(&mut self) -> bool {
        match self.due {
            Some(d) if Instant::now() >= d => {
                self.due = None;
                true
            }
            _ => false,
        }
    }
}

fn subscribe() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket/setsockopt calls; the fd is owned on success.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        if libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let group = NFNLGRP_NFTABLES;
        if libc::setsockopt(
            fd,
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            (&group as *const u32).cast(),
            4,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(owned)
    }
}

/// Whether a buffer of netlink messages holds a deletion of a table, chain,
/// rule or set (or, with `new_too`, a creation). Bounded by the buffer;
/// a malformed length ends the walk.
pub fn interesting(mut buf: &[u8], new_too: bool) -> bool {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            return false;
        }
        if ty >> 8 == NFNL_SUBSYS_NFTABLES {
            let msg = ty & 0xff;
            if DEL.contains(&msg) || (new_too && NEW.contains(&msg)) {
                return true;
            }
        }
        let step = (len + 3) & !3;
        buf = buf.get(step..).unwrap_or(&[]);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(subsys: u16, m: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&20u32.to_ne_bytes());
        v.extend_from_slice(&((subsys << 8) | m).to_ne_bytes());
        v.extend_from_slice(&[0u8; 14]);
        v
    }

    #[test]
    fn deletions_are_interesting_elements_are_not() {
        let delrule = msg(NFNL_SUBSYS_NFTABLES, 8);
        let newelem = msg(NFNL_SUBSYS_NFTABLES, 12);
        let delelem = msg(NFNL_SUBSYS_NFTABLES, 14);
        let newrule = msg(NFNL_SUBSYS_NFTABLES, 6);
        assert!(interesting(&delrule, false));
        assert!(!interesting(
            &[newelem.clone(), delelem.clone()].concat(),
            false
        ));
        assert!(interesting(&[newelem, delelem, delrule].concat(), false));
        assert!(!interesting(&newrule, false));
        assert!(interesting(&newrule, true));
        assert!(!interesting(&msg(1, 2), false));
        // Malformed: a length past the buffer, or below a header.
        let mut bad = msg(NFNL_SUBSYS_NFTABLES, 2);
        bad[0] = 200;
        assert!(!interesting(&bad, false));
        assert!(!interesting(&[0u8; 16], false));
        assert!(!interesting(&[1, 2, 3], false));
    }
}
