//! The receive path against everything a network can send: honest datagrams
//! of every shape, every single-bit corruption, every wrong length, the wrong
//! key, server or time, replays (also across a persisted record), and
//! arbitrary bytes.

use proptest::prelude::*;
use spa_proto::replay::DEFAULT_CAPACITY;
use spa_proto::wire::{NONCE_LEN, PLAINTEXT_LEN};
use spa_proto::{
    parse_header, seal, seal_with, verify, Action, AllowAddr, Grant, Grants, KeyId, KeySet,
    MasterKey, Opened, Proto, Reject, ReplayRecord, Request, ServerId, TimeWindow, DATAGRAM_LEN,
    MAGIC, MAX_GRANTS, VERSION,
};
use std::net::{Ipv4Addr, Ipv6Addr};

const NOW: u64 = 1_700_000_000;
const KEY_ID_AT: std::ops::Range<usize> = 5..13;
const NONCE_AT: std::ops::Range<usize> = 13..37;

fn key(b: u8) -> KeySet {
    MasterKey::from_bytes([b; 32]).derive()
}

fn record() -> ReplayRecord {
    ReplayRecord::new(TimeWindow::default(), DEFAULT_CAPACITY)
}

/// A server that knows exactly one key, as the daemon does per key-id.
fn verify_one(
    d: &[u8],
    k: &KeySet,
    server: &ServerId,
    now: u64,
    replay: &mut ReplayRecord,
) -> Result<Opened, Reject> {
    verify(
        d,
        |id: &KeyId| (*id == k.key_id()).then_some(k),
        server,
        now,
        replay,
    )
}

fn request(server: ServerId, timestamp: u64) -> Request {
    Request {
        action: Action::Open,
        timestamp,
        duration_secs: 30,
        allow: AllowAddr::Source,
        server,
        grants: Grants::new(&[Grant::tcp(22).unwrap()]).unwrap(),
    }
}

/// A few datagrams of different shapes for the exhaustive tests.
fn sample_datagrams(k: &KeySet) -> Vec<[u8; DATAGRAM_LEN]> {
    let srv = ServerId::from_name("gw");
    let all_grants: Vec<Grant> = (0..MAX_GRANTS as u16)
        .map(|i| {
            Grant::new(
                if i % 2 == 0 { Proto::Tcp } else { Proto::Udp },
                u16::MAX - i,
            )
            .unwrap()
        })
        .collect();
    let reqs = [
        request(srv, NOW),
        Request {
            action: Action::Close,
            timestamp: NOW,
            duration_secs: u32::MAX,
            allow: AllowAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1)),
            server: srv,
            grants: Grants::new(&all_grants).unwrap(),
        },
        Request {
            action: Action::Open,
            timestamp: NOW,
            duration_secs: 0,
            allow: AllowAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            server: srv,
            grants: Grants::new(&[Grant::new(Proto::Udp, 1).unwrap()]).unwrap(),
        },
    ];
    reqs.iter()
        .enumerate()
        .map(|(i, r)| seal_with(k, r, &[i as u8; NONCE_LEN], &[0xa5; 16]))
        .collect()
}

#[test]
fn samples_are_accepted() {
    let k = key(1);
    for d in sample_datagrams(&k) {
        verify_one(&d, &k, &ServerId::from_name("gw"), NOW, &mut record()).unwrap();
    }
}

