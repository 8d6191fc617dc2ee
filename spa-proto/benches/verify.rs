//! What one core can verify per second: honest datagrams (the whole receive
//! path, including the replay record insert), the rejection of garbage at
//! each check, and replay record operations at the default capacity.
//!
//!   cargo bench -p spa-proto --bench verify
//!
//! Figures are recorded in docs/benchmarks.md ("Microbenchmarks").

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use spa_proto::replay::DEFAULT_CAPACITY;
use spa_proto::wire::NONCE_LEN;
use spa_proto::{
    parse_header, seal_with, verify, Action, AllowAddr, Grant, Grants, KeyId, KeySet, MasterKey,
    Reject, ReplayRecord, Request, ServerId, TimeWindow, DATAGRAM_LEN, MAGIC, VERSION,
};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NOW: u64 = 1_700_000_000;
/// Distinct honest datagrams verified against one record before it is
/// replaced, so every timed verify is an accept and not a replay.
const CHUNK: usize = 4096;
/// Keys configured at the server; the datagrams use one of them.
const KEYS: u8 = 16;

struct Fixture {
    keys: HashMap<KeyId, KeySet>,
    key_id: KeyId,
    server: ServerId,
    honest: Vec<[u8; DATAGRAM_LEN]>,
    rng: StdRng,
}

fn fixture() -> Fixture {
    let mut rng = StdRng::seed_from_u64(1);
    let keys: HashMap<KeyId, KeySet> = (0..KEYS)
        .map(|i| {
            let k = MasterKey::from_bytes([i; 32]).derive();
            (k.key_id(), k)
        })
        .collect();
    let mine = MasterKey::from_bytes([3; 32]).derive();
    let server = ServerId::from_name("gw.example.net");
    let req = Request {
        action: Action::Open,
        timestamp: NOW,
        duration_secs: 30,
        allow: AllowAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        server,
        grants: Grants::new(&[Grant::tcp(22).unwrap()]).unwrap(),
    };
    let honest = (0..CHUNK)
        .map(|_| {
            let mut nonce = [0u8; NONCE_LEN];
            let mut random = [0u8; 16];
            rng.fill_bytes(&mut nonce);
            rng.fill_bytes(&mut random);
            seal_with(&mine, &req, &nonce, &random)
        })
        .collect();
    Fixture {
        keys,
        key_id: mine.key_id(),
        server,
        honest,
        rng,
    }
}

/// A record holding `n` live entries (other key-ids, timestamps spread over
/// the window), with room for `extra` more.
fn filled_record(n: usize, extra: usize, rng: &mut StdRng) -> ReplayRecord {
    filled_by(n, extra, None, rng)
}

/// As [`filled_record`], the entries spread over `keys` key-ids (None: a
/// random key-id per entry, the worst case for the per-key queues).
fn filled_by(n: usize, extra: usize, keys: Option<u8>, rng: &mut StdRng) -> ReplayRecord {
    let mut rec = ReplayRecord::new(TimeWindow::default(), n + extra);
    while rec.len() < n {
        let mut nonce = [0u8; NONCE_LEN];
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut nonce);
        match keys {
            Some(k) => id[0] = (rng.next_u32() % u32::from(k)) as u8,
            None => rng.fill_bytes(&mut id),
        }
        let ts = NOW - u64::from(rng.next_u32() % 30);
        rec.check_and_insert(&KeyId(id), &nonce, ts, NOW).unwrap();
    }
    rec
}

/// `iters` calls of `each` on the first items of `items`, timed, in chunks
/// of at most [`CHUNK`], each chunk against a fresh copy of `base` made and
/// dropped outside the timer, so the record stays at its size. One loop
/// for every bench that verifies or inserts into a record.
fn timed_in_chunks<R: Clone, T>(
    iters: u64,
    base: &R,
    items: &[T],
    mut each: impl FnMut(&mut R, &T),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        let mut rec = base.clone();
        let start = Instant::now();
        for item in &items[..n] {
            each(&mut rec, item);
        }
        total += start.elapsed();
        drop(rec);
        left -= n as u64;
    }
    total
}

