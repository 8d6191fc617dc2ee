//! HMAC knocks: sequences accepted once, in their step, from one source.

use super::*;
use proptest::prelude::*;
use spa_proto::{Grant, MasterKey};
use std::net::Ipv4Addr;

const T0: u64 = 1_700_000_010; // unix seconds, step 56_666_667 at 30 s

fn key(b: u8) -> HmacKey {
    HmacKey {
        keys: Arc::new(MasterKey::from_bytes([b; 32]).derive()),
        grants: Grants::new(&[Grant::tcp(22).unwrap(), Grant::new(Proto::Udp, 53).unwrap()])
            .unwrap(),
    }
}

fn server() -> ServerId {
    ServerId::from_name("srv")
}

fn checker(keys: Vec<HmacKey>) -> HmacKnocks {
    HmacKnocks::new(
        KnockParams::default(),
        Proto::Tcp,
        server(),
        5000,
        1000,
        keys,
    )
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC612_0000 | (n & 0xffff)))
}

fn seq_for(k: &HmacKey, unix: u64) -> Vec<u16> {
    let p = KnockParams::default();
    sequence(&k.keys, &server(), p.step_at(unix), &p)
}

fn knock(
    h: &mut HmacKnocks,
    src: IpAddr,
    ports: &[u16],
    now_ms: u64,
    unix: u64,
) -> Option<HmacOpen> {
    let mut out = None;
    for (i, &p) in ports.iter().enumerate() {
        let r = h.observe(src, Proto::Tcp, p, now_ms + i as u64, unix);
        if r.is_some() {
            assert_eq!(i, ports.len() - 1, "opened before the last knock");
            out = r;
        }
    }
    out
}

#[test]
fn current_sequence_opens_once_not_twice() {
    let k = key(1);
    let mut h = checker(vec![k.clone()]);
    let seq = seq_for(&k, T0);
    let a = ip(1);
    let ev = knock(&mut h, a, &seq, 0, T0).expect("opens");
    assert_eq!(ev.addr, a);
    assert_eq!(ev.key_id, k.keys.key_id());
    assert_eq!(ev.grants, k.grants);
    assert_eq!(ev.duration_secs, None);
    // The same sequence again, from the same or another source: refused.
    assert_eq!(knock(&mut h, a, &seq, 100, T0 + 1), None);
    assert_eq!(knock(&mut h, ip(2), &seq, 200, T0 + 2), None);
    assert_eq!(h.remembered(), 1);
    // Each repeat is counted (and logged, rate-limited) at its first
    // knock, which creates no progress.
    assert_eq!(h.replays_ignored(), 2);
    assert_eq!(h.tracked_sources(), 0);
}

/// Finding 10: after the record was lost, the sequences of the current
/// and the next step (all that could have been used and are still
/// accepted) are refused; the step after that opens, and the floor
/// survives the round trip through used()/mark_used().
#[test]
fn after_loss_refuses_the_current_and_next_step() {
    let k = key(1);
    let step = KnockParams::default().step_secs;
    let mut h = checker(vec![k.clone()]);
    h.after_loss(T0);
    assert_eq!(knock(&mut h, ip(1), &seq_for(&k, T0), 0, T0), None);
    assert_eq!(
        knock(&mut h, ip(1), &seq_for(&k, T0 + step), 100, T0 + step),
        None
    );
    let mut back = checker(vec![k.clone()]);
    for (id, st) in h.used() {
        back.mark_used(id, st);
    }
    let later = T0 + 2 * step;
    assert!(knock(&mut back, ip(1), &seq_for(&k, later), 200, later).is_some());
}

/// A floor from a start with the clock a year ahead is capped back to
/// one loss's worth when read at the right time.
#[test]
fn a_floor_far_ahead_is_capped_at_restore() {
    let k = key(1);
    let step = KnockParams::default().step_secs;
    let year = 365 * 86_400;
    let mut ahead = checker(vec![k.clone()]);
    ahead.after_loss(T0 + year);
    let mut back = checker(vec![k.clone()]);
    for (id, st) in ahead.used() {
        back.mark_used(id, st);
    }
    assert!(back.cap_floor(T0).is_some());
    assert_eq!(back.cap_floor(T0), None, "capped once");
    assert_eq!(knock(&mut back, ip(1), &seq_for(&k, T0), 0, T0), None);
    let later = T0 + 2 * step;
    assert!(knock(&mut back, ip(1), &seq_for(&k, later), 100, later).is_some());
}

