//! parse() over packets built with pnet_packet, and the generated BPF run in
//! a small interpreter over the same packets: the two must agree.

use super::bpf::{self, interp, PACKET_HOST};
use super::*;
use pnet_packet::ip::IpNextHeaderProtocol;
use pnet_packet::ipv4::MutableIpv4Packet;
use pnet_packet::ipv6::MutableIpv6Packet;
use pnet_packet::tcp::MutableTcpPacket;
use pnet_packet::udp::MutableUdpPacket;
use proptest::prelude::*;
use spa_proto::IpFamily;
use spa_proto::{Proto, DATAGRAM_LEN};
use std::net::{Ipv4Addr, Ipv6Addr};

mod packets;
mod props;

use packets::*;

#[test]
fn spa_datagram_v4_is_seen_with_payload() {
    let pkt = v4(&udp(SPA, DATAGRAM_LEN), 0, (0, 0));
    match both(&spec(), IpFamily::V4, &pkt) {
        Some(Packet::Spa { src, dst, payload }) => {
            assert_eq!(src, IpAddr::V4(src4()));
            assert_eq!(dst, IpAddr::V4(dst4()));
            assert_eq!(payload.len(), DATAGRAM_LEN);
            assert_eq!(payload[..5], V1);
            assert!(payload[5..].iter().all(|b| *b == 0xa5));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn spa_datagram_v4_with_ip_options_uses_ihl() {
    for words in [1, 3, 10] {
        let pkt = v4(&udp(SPA, DATAGRAM_LEN), words, (0, 0));
        assert!(matches!(
            both(&spec(), IpFamily::V4, &pkt),
            Some(Packet::Spa { .. })
        ));
    }
}

#[test]
fn spa_datagram_with_link_padding_is_seen() {
    let mut pkt = v4(&udp(SPA, DATAGRAM_LEN), 0, (0, 0));
    pkt.extend_from_slice(&[0; 6]);
    assert!(
        matches!(both(&spec(), IpFamily::V4, &pkt), Some(Packet::Spa { payload, .. }) if payload.len() == DATAGRAM_LEN)
    );
}

#[test]
fn wrong_port_or_length_is_dropped() {
    let s = spec();
    for l4 in [
        udp(SPA + 1, DATAGRAM_LEN),
        udp(SPA, DATAGRAM_LEN - 1),
        udp(SPA, DATAGRAM_LEN + 1),
        udp(SPA, 0),
        udp(53, 40),
        tcp(SPA, SYN),
        L4::Other(1),
    ] {
        assert_eq!(both(&s, IpFamily::V4, &v4(&l4, 0, (0, 0))), None, "{l4:?}");
        assert_eq!(both(&s, IpFamily::V6, &v6(&l4)), None, "{l4:?}");
    }
}

#[test]
fn udp_length_field_must_match_even_if_bytes_are_there() {
    let l4 = L4::Udp {
        dport: SPA,
        payload: DATAGRAM_LEN,
        len_field: Some(8 + DATAGRAM_LEN as u16 - 1),
        head: V1,
    };
    assert_eq!(both(&spec(), IpFamily::V4, &v4(&l4, 0, (0, 0))), None);
    // Length field claims a full datagram, bytes are short: kernel passes
    // (it does not see the truncation), parse refuses.
    let mut pkt = v4(&udp(SPA, DATAGRAM_LEN), 0, (0, 0));
    pkt.truncate(pkt.len() - 10);
    assert!(bpf_accepts(&spec(), IpFamily::V4, &pkt, PACKET_HOST));
    assert_eq!(parse(&pkt, false, &spec()), None);
}

#[test]
fn fragments_are_dropped() {
    let s = spec();
    for frag in [(0b001, 0), (0, 1), (0b001, 185), (0, 8191)] {
        let pkt = v4(&udp(SPA, DATAGRAM_LEN), 0, frag);
        assert_eq!(both(&s, IpFamily::V4, &pkt), None, "{frag:?}");
        let pkt = v4(&tcp(7000, SYN), 0, frag);
        assert_eq!(both(&s, IpFamily::V4, &pkt), None, "{frag:?}");
    }
    // Don't Fragment is fine.
    let pkt = v4(&udp(SPA, DATAGRAM_LEN), 0, (0b010, 0));
    assert!(both(&s, IpFamily::V4, &pkt).is_some());
}

#[test]
fn tcp_knock_needs_syn_without_ack() {
    let s = spec();
    for (flags, want) in [
        (SYN, true),
        (SYN | 0x40 | 0x80, true), // ECN-setup SYN
        (SYN | ACK, false),
        (ACK, false),
        (0x04, false), // RST
        (0x01, false), // FIN
        (0, false),
    ] {
        for family in [IpFamily::V4, IpFamily::V6] {
            let pkt = match family {
                IpFamily::V4 => v4(&tcp(8000, flags), 0, (0, 0)),
                IpFamily::V6 => v6(&tcp(8000, flags)),
            };
            let got = both(&s, family, &pkt);
            assert_eq!(got.is_some(), want, "flags {flags:#x} {family:?}");
            if let Some(p) = got {
                assert!(
                    matches!(p, Packet::Knock { proto: Proto::Tcp, dport: 8000, tcp_flags, .. } if tcp_flags == flags)
                );
            }
        }
    }
    assert_eq!(
        both(&s, IpFamily::V4, &v4(&tcp(8001, SYN), 0, (0, 0))),
        None
    );
}

#[test]
fn udp_knock_any_length() {
    let s = spec();
    for len in [0, 1, 100, DATAGRAM_LEN, 900] {
        let got = both(&s, IpFamily::V4, &v4(&udp(7001, len), 0, (0, 0)));
        assert!(
            matches!(
                got,
                Some(Packet::Knock {
                    proto: Proto::Udp,
                    dport: 7001,
                    tcp_flags: 0,
                    ..
                })
            ),
            "{len}"
        );
        let got = both(&s, IpFamily::V6, &v6(&udp(8001, len)));
        assert!(
            matches!(
                got,
                Some(Packet::Knock {
                    proto: Proto::Udp,
                    dport: 8001,
                    ..
                })
            ),
            "{len}"
        );
    }
}

#[test]
fn spa_port_also_a_udp_knock_port() {
    let mut s = spec();
    s.knock_udp.push(SPA);
    assert!(matches!(
        both(&s, IpFamily::V4, &v4(&udp(SPA, DATAGRAM_LEN), 0, (0, 0))),
        Some(Packet::Spa { .. })
    ));
    assert!(matches!(
        both(&s, IpFamily::V4, &v4(&udp(SPA, 3), 0, (0, 0))),
        Some(Packet::Knock { dport: SPA, .. })
    ));
}

#[test]
fn ipv6_spa_and_extension_headers() {
    let s = spec();
    match both(&s, IpFamily::V6, &v6(&udp(SPA, DATAGRAM_LEN))) {
        Some(Packet::Spa { src, dst, payload }) => {
            assert_eq!(src, IpAddr::V6(src6()));
            assert_eq!(dst, IpAddr::V6(dst6()));
            assert_eq!(payload.len(), DATAGRAM_LEN);
        }
        other => panic!("{other:?}"),
    }
    // Hop-by-hop (0) or fragment (44) header before UDP: not walked, dropped.
    let (_, seg) = l4_bytes(&udp(SPA, DATAGRAM_LEN));
    for ext in [0u8, 43, 44, 60] {
        let mut with_ext = vec![17u8, 0, 0, 0, 0, 0, 0, 0];
        with_ext.extend_from_slice(&seg);
        assert_eq!(
            both(&s, IpFamily::V6, &v6_raw(ext, &with_ext)),
            None,
            "ext {ext}"
        );
    }
}

#[test]
fn wrong_version_for_the_socket_is_dropped() {
    let s = spec();
    let p4 = v4(&udp(SPA, DATAGRAM_LEN), 0, (0, 0));
    let p6 = v6(&udp(SPA, DATAGRAM_LEN));
    assert_eq!(both(&s, IpFamily::V6, &p4), None);
    assert_eq!(both(&s, IpFamily::V4, &p6), None);
}

#[test]
fn only_packets_to_this_host_pass_the_kernel() {
    let s = spec();
    let pkt = v4(&udp(SPA, DATAGRAM_LEN), 0, (0, 0));
    assert!(bpf_accepts(&s, IpFamily::V4, &pkt, PACKET_HOST));
    assert!(!bpf_accepts(&s, IpFamily::V4, &pkt, PACKET_OUTGOING));
    assert!(!bpf_accepts(&s, IpFamily::V4, &pkt, PACKET_OTHERHOST));
    let pkt = v6(&tcp(7000, SYN));
    assert!(bpf_accepts(&s, IpFamily::V6, &pkt, PACKET_HOST));
    assert!(!bpf_accepts(&s, IpFamily::V6, &pkt, PACKET_OUTGOING));
}

/// Finding 4: datagrams and knocks go to separate sockets, so a knock
/// flood cannot fill the queue a datagram waits in. A datagram to a port
/// that is also a UDP knock port reaches only the SPA sockets.
#[test]
fn class_programs_split_datagrams_from_knocks() {
    let mut s = spec();
    s.knock_udp.push(SPA);
    let datagram = v4(&udp(SPA, DATAGRAM_LEN), 0, (0, 0));
    let knocks = [
        v4(&udp(SPA, 3), 0, (0, 0)),
        v4(&tcp(7000, SYN), 0, (0, 0)),
        v4(&udp(7001, 9), 0, (0, 0)),
    ];
    assert!(class_accepts(&s, IpFamily::V4, Class::Spa, &datagram));
    assert!(!class_accepts(&s, IpFamily::V4, Class::Knock, &datagram));
    for k in &knocks {
        assert!(!class_accepts(&s, IpFamily::V4, Class::Spa, k));
        assert!(class_accepts(&s, IpFamily::V4, Class::Knock, k));
        classes_agree(&s, IpFamily::V4, k).unwrap();
    }
    classes_agree(&s, IpFamily::V4, &datagram).unwrap();
    classes_agree(&s, IpFamily::V6, &v6(&udp(SPA, DATAGRAM_LEN))).unwrap();
    classes_agree(&s, IpFamily::V6, &v6(&tcp(9000, SYN))).unwrap();
    // No knock ports: the knock sockets' filter passes nothing at all.
    let v1 = FilterSpec::v1(SPA);
    assert_eq!(
        bpf::program_for(&v1, IpFamily::V4, Class::Knock).unwrap(),
        bpf::drop_all()
    );
}

#[test]
fn no_knock_ports_program_is_small_and_exact() {
    let s = FilterSpec::v1(SPA);
    for family in [IpFamily::V4, IpFamily::V6] {
        let prog = bpf::program(&s, family).unwrap();
        assert!(prog.len() < 24, "{family:?}: {}", prog.len());
    }
    assert!(both(&s, IpFamily::V4, &v4(&udp(SPA, DATAGRAM_LEN), 0, (0, 0))).is_some());
    assert_eq!(
        both(&s, IpFamily::V4, &v4(&tcp(7000, SYN), 0, (0, 0))),
        None
    );
    assert_eq!(both(&s, IpFamily::V6, &v6(&udp(7001, 5))), None);
}

#[test]
fn long_port_lists_stay_exact_up_to_the_limit() {
    for n in [64usize, bpf::EXACT_PORTS_MAX] {
        let s = FilterSpec {
            spa_port: SPA,
            spa_len: DATAGRAM_LEN,
            knock_tcp: (0..n as u16).map(|i| 10_000 + 3 * i).collect(),
            knock_udp: (0..n as u16).map(|i| 20_000 + 3 * i).collect(),
        };
        for family in [IpFamily::V4, IpFamily::V6] {
            let prog = bpf::program(&s, family).unwrap();
            assert!(prog.len() <= bpf::MAX_INSNS);
            for i in [0u16, 1, n as u16 / 2, n as u16 - 1] {
                let (t, u) = (10_000 + 3 * i, 20_000 + 3 * i);
                let (pt, pu, miss) = match family {
                    IpFamily::V4 => (
                        v4(&tcp(t, SYN), 0, (0, 0)),
                        v4(&udp(u, 9), 0, (0, 0)),
                        v4(&tcp(t + 1, SYN), 0, (0, 0)),
                    ),
                    IpFamily::V6 => (v6(&tcp(t, SYN)), v6(&udp(u, 9)), v6(&tcp(t + 1, SYN))),
                };
                assert!(both(&s, family, &pt).is_some());
                assert!(both(&s, family, &pu).is_some());
                assert!(both(&s, family, &miss).is_none());
            }
            assert!(both(
                &s,
                family,
                &match family {
                    IpFamily::V4 => v4(&udp(SPA, DATAGRAM_LEN), 0, (0, 0)),
                    IpFamily::V6 => v6(&udp(SPA, DATAGRAM_LEN)),
                }
            )
            .is_some());
        }
    }
}

#[test]
fn very_long_port_lists_fall_back_to_a_range() {
    let s = FilterSpec {
        spa_port: SPA,
        spa_len: DATAGRAM_LEN,
        knock_tcp: (0..1000).map(|i| 10_000 + 2 * i).collect(),
        knock_udp: (0..1000).map(|i| 30_000 + 2 * i).collect(),
    };
    let prog = bpf::program(&s, IpFamily::V4).unwrap();
    assert!(prog.len() < 40);
    // In the range but not in the list: the kernel passes, parse drops.
    let pkt = v4(&tcp(10_001, SYN), 0, (0, 0));
    assert!(bpf_accepts(&s, IpFamily::V4, &pkt, PACKET_HOST));
    assert_eq!(parse(&pkt, false, &s), None);
    // Outside the range: dropped in the kernel.
    assert!(!bpf_accepts(
        &s,
        IpFamily::V4,
        &v4(&tcp(9_999, SYN), 0, (0, 0)),
        PACKET_HOST
    ));
    assert!(!bpf_accepts(
        &s,
        IpFamily::V4,
        &v4(&tcp(12_000, SYN), 0, (0, 0)),
        PACKET_HOST
    ));
    assert!(both(&s, IpFamily::V4, &v4(&tcp(11_998, SYN), 0, (0, 0))).is_some());
    assert!(both(&s, IpFamily::V4, &v4(&udp(31_000, 1), 0, (0, 0))).is_some());
}

/// Issue 17: a datagram of the right length to the SPA port passes only
/// with the magic and a version we speak (v1 and v2), in the kernel and in
/// parse() alike, over IPv4 (with and without options) and IPv6.
#[test]
fn magic_and_version_are_checked_in_the_kernel_and_by_parse() {
    let s = spec();
    let mut wrong = Vec::new();
    for i in 0..4 {
        for flip in [0x01u8, 0x80] {
            let mut h = V1;
            h[i] ^= flip;
            wrong.push(h);
        }
    }
    for v in [0u8, 3, 0x81, 0xff] {
        wrong.push([0x8a, b'S', b'P', b'A', v]);
    }
    wrong.push([0xa5; 5]);
    wrong.push([b'S', b'P', b'A', 0x8a, 1]);
    for family in [IpFamily::V4, IpFamily::V6] {
        for opt in [0u8, 3] {
            let pkt = |head| match family {
                IpFamily::V4 => v4(&udp_head(SPA, DATAGRAM_LEN, head), opt, (0, 0)),
                IpFamily::V6 => v6(&udp_head(SPA, DATAGRAM_LEN, head)),
            };
            for head in [V1, V2] {
                let got = both(&s, family, &pkt(head));
                assert!(
                    matches!(got, Some(Packet::Spa { payload, .. }) if payload[..5] == head),
                    "{family:?} {head:02x?}: {got:?}"
                );
                classes_agree(&s, family, &pkt(head)).unwrap();
            }
            for &head in &wrong {
                assert_eq!(both(&s, family, &pkt(head)), None, "{family:?} {head:02x?}");
                // The user-space parser alone, fed directly, refuses it too.
                assert_eq!(parse(&pkt(head), family == IpFamily::V6, &s), None);
                classes_agree(&s, family, &pkt(head)).unwrap();
            }
        }
    }
    // Without knock ports (the usual server) the same holds.
    let v1 = FilterSpec::v1(SPA);
    for &head in &wrong {
        let pkt = v4(&udp_head(SPA, DATAGRAM_LEN, head), 0, (0, 0));
        assert_eq!(both(&v1, IpFamily::V4, &pkt), None, "{head:02x?}");
    }
}

/// The SPA port is also a UDP knock port: right-length garbage is not a
/// datagram, so it is a knock, in the kernel's class programs and in parse().
#[test]
fn garbage_to_a_spa_port_that_is_a_knock_port_is_a_knock() {
    let mut s = spec();
    s.knock_udp.push(SPA);
    s.knock_udp.sort_unstable();
    for head in [[0u8; 5], [0x8a, b'S', b'P', b'A', 9]] {
        let pkt = v4(&udp_head(SPA, DATAGRAM_LEN, head), 0, (0, 0));
        assert!(matches!(
            both(&s, IpFamily::V4, &pkt),
            Some(Packet::Knock { dport: SPA, .. })
        ));
        assert!(!class_accepts(&s, IpFamily::V4, Class::Spa, &pkt));
        assert!(class_accepts(&s, IpFamily::V4, Class::Knock, &pkt));
        classes_agree(&s, IpFamily::V4, &pkt).unwrap();
        classes_agree(&s, IpFamily::V6, &v6(&udp_head(SPA, DATAGRAM_LEN, head))).unwrap();
    }
}

#[test]
fn spec_validation() {
    assert!(FilterSpec::v1(SPA).validate().is_ok());
    assert!(FilterSpec::v1(0).validate().is_err());
    let mut s = FilterSpec::v1(SPA);
    s.spa_len = 70_000;
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("70000"), "{e}");
    // The filter reads the magic and the version inside the payload.
    let mut s = FilterSpec::v1(SPA);
    s.spa_len = 5;
    assert!(s.validate().is_ok());
    s.spa_len = 4;
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("spa_len 4"), "{e}");
    let mut s = FilterSpec::v1(SPA);
    s.knock_tcp = vec![0];
    assert!(s.validate().is_err());
}

/// Every refusal of a filter spec, byte for byte: admins and scripts match
/// these lines.
#[test]
fn spec_messages_are_pinned() {
    let msg = |s: &FilterSpec| s.validate().unwrap_err().to_string();
    assert_eq!(
        msg(&FilterSpec::v1(0)),
        "capture filter spec: spa_port must not be 0"
    );
    let mut s = FilterSpec::v1(SPA);
    s.spa_len = 4;
    assert_eq!(
        msg(&s),
        "capture filter spec: spa_len 4 is shorter than the magic and version bytes"
    );
    s.spa_len = 70_000;
    assert_eq!(
        msg(&s),
        "capture filter spec: spa_len 70000 does not fit a UDP datagram"
    );
    let mut s = FilterSpec::v1(SPA);
    s.knock_udp = vec![7, 0];
    assert_eq!(
        msg(&s),
        "capture filter spec: knock port 0 is not a valid port"
    );
    let mut s = FilterSpec::v1(SPA);
    s.knock_tcp = vec![8, 7];
    assert_eq!(
        msg(&s),
        "capture filter spec: knock_tcp must be sorted ascending without duplicates"
    );
    let mut s = FilterSpec::v1(SPA);
    s.knock_udp = vec![7, 7];
    assert_eq!(
        msg(&s),
        "capture filter spec: knock_udp must be sorted ascending without duplicates"
    );
}

#[test]
fn error_messages_name_interface_and_call() {
    let e = CaptureError::NoSuchInterface {
        name: "eth9".into(),
    };
    assert!(e.to_string().contains("\"eth9\""));
    let e = CaptureError::Syscall {
        call: "bind",
        interface: "interface eth0 (IPv4)".into(),
        source: io::Error::from_raw_os_error(libc::EPERM),
    };
    let s = e.to_string();
    assert!(
        s.contains("eth0") && s.contains("bind") && s.contains("CAP_NET_RAW"),
        "{s}"
    );
}

#[test]
fn open_names_a_missing_interface() {
    match Capture::open(&["spa-no-such0".to_string()], &spec()) {
        Err(CaptureError::NoSuchInterface { name }) => assert_eq!(name, "spa-no-such0"),
        other => panic!("{other:?}"),
    }
}