/// Times verifying every honest datagram once against a copy of `base`;
/// the copy is made and dropped outside the timer.
fn time_accepts(f: &Fixture, base: &ReplayRecord, iters: u64) -> Duration {
    timed_in_chunks(iters, base, &f.honest, |rec, d| {
        let r = verify(black_box(d), |id| f.keys.get(id), &f.server, NOW, rec);
        assert!(black_box(r).is_ok());
    })
}

fn honest(c: &mut Criterion) {
    let mut f = fixture();
    let mut g = c.benchmark_group("honest");
    g.throughput(Throughput::Elements(1));

    let empty = ReplayRecord::new(TimeWindow::default(), DEFAULT_CAPACITY);
    g.bench_function("verify_accept/empty_record", |b| {
        b.iter_custom(|iters| time_accepts(&f, &empty, iters))
    });

    // Steady state at the default capacity: the record already holds
    // 65,536 - 4096 live entries and fills up to exactly 65,536.
    let warm = filled_record(DEFAULT_CAPACITY - CHUNK, CHUNK, &mut f.rng);
    g.bench_function("verify_accept/record_61440_to_65536", |b| {
        b.iter_custom(|iters| time_accepts(&f, &warm, iters))
    });

    // The crypto alone: header parse, key lookup, AEAD open, plaintext rules.
    let d = f.honest[0];
    g.bench_function("parse_header+open", |b| {
        b.iter(|| {
            let h = parse_header(black_box(&d)).unwrap();
            let k = f.keys.get(&h.key_id()).unwrap();
            black_box(h.open(k)).unwrap()
        })
    });
    g.finish();
}

fn garbage(c: &mut Criterion) {
    let mut f = fixture();
    let mut g = c.benchmark_group("reject");
    g.throughput(Throughput::Elements(1));
    let mut rec = ReplayRecord::new(TimeWindow::default(), DEFAULT_CAPACITY);

    let mut short = vec![0u8; 100];
    f.rng.fill_bytes(&mut short);
    let mut random = [0u8; DATAGRAM_LEN];
    f.rng.fill_bytes(&mut random);
    if random[..4] == MAGIC {
        random[0] ^= 1;
    }
    let mut unknown_id = random;
    unknown_id[..4].copy_from_slice(&MAGIC);
    unknown_id[4] = VERSION;
    let mut forged = unknown_id;
    forged[5..13].copy_from_slice(&f.key_id.0);

    let cases: [(&str, &[u8], Reject); 4] = [
        (
            "wrong_length",
            &short,
            Reject::WrongLength { got: short.len() },
        ),
        ("bad_magic", &random, Reject::BadMagic),
        ("unknown_key_id", &unknown_id, Reject::UnknownKeyId),
        ("auth_failed", &forged, Reject::AuthFailed),
    ];
    for (name, bytes, expected) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = verify(
                    black_box(bytes),
                    |id| f.keys.get(id),
                    &f.server,
                    NOW,
                    &mut rec,
                );
                assert_eq!(black_box(r), Err(expected));
            })
        });
    }

    // An honest datagram seen before: full AEAD, then the replay lookup in
    // a record at the default capacity.
    let mut full = filled_record(DEFAULT_CAPACITY - 1, 1, &mut f.rng);
    let d = f.honest[0];
    verify(&d, |id| f.keys.get(id), &f.server, NOW, &mut full).unwrap();
    assert_eq!(full.len(), DEFAULT_CAPACITY);
    g.bench_function("replayed/record_65536", |b| {
        b.iter(|| {
            let r = verify(
                black_box(&d),
                |id| f.keys.get(id),
                &f.server,
                NOW,
                &mut full,
            );
            assert_eq!(black_box(r), Err(Reject::Replayed));
        })
    });
    g.finish();
}

