//! The test vectors of docs/protocol.md, checked byte for byte against the
//! code and against the document itself, so neither can drift from the
//! other. spa-proto/tests/reference.py recomputes the same values with an
//! independent Python implementation.

use spa_proto::knock::{sequence, KnockParams};
use spa_proto::{
    parse_header, seal_with, verify, Action, AllowAddr, Grant, Grants, KeySet, MasterKey, Proto,
    ReplayRecord, Request, ServerId, TimeWindow,
};
use std::net::{Ipv4Addr, Ipv6Addr};

const DOC: &str = include_str!("../../docs/protocol.md");

const SERVER_NAME: &str = "gw.example.net";
const TIMESTAMP: u64 = 1_700_000_000;
const KEY_ID: &str = "4e7703448739b981";
const SERVER_ID: &str = "72e04aedd4ce53902aca7af9ef34273d";

const VECTOR_1: &str = "8a535041014e7703448739b981404142434445464748494a4b4c4d4e4f50515253545556\
                        5700668f1c0c2fdae3b455ceaf3869e9e98c100fcade39fbd2062fc7b9ea1df1ca1523fa\
                        d0208b9f4d88c848083ea20357f0f73088e3e4b6cc0d32ab2a7569fc1c8f96b863fdf6bc\
                        4553076f968da9bd509d1866af0ee2349779bee0942128a44328900983310b41";
const VECTOR_2: &str = "8a535041014e7703448739b981404142434445464748494a4b4c4d4e4f50515253545556\
                        5703648c1c0c2fdae3b455ceaf386bb1e98c100fcade39fbd2062fc7b9ea1df12c274a45\
                        d0208b9f4d88c848083ea20257f15a21428fe4b6cc0d32ab2a7569fc1c8f96b863fdf6bc\
                        4553076f968da9bd509d1866af0ee23403d2fd983369fd9a177ccd80eda86674";
const VECTOR_3: &str = "8a535041014e7703448739b981404142434445464748494a4b4c4d4e4f50515253545556\
                        5700628c1c0c2fdae3b455ceaf386bafe98c100fcade39fbd2062fc7b9ea1df10c2647fd\
                        d0208b9f4d88c848083ea20357f0f721428fe4b6cc0d32ab2a7569fc1c8f96b863fdf6bc\
                        4553076f968da9bd509d1866af0ee23485adb1d2fb69e7bc332c13f5fb0db14f";
const KNOCK_STEP: u64 = 56_666_666;
const KNOCK_PORTS: [u16; 5] = [44303, 50368, 10753, 39692, 26693];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

fn keys() -> KeySet {
    let mut master = [0u8; 32];
    for (i, b) in master.iter_mut().enumerate() {
        *b = i as u8;
    }
    MasterKey::from_bytes(master).derive()
}

fn nonce() -> [u8; 24] {
    std::array::from_fn(|i| 0x40 + i as u8)
}

fn random() -> [u8; 16] {
    std::array::from_fn(|i| 0x80 + i as u8)
}

fn requests() -> [(Request, &'static str); 3] {
    let server = ServerId::from_name(SERVER_NAME);
    [
        (
            Request {
                action: Action::Open,
                timestamp: TIMESTAMP,
                duration_secs: 600,
                allow: AllowAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
                server,
                grants: Grants::new(&[
                    Grant::tcp(22).unwrap(),
                    Grant::new(Proto::Udp, 51820).unwrap(),
                ])
                .unwrap(),
            },
            VECTOR_1,
        ),
        (
            Request {
                action: Action::Close,
                timestamp: TIMESTAMP,
                duration_secs: 0,
                allow: AllowAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                server,
                grants: Grants::new(&[Grant::tcp(443).unwrap()]).unwrap(),
            },
            VECTOR_2,
        ),
        (
            Request {
                action: Action::Open,
                timestamp: TIMESTAMP,
                duration_secs: 30,
                allow: AllowAddr::Source,
                server,
                grants: Grants::new(&[Grant::tcp(22).unwrap()]).unwrap(),
            },
            VECTOR_3,
        ),
    ]
}

#[test]
fn derived_values_match_the_document() {
    let k = keys();
    assert_eq!(k.key_id().to_string(), KEY_ID);
    assert_eq!(hex(&ServerId::from_name(SERVER_NAME).0), SERVER_ID);
    let doc = squash(DOC);
    assert!(doc.contains(KEY_ID), "key-id missing from protocol.md");
    assert!(
        doc.contains(SERVER_ID),
        "server id missing from protocol.md"
    );
}

#[test]
fn datagram_vectors_match_code_and_document() {
    let k = keys();
    let doc = squash(DOC);
    for (i, (req, expected)) in requests().into_iter().enumerate() {
        let expected = squash(expected);
        let d = seal_with(&k, &req, &nonce(), &random());
        assert_eq!(hex(&d), expected, "vector {}", i + 1);
        assert!(
            doc.contains(&expected),
            "vector {} missing from protocol.md",
            i + 1
        );
        // And it verifies back at the server.
        let mut rec = ReplayRecord::new(TimeWindow::default(), 8);
        let opened = verify(
            &d,
            |id| (*id == k.key_id()).then_some(&k),
            &ServerId::from_name(SERVER_NAME),
            TIMESTAMP,
            &mut rec,
        )
        .unwrap();
        assert_eq!(opened.request, req);
        assert_eq!(parse_header(&d).unwrap().key_id(), k.key_id());
    }
}

#[test]
fn knock_vector_matches_code_and_document() {
    let k = keys();
    let p = KnockParams::default();
    assert_eq!(
        (p.ports, p.step_secs, p.range),
        (5, 30, (10_000, 60_000)),
        "protocol.md states these defaults"
    );
    let step = p.step_at(TIMESTAMP);
    assert_eq!(step, KNOCK_STEP);
    let seq = sequence(&k, &ServerId::from_name(SERVER_NAME), step, &p);
    assert_eq!(seq, KNOCK_PORTS);
    let doc = squash(DOC);
    let listed = KNOCK_PORTS.map(|p| p.to_string()).join(",");
    assert!(
        doc.contains(&listed),
        "knock ports {listed} missing from protocol.md"
    );
    assert!(doc.contains(&KNOCK_STEP.to_string()));
}
