//! Packets built byte by byte (pnet_packet) for the capture tests, and the
//! generated BPF run over them in the interpreter.

use super::*;

pub(super) const SPA: u16 = 62201;
pub(super) const PACKET_OUTGOING: u32 = 4;
pub(super) const PACKET_OTHERHOST: u32 = 3;
pub(super) const SYN: u8 = 0x02;
/// The first five payload bytes of a v1 and a v2 datagram.
pub(super) const V1: [u8; 5] = [0x8a, b'S', b'P', b'A', 1];
pub(super) const V2: [u8; 5] = [0x8a, b'S', b'P', b'A', 2];
pub(super) const ACK: u8 = 0x10;

pub(super) fn spec() -> FilterSpec {
    FilterSpec {
        spa_port: SPA,
        spa_len: DATAGRAM_LEN,
        knock_tcp: vec![7000, 8000, 9000],
        knock_udp: vec![7001, 8001],
    }
}

pub(super) fn src4() -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 20, 2)
}
pub(super) fn dst4() -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 20, 1)
}
pub(super) fn src6() -> Ipv6Addr {
    "2001:2:0:20::2".parse().unwrap()
}
pub(super) fn dst6() -> Ipv6Addr {
    "2001:2:0:20::1".parse().unwrap()
}

/// A transport segment: UDP with `payload` bytes starting with `head`
/// (length field `len_field` or the true length) or a TCP header with
/// `flags`.
#[derive(Clone, Debug)]
pub(super) enum L4 {
    Udp {
        dport: u16,
        payload: usize,
        len_field: Option<u16>,
        head: [u8; 5],
    },
    Tcp {
        dport: u16,
        flags: u8,
    },
    Other(u8),
}

/// UDP whose payload starts like a v1 datagram (magic, version 1).
pub(super) fn udp(dport: u16, payload: usize) -> L4 {
    udp_head(dport, payload, V1)
}
pub(super) fn udp_head(dport: u16, payload: usize, head: [u8; 5]) -> L4 {
    L4::Udp {
        dport,
        payload,
        len_field: None,
        head,
    }
}
pub(super) fn tcp(dport: u16, flags: u8) -> L4 {
    L4::Tcp { dport, flags }
}

pub(super) fn l4_bytes(l4: &L4) -> (u8, Vec<u8>) {
    match *l4 {
        L4::Udp {
            dport,
            payload,
            len_field,
            head,
        } => {
            let mut b = vec![0xa5u8; 8 + payload];
            let n = head.len().min(payload);
            b[8..8 + n].copy_from_slice(&head[..n]);
            let mut u = MutableUdpPacket::new(&mut b).unwrap();
            u.set_source(40000);
            u.set_destination(dport);
            u.set_length(len_field.unwrap_or((8 + payload) as u16));
            u.set_checksum(0);
            (17, b)
        }
        L4::Tcp { dport, flags } => {
            let mut b = vec![0u8; 20];
            let mut t = MutableTcpPacket::new(&mut b).unwrap();
            t.set_source(40000);
            t.set_destination(dport);
            t.set_data_offset(5);
            t.set_flags(flags);
            (6, b)
        }
        L4::Other(p) => (p, vec![0u8; 16]),
    }
}

/// IPv4 with `opt_words` 4-byte option words, `frag` = (flags, offset).
pub(super) fn v4(l4: &L4, opt_words: u8, frag: (u8, u16)) -> Vec<u8> {
    let (proto, seg) = l4_bytes(l4);
    let ihl = 20 + 4 * usize::from(opt_words);
    let mut b = vec![0u8; ihl + seg.len()];
    {
        let mut ip = MutableIpv4Packet::new(&mut b).unwrap();
        ip.set_version(4);
        ip.set_header_length(5 + opt_words);
        ip.set_total_length((ihl + seg.len()) as u16);
        ip.set_ttl(64);
        ip.set_flags(frag.0);
        ip.set_fragment_offset(frag.1);
        ip.set_next_level_protocol(IpNextHeaderProtocol(proto));
        ip.set_source(src4());
        ip.set_destination(dst4());
    }
    for o in &mut b[20..ihl] {
        *o = 1; // NOP options
    }
    b[ihl..].copy_from_slice(&seg);
    b
}

pub(super) fn v6(l4: &L4) -> Vec<u8> {
    let (proto, seg) = l4_bytes(l4);
    v6_raw(proto, &seg)
}

pub(super) fn v6_raw(next: u8, seg: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 40 + seg.len()];
    {
        let mut ip = MutableIpv6Packet::new(&mut b).unwrap();
        ip.set_version(6);
        ip.set_payload_length(seg.len() as u16);
        ip.set_next_header(IpNextHeaderProtocol(next));
        ip.set_hop_limit(64);
        ip.set_source(src6());
        ip.set_destination(dst6());
    }
    b[40..].copy_from_slice(seg);
    b
}

pub(super) fn bpf_accepts(spec: &FilterSpec, family: IpFamily, pkt: &[u8], pkttype: u32) -> bool {
    let prog = bpf::program(spec, family).unwrap();
    interp::run(&prog, pkt, pkttype) > 0
}

/// Whether the program of `class`'s sockets passes `pkt`.
pub(super) fn class_accepts(spec: &FilterSpec, family: IpFamily, class: Class, pkt: &[u8]) -> bool {
    let prog = bpf::program_for(spec, family, class).unwrap();
    interp::run(&prog, pkt, PACKET_HOST) > 0
}

/// The class programs split [`bpf::program`] exactly: each passes what
/// parse() classifies as its class, and nothing else.
pub(super) fn classes_agree(spec: &FilterSpec, family: IpFamily, pkt: &[u8]) -> Result<(), String> {
    let parsed = parse(pkt, family == IpFamily::V6, spec).map(|p| p.class());
    for class in Class::ALL {
        let kernel = class_accepts(spec, family, class, pkt);
        if kernel != (parsed == Some(class)) {
            return Err(format!(
                "{class:?} program {} {pkt:02x?}, parse says {parsed:?}",
                if kernel { "passes" } else { "drops" }
            ));
        }
    }
    Ok(())
}

/// Runs both the kernel filter and parse(), asserts they agree, returns it.
pub(super) fn both(spec: &FilterSpec, family: IpFamily, pkt: &[u8]) -> Option<Packet<'static>> {
    let kernel = bpf_accepts(spec, family, pkt, PACKET_HOST);
    let leaked: &'static [u8] = Box::leak(pkt.to_vec().into_boxed_slice());
    let user = parse(leaked, family == IpFamily::V6, spec);
    assert_eq!(
        kernel,
        user.is_some(),
        "BPF and parse disagree on {pkt:02x?}: parse={user:?}"
    );
    user
}