#[test]
fn adjacent_steps_accepted_older_rejected() {
    let k = key(1);
    let mut h = checker(vec![k.clone()]);
    // Client clock 30 s behind and 30 s ahead: both accepted.
    assert!(knock(&mut h, ip(1), &seq_for(&k, T0 - 30), 0, T0).is_some());
    assert!(knock(&mut h, ip(1), &seq_for(&k, T0 + 30), 10, T0).is_some());
    // Two steps off: rejected.
    assert_eq!(knock(&mut h, ip(1), &seq_for(&k, T0 - 60), 20, T0), None);
    assert_eq!(knock(&mut h, ip(1), &seq_for(&k, T0 + 60), 30, T0), None);
    // A sequence captured now is dead once its step leaves the window,
    // and remembered until then.
    let seq = seq_for(&k, T0);
    assert!(knock(&mut h, ip(1), &seq, 40, T0).is_some());
    assert_eq!(
        knock(&mut h, ip(2), &seq, 50, T0 + 30),
        None,
        "still remembered"
    );
    assert_eq!(
        knock(&mut h, ip(2), &seq, 60, T0 + 60),
        None,
        "expired step"
    );
    assert!(h.remembered() <= 3);
}

#[test]
fn clock_stepping_back_does_not_reopen_a_forgotten_sequence() {
    let k = key(1);
    let mut h = checker(vec![k.clone()]);
    let seq = seq_for(&k, T0);
    assert!(knock(&mut h, ip(1), &seq, 0, T0).is_some());
    // The clock jumps an hour ahead: the accepted step is forgotten.
    assert_eq!(knock(&mut h, ip(3), &[10_000], 10, T0 + 3600), None);
    assert_eq!(h.remembered(), 0);
    // ... and back: the old step is inside the window again.
    assert_eq!(knock(&mut h, ip(2), &seq, 20, T0), None);
    // The floor survives a restart through used()/mark_used().
    let mut fresh = checker(vec![k.clone()]);
    for (id, st) in h.used() {
        fresh.mark_used(id, st);
    }
    assert_eq!(knock(&mut fresh, ip(2), &seq, 30, T0), None);
    // A restart with a longer step reads the floor as a time: it does
    // not refuse the current sequences of the new step length.
    let mut longer = HmacKnocks::new(
        KnockParams {
            step_secs: 60,
            ..KnockParams::default()
        },
        Proto::Tcp,
        server(),
        5000,
        1000,
        vec![k.clone()],
    );
    for (id, st) in h.used() {
        longer.mark_used(id, st);
    }
    let p60 = KnockParams {
        step_secs: 60,
        ..KnockParams::default()
    };
    let now = T0 + 3600;
    let seq60 = sequence(&k.keys, &server(), p60.step_at(now), &p60);
    assert!(knock(&mut longer, ip(4), &seq60, 50, now).is_some());
    // Steps above the floor work.
    assert!(knock(&mut h, ip(2), &seq_for(&k, T0 + 30), 40, T0 + 30).is_some());
}

#[test]
fn any_configured_key_and_nothing_else() {
    let keys: Vec<HmacKey> = (1..=20).map(key).collect();
    let mut h = checker(keys.clone());
    let ev = knock(&mut h, ip(1), &seq_for(&keys[13], T0), 0, T0).unwrap();
    assert_eq!(ev.key_id, keys[13].keys.key_id());
    let stranger = key(99);
    assert_eq!(knock(&mut h, ip(1), &seq_for(&stranger, T0), 10, T0), None);
    // Another server's sequence for a configured key does not work.
    let p = KnockParams::default();
    let other = sequence(
        &keys[0].keys,
        &ServerId::from_name("other"),
        p.step_at(T0),
        &p,
    );
    assert_eq!(knock(&mut h, ip(1), &other, 20, T0), None);
}

#[test]
fn wrong_knock_resets_repeat_is_tolerated_timeout_applies() {
    let k = key(1);
    let seq = seq_for(&k, T0);
    let a = ip(1);
    // A wrong port in the middle resets.
    let mut h = checker(vec![k.clone()]);
    let wrong = if seq[2] == 10_000 { 10_001 } else { 10_000 };
    let mut broken = seq.clone();
    broken.insert(2, wrong);
    assert_eq!(knock(&mut h, a, &broken, 0, T0), None);
    // The same sequence, unspoiled, still works (nothing was consumed).
    assert!(knock(&mut h, a, &seq, 10, T0).is_some());
    // A repeated knock (retransmitted SYN) does not spoil it.
    let mut h = checker(vec![k.clone()]);
    let mut dup = vec![seq[0], seq[0], seq[1]];
    dup.extend(&seq[1..]);
    assert!(knock(&mut h, a, &dup, 0, T0).is_some());
    // Too slow: the last knock 5 s after the first.
    let mut h = checker(vec![k.clone()]);
    for (i, &p) in seq.iter().enumerate() {
        let r = h.observe(a, Proto::Tcp, p, i as u64 * 1700, T0);
        assert_eq!(r, None);
    }
    // Wrong protocol, or out of range: not a knock at all.
    let mut h = checker(vec![k.clone()]);
    for &p in &seq {
        assert_eq!(h.observe(a, Proto::Udp, p, 0, T0), None);
    }
    assert_eq!(h.tracked_sources(), 0);
    assert_eq!(h.observe(a, Proto::Tcp, 80, 0, T0), None);
}