/// Record sizes for the replay record cases: its operations must cost the
/// same at the default capacity as at a sixteenth of it (issue 14).
const RECORD_SIZES: [usize; 2] = [4096, DEFAULT_CAPACITY];

/// The record as it was before issue 14 (one B-tree of entries per key),
/// its insert path only: the same-run reference for the hash set.
mod btree_record {
    use spa_proto::{KeyId, Seen};
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Clone, Default)]
    pub struct Old {
        pub seen: BTreeMap<KeyId, BTreeSet<Seen>>,
        pub share: usize,
    }

    impl Old {
        /// Window check (+/-30 s), replay check, share, insert, as
        /// `ReplayRecord::check_and_insert` did them (no floor: 0 here).
        pub fn check_and_insert(&mut self, s: Seen, now: u64) -> bool {
            if s.timestamp.abs_diff(now) > 30 {
                return false;
            }
            if let Some(set) = self.seen.get_mut(&s.key_id) {
                if set.contains(&s) {
                    return false;
                }
                if set.len() >= self.share {
                    let cut = Seen {
                        timestamp: now - 30,
                        key_id: KeyId([0; 8]),
                        nonce: [0; 24],
                    };
                    *set = set.split_off(&cut);
                    if set.len() >= self.share {
                        return false;
                    }
                }
            }
            self.seen.entry(s.key_id).or_default().insert(s)
        }
    }
}

fn old_filled(n: usize, extra: usize, rng: &mut StdRng) -> btree_record::Old {
    let mut rec = btree_record::Old {
        share: n + extra,
        ..Default::default()
    };
    let mut len = 0;
    while len < n {
        let mut nonce = [0u8; NONCE_LEN];
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut nonce);
        rng.fill_bytes(&mut id);
        let timestamp = NOW - u64::from(rng.next_u32() % 30);
        let s = spa_proto::Seen {
            timestamp,
            key_id: KeyId(id),
            nonce,
        };
        if rec.check_and_insert(s, NOW) {
            len += 1;
        }
    }
    rec
}

/// [`CHUNK`] random nonces, none of them in any record.
fn fresh_nonces(rng: &mut StdRng) -> Vec<[u8; NONCE_LEN]> {
    (0..CHUNK)
        .map(|_| {
            let mut n = [0u8; NONCE_LEN];
            rng.fill_bytes(&mut n);
            n
        })
        .collect()
}

