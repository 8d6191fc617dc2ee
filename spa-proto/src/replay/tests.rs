//! Unit tests and the model proptest of the replay record (replay.rs).
use super::*;

fn id(b: u8) -> KeyId {
    KeyId([b; 8])
}

#[test]
fn window_edges() {
    let w = TimeWindow::default();
    assert!(w.check(1000, 1000).is_ok());
    assert!(w.check(970, 1000).is_ok());
    assert_eq!(w.check(969, 1000), Err(Reject::TooOld { age_secs: 31 }));
    assert!(w.check(1030, 1000).is_ok());
    assert_eq!(
        w.check(1031, 1000),
        Err(Reject::InFuture { ahead_secs: 31 })
    );
}

#[test]
fn second_insert_is_replay() {
    let mut r = ReplayRecord::new(TimeWindow::default(), 10);
    assert!(r.check_and_insert(&id(1), &[1; 24], 1000, 1000).is_ok());
    assert_eq!(
        r.check_and_insert(&id(1), &[1; 24], 1000, 1001),
        Err(Reject::Replayed)
    );
    assert!(r.check_and_insert(&id(2), &[1; 24], 1000, 1001).is_ok());
}

#[test]
fn prune_forgets_only_dead_entries() {
    let mut r = ReplayRecord::new(TimeWindow::default(), 10);
    r.check_and_insert(&id(1), &[1; 24], 1000, 1000).unwrap();
    r.check_and_insert(&id(1), &[2; 24], 1020, 1020).unwrap();
    r.prune(1031);
    assert_eq!(r.len(), 1);
    // The forgotten one is now refused by the window anyway.
    assert!(matches!(
        r.check_and_insert(&id(1), &[1; 24], 1000, 1031),
        Err(Reject::TooOld { .. })
    ));
}

#[test]
fn full_record_fails_closed() {
    let mut r = ReplayRecord::new(TimeWindow::default(), 2);
    r.check_and_insert(&id(1), &[1; 24], 1000, 1000).unwrap();
    r.check_and_insert(&id(1), &[2; 24], 1000, 1000).unwrap();
    assert_eq!(
        r.check_and_insert(&id(1), &[3; 24], 1000, 1000),
        Err(Reject::ReplayRecordFull)
    );
    // Once the old entries leave the window, there is room again.
    assert!(r.check_and_insert(&id(1), &[3; 24], 1040, 1040).is_ok());
}

#[test]
fn replay_beats_full() {
    // A full record still names a replay as a replay, not as full.
    let mut r = ReplayRecord::new(TimeWindow::default(), 1);
    r.check_and_insert(&id(1), &[1; 24], 1000, 1000).unwrap();
    assert_eq!(
        r.check_and_insert(&id(1), &[1; 24], 1000, 1000),
        Err(Reject::Replayed)
    );
    assert_eq!(r.len(), 1);
}

#[test]
fn clock_stepping_back_after_a_prune_does_not_reopen_a_replay() {
    // The record prunes at 1100 (as a full record does), forgetting the
    // datagram of 1000; then the clock steps back to 1010, where 1000
    // is inside the window again.
    let mut r = ReplayRecord::new(TimeWindow::default(), 10);
    r.check_and_insert(&id(1), &[1; 24], 1000, 1000).unwrap();
    r.prune(1100);
    assert!(r.is_empty());
    assert_eq!(
        r.check_and_insert(&id(1), &[1; 24], 1000, 1010),
        Err(Reject::Replayed)
    );
    // What was never accepted is refused too until the clock is back
    // past the old floor: fail closed, for one window at most.
    assert!(r.check_and_insert(&id(1), &[2; 24], 1070, 1070).is_ok());
}

#[test]
fn after_loss_refuses_everything_possibly_seen() {
    let mut r = ReplayRecord::after_loss(TimeWindow::default(), 10, 1000);
    assert_eq!(
        r.check_and_insert(&id(1), &[1; 24], 1010, 1010),
        Err(Reject::Replayed)
    );
    assert!(r.check_and_insert(&id(1), &[1; 24], 1031, 1031).is_ok());
}

#[test]
fn one_keys_flood_fills_only_its_own_share() {
    // Finding 3: bob's datagrams (policy-denied or not, they are all in
    // the record) fill bob's share; alice still gets in, at once.
    let mut r = ReplayRecord::new(TimeWindow::default(), share_of(64, 2));
    assert_eq!(share_of(64, 2), 32);
    for n in 0..32u8 {
        r.check_and_insert(&id(2), &[n; 24], 1000, 1000).unwrap();
    }
    assert_eq!(
        r.check_and_insert(&id(2), &[99; 24], 1000, 1000),
        Err(Reject::ReplayRecordFull)
    );
    assert!(r.check_and_insert(&id(1), &[1; 24], 1000, 1000).is_ok());
    assert_eq!((r.len_of(&id(1)), r.len_of(&id(2)), r.len()), (1, 32, 33));
}

