//! The host's own addresses, so that knocks only passing through do not count
//! and no grant is ever scoped to the host itself (`address::usable`).
//!
//! "Own" means what the kernel delivers locally: every interface address and
//! each IPv4 subnet's broadcast address (the kernel's `local` routing table
//! holds both).
//!
//! Why: a packet socket sees every packet that reaches an interface,
//! including what a router forwards to the hosts behind it. A knock
//! sequence aimed at one of those hosts must not open a port here. knockd
//! has the same rule (its pcap filter says `dst host` of its interface).
//! SPA datagrams need no such check: the server id inside the authenticated
//! plaintext already binds each one to this server.
//!
//! Addresses change (DHCP, SLAAC), so the set is read again (getifaddrs,
//! one netlink dump) when a knock names a destination it lacks, at most once
//! per [`REFRESH_EVERY`]: a flood of knocks to foreign addresses costs one
//! dump per second, and a new address is honoured within a second.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Shortest time between two reads of the address list.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The set, and when it was last read (`None`: never, so the first
/// lookup reads it).
/// How the list is read: getifaddrs here, or a question to the privileged
/// side (the sandboxed network side may not open a netlink socket).
pub type Reader = Box<dyn FnMut() -> io::Result<HashSet<IpAddr>> + Send>;

#[derive(Default)]
pub struct LocalAddrs {
    set: HashSet<IpAddr>,
    read_at: Option<Instant>,
    reader: Option<Reader>,
}

impl std::fmt::Debug for LocalAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAddrs")
            .field("set", &self.set)
            .field("read_at", &self.read_at)
            .finish()
    }
}

impl LocalAddrs {
    /// A set filled from `addrs`, as if read at `now`.
    #[cfg(test)]
    pub fn from_addrs(addrs: impl IntoIterator<Item = IpAddr>, now: Instant) -> LocalAddrs {
        LocalAddrs {
            set: addrs.into_iter().collect(),
            read_at: Some(now),
            reader: None,
        }
    }

    /// Is `dst` one of ours? On a miss, reads the list again through `read`
    /// if the last read is [`REFRESH_EVERY`] old. A failed read keeps the
    /// old set (and is retried a second later): a knock is then judged by
    /// the addresses known so far.
    pub fn contains_with(
        &mut self,
        dst: IpAddr,
        now: Instant,
        read: impl FnOnce() -> io::Result<HashSet<IpAddr>>,
    ) -> bool {
        if self.set.contains(&dst) {
            return true;
        }
        let stale = self
            .read_at
            .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH_EVERY);
        if !stale {
            return false;
        }
        self.read_at = Some(now);
        match read() {
            Ok(set) => {
                if set != self.set {
                    tracing::info!(addresses = set.len(), "local addresses re-read");
                }
                self.set = set;
            }
            Err(e) => tracing::warn!("cannot list local addresses (getifaddrs): {e}"),
        }
        self.set.contains(&dst)
    }

    /// A set read through `reader` instead of getifaddrs.
    pub fn with_reader(reader: Reader) -> LocalAddrs {
        LocalAddrs {
            reader: Some(reader),
            ..LocalAddrs::default()
        }
    }

    /// [`LocalAddrs::contains_with`] reading the host's interfaces (or
    /// through the reader given to [`LocalAddrs::with_reader`]).
    pub fn contains(&mut self, dst: IpAddr, now: Instant) -> bool {
        match self.reader.take() {
            Some(mut r) => {
                let hit = self.contains_with(dst, now, &mut r);
                self.reader = Some(r);
                hit
            }
            None => self.contains_with(dst, now, read_local_addrs),
        }
    }
}

/// Every address configured on an interface of this network namespace
/// (getifaddrs(3)), IPv4-mapped IPv6 included as the kernel reports them,
/// plus the broadcast address of every IPv4 subnet shorter than /31.
pub fn read_local_addrs() -> io::Result<HashSet<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success we own the list and
    // free it below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = HashSet::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive
        // until freeifaddrs; ifa_addr and ifa_netmask are null or point to
        // a sockaddr whose sa_family says which struct it is.
        unsafe {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        let a = u32::from_be(sin.sin_addr.s_addr);
                        out.insert(IpAddr::V4(Ipv4Addr::from(a)));
                        if !ifa.ifa_netmask.is_null()
                            && i32::from((*ifa.ifa_netmask).sa_family) == libc::AF_INET
                        {
                            let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                            let mask = u32::from_be(m.sin_addr.s_addr);
                            if mask.count_zeros() >= 2 {
                                out.insert(IpAddr::V4(Ipv4Addr::from(a | !mask)));
                            }
                        }
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.insert(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_miss_rereads_at_most_once_per_second() {
        let t0 = Instant::now();
        let mut l = LocalAddrs::from_addrs([ip("198.18.0.1")], t0);
        let reads = std::cell::Cell::new(0);
        let read = |set: &[&str]| {
            reads.set(reads.get() + 1);
            Ok(set.iter().map(|s| ip(s)).collect())
        };
        assert!(l.contains_with(ip("198.18.0.1"), t0, || read(&[])));
        // A foreign address within the second: no read, not ours.
        let soon = t0 + Duration::from_millis(500);
        assert!(!l.contains_with(ip("198.18.0.9"), soon, || read(&["198.18.0.9"])));
        assert_eq!(reads.get(), 0);
        // A second later the new address is read and honoured.
        let t1 = t0 + REFRESH_EVERY;
        assert!(l.contains_with(ip("198.18.0.9"), t1, || read(&["198.18.0.9"])));
        assert_eq!(reads.get(), 1);
        // The old one went away with that read.
        assert!(!l.contains_with(ip("198.18.0.1"), t1, || read(&[])));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn a_failed_read_keeps_the_old_set() {
        let t0 = Instant::now();
        let mut l = LocalAddrs::from_addrs([ip("2001:2::1")], t0);
        let t1 = t0 + REFRESH_EVERY;
        assert!(!l.contains_with(ip("2001:2::9"), t1, || Err(io::Error::other("boom"))));
        assert!(l.contains_with(ip("2001:2::1"), t1, || Err(io::Error::other("boom"))));
    }

    #[test]
    fn reads_this_namespace() {
        let set = read_local_addrs().expect("getifaddrs");
        assert!(set.contains(&ip("127.0.0.1")), "{set:?}");
        // lo is 127.0.0.1/8: its subnet broadcast is the kernel's too.
        assert!(set.contains(&ip("127.255.255.255")), "{set:?}");
    }
}
