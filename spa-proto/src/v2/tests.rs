use super::*;
use crate::grant::Grant;
use crate::replay::TimeWindow;
use crate::wire::{parse_header, verify, Action, AllowAddr, Grants};
use proptest::prelude::*;
use std::net::Ipv4Addr;

const NOW: u64 = 1_700_000_000;

fn uid(b: u8) -> ServerUid {
    ServerUid([b; SERVER_UID_LEN])
}

fn master() -> MasterKey {
    MasterKey::from_bytes([0x11; 32])
}

fn keys_for(u: &ServerUid) -> KeySetV2 {
    master().server_key(u).derive()
}

fn request(ts: u64, u: &ServerUid) -> Request {
    Request {
        action: Action::Open,
        timestamp: ts,
        duration_secs: 60,
        allow: AllowAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        server: u.server_id(),
        grants: Grants::new(&[Grant::tcp(22).unwrap()]).unwrap(),
    }
}

fn record() -> ReplayRecord {
    ReplayRecord::new(TimeWindow::default(), 64)
}

/// The server side as spa-server runs it: one IdMap over its keys.
fn open_at(
    d: &[u8],
    server: &ServerUid,
    server_keys: &[KeySetV2],
    now: u64,
    replay: &mut ReplayRecord,
) -> Result<Opened, Reject> {
    let mut ids = IdMap::new();
    let hdr_id = KeyId(d[5..13].try_into().unwrap());
    let found = ids.lookup(&hdr_id, now, server_keys, v2of);
    verify_v2(
        d,
        |_| found.map(|(i, e)| (&server_keys[i], e)),
        server,
        now,
        replay,
    )
}

#[test]
fn round_trip_names_the_stable_id() {
    let u = uid(1);
    let k = keys_for(&u);
    let d = seal_v2_with(&k, &request(NOW, &u), &[7; NONCE_LEN], &[0; RANDOM_LEN]);
    assert_eq!(d[4], VERSION_V2);
    assert_eq!(&d[5..13], &k.wire_id(epoch_of(NOW)).0);
    let mut r = record();
    let o = open_at(&d, &u, std::slice::from_ref(&k), NOW, &mut r).unwrap();
    assert_eq!(o.key_id, k.stable_id());
    assert_eq!(o.request, request(NOW, &u));
    // The replay record keys on the stable id: the same datagram again is a replay.
    assert_eq!(
        open_at(&d, &u, std::slice::from_ref(&k), NOW, &mut r),
        Err(Reject::Replayed)
    );
}

#[test]
fn ids_rotate_per_minute_and_never_equal_the_stable_id() {
    let u = uid(1);
    let k = keys_for(&u);
    let a = seal_v2(&k, &request(NOW, &u), &mut rand::rngs::OsRng);
    let b = seal_v2(&k, &request(NOW + 1, &u), &mut rand::rngs::OsRng);
    let c = seal_v2(&k, &request(NOW + EPOCH_SECS, &u), &mut rand::rngs::OsRng);
    // NOW is 20 s into its minute: NOW and NOW+1 share an epoch.
    assert_eq!(epoch_of(NOW), epoch_of(NOW + 1));
    assert_eq!(a[5..13], b[5..13]);
    assert_ne!(a[5..13], c[5..13]);
    assert_ne!(&a[5..13], &k.stable_id().0);
}

#[test]
fn an_id_two_epochs_old_is_unknown_before_any_aead_work() {
    let u = uid(1);
    let k = keys_for(&u);
    let then = NOW - 2 * EPOCH_SECS;
    let mut d = seal_v2(&k, &request(then, &u), &mut rand::rngs::OsRng);
    // Break the tag too: an AEAD attempt would say AuthFailed.
    d[DATAGRAM_LEN - 1] ^= 1;
    let mut r = record();
    assert_eq!(
        open_at(&d, &u, std::slice::from_ref(&k), NOW, &mut r),
        Err(Reject::UnknownKeyId)
    );
    // Even a lookup that claims the stale id is refused by the epoch rule.
    assert_eq!(
        verify_v2(&d, |_| Some((&k, epoch_of(then))), &u, NOW, &mut r),
        Err(Reject::UnknownKeyId)
    );
    // The previous and next epochs are live.
    assert!(epoch_is_live(epoch_of(NOW) - 1, NOW));
    assert!(epoch_is_live(epoch_of(NOW) + 1, NOW));
    assert!(!epoch_is_live(epoch_of(NOW) + 2, NOW));
    assert!(!epoch_is_live(epoch_of(NOW) - 2, NOW));
}

#[test]
fn a_key_file_of_server_a_opens_nothing_at_server_b() {
    let (a, b) = (uid(0xaa), uid(0xbb));
    assert_ne!(master().server_key(&a), master().server_key(&b));
    let ka = keys_for(&a);
    let kb = keys_for(&b);
    // Sealed with A's key file for B's uid (what a thief of A's file can do).
    let forged = seal_v2(&ka, &request(NOW, &b), &mut rand::rngs::OsRng);
    let mut r = record();
    assert_eq!(
        open_at(&forged, &b, std::slice::from_ref(&kb), NOW, &mut r),
        Err(Reject::UnknownKeyId)
    );
    // Forced past the id map, the AEAD refuses it.
    assert_eq!(
        verify_v2(&forged, |_| Some((&kb, epoch_of(NOW))), &b, NOW, &mut r),
        Err(Reject::AuthFailed)
    );
    // A's own datagram to A is refused by B even with B's key: wrong key.
    let to_a = seal_v2(&ka, &request(NOW, &a), &mut rand::rngs::OsRng);
    assert_eq!(
        verify_v2(&to_a, |_| Some((&kb, epoch_of(NOW))), &b, NOW, &mut r),
        Err(Reject::AuthFailed)
    );
}