#[test]
fn share_has_a_floor_of_its_own() {
    assert_eq!(share_of(DEFAULT_CAPACITY, 1), DEFAULT_CAPACITY);
    assert_eq!(share_of(DEFAULT_CAPACITY, 0), DEFAULT_CAPACITY);
    assert_eq!(share_of(64, 1000), MIN_SHARE);
}

#[test]
fn the_floor_comes_from_forgotten_timestamps_not_from_the_clock() {
    // Finding 6: a start (prune) with the clock a year ahead and nothing
    // recorded must not refuse the present once the clock is right.
    let year = 365 * 86_400;
    let mut r = ReplayRecord::new(TimeWindow::default(), 10);
    r.prune(1000 + year);
    assert_eq!(r.floor(), 0);
    assert!(r.check_and_insert(&id(1), &[1; 24], 1000, 1000).is_ok());
    // What is forgotten is refused through the floor: one past it.
    r.check_and_insert(&id(1), &[2; 24], 1010, 1010).unwrap();
    r.prune(1000 + year);
    assert_eq!(r.floor(), 1011);
    assert!(r.is_empty());
}

#[test]
fn a_floor_far_ahead_is_capped_to_one_window() {
    let year = 365 * 86_400;
    let w = TimeWindow::default();
    let mut r = ReplayRecord::after_loss(w, 10, 1000 + year);
    assert_eq!(r.cap_floor(1000), Some(1031 + year));
    assert_eq!(r.floor(), w.loss_floor(1000));
    assert_eq!(r.cap_floor(1000), None, "capped once, then in range");
    assert_eq!(
        r.check_and_insert(&id(1), &[1; 24], 1030, 1030),
        Err(Reject::Replayed)
    );
    assert!(r.check_and_insert(&id(1), &[1; 24], 1031, 1031).is_ok());
}

#[test]
fn admit_runs_only_for_a_datagram_that_would_be_recorded() {
    // Finding 16: the rate limit is spent by new datagrams only, so an
    // observer replaying a key's datagram cannot starve the key.
    let mut r = ReplayRecord::new(TimeWindow::default(), 10);
    let mut calls = 0;
    let mut admit = |ok: bool| {
        calls += 1;
        if ok {
            Ok(())
        } else {
            Err(Reject::RateLimited)
        }
    };
    r.check_admit_insert(&id(1), &[1; 24], 1000, 1000, || admit(true))
        .unwrap();
    assert_eq!(
        r.check_admit_insert(&id(1), &[1; 24], 1000, 1000, || admit(true)),
        Err(Reject::Replayed)
    );
    assert!(matches!(
        r.check_admit_insert(&id(1), &[2; 24], 900, 1000, || admit(true)),
        Err(Reject::TooOld { .. })
    ));
    assert_eq!(
        r.check_admit_insert(&id(1), &[3; 24], 1000, 1000, || admit(false)),
        Err(Reject::RateLimited)
    );
    assert_eq!(calls, 2, "the replay and the stale one did not ask");
    assert_eq!(r.len(), 1, "a refused admission is not recorded");
}

#[test]
fn restore_drops_stale_entries() {
    let mut r = ReplayRecord::new(TimeWindow::default(), 10);
    let live = Seen {
        timestamp: 990,
        key_id: id(1),
        nonce: [1; 24],
    };
    let dead = Seen {
        timestamp: 900,
        key_id: id(1),
        nonce: [2; 24],
    };
    r.restore(live, 1000);
    r.restore(dead, 1000);
    assert_eq!(r.len(), 1);
    assert_eq!(r.floor(), 901, "forgotten through the floor");
}

#[test]
fn the_hash_key_changes_the_tables_not_the_answers() {
    let mut r = ReplayRecord::new(TimeWindow::default(), 10);
    r.check_and_insert(&id(1), &[1; 24], 1000, 1000).unwrap();
    r.check_and_insert(&id(2), &[2; 24], 1001, 1001).unwrap();
    let before = r.clone();
    r.set_hash_key([7; 16]);
    assert_eq!(r, before, "same entries, floor and limits");
    assert_eq!((r.len_of(&id(1)), r.len_of(&id(2))), (1, 1));
    assert_eq!(
        r.check_and_insert(&id(1), &[1; 24], 1000, 1002),
        Err(Reject::Replayed)
    );
    let h = |k: &HashKey| Keyed::new(k).hash_one(Entry(*before.entries().next().unwrap()));
    assert_ne!(h(&[0; 16]), h(&[7; 16]), "the key is used");
}

