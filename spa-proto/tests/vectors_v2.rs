//! The v2 test vectors of docs/protocol.md §10.7, checked byte for byte
//! against the code and the document (spa-proto/tests/reference.py recomputes
//! them independently in Python).

use spa_proto::v2::{epoch_of, seal_v2_with, verify_v2, ServerUid, EPOCH_SECS};
use spa_proto::{
    Action, AllowAddr, Grant, Grants, MasterKey, Proto, Reject, ReplayRecord, Request, TimeWindow,
};
use std::net::Ipv4Addr;

const DOC: &str = include_str!("../../docs/protocol.md");
const TIMESTAMP: u64 = 1_700_000_000;
const UID: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
const OTHER_UID: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
const SERVER_KEY: &str = "956a75d3297553d8a6f0c82253bebb9d613e154b673045b51d3275d56001555b";
const OTHER_SERVER_KEY: &str = "e4a35b3d8578713da7fdd578228d858ad285a63d8e936e68a8606d747bbbb6d2";
const STABLE_ID: &str = "3fd51e48e2982e19";
const EPOCH: u64 = 28_333_333;
/// Wire ids of epochs EPOCH-1 ..= EPOCH+2.
const WIRE_IDS: [&str; 4] = [
    "0c1c441afa3e4af2",
    "50e57f35a3ebe00a",
    "8bb28e5fdf4b0d04",
    "4bcc6ba0cdcfed04",
];
const VECTOR: &str = "8a5350410250e57f35a3ebe00a404142434445464748494a4b4c4d4e4f505152535455\
                      5657fc5fe6d59e38a37ab7da717f982c63011a1a8731f21bbf186aba4d327ffee05a7d36\
                      809df2c1896bb578147fa185347d418dc799378f85cd20ee944038e2fd39c3402ea24fb3\
                      1c075c415a0ea63d8fe7cdb200b04f0b6242030caa78e25e1b8eac0ec272488063";
const VECTOR_NEXT_MINUTE: &str = "8a535041028bb28e5fdf4b0d04404142434445464748494a4b4c4d4e4f505152\
                      5354555657fc5fe6d59e38a37ab7da4d7f982c63011a1a8731f21bbf186aba4d327ffee0\
                      5a7d36809df2c1896bb578147fa185347d418dc799378f85cd20ee944038e2fd39c3402e\
                      a24fb31c075c415a0ea63d8fe7cdb200b04f0b62ccd74ac2042a549531b4af95e9df5f6e";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

fn master() -> MasterKey {
    MasterKey::from_bytes(std::array::from_fn(|i| i as u8))
}

fn request(ts: u64, uid: &ServerUid) -> Request {
    Request {
        action: Action::Open,
        timestamp: ts,
        duration_secs: 600,
        allow: AllowAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        server: uid.server_id(),
        grants: Grants::new(&[
            Grant::tcp(22).unwrap(),
            Grant::new(Proto::Udp, 51820).unwrap(),
        ])
        .unwrap(),
    }
}

fn in_doc(value: &str, what: &str) {
    assert!(
        squash(DOC).contains(&squash(value)),
        "{what} {value} missing from protocol.md"
    );
}

#[test]
fn v2_derived_values_match_code_and_document() {
    let uid: ServerUid = UID.parse().unwrap();
    let ks = master().server_key(&uid);
    assert_eq!(hex(ks.as_bytes()), SERVER_KEY);
    let other = master().server_key(&OTHER_UID.parse().unwrap());
    assert_eq!(hex(other.as_bytes()), OTHER_SERVER_KEY);
    let k = ks.derive();
    assert_eq!(k.stable_id().to_string(), STABLE_ID);
    assert_eq!(epoch_of(TIMESTAMP), EPOCH);
    for (i, id) in WIRE_IDS.iter().enumerate() {
        assert_eq!(k.wire_id(EPOCH - 1 + i as u64).to_string(), *id);
        in_doc(id, "wire id");
    }
    for (v, what) in [
        (UID, "uid"),
        (OTHER_UID, "other uid"),
        (SERVER_KEY, "server key"),
        (OTHER_SERVER_KEY, "other server key"),
        (STABLE_ID, "stable id"),
    ] {
        in_doc(v, what);
    }
    in_doc(&EPOCH.to_string(), "epoch");
}

#[test]
fn v2_datagram_vectors_match_code_and_document() {
    let uid: ServerUid = UID.parse().unwrap();
    let k = master().server_key(&uid).derive();
    let nonce: [u8; 24] = std::array::from_fn(|i| 0x40 + i as u8);
    let random: [u8; 16] = std::array::from_fn(|i| 0x80 + i as u8);
    for (ts, expected) in [
        (TIMESTAMP, VECTOR),
        (TIMESTAMP + EPOCH_SECS, VECTOR_NEXT_MINUTE),
    ] {
        let d = seal_v2_with(&k, &request(ts, &uid), &nonce, &random);
        assert_eq!(hex(&d), squash(expected));
        in_doc(expected, "v2 datagram");
        let mut rec = ReplayRecord::new(TimeWindow::default(), 8);
        let opened = verify_v2(
            &d,
            |id| (*id == k.wire_id(epoch_of(ts))).then_some((&k, epoch_of(ts))),
            &uid,
            ts,
            &mut rec,
        )
        .unwrap();
        assert_eq!(opened.request, request(ts, &uid));
        assert_eq!(opened.key_id, k.stable_id());
    }
    // The vector is refused by the server of the other uid, even with the
    // same master: its key does not open it.
    let other: ServerUid = OTHER_UID.parse().unwrap();
    let ko = master().server_key(&other).derive();
    let d = seal_v2_with(&k, &request(TIMESTAMP, &uid), &nonce, &random);
    let mut rec = ReplayRecord::new(TimeWindow::default(), 8);
    assert_eq!(
        verify_v2(&d, |_| Some((&ko, EPOCH)), &other, TIMESTAMP, &mut rec),
        Err(Reject::AuthFailed)
    );
}