/// Flipping any one of the 1120 bits of a valid datagram is rejected, and
/// the reason names the field that was hit. Checked with a server that
/// looks keys up by id, and with one that hands out the key whatever the id
/// says (so a flipped key-id must still fail authentication: it is AAD).
#[test]
fn every_single_bit_flip_is_rejected() {
    let k = key(1);
    let srv = ServerId::from_name("gw");
    for d in sample_datagrams(&k) {
        for bit in 0..DATAGRAM_LEN * 8 {
            let mut bad = d;
            bad[bit / 8] ^= 1 << (bit % 8);
            let byte = bit / 8;
            let expected = match byte {
                0..=3 => Reject::BadMagic,
                4 => Reject::UnknownVersion(VERSION ^ (1 << (bit % 8))),
                5..=12 => Reject::UnknownKeyId,
                _ => Reject::AuthFailed,
            };
            let got = verify_one(&bad, &k, &srv, NOW, &mut record());
            assert_eq!(got, Err(expected), "bit {bit}");
            if KEY_ID_AT.contains(&byte) {
                let got = verify(&bad, |_| Some(&k), &srv, NOW, &mut record());
                assert_eq!(got, Err(Reject::AuthFailed), "bit {bit}, any-key lookup");
            }
        }
    }
}

#[test]
fn every_truncation_and_extension_is_wrong_length() {
    let k = key(1);
    let srv = ServerId::from_name("gw");
    let d = sample_datagrams(&k)[0];
    for len in 0..DATAGRAM_LEN {
        assert_eq!(
            verify_one(&d[..len], &k, &srv, NOW, &mut record()),
            Err(Reject::WrongLength { got: len })
        );
    }
    let mut long = d.to_vec();
    for extra in 1..=2048 {
        long.push(extra as u8);
        assert_eq!(
            verify_one(&long, &k, &srv, NOW, &mut record()),
            Err(Reject::WrongLength {
                got: DATAGRAM_LEN + extra
            })
        );
    }
    // An extension of zero bytes (the common padding) is no different.
    let mut zeros = d.to_vec();
    zeros.extend_from_slice(&[0; 4]);
    assert!(matches!(
        parse_header(&zeros),
        Err(Reject::WrongLength { got: 144 })
    ));
}

#[test]
fn wrong_key_is_unknown_key_id_or_auth_failed() {
    let right = key(1);
    let wrong = key(2);
    let srv = ServerId::from_name("gw");
    let d = seal_with(&right, &request(srv, NOW), &[3; NONCE_LEN], &[4; 16]);
    // A server that only knows another key does not find this key-id.
    assert_eq!(
        verify_one(&d, &wrong, &srv, NOW, &mut record()),
        Err(Reject::UnknownKeyId)
    );
    // A lookup that maps this key-id to another key (a key-id collision, or
    // a corrupt key table): the AEAD refuses.
    assert_eq!(
        verify(&d, |_| Some(&wrong), &srv, NOW, &mut record()),
        Err(Reject::AuthFailed)
    );
    // A server holding both keys picks the right one by id.
    let both = [&wrong, &right];
    let found = verify(
        &d,
        |id| both.iter().copied().find(|k| k.key_id() == *id),
        &srv,
        NOW,
        &mut record(),
    );
    assert!(found.is_ok());
}

#[test]
fn header_checks_in_order() {
    let k = key(1);
    let srv = ServerId::from_name("gw");
    let d = sample_datagrams(&k)[0];
    let mut bad = d;
    bad[4] = 2;
    assert_eq!(
        verify_one(&bad, &k, &srv, NOW, &mut record()),
        Err(Reject::UnknownVersion(2))
    );
    bad[0] = b'x';
    assert_eq!(
        verify_one(&bad, &k, &srv, NOW, &mut record()),
        Err(Reject::BadMagic)
    );
    assert_eq!(&d[..4], &MAGIC);
    assert_eq!(&d[KEY_ID_AT], &k.key_id().0);
    assert_eq!(&d[NONCE_AT], &[0u8; NONCE_LEN]);
}

#[test]
fn wrong_server_is_rejected() {
    let k = key(1);
    let d = seal_with(
        &k,
        &request(ServerId::from_name("gw-a"), NOW),
        &[1; NONCE_LEN],
        &[0; 16],
    );
    let mut rec = record();
    assert_eq!(
        verify_one(&d, &k, &ServerId::from_name("gw-b"), NOW, &mut rec),
        Err(Reject::WrongServer)
    );
    // A rejected datagram leaves no trace in the record: the right server
    // still accepts it once.
    assert!(rec.is_empty());
    let srv = ServerId::from_name("gw-a");
    assert!(verify_one(&d, &k, &srv, NOW, &mut rec).is_ok());
}