#[test]
fn interleaved_sources_and_keys() {
    let (k1, k2) = (key(1), key(2));
    let mut h = checker(vec![k1.clone(), k2.clone()]);
    let (s1, s2) = (seq_for(&k1, T0), seq_for(&k2, T0));
    let (a, b) = (ip(1), ip(2));
    let mut opened = vec![];
    for i in 0..s1.len() {
        if let Some(e) = h.observe(a, Proto::Tcp, s1[i], i as u64, T0) {
            opened.push((e.addr, e.key_id));
        }
        if let Some(e) = h.observe(b, Proto::Tcp, s2[i], i as u64, T0) {
            opened.push((e.addr, e.key_id));
        }
    }
    assert_eq!(opened, vec![(a, k1.keys.key_id()), (b, k2.keys.key_id())]);
}

#[test]
fn set_keys_keeps_the_replay_record() {
    let k = key(1);
    let mut h = checker(vec![k.clone()]);
    let seq = seq_for(&k, T0);
    assert!(knock(&mut h, ip(1), &seq, 0, T0).is_some());
    h.set_keys(vec![key(2), k.clone()]);
    assert_eq!(knock(&mut h, ip(1), &seq, 10, T0), None);
    assert!(knock(&mut h, ip(1), &seq_for(&k, T0 + 30), 20, T0).is_some());
}

#[test]
fn udp_protocol() {
    let k = key(1);
    let mut h = HmacKnocks::new(
        KnockParams::default(),
        Proto::Udp,
        server(),
        5000,
        10,
        vec![k.clone()],
    );
    let seq = seq_for(&k, T0);
    let mut got = None;
    for &p in &seq {
        got = h.observe(ip(1), Proto::Udp, p, 0, T0);
    }
    assert!(got.is_some());
    assert_eq!(h.watched(), (Proto::Udp, 10_000, 60_000));
}

#[test]
fn random_knock_flood_stays_bounded_and_real_knock_opens() {
    let k = key(1);
    let mut h = HmacKnocks::new(
        KnockParams::default(),
        Proto::Tcp,
        server(),
        5000,
        64,
        vec![k.clone()],
    );
    let seq = seq_for(&k, T0);
    // Flood every port of the range from spoofed sources, including the
    // first port of the real sequence, around a real knocker.
    let mut opened = 0;
    for i in 0..60_000u32 {
        let port = 10_000 + (i % 50_001) as u16;
        let now = u64::from(i / 20);
        if h.observe(
            IpAddr::V4(Ipv4Addr::from(0xC613_0000 + i)),
            Proto::Tcp,
            port,
            now,
            T0,
        )
        .is_some()
        {
            opened += 1;
        }
        if i % 20_000 == 0 {
            h.observe(
                IpAddr::V4(Ipv4Addr::from(0xC613_0000 + i)),
                Proto::Tcp,
                seq[0],
                now,
                T0,
            );
        }
        if (30_000..30_000 + seq.len() as u32).contains(&i)
            && h.observe(ip(7), Proto::Tcp, seq[(i - 30_000) as usize], now, T0)
                .is_some()
        {
            opened += 1;
        }
        assert!(h.tracked_sources() <= 64);
    }
    assert_eq!(opened, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_knocks_never_panic_or_open_without_a_key(
        knocks in proptest::collection::vec((0u32..6, any::<u16>(), 0u64..3000, 0u64..100), 0..200),
    ) {
        // No keys: nothing can ever open.
        let mut h = checker(vec![]);
        let (mut now, mut unix) = (0u64, T0);
        for (s, p, dt, du) in knocks {
            now += dt;
            unix += du;
            prop_assert!(h.observe(ip(s), Proto::Tcp, p, now, unix).is_none());
        }
    }

    /// Each (key, step) opens at most once whatever the interleaving.
    #[test]
    fn at_most_once_per_key_and_step(order in proptest::collection::vec((0u32..4, 0usize..4), 0..80)) {
        let k = key(1);
        let seq = seq_for(&k, T0);
        let mut h = checker(vec![k]);
        let mut pos = [0usize; 4];
        let mut opened = 0;
        for (i, (s, _)) in order.iter().enumerate() {
            let s = *s as usize;
            let p = seq[pos[s] % 4];
            pos[s] += 1;
            if h.observe(ip(s as u32), Proto::Tcp, p, i as u64, T0).is_some() {
                opened += 1;
            }
        }
        prop_assert!(opened <= 1);
    }
}
