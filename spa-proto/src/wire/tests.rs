//! The v1 layout: malformed plaintexts, the order of the checks, round trips.

use super::*;
use crate::kdf::MasterKey;
use crate::replay::{ReplayRecord, TimeWindow};
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000;

fn keys() -> KeySet {
    MasterKey::from_bytes([0x11; 32]).derive()
}

fn server() -> ServerId {
    ServerId::from_name("gw")
}

fn request() -> Request {
    Request {
        action: Action::Open,
        timestamp: NOW,
        duration_secs: 60,
        allow: AllowAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        server: server(),
        grants: Grants::new(&[
            Grant::tcp(22).unwrap(),
            Grant::new(Proto::Udp, 51820).unwrap(),
        ])
        .unwrap(),
    }
}

fn valid_plaintext() -> [u8; PLAINTEXT_LEN] {
    encode_plaintext(&request(), &[0x5a; RANDOM_LEN])
}

/// Seals `pt` with the test key and runs the full receive path.
fn verify_raw(pt: &[u8; PLAINTEXT_LEN]) -> Result<Opened, Reject> {
    let k = keys();
    let d = seal_raw_plaintext(&k, pt, &[7; NONCE_LEN]);
    let mut replay = ReplayRecord::new(TimeWindow::default(), 16);
    verify(&d, |_| Some(&k), &server(), NOW, &mut replay)
}

// Plaintext offsets, named as in the layout table at the top.
const ACTION: usize = 0;
const ALLOW_KIND: usize = 1;
const COUNT: usize = 2;
const ADDR: usize = 31;
const GRANTS: usize = 47;
const RANDOM: usize = 71;

#[test]
fn layout_constants() {
    assert_eq!(HEADER_LEN, 37);
    assert_eq!(PLAINTEXT_LEN, 87);
    assert_eq!(DATAGRAM_LEN, 140);
    assert_eq!(GRANTS + MAX_GRANTS * GRANT_LEN, RANDOM);
    assert_eq!(RANDOM + RANDOM_LEN, PLAINTEXT_LEN);
}

#[test]
fn raw_seal_of_an_honest_plaintext_equals_seal_with() {
    let k = keys();
    let nonce = [9; NONCE_LEN];
    let random = [0x5a; RANDOM_LEN];
    assert_eq!(
        seal_raw_plaintext(&k, &valid_plaintext(), &nonce),
        seal_with(&k, &request(), &nonce, &random)
    );
    assert_eq!(verify_raw(&valid_plaintext()).unwrap().request, request());
}

#[test]
fn malformed_action() {
    for v in [0u8, 3, 0x80, 255] {
        let mut pt = valid_plaintext();
        pt[ACTION] = v;
        assert_eq!(
            verify_raw(&pt),
            Err(Reject::Malformed(Malformed::Action(v)))
        );
    }
}

#[test]
fn malformed_allow_kind() {
    for v in [1u8, 2, 3, 5, 7, 46, 255] {
        let mut pt = valid_plaintext();
        pt[ALLOW_KIND] = v;
        assert_eq!(
            verify_raw(&pt),
            Err(Reject::Malformed(Malformed::AllowKind(v)))
        );
    }
}

#[test]
fn malformed_grant_count() {
    for v in [0u8, 9, 10, 255] {
        let mut pt = valid_plaintext();
        pt[COUNT] = v;
        assert_eq!(
            verify_raw(&pt),
            Err(Reject::Malformed(Malformed::GrantCount(v)))
        );
    }
}

#[test]
fn malformed_protocol() {
    for v in [0u8, 1, 17 ^ 1, 58, 132, 255] {
        let mut pt = valid_plaintext();
        pt[GRANTS] = v;
        assert_eq!(
            verify_raw(&pt),
            Err(Reject::Malformed(Malformed::Protocol(v)))
        );
    }
    // A used second slot is checked too.
    let mut pt = valid_plaintext();
    pt[GRANTS + GRANT_LEN] = 1;
    assert_eq!(
        verify_raw(&pt),
        Err(Reject::Malformed(Malformed::Protocol(1)))
    );
}

#[test]
fn malformed_port_zero() {
    for slot in 0..2 {
        let mut pt = valid_plaintext();
        pt[GRANTS + slot * GRANT_LEN + 1] = 0;
        pt[GRANTS + slot * GRANT_LEN + 2] = 0;
        assert_eq!(verify_raw(&pt), Err(Reject::Malformed(Malformed::PortZero)));
    }
}

#[test]
fn malformed_padding_after_last_grant() {
    // Every byte of every unused slot (count is 2) must be zero.
    for i in GRANTS + 2 * GRANT_LEN..RANDOM {
        let mut pt = valid_plaintext();
        pt[i] = 0x01;
        assert_eq!(
            verify_raw(&pt),
            Err(Reject::Malformed(Malformed::NonZeroPadding)),
            "byte {i}"
        );
    }
    // A full-looking slot past the count is padding, not a grant.
    let mut pt = valid_plaintext();
    pt[GRANTS + 2 * GRANT_LEN..GRANTS + 3 * GRANT_LEN].copy_from_slice(&[6, 0, 80]);
    assert_eq!(
        verify_raw(&pt),
        Err(Reject::Malformed(Malformed::NonZeroPadding))
    );
}