#[test]
fn time_window_edges() {
    let k = key(1);
    let srv = ServerId::from_name("gw");
    let w = TimeWindow::default();
    let at = |ts: u64, now: u64| {
        let d = seal_with(&k, &request(srv, ts), &[1; NONCE_LEN], &[0; 16]);
        verify_one(&d, &k, &srv, now, &mut record()).map(|_| ())
    };
    assert_eq!(at(NOW - w.past_secs, NOW), Ok(()));
    assert_eq!(
        at(NOW - w.past_secs - 1, NOW),
        Err(Reject::TooOld {
            age_secs: w.past_secs + 1
        })
    );
    assert_eq!(at(NOW + w.future_secs, NOW), Ok(()));
    assert_eq!(
        at(NOW + w.future_secs + 1, NOW),
        Err(Reject::InFuture {
            ahead_secs: w.future_secs + 1
        })
    );
    // Extremes of u64 neither overflow nor wrap into the window.
    assert_eq!(at(0, u64::MAX), Err(Reject::TooOld { age_secs: u64::MAX }));
    assert_eq!(
        at(u64::MAX, 0),
        Err(Reject::InFuture {
            ahead_secs: u64::MAX
        })
    );
}

#[test]
fn replay_is_rejected_also_after_persisting_the_record() {
    let k = key(1);
    let srv = ServerId::from_name("gw");
    let mut rec = record();
    let d1 = seal_with(&k, &request(srv, NOW), &[1; NONCE_LEN], &[0; 16]);
    let d2 = seal_with(&k, &request(srv, NOW), &[2; NONCE_LEN], &[0; 16]);
    assert!(verify_one(&d1, &k, &srv, NOW, &mut rec).is_ok());
    assert_eq!(
        verify_one(&d1, &k, &srv, NOW + 1, &mut rec),
        Err(Reject::Replayed)
    );

    let bytes = bincode::serialize(&rec).unwrap();
    let mut restored: ReplayRecord = bincode::deserialize(&bytes).unwrap();
    assert_eq!(restored, rec);
    assert_eq!(
        verify_one(&d1, &k, &srv, NOW + 2, &mut restored),
        Err(Reject::Replayed)
    );
    // Another nonce of the same request is a new datagram.
    assert!(verify_one(&d2, &k, &srv, NOW + 2, &mut restored).is_ok());
    assert_eq!(
        verify_one(&d2, &k, &srv, NOW + 3, &mut restored),
        Err(Reject::Replayed)
    );

    // Truncated state (a torn write) is an error the server can see and
    // answer with `after_loss`, never a shorter record taken for whole.
    for cut in 0..bytes.len() {
        assert!(bincode::deserialize::<ReplayRecord>(&bytes[..cut]).is_err());
    }
}

#[test]
fn after_loss_floor_refuses_every_possibly_seen_timestamp() {
    let k = key(1);
    let srv = ServerId::from_name("gw");
    let w = TimeWindow::default();
    // Accepted by the old record just before it was lost.
    let d = seal_with(
        &k,
        &request(srv, NOW + w.future_secs),
        &[1; NONCE_LEN],
        &[0; 16],
    );
    let mut lost = ReplayRecord::after_loss(w, DEFAULT_CAPACITY, NOW);
    assert_eq!(lost.floor(), NOW + w.future_secs + 1);
    for now in [NOW, NOW + 1, NOW + w.future_secs] {
        assert_eq!(
            verify_one(&d, &k, &srv, now, &mut lost),
            Err(Reject::Replayed)
        );
    }
    // A datagram made after the loss is fine.
    let fresh = seal_with(
        &k,
        &request(srv, NOW + w.future_secs + 1),
        &[2; NONCE_LEN],
        &[0; 16],
    );
    assert!(verify_one(&fresh, &k, &srv, NOW + w.future_secs + 1, &mut lost).is_ok());
    // The floor survives persistence.
    let restored: ReplayRecord = bincode::deserialize(&bincode::serialize(&lost).unwrap()).unwrap();
    assert_eq!(restored.floor(), lost.floor());
}