#[test]
fn the_plaintext_must_name_this_server_uid() {
    let (a, b) = (uid(0xaa), uid(0xbb));
    let k = keys_for(&a);
    let d = seal_v2(&k, &request(NOW, &b), &mut rand::rngs::OsRng);
    let mut r = record();
    assert_eq!(
        open_at(&d, &a, std::slice::from_ref(&k), NOW, &mut r),
        Err(Reject::WrongServer)
    );
}

#[test]
fn versions_do_not_cross() {
    let u = uid(1);
    let k2 = keys_for(&u);
    let d2 = seal_v2(&k2, &request(NOW, &u), &mut rand::rngs::OsRng);
    assert_eq!(
        parse_header(&d2).map(|h| h.key_id()),
        Err(Reject::UnknownVersion(2))
    );
    let k1 = master().derive();
    let mut req1 = request(NOW, &u);
    req1.server = ServerId::from_name("gw");
    let d1 = crate::wire::seal(&k1, &req1, &mut rand::rngs::OsRng);
    let mut r = record();
    assert_eq!(
        verify_v2(&d1, |_| Some((&k2, epoch_of(NOW))), &u, NOW, &mut r),
        Err(Reject::UnknownVersion(1))
    );
    assert!(verify(&d1, |_| Some(&k1), &ServerId::from_name("gw"), NOW, &mut r).is_ok());
    assert_eq!(crate::wire::version_of(&d1), Some(1));
    assert_eq!(crate::wire::version_of(&d2), Some(2));
    assert_eq!(crate::wire::version_of(&d2[1..]), None);
}

#[test]
fn id_map_holds_three_epochs_and_moves_on() {
    let keys: Vec<KeySetV2> = (0u8..4)
        .map(|i| MasterKey::from_bytes([i; 32]).server_key(&uid(1)).derive())
        .collect();
    let mut m = IdMap::new();
    let e = epoch_of(NOW);
    for (i, k) in keys.iter().enumerate() {
        for ep in [e - 1, e, e + 1] {
            assert_eq!(m.lookup(&k.wire_id(ep), NOW, &keys, v2of), Some((i, ep)));
        }
        assert_eq!(m.lookup(&k.wire_id(e - 2), NOW, &keys, v2of), None);
        assert_eq!(m.lookup(&k.wire_id(e + 2), NOW, &keys, v2of), None);
        assert_eq!(m.lookup(&k.stable_id(), NOW, &keys, v2of), None);
    }
    assert_eq!(m.len(), 12);
    // One minute on: incremental, same content as a rebuild.
    let later = NOW + EPOCH_SECS;
    m.refresh(later, &keys, v2of);
    let mut fresh = IdMap::new();
    fresh.refresh(later, &keys, v2of);
    assert_eq!(m.len(), fresh.len());
    for k in &keys {
        assert_eq!(m.lookup(&k.wire_id(e - 1), later, &keys, v2of), None);
        for ep in [e, e + 1, e + 2] {
            let id = k.wire_id(ep);
            assert_eq!(
                m.lookup(&id, later, &keys, v2of),
                fresh.lookup(&id, later, &keys, v2of)
            );
            assert!(m.lookup(&id, later, &keys, v2of).is_some());
        }
    }
    // Keys that do not speak v2 have no ids.
    let mut none = IdMap::new();
    none.refresh(NOW, &keys, |_| None);
    assert!(none.is_empty());
}

#[test]
fn uid_text_round_trip_and_redaction() {
    let u = ServerUid(std::array::from_fn(|i| i as u8 * 17));
    assert_eq!(u.to_string().parse::<ServerUid>(), Ok(u));
    assert_eq!(format!(" {u}\n").parse::<ServerUid>(), Ok(u));
    assert!("00".parse::<ServerUid>().is_err());
    assert!("zz".repeat(16).parse::<ServerUid>().is_err());
    assert!("+f".repeat(16).parse::<ServerUid>().is_err());
    assert_eq!(
        format!("{:?}", master().server_key(&u)),
        "ServerKey(<redacted>)"
    );
}

proptest! {
    #[test]
    fn any_request_round_trips_and_any_bit_flip_is_refused(
        ts_off in 0u64..30,
        nonce in any::<[u8; NONCE_LEN]>(),
        bit in 0usize..DATAGRAM_LEN * 8,
    ) {
        let u = uid(3);
        let k = keys_for(&u);
        let ts = NOW - 15 + ts_off;
        let d = seal_v2_with(&k, &request(ts, &u), &nonce, &[1; RANDOM_LEN]);
        let mut r = record();
        let o = open_at(&d, &u, std::slice::from_ref(&k), NOW, &mut r).unwrap();
        prop_assert_eq!(o.request, request(ts, &u));
        let mut bad = d;
        bad[bit / 8] ^= 1 << (bit % 8);
        let mut r = record();
        prop_assert!(open_at(&bad, &u, std::slice::from_ref(&k), NOW, &mut r).is_err());
    }
}

fn v2of(k: &KeySetV2) -> Option<&KeySetV2> {
    Some(k)
}
