//! Property tests: parse() never panics, and the kernel filter and parse()
//! agree on every well-formed packet.

use super::*;

/// The first payload bytes: both versions, one flipped bit in the magic,
/// any version byte, anything.
fn arb_head() -> impl Strategy<Value = [u8; 5]> {
    prop_oneof![
        Just(V1),
        Just(V2),
        (0usize..32).prop_map(|bit| {
            let mut h = V1;
            h[bit / 8] ^= 1 << (bit % 8);
            h
        }),
        any::<u8>().prop_map(|v| [0x8a, b'S', b'P', b'A', v]),
        any::<[u8; 5]>(),
    ]
}

fn arb_l4() -> impl Strategy<Value = L4> {
    let port = prop_oneof![
        Just(SPA),
        Just(7000u16),
        Just(8001u16),
        Just(7001u16),
        any::<u16>()
    ];
    prop_oneof![
        (
            port.clone(),
            prop_oneof![Just(DATAGRAM_LEN), 0usize..300],
            proptest::option::of(any::<u16>()),
            arb_head()
        )
            .prop_map(|(dport, payload, len_field, head)| L4::Udp {
                dport,
                payload,
                len_field,
                head
            }),
        (port, any::<u8>()).prop_map(|(dport, flags)| L4::Tcp { dport, flags }),
        any::<u8>().prop_map(L4::Other),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400), v6 in any::<bool>()) {
        let _ = parse(&bytes, v6, &spec());
        let _ = interp::run(&bpf::program(&spec(), IpFamily::V4).unwrap(), &bytes, PACKET_HOST);
    }

    /// Whatever parse accepts, the kernel filter passed: the filter never
    /// hides a packet the daemon wants.
    #[test]
    fn kernel_never_drops_what_parse_wants(bytes in proptest::collection::vec(any::<u8>(), 0..400), v6 in any::<bool>()) {
        let family = if v6 { IpFamily::V6 } else { IpFamily::V4 };
        if parse(&bytes, v6, &spec()).is_some() {
            prop_assert!(bpf_accepts(&spec(), family, &bytes, PACKET_HOST));
        }
    }

    /// On well-formed packets the filter and parse agree exactly.
    #[test]
    fn filter_and_parse_agree(l4 in arb_l4(), opt in 0u8..4, frag in (0u8..8, prop_oneof![Just(0u16), any::<u16>()]), v6 in any::<bool>()) {
        let s = spec();
        if let L4::Udp { len_field: Some(f), payload, .. } = l4 {
            // A length field longer than the bytes is a truncated capture.
            prop_assume!(usize::from(f) <= 8 + payload);
        }
        if v6 {
            let pkt = self::v6(&l4);
            prop_assert_eq!(bpf_accepts(&s, IpFamily::V6, &pkt, PACKET_HOST), parse(&pkt, true, &s).is_some());
            prop_assert_eq!(classes_agree(&s, IpFamily::V6, &pkt), Ok(()));
        } else {
            let pkt = v4(&l4, opt, (frag.0, frag.1 & 0x1fff));
            prop_assert_eq!(bpf_accepts(&s, IpFamily::V4, &pkt, PACKET_HOST), parse(&pkt, false, &s).is_some());
            prop_assert_eq!(classes_agree(&s, IpFamily::V4, &pkt), Ok(()));
        }
    }
}