#[test]
fn full_record_fails_closed() {
    let k = key(1);
    let srv = ServerId::from_name("gw");
    let mut rec = ReplayRecord::new(TimeWindow::default(), 3);
    for n in 0..3u8 {
        let d = seal_with(&k, &request(srv, NOW), &[n; NONCE_LEN], &[0; 16]);
        assert!(verify_one(&d, &k, &srv, NOW, &mut rec).is_ok());
    }
    let d = seal_with(&k, &request(srv, NOW), &[9; NONCE_LEN], &[0; 16]);
    assert_eq!(
        verify_one(&d, &k, &srv, NOW, &mut rec),
        Err(Reject::ReplayRecordFull)
    );
}

#[test]
fn seal_uses_fresh_nonces() {
    let k = key(1);
    let srv = ServerId::from_name("gw");
    let mut rng = rand::thread_rng();
    let req = request(srv, NOW);
    let a = seal(&k, &req, &mut rng);
    let b = seal(&k, &req, &mut rng);
    assert_ne!(a[NONCE_AT], b[NONCE_AT]);
    let mut rec = record();
    assert!(verify_one(&a, &k, &srv, NOW, &mut rec).is_ok());
    assert!(verify_one(&b, &k, &srv, NOW, &mut rec).is_ok());
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
        any::<[u8; 16]>(),
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
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the fields, a sealed request verifies back to itself at its
    /// own time and server, with its key-id and nonce.
    #[test]
    fn round_trip(
        req in any_request(),
        master in any::<[u8; 32]>(),
        nonce in any::<[u8; NONCE_LEN]>(),
        random in any::<[u8; 16]>(),
    ) {
        let k = MasterKey::from_bytes(master).derive();
        let d = seal_with(&k, &req, &nonce, &random);
        prop_assert_eq!(d.len(), DATAGRAM_LEN);
        let header = parse_header(&d).unwrap();
        prop_assert_eq!(header.key_id(), k.key_id());
        let opened = header.open(&k).unwrap();
        prop_assert_eq!(opened.request, req);
        let mut rec = record();
        let v = verify_one(&d, &k, &req.server, req.timestamp, &mut rec).unwrap();
        prop_assert_eq!(v.request, req);
        prop_assert_eq!(v.key_id, k.key_id());
        prop_assert_eq!(v.nonce, nonce);
        prop_assert_eq!(rec.len(), 1);
        prop_assert_eq!(
            verify_one(&d, &k, &req.server, req.timestamp, &mut rec),
            Err(Reject::Replayed)
        );
    }

    /// Any single flipped bit of any valid datagram is rejected.
    #[test]
    fn any_bit_flip_rejected(
        req in any_request(),
        nonce in any::<[u8; NONCE_LEN]>(),
        bit in 0..DATAGRAM_LEN * 8,
    ) {
        let k = key(7);
        let mut d = seal_with(&k, &req, &nonce, &[0; 16]);
        d[bit / 8] ^= 1 << (bit % 8);
        let r = verify_one(&d, &k, &req.server, req.timestamp, &mut record());
        prop_assert!(r.is_err());
        let r = verify(&d, |_| Some(&k), &req.server, req.timestamp, &mut record());
        prop_assert!(r.is_err());
    }

    /// Any corruption (several bytes overwritten) is rejected too.
    #[test]
    fn any_byte_overwrite_rejected(
        req in any_request(),
        edits in proptest::collection::vec((0..DATAGRAM_LEN, 1..=255u8), 1..8),
    ) {
        let k = key(7);
        let good = seal_with(&k, &req, &[5; NONCE_LEN], &[0; 16]);
        let mut d = good;
        for (i, x) in edits {
            d[i] ^= x;
        }
        prop_assume!(d != good);
        let r = verify(&d, |_| Some(&k), &req.server, req.timestamp, &mut record());
        prop_assert!(r.is_err());
    }

    /// verify never panics, whatever arrives, of whatever length; only the
    /// exact length gets past the first check.
    #[test]
    fn verify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let k = key(7);
        let r = verify(&bytes, |_| Some(&k), &ServerId::from_name("gw"), NOW, &mut record());
        prop_assert!(r.is_err());
        if bytes.len() != DATAGRAM_LEN {
            prop_assert_eq!(r, Err(Reject::WrongLength { got: bytes.len() }));
        }
    }

    /// Right magic, version and key-id with arbitrary body: authentication
    /// is what refuses it.
    #[test]
    fn forged_body_fails_auth(body in proptest::collection::vec(any::<u8>(), DATAGRAM_LEN - 13)) {
        let k = key(7);
        let mut d = Vec::with_capacity(DATAGRAM_LEN);
        d.extend_from_slice(&MAGIC);
        d.push(VERSION);
        d.extend_from_slice(&k.key_id().0);
        d.extend_from_slice(&body);
        prop_assert_eq!(
            verify_one(&d, &k, &ServerId::from_name("gw"), NOW, &mut record()),
            Err(Reject::AuthFailed)
        );
    }

    /// Time window: inside is accepted, outside names the distance.
    #[test]
    fn time_window(ts in any::<u64>(), now in any::<u64>()) {
        let k = key(7);
        let srv = ServerId::from_name("gw");
        let d = seal_with(&k, &request(srv, ts), &[1; NONCE_LEN], &[0; 16]);
        let w = TimeWindow::default();
        let r = verify_one(&d, &k, &srv, now, &mut record()).map(|_| ());
        if ts < now && now - ts > w.past_secs {
            prop_assert_eq!(r, Err(Reject::TooOld { age_secs: now - ts }));
        } else if ts > now && ts - now > w.future_secs {
            prop_assert_eq!(r, Err(Reject::InFuture { ahead_secs: ts - now }));
        } else {
            prop_assert_eq!(r, Ok(()));
        }
    }

    /// Timestamps near `now`: same property, where it matters.
    #[test]
    fn time_window_near(delta in -100i64..100) {
        let k = key(7);
        let srv = ServerId::from_name("gw");
        let ts = NOW.wrapping_add_signed(delta);
        let d = seal_with(&k, &request(srv, ts), &[1; NONCE_LEN], &[0; 16]);
        let r = verify_one(&d, &k, &srv, NOW, &mut record());
        prop_assert_eq!(r.is_ok(), delta.abs() <= 30);
    }

    /// The record persisted with bincode at any point still refuses every
    /// datagram it accepted.
    #[test]
    fn replay_record_survives_bincode(
        nonces in proptest::collection::btree_set(any::<[u8; NONCE_LEN]>(), 1..32),
        offsets in proptest::collection::vec(0u64..30, 32),
    ) {
        let k = key(7);
        let srv = ServerId::from_name("gw");
        let mut rec = record();
        let ds: Vec<_> = nonces
            .iter()
            .zip(&offsets)
            .map(|(n, off)| seal_with(&k, &request(srv, NOW - off), n, &[0; 16]))
            .collect();
        for d in &ds {
            prop_assert!(verify_one(d, &k, &srv, NOW, &mut rec).is_ok());
        }
        let mut back: ReplayRecord =
            bincode::deserialize(&bincode::serialize(&rec).unwrap()).unwrap();
        prop_assert_eq!(&back, &rec);
        for d in &ds {
            prop_assert_eq!(verify_one(d, &k, &srv, NOW, &mut back), Err(Reject::Replayed));
        }
    }
}

#[test]
fn plaintext_len_is_stable() {
    assert_eq!(PLAINTEXT_LEN, 87);
    assert_eq!(DATAGRAM_LEN, 140);
}