/// The record as it was before issue 14 (one B-tree per key): the
/// oracle for the hash set and per-key queues.
#[derive(Default)]
struct Model {
    window: TimeWindow,
    share: usize,
    floor: u64,
    seen: std::collections::BTreeMap<KeyId, std::collections::BTreeSet<Seen>>,
}

impl Model {
    fn prune_key(&mut self, k: &KeyId, oldest_live: u64) {
        let Some(set) = self.seen.get_mut(k) else {
            return;
        };
        let newest = set
            .iter()
            .filter(|s| s.timestamp < oldest_live)
            .map(|s| s.timestamp)
            .max();
        set.retain(|s| s.timestamp >= oldest_live);
        if set.is_empty() {
            self.seen.remove(k);
        }
        if let Some(ts) = newest {
            self.floor = self.floor.max(ts + 1);
        }
    }

    fn insert(&mut self, k: KeyId, nonce: [u8; 24], ts: u64, now: u64) -> Result<(), Reject> {
        self.window.check(ts, now)?;
        if ts < self.floor {
            return Err(Reject::Replayed);
        }
        let e = Seen {
            timestamp: ts,
            key_id: k,
            nonce,
        };
        if let Some(set) = self.seen.get(&k) {
            if set.contains(&e) {
                return Err(Reject::Replayed);
            }
            if set.len() >= self.share {
                self.prune_key(&k, now.saturating_sub(self.window.past_secs));
                if self.seen.get(&k).map_or(0, |s| s.len()) >= self.share {
                    return Err(Reject::ReplayRecordFull);
                }
            }
        }
        self.seen.entry(k).or_default().insert(e);
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        key: u8,
        nonce: u8,
        age: i64,
        tick: i64,
    },
    Restore {
        key: u8,
        nonce: u8,
        age: i64,
    },
    Prune {
        tick: i64,
    },
    Share(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0..3u8, 0..6u8, -40..40i64, -10..20i64)
            .prop_map(|(key, nonce, age, tick)| Op::Insert { key, nonce, age, tick }),
        1 => (0..3u8, 0..6u8, -40..80i64)
            .prop_map(|(key, nonce, age)| Op::Restore { key, nonce, age }),
        1 => (-10..60i64).prop_map(|tick| Op::Prune { tick }),
        1 => (1..6usize).prop_map(Op::Share),
    ]
}

proptest::proptest! {
    /// Any sequence of inserts, restores, prunes, share changes and
    /// clock steps (back too) gives the same answers, lengths, per-key
    /// counts, floor and entries as the B-tree record did.
    #[test]
    fn same_answers_as_the_btree_record(
        ops in proptest::collection::vec(op(), 1..200),
        key in proptest::prelude::any::<[u8; 16]>(),
    ) {
        let w = TimeWindow::default();
        let mut r = ReplayRecord::new(w, 3);
        r.set_hash_key(key);
        let mut m = Model { window: w, share: 3, ..Model::default() };
        let mut now: u64 = 10_000;
        for op in ops {
            match op {
                Op::Insert { key, nonce, age, tick } => {
                    now = now.saturating_add_signed(tick);
                    let ts = now.saturating_add_signed(-age);
                    let got = r.check_and_insert(&id(key), &[nonce; 24], ts, now);
                    let want = m.insert(id(key), [nonce; 24], ts, now);
                    proptest::prop_assert_eq!(got, want);
                }
                Op::Restore { key, nonce, age } => {
                    let e = Seen { timestamp: now.saturating_add_signed(-age), key_id: id(key), nonce: [nonce; 24] };
                    r.restore(e, now);
                    if w.check(e.timestamp, now).is_ok() || e.timestamp > now {
                        m.seen.entry(e.key_id).or_default().insert(e);
                    } else {
                        m.floor = m.floor.max(e.timestamp + 1);
                    }
                }
                Op::Prune { tick } => {
                    now = now.saturating_add_signed(tick);
                    r.prune(now);
                    let keys: Vec<KeyId> = m.seen.keys().copied().collect();
                    for k in keys {
                        m.prune_key(&k, now.saturating_sub(w.past_secs));
                    }
                }
                Op::Share(s) => {
                    r.set_limits(w, s);
                    m.share = s;
                }
            }
            proptest::prop_assert_eq!(r.floor(), m.floor);
            proptest::prop_assert_eq!(r.len(), m.seen.values().map(|s| s.len()).sum::<usize>());
            for k in 0..3 {
                proptest::prop_assert_eq!(r.len_of(&id(k)), m.seen.get(&id(k)).map_or(0, |s| s.len()));
            }
        }
        let mut got: Vec<Seen> = r.entries().copied().collect();
        got.sort();
        let want: Vec<Seen> = m.seen.values().flatten().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        proptest::prop_assert_eq!(got, want);
    }
}
