//! v2 against v1 (issue 17's measure): the whole receive path of an honest
//! datagram for each version with 16 keys configured and an empty replay
//! record, and the id map's epoch refresh for 10,000 keys (one minute on:
//! one HMAC per key; a rebuild: three).
//!
//!   cargo bench -p spa-proto --bench verify_v2
//!
//! Figures are recorded in docs/benchmarks.md; nothing here asserts timing.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use spa_proto::v2::{epoch_of, seal_v2_with, verify_v2, IdMap, KeySetV2, ServerUid, EPOCH_SECS};
use spa_proto::wire::NONCE_LEN;
use spa_proto::{
    seal_with, verify, Action, AllowAddr, Grant, Grants, KeyId, KeySet, MasterKey, ReplayRecord,
    Request, ServerId, TimeWindow, DATAGRAM_LEN,
};
use std::collections::HashMap;
use std::net::Ipv4Addr;

const NOW: u64 = 1_700_000_000;
const N: usize = 4096;

fn request(server: ServerId) -> Request {
    Request {
        action: Action::Open,
        timestamp: NOW,
        duration_secs: 30,
        allow: AllowAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        server,
        grants: Grants::new(&[Grant::tcp(22).unwrap()]).unwrap(),
    }
}

fn nonces(rng: &mut StdRng) -> Vec<([u8; NONCE_LEN], [u8; 16])> {
    (0..N)
        .map(|_| {
            let mut n = [0u8; NONCE_LEN];
            let mut r = [0u8; 16];
            rng.fill_bytes(&mut n);
            rng.fill_bytes(&mut r);
            (n, r)
        })
        .collect()
}

fn v2of(k: &KeySetV2) -> Option<&KeySetV2> {
    Some(k)
}

fn versions(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let uid = ServerUid([7; 16]);
    let masters: Vec<MasterKey> = (0..16u8).map(|i| MasterKey::from_bytes([i; 32])).collect();
    let v1: HashMap<KeyId, KeySet> = masters
        .iter()
        .map(|m| m.derive())
        .map(|k| (k.key_id(), k))
        .collect();
    let v2: Vec<KeySetV2> = masters
        .iter()
        .map(|m| m.server_key(&uid).derive())
        .collect();
    let mut ids = IdMap::new();
    ids.refresh(NOW, &v2, v2of);
    let name = ServerId::from_name("gw.example.net");
    let sealed = nonces(&mut rng);
    let d1: Vec<[u8; DATAGRAM_LEN]> = sealed
        .iter()
        .map(|(n, r)| seal_with(&masters[3].derive(), &request(name), n, r))
        .collect();
    let d2: Vec<[u8; DATAGRAM_LEN]> = sealed
        .iter()
        .map(|(n, r)| seal_v2_with(&v2[3], &request(uid.server_id()), n, r))
        .collect();

    let mut g = c.benchmark_group("version");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("v1_verify_accept", |b| {
        b.iter_batched_ref(
            || ReplayRecord::new(TimeWindow::default(), 1024),
            |rec| {
                i = (i + 1) % N;
                let r = verify(black_box(&d1[i]), |id| v1.get(id), &name, NOW, rec);
                assert!(black_box(r).is_ok());
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("v2_verify_accept", |b| {
        b.iter_batched_ref(
            || ReplayRecord::new(TimeWindow::default(), 1024),
            |rec| {
                i = (i + 1) % N;
                let d = black_box(&d2[i]);
                let id = KeyId(d[5..13].try_into().unwrap());
                let found = ids.lookup(&id, NOW, &v2, v2of);
                let r = verify_v2(d, |_| found.map(|(k, e)| (&v2[k], e)), &uid, NOW, rec);
                assert!(black_box(r).is_ok());
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn refresh(c: &mut Criterion) {
    let uid = ServerUid([7; 16]);
    let keys: Vec<KeySetV2> = (0..10_000u32)
        .map(|i| {
            let mut m = [0u8; 32];
            m[..4].copy_from_slice(&i.to_be_bytes());
            MasterKey::from_bytes(m).server_key(&uid).derive()
        })
        .collect();
    let mut g = c.benchmark_group("id_map_10000_keys");
    g.sample_size(10);
    g.bench_function("next_epoch", |b| {
        b.iter_batched_ref(
            || {
                let mut m = IdMap::new();
                m.refresh(NOW, &keys, v2of);
                m
            },
            |m| m.refresh(black_box(NOW + EPOCH_SECS), &keys, v2of),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("rebuild", |b| {
        b.iter_batched_ref(
            IdMap::new,
            |m| m.refresh(black_box(NOW), &keys, v2of),
            BatchSize::LargeInput,
        )
    });
    g.finish();
    assert_eq!(epoch_of(NOW + EPOCH_SECS), epoch_of(NOW) + 1);
}

criterion_group!(benches, versions, refresh);
criterion_main!(benches);