#[test]
fn malformed_padding_in_address() {
    // IPv4: bytes 4..16 of the address field must be zero.
    for i in ADDR + 4..ADDR + ADDR_LEN {
        let mut pt = valid_plaintext();
        pt[i] = 0x80;
        assert_eq!(
            verify_raw(&pt),
            Err(Reject::Malformed(Malformed::NonZeroPadding)),
            "byte {i}"
        );
    }
    // Source: the whole address field must be zero.
    for i in ADDR..ADDR + ADDR_LEN {
        let mut pt = valid_plaintext();
        pt[ALLOW_KIND] = 0;
        pt[ADDR..ADDR + ADDR_LEN].fill(0);
        pt[i] = 1;
        assert_eq!(
            verify_raw(&pt),
            Err(Reject::Malformed(Malformed::NonZeroPadding)),
            "byte {i}"
        );
    }
}

#[test]
fn first_failing_rule_is_reported() {
    // Action is checked before count, count before allow kind, allow
    // kind before grants: the order docs/protocol.md gives.
    let mut pt = valid_plaintext();
    pt[ACTION] = 9;
    pt[COUNT] = 0;
    pt[ALLOW_KIND] = 9;
    assert_eq!(
        verify_raw(&pt),
        Err(Reject::Malformed(Malformed::Action(9)))
    );
    pt[ACTION] = 1;
    assert_eq!(
        verify_raw(&pt),
        Err(Reject::Malformed(Malformed::GrantCount(0)))
    );
    pt[COUNT] = 2;
    pt[GRANTS] = 0;
    assert_eq!(
        verify_raw(&pt),
        Err(Reject::Malformed(Malformed::AllowKind(9)))
    );
}

#[test]
fn malformed_beats_wrong_server() {
    // The plaintext rules run before the server id check.
    let k = keys();
    let mut pt = valid_plaintext();
    pt[ACTION] = 0;
    let d = seal_raw_plaintext(&k, &pt, &[1; NONCE_LEN]);
    let mut replay = ReplayRecord::new(TimeWindow::default(), 4);
    assert_eq!(
        verify(
            &d,
            |_| Some(&k),
            &ServerId::from_name("x"),
            NOW,
            &mut replay
        ),
        Err(Reject::Malformed(Malformed::Action(0)))
    );
}

fn any_request() -> impl Strategy<Value = Request> {
    let action = prop_oneof![Just(Action::Open), Just(Action::Close)];
    let allow = prop_oneof![
        Just(AllowAddr::Source),
        any::<u32>().prop_map(|a| AllowAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| AllowAddr::V6(Ipv6Addr::from(a))),
    ];
    let grant = (any::<bool>(), 1..=u16::MAX).prop_map(|(udp, port)| {
        Grant::new(if udp { Proto::Udp } else { Proto::Tcp }, port).unwrap()
    });
    (
        action,
        allow,
        any::<u64>(),
        any::<u32>(),
        any::<[u8; SERVER_ID_LEN]>(),
        proptest::collection::vec(grant, 1..=MAX_GRANTS),
    )
        .prop_map(
            |(action, allow, timestamp, duration_secs, server, grants)| Request {
                action,
                timestamp,
                duration_secs,
                allow,
                server: ServerId(server),
                grants: Grants::new(&grants).unwrap(),
            },
        )
}

proptest! {
    /// The encoding is canonical: every plaintext the decoder accepts is
    /// exactly the bytes the encoder writes for the decoded request. So
    /// two different byte strings never mean the same request.
    #[test]
    fn accepted_plaintexts_are_canonical(
        req in any_request(),
        random in any::<[u8; RANDOM_LEN]>(),
        edits in proptest::collection::vec((0..PLAINTEXT_LEN, any::<u8>()), 0..4),
    ) {
        let mut pt = encode_plaintext(&req, &random);
        for (i, v) in edits {
            pt[i] = v;
        }
        if let Ok(decoded) = decode_plaintext(&pt) {
            let mut rnd = [0u8; RANDOM_LEN];
            rnd.copy_from_slice(&pt[RANDOM..]);
            prop_assert_eq!(encode_plaintext(&decoded, &rnd), pt);
        }
    }

    #[test]
    fn decode_inverts_encode(req in any_request(), random in any::<[u8; RANDOM_LEN]>()) {
        prop_assert_eq!(decode_plaintext(&encode_plaintext(&req, &random)), Ok(req));
    }

    /// Arbitrary plaintext bytes never panic the decoder.
    #[test]
    fn decode_never_panics(pt in any::<[u8; PLAINTEXT_LEN]>()) {
        let _ = decode_plaintext(&pt);
    }
}
