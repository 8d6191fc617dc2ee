//! Network-layer bytes to a typed [`Packet`]: pure, total, never panics.
//!
//! The kernel filter already dropped almost everything, but this check is the
//! authority: the filter may be coarser (long port lists become ranges), a
//! frame may have been queued under the previous filter during a reload, and
//! a bug in generated BPF must not become a bug in what the daemon acts on.

use super::bpf::speaks;
use super::{FilterSpec, Packet};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{Ipv4Flags, Ipv4Packet};
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::tcp::{TcpFlags, TcpPacket};
use pnet_packet::udp::UdpPacket;
use spa_proto::Proto;
use std::net::IpAddr;

const UDP_HEADER_LEN: usize = 8;

/// What a frame is, with the SPA payload as a range so the caller can borrow
/// it from a buffer it still owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Spa {
        start: usize,
        len: usize,
    },
    Knock {
        proto: Proto,
        dport: u16,
        tcp_flags: u8,
    },
}

impl Meta {
    pub fn class(&self) -> super::Class {
        match self.kind {
            Kind::Spa { .. } => super::Class::Spa,
            Kind::Knock { .. } => super::Class::Knock,
        }
    }

    pub fn into_packet(self, l3: &[u8]) -> Option<Packet<'_>> {
        Some(match self.kind {
            Kind::Spa { start, len } => Packet::Spa {
                src: self.src,
                dst: self.dst,
                payload: l3.get(start..start.checked_add(len)?)?,
            },
            Kind::Knock {
                proto,
                dport,
                tcp_flags,
            } => Packet::Knock {
                src: self.src,
                dst: self.dst,
                proto,
                dport,
                tcp_flags,
            },
        })
    }
}

/// Classifies `l3` (starting at the IP header).
pub(crate) fn classify(l3: &[u8], is_ipv6: bool, spec: &FilterSpec) -> Option<Meta> {
    if is_ipv6 {
        classify_v6(l3, spec)
    } else {
        classify_v4(l3, spec)
    }
}

fn classify_v4(l3: &[u8], spec: &FilterSpec) -> Option<Meta> {
    let ip = Ipv4Packet::new(l3)?;
    if ip.get_version() != 4 {
        return None;
    }
    let ihl = usize::from(ip.get_header_length()) * 4;
    if ihl < 20 || ihl > l3.len() {
        return None;
    }
    // Only whole datagrams: a first fragment has no complete payload and a
    // later one has no transport header at all.
    if ip.get_flags() & Ipv4Flags::MoreFragments != 0 || ip.get_fragment_offset() != 0 {
        return None;
    }
    let total = usize::from(ip.get_total_length());
    if total < ihl {
        return None;
    }
    // Link padding follows `total`; a truncated capture ends before it.
    let end = total.min(l3.len());
    let proto = ip.get_next_level_protocol();
    let src = IpAddr::V4(ip.get_source());
    let dst = IpAddr::V4(ip.get_destination());
    transport(l3, ihl, end, proto.0, src, dst, spec)
}

fn classify_v6(l3: &[u8], spec: &FilterSpec) -> Option<Meta> {
    const HDR: usize = 40;
    let ip = Ipv6Packet::new(l3)?;
    if ip.get_version() != 6 {
        return None;
    }
    let end = HDR
        .checked_add(usize::from(ip.get_payload_length()))?
        .min(l3.len());
    let proto = ip.get_next_header();
    let src = IpAddr::V6(ip.get_source());
    let dst = IpAddr::V6(ip.get_destination());
    transport(l3, HDR, end, proto.0, src, dst, spec)
}

fn transport(
    l3: &[u8],
    start: usize,
    end: usize,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    spec: &FilterSpec,
) -> Option<Meta> {
    let l4 = l3.get(start..end)?;
    let kind = if proto == IpNextHeaderProtocols::Udp.0 {
        let udp = UdpPacket::new(l4)?;
        let dport = udp.get_destination();
        let spa_total = spec.spa_len.checked_add(UDP_HEADER_LEN)?;
        // The kernel filter's rule: port, exact length, magic and version.
        if dport == spec.spa_port
            && usize::from(udp.get_length()) == spa_total
            && l4.len() >= spa_total
            && l4.get(UDP_HEADER_LEN..spa_total).is_some_and(speaks)
        {
            Kind::Spa {
                start: start + UDP_HEADER_LEN,
                len: spec.spa_len,
            }
        } else if spec.knock_udp.binary_search(&dport).is_ok() {
            Kind::Knock {
                proto: Proto::Udp,
                dport,
                tcp_flags: 0,
            }
        } else {
            return None;
        }
    } else if proto == IpNextHeaderProtocols::Tcp.0 {
        let tcp = TcpPacket::new(l4)?;
        let dport = tcp.get_destination();
        let flags = tcp.get_flags();
        let syn_only = flags & TcpFlags::SYN != 0 && flags & TcpFlags::ACK == 0;
        if !(syn_only && spec.knock_tcp.binary_search(&dport).is_ok()) {
            return None;
        }
        Kind::Knock {
            proto: Proto::Tcp,
            dport,
            tcp_flags: flags,
        }
    } else {
        return None;
    };
    Some(Meta { src, dst, kind })
}
