//! Which addresses a grant may be for: the one check shared by datagrams
//! and knocks.
//!
//! Why: a grant is an ACCEPT rule scoped to one source address. For some
//! addresses that rule means something else than "let this client in":
//! loopback or the host's own address lets local processes (or a spoofed
//! packet the kernel takes for local) reach the port; a broadcast, multicast
//! or reserved address is never a real client and only makes rules nobody
//! should have; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4
//! host under a second name, which would give the same client two grants the
//! firewall writes as one rule. So every address is canonicalised here, once,
//! and refused when it cannot be a remote client.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address cannot receive a grant. `code()` is the stable name the
/// log line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Unspecified,
    Loopback,
    Broadcast,
    Multicast,
    LinkLocal,
    /// 240.0.0.0/4 (and 0.0.0.0/8 beyond 0.0.0.0 is `Unspecified`).
    Reserved,
    /// `::a.b.c.d`, deprecated and routed nowhere.
    Ipv4Compatible,
    /// One of this host's addresses, or a local subnet's broadcast address.
    Local,
}

impl Unusable {
    pub fn code(self) -> &'static str {
        match self {
            Unusable::Unspecified => "unspecified",
            Unusable::Loopback => "loopback",
            Unusable::Broadcast => "broadcast",
            Unusable::Multicast => "multicast",
            Unusable::LinkLocal => "link_local",
            Unusable::Reserved => "reserved",
            Unusable::Ipv4Compatible => "ipv4_compatible",
            Unusable::Local => "local",
        }
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unusable::Unspecified => "an unspecified address",
            Unusable::Loopback => "a loopback address",
            Unusable::Broadcast => "a broadcast address",
            Unusable::Multicast => "a multicast address",
            Unusable::LinkLocal => "a link-local address",
            Unusable::Reserved => "a reserved address (240.0.0.0/4)",
            Unusable::Ipv4Compatible => "an IPv4-compatible IPv6 address (::a.b.c.d)",
            Unusable::Local => "this host's own address or a local broadcast",
        })
    }
}

/// The canonical form of `addr` (IPv4-mapped IPv6 → IPv4), or why no grant
/// may be scoped to it. `is_local` answers "is this one of the host's own
/// addresses or a local subnet's broadcast?" (see `capture::local`); it is
/// asked last, only for addresses that pass every fixed check.
pub fn usable(addr: IpAddr, is_local: impl FnOnce(IpAddr) -> bool) -> Result<IpAddr, Unusable> {
    let addr = addr.to_canonical();
    match addr {
        IpAddr::V4(a) => check_v4(a)?,
        IpAddr::V6(a) => check_v6(a)?,
    }
    if is_local(addr) {
        return Err(Unusable::Local);
    }
    Ok(addr)
}

fn check_v4(a: Ipv4Addr) -> Result<(), Unusable> {
    let o = a.octets();
    if o[0] == 0 {
        // 0.0.0.0/8: "this network", a source only, never a client.
        Err(Unusable::Unspecified)
    } else if a.is_loopback() {
        Err(Unusable::Loopback)
    } else if a.is_broadcast() {
        Err(Unusable::Broadcast)
    } else if a.is_multicast() {
        Err(Unusable::Multicast)
    } else if a.is_link_local() {
        Err(Unusable::LinkLocal)
    } else if o[0] >= 240 {
        Err(Unusable::Reserved)
    } else {
        Ok(())
    }
}

fn check_v6(a: Ipv6Addr) -> Result<(), Unusable> {
    let s = a.segments();
    if a.is_unspecified() {
        Err(Unusable::Unspecified)
    } else if a.is_loopback() {
        Err(Unusable::Loopback)
    } else if a.is_multicast() {
        Err(Unusable::Multicast)
    } else if s[0] & 0xffc0 == 0xfe80 {
        Err(Unusable::LinkLocal)
    } else if s[..6] == [0; 6] {
        // ::a.b.c.d (:: and ::1 are caught above).
        Err(Unusable::Ipv4Compatible)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn not_local(_: IpAddr) -> bool {
        false
    }

    #[test]
    fn every_address_of_the_review_is_refused() {
        let cases = [
            ("127.0.0.1", Unusable::Loopback),
            ("127.255.0.9", Unusable::Loopback),
            ("::1", Unusable::Loopback),
            ("255.255.255.255", Unusable::Broadcast),
            ("240.0.0.1", Unusable::Reserved),
            ("254.1.2.3", Unusable::Reserved),
            ("0.0.0.0", Unusable::Unspecified),
            ("0.1.2.3", Unusable::Unspecified),
            ("::", Unusable::Unspecified),
            ("fe80::1", Unusable::LinkLocal),
            ("febf::1", Unusable::LinkLocal),
            ("169.254.1.1", Unusable::LinkLocal),
            ("224.0.0.1", Unusable::Multicast),
            ("ff02::1", Unusable::Multicast),
            ("::198.18.200.1", Unusable::Ipv4Compatible),
            // Mapped forms are judged as the IPv4 address they are.
            ("::ffff:127.0.0.1", Unusable::Loopback),
            ("::ffff:255.255.255.255", Unusable::Broadcast),
            ("::ffff:0.0.0.0", Unusable::Unspecified),
        ];
        for (a, why) in cases {
            assert_eq!(usable(ip(a), not_local), Err(why), "{a}");
        }
    }

    #[test]
    fn mapped_addresses_become_ipv4_and_ordinary_ones_pass() {
        assert_eq!(
            usable(ip("::ffff:198.18.0.2"), not_local),
            Ok(ip("198.18.0.2"))
        );
        for a in ["198.18.0.2", "2001:2::2", "10.0.0.1", "fec0::1", "2002::1"] {
            assert_eq!(usable(ip(a), not_local), Ok(ip(a)), "{a}");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_refused_in_either_form() {
        let mine = |a: IpAddr| a == ip("198.18.0.1") || a == ip("198.18.0.255");
        assert_eq!(usable(ip("198.18.0.1"), mine), Err(Unusable::Local));
        assert_eq!(usable(ip("::ffff:198.18.0.1"), mine), Err(Unusable::Local));
        assert_eq!(usable(ip("198.18.0.255"), mine), Err(Unusable::Local));
        assert_eq!(usable(ip("198.18.0.2"), mine), Ok(ip("198.18.0.2")));
    }
}
