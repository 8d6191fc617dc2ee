//! Authentic datagrams with arbitrary plaintext: the only way to reach the
//! plaintext rules, since the fuzzer cannot forge a tag. Whatever is
//! accepted must re-encode to exactly the same bytes (the encoding is
//! canonical) and must carry this server's id and a fresh timestamp.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spa_proto::wire::{seal_raw_plaintext, NONCE_LEN, PLAINTEXT_LEN};
use spa_proto::{seal_with, verify, KeySet, MasterKey, Reject, ReplayRecord, ServerId, TimeWindow};
use std::sync::OnceLock;

const NOW: u64 = 1_700_000_000;

fn keys() -> &'static KeySet {
    static K: OnceLock<KeySet> = OnceLock::new();
    K.get_or_init(|| MasterKey::from_bytes(std::array::from_fn(|i| i as u8)).derive())
}

fuzz_target!(|data: &[u8]| {
    let k = keys();
    let mut pt = [0u8; PLAINTEXT_LEN];
    let n = data.len().min(PLAINTEXT_LEN);
    pt[..n].copy_from_slice(&data[..n]);
    // Let the fuzzer steer server id and time into the accepted region: a
    // flag byte after the plaintext overwrites them with good values.
    let server = ServerId::from_name("gw.example.net");
    if data.get(PLAINTEXT_LEN).is_some_and(|b| b & 1 == 1) {
        pt[15..31].copy_from_slice(&server.0);
    }
    if data.get(PLAINTEXT_LEN).is_some_and(|b| b & 2 == 2) {
        pt[3..11].copy_from_slice(&NOW.to_be_bytes());
    }
    let nonce = [0x42u8; NONCE_LEN];
    let d = seal_raw_plaintext(k, &pt, &nonce);
    let mut rec = ReplayRecord::new(TimeWindow::default(), 16);
    match verify(
        &d,
        |id| (*id == k.key_id()).then_some(k),
        &server,
        NOW,
        &mut rec,
    ) {
        Ok(opened) => {
            let mut random = [0u8; 16];
            random.copy_from_slice(&pt[71..]);
            assert_eq!(seal_with(k, &opened.request, &nonce, &random), d);
            assert_eq!(opened.request.server, server);
            assert!(opened.request.timestamp.abs_diff(NOW) <= 30);
            assert_eq!(rec.len(), 1);
        }
        Err(
            Reject::Malformed(_)
            | Reject::WrongServer
            | Reject::TooOld { .. }
            | Reject::InFuture { .. },
        ) => {
            assert!(rec.is_empty());
        }
        Err(other) => panic!("authentic datagram rejected as {other:?}"),
    }
});
