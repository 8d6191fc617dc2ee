//! Arbitrary network bytes against the whole receive path with a fixed key
//! (the master key of the test vectors in docs/protocol.md). Must never
//! panic; only an exact 140-byte datagram may get past the length check, and
//! the only datagrams that may ever verify are the honest ones the seeds
//! hold: every mutation of them must be rejected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spa_proto::{
    parse_header, verify, KeySet, MasterKey, Reject, ReplayRecord, ServerId, TimeWindow,
    DATAGRAM_LEN,
};
use std::sync::OnceLock;

/// The clock of the test vectors, so the honest seeds are fresh.
const NOW: u64 = 1_700_000_000;

const HONEST: [&[u8]; 3] = [
    include_bytes!("../seeds/verify/vector1.bin"),
    include_bytes!("../seeds/verify/vector2.bin"),
    include_bytes!("../seeds/verify/vector3.bin"),
];

fn keys() -> &'static KeySet {
    static K: OnceLock<KeySet> = OnceLock::new();
    K.get_or_init(|| MasterKey::from_bytes(std::array::from_fn(|i| i as u8)).derive())
}

fuzz_target!(|data: &[u8]| {
    let k = keys();
    let server = ServerId::from_name("gw.example.net");
    let honest = HONEST.contains(&data);
    match parse_header(data) {
        Ok(h) => {
            assert_eq!(data.len(), DATAGRAM_LEN);
            assert_eq!(h.open(k).is_ok(), honest, "forgery or false reject");
        }
        Err(Reject::WrongLength { got }) => assert_eq!(got, data.len()),
        Err(_) => assert_eq!(data.len(), DATAGRAM_LEN),
    }
    // A lookup that finds the key by id, and one that hands it out for any
    // id (a key-id collision must still fail authentication).
    let mut rec = ReplayRecord::new(TimeWindow::default(), 16);
    let by_id = verify(
        data,
        |id| (*id == k.key_id()).then_some(k),
        &server,
        NOW,
        &mut rec,
    );
    assert_eq!(by_id.is_ok(), honest);
    assert_eq!(rec.len(), usize::from(honest));
    let mut rec = ReplayRecord::new(TimeWindow::default(), 16);
    let any = verify(data, |_| Some(k), &server, NOW, &mut rec);
    assert_eq!(any.is_ok(), honest);
});