fn replay(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let mut g = c.benchmark_group("replay_record");
    g.throughput(Throughput::Elements(1));

    for size in RECORD_SIZES {
        let mut full = filled_record(size, 0, &mut rng);
        let present: Vec<_> = full.entries().copied().step_by(97).collect();
        let mut i = 0;
        g.bench_function(format!("lookup_hit/{size}"), |b| {
            b.iter(|| {
                let s = present[i % present.len()];
                i += 1;
                let r = full.check_and_insert(&s.key_id, &s.nonce, s.timestamp, NOW);
                assert_eq!(black_box(r), Err(Reject::Replayed));
            })
        });

        // A miss and an insert into a record of `size` entries: one
        // key-id per entry, and (miss_insert_16_keys) spread over 16 keys,
        // as a server with a few clients holds them.
        let fresh = fresh_nonces(&mut rng);
        let id = KeyId([0xee; 8]);
        for (name, keys) in [("miss_insert", None), ("miss_insert_16_keys", Some(16))] {
            let base = filled_by(size, CHUNK, keys, &mut rng);
            g.bench_function(format!("{name}/{size}"), |b| {
                b.iter_custom(|iters| {
                    timed_in_chunks(iters, &base, &fresh, |rec, nonce| {
                        let r = rec.check_and_insert(&id, black_box(nonce), NOW, NOW);
                        assert!(black_box(r).is_ok());
                    })
                })
            });
        }
    }

    // The same two cases on the B-tree record of before issue 14.
    for size in RECORD_SIZES {
        let mut full = old_filled(size, 0, &mut rng);
        let present: Vec<_> = full.seen.values().flatten().copied().step_by(97).collect();
        let mut i = 0;
        g.bench_function(format!("btree_lookup_hit/{size}"), |b| {
            b.iter(|| {
                let s = present[i % present.len()];
                i += 1;
                assert!(!black_box(full.check_and_insert(s, NOW)));
            })
        });
        let base = old_filled(size, CHUNK, &mut rng);
        let fresh = fresh_nonces(&mut rng);
        g.bench_function(format!("btree_miss_insert/{size}"), |b| {
            b.iter_custom(|iters| {
                timed_in_chunks(iters, &base, &fresh, |rec, nonce| {
                    let s = spa_proto::Seen {
                        timestamp: NOW,
                        key_id: KeyId([0xee; 8]),
                        nonce: *black_box(nonce),
                    };
                    assert!(black_box(rec.check_and_insert(s, NOW)));
                })
            })
        });
    }

    // Persisting: the serialized size and cost of a full record.
    let full = filled_record(DEFAULT_CAPACITY, 0, &mut rng);
    g.throughput(Throughput::Elements(DEFAULT_CAPACITY as u64));
    g.bench_function("bincode_serialize/65536", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(8 << 20),
            |buf| bincode::serialize_into(buf, &full).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Keys configured at the server for the many-keys cases (issue 14).
const MANY_KEYS: usize = 10_000;

/// `n` distinct keys, as the server holds them.
fn key_map(n: usize) -> HashMap<KeyId, KeySet> {
    (0..n)
        .map(|i| {
            let mut m = [0x5a; 32];
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let k = MasterKey::from_bytes(m).derive();
            (k.key_id(), k)
        })
        .collect()
}

/// The verify cost with 16 and with 10,000 configured keys: honest
/// datagrams each from a random one of the keys (so the lookups spread
/// over the whole table, as many clients' would), and forgeries with a
/// real key-id (the flood case: an AEAD open each).
fn many_keys(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut g = c.benchmark_group("keys");
    g.throughput(Throughput::Elements(1));
    let server = ServerId::from_name("gw.example.net");
    for n in [usize::from(KEYS), MANY_KEYS] {
        let keys = key_map(n);
        let ids: Vec<KeyId> = keys.keys().copied().collect();
        let req = Request {
            action: Action::Open,
            timestamp: NOW,
            duration_secs: 30,
            allow: AllowAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            server,
            grants: Grants::new(&[Grant::tcp(22).unwrap()]).unwrap(),
        };
        let honest: Vec<[u8; DATAGRAM_LEN]> = (0..CHUNK)
            .map(|_| {
                let k = &keys[&ids[rng.next_u32() as usize % ids.len()]];
                let mut nonce = [0u8; NONCE_LEN];
                let mut random = [0u8; 16];
                rng.fill_bytes(&mut nonce);
                rng.fill_bytes(&mut random);
                seal_with(k, &req, &nonce, &random)
            })
            .collect();
        let base = ReplayRecord::new(TimeWindow::default(), DEFAULT_CAPACITY);
        g.bench_function(format!("verify_accept/{n}"), |b| {
            b.iter_custom(|iters| {
                timed_in_chunks(iters, &base, &honest, |rec, d| {
                    let r = verify(black_box(d), |id| keys.get(id), &server, NOW, rec);
                    assert!(black_box(r).is_ok());
                })
            })
        });
        let forged: Vec<[u8; DATAGRAM_LEN]> = honest
            .iter()
            .map(|d| {
                let mut f = *d;
                rng.fill_bytes(&mut f[13..]);
                f
            })
            .collect();
        let mut rec = base.clone();
        let mut i = 0;
        g.bench_function(format!("auth_failed/{n}"), |b| {
            b.iter(|| {
                let d = &forged[i % CHUNK];
                i += 1;
                let r = verify(black_box(d), |id| keys.get(id), &server, NOW, &mut rec);
                assert_eq!(black_box(r), Err(Reject::AuthFailed));
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = honest, garbage, replay, many_keys
}
criterion_main!(benches);
