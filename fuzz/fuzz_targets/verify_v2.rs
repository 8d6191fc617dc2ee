//! Arbitrary network bytes against the v2 receive path (the master key and
//! server uid of docs/protocol.md §10.7), through the server's id map. Must
//! never panic; only the honest v2 vectors the seeds hold may verify, each
//! at its own minute; every mutation is refused, and no input is ever opened
//! at the server of another uid holding the same master's key for itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spa_proto::v2::{epoch_of, verify_v2, IdMap, KeySetV2, ServerUid};
use spa_proto::{KeyId, MasterKey, ReplayRecord, TimeWindow, DATAGRAM_LEN};
use std::sync::OnceLock;

const NOW: u64 = 1_700_000_000;
const HONEST: [(&[u8], u64); 2] = [
    (include_bytes!("../seeds/verify_v2/vector1.bin"), NOW),
    (include_bytes!("../seeds/verify_v2/vector2.bin"), NOW + 60),
];

fn uid(first: u8) -> ServerUid {
    ServerUid(std::array::from_fn(|i| first + i as u8))
}

fn keys() -> &'static [KeySetV2; 2] {
    static K: OnceLock<[KeySetV2; 2]> = OnceLock::new();
    K.get_or_init(|| {
        let m = MasterKey::from_bytes(std::array::from_fn(|i| i as u8));
        [m.server_key(&uid(0xa0)).derive(), m.server_key(&uid(0xb0)).derive()]
    })
}

fn v2of(k: &KeySetV2) -> Option<&KeySetV2> {
    Some(k)
}

fuzz_target!(|data: &[u8]| {
    let [mine, other] = keys();
    for (now, honest_now) in [(NOW, 0usize), (NOW + 60, 1)] {
        let honest = HONEST[honest_now].0 == data;
        let mut ids = IdMap::new();
        let list = std::slice::from_ref(mine);
        let id = data.get(5..13).and_then(|b| b.try_into().ok()).map(KeyId);
        let found = id.and_then(|id| ids.lookup(&id, now, list, v2of));
        let mut rec = ReplayRecord::new(TimeWindow::default(), 16);
        let r = verify_v2(data, |_| found.map(|(i, e)| (&list[i], e)), &uid(0xa0), now, &mut rec);
        assert_eq!(r.is_ok(), honest, "forgery or false reject");
        if r.is_ok() {
            assert_eq!(data.len(), DATAGRAM_LEN);
        }
        // The other server, forced past its map: nothing opens there.
        let mut rec = ReplayRecord::new(TimeWindow::default(), 16);
        let there = verify_v2(data, |_| Some((other, epoch_of(now))), &uid(0xb0), now, &mut rec);
        assert!(there.is_err());
    }
});
