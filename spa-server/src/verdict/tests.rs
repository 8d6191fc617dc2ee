//! `judge` on hand-built datagrams: what is accepted, capped, denied and
//! rejected, and what the replay record keeps.

use super::*;
use crate::config::KeyPolicy;
use proptest::prelude::*;
use spa_proto::{seal_with, Grants, KeySet, MasterKey, Proto, ReplayRecord, ServerId, TimeWindow};
use std::net::{Ipv4Addr, Ipv6Addr};

const NOW: u64 = 1_700_000_000;
const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

fn no_local(_: IpAddr) -> bool {
    false
}

fn master(b: u8) -> MasterKey {
    MasterKey::from_bytes([b; 32])
}

fn keys(b: u8) -> KeySet {
    master(b).derive()
}

fn policy(b: u8, name: &str, allow: &[Grant], max: u32, other: bool) -> KeyPolicy {
    KeyPolicy {
        allow_other_address: other,
        ..KeyPolicy::for_tests(name, b, allow, max)
    }
}

/// A hand-built configuration: alice (key 0x11) may open tcp/22 and
/// udp/53 for up to 60 s and name other addresses; bob (key 0x22) may
/// open tcp/443 for up to 300 s, only for his source address.
fn config() -> Config {
    let keys = vec![
        policy(
            0x11,
            "alice",
            &[tcp(22), Grant::new(Proto::Udp, 53).unwrap()],
            60,
            true,
        ),
        policy(0x22, "bob", &[tcp(443)], 300, false),
    ];
    Config::for_tests(keys, 30)
}

fn tcp(p: u16) -> Grant {
    Grant::tcp(p).unwrap()
}

fn req(grants: &[Grant]) -> Request {
    Request {
        action: Action::Open,
        timestamp: NOW,
        duration_secs: 0,
        allow: AllowAddr::Source,
        server: ServerId::from_name("gw"),
        grants: Grants::new(grants).unwrap(),
    }
}

fn seal(key: u8, r: &Request, nonce: u8) -> [u8; spa_proto::DATAGRAM_LEN] {
    seal_with(&keys(key), r, &[nonce; 24], &[0x5a; 16])
}

fn replay() -> JudgeState {
    JudgeState::new(DurableReplay::in_memory(ReplayRecord::new(
        TimeWindow::default(),
        64,
    )))
}

/// What most tests share: `config()` and an empty memory-only record
/// (which never fails to persist), datagrams judged from `SRC` at `NOW`
/// unless a test says otherwise.
struct Bench {
    cfg: Config,
    st: JudgeState,
}

impl Bench {
    fn new() -> Bench {
        Bench {
            cfg: config(),
            st: replay(),
        }
    }

    /// `r` sealed with key `key` and `nonce`, from `SRC` at `NOW`.
    fn send(&mut self, key: u8, r: &Request, nonce: u8) -> Verdict {
        self.judge(&seal(key, r, nonce), SRC, NOW)
    }

    /// Whether the record holds key `key`'s datagram with `nonce`, sent at `NOW`.
    fn recorded(&self, key: u8, nonce: u8) -> bool {
        let want = Seen {
            timestamp: NOW,
            key_id: keys(key).key_id(),
            nonce: [nonce; 24],
        };
        self.st.replay.record().entries().any(|s| *s == want)
    }

    fn judge(&mut self, payload: &[u8], src: IpAddr, now: u64) -> Verdict {
        self.judge_local(payload, src, now, no_local)
    }

    /// `super::judge`, `is_local` saying which addresses are the host's own.
    fn judge_local(
        &mut self,
        payload: &[u8],
        src: IpAddr,
        now: u64,
        is_local: impl FnOnce(IpAddr) -> bool,
    ) -> Verdict {
        super::judge(payload, src, now, &self.cfg, &mut self.st, is_local)
            .expect("memory-only record")
    }
}

fn accept(v: Verdict) -> Decision {
    match v {
        Verdict::Accept(d) => d,
        other => panic!("expected Accept, got {other:?}"),
    }
}

#[test]
fn accepts_an_open_for_the_source_with_the_default_duration() {
    let mut t = Bench::new();
    let d = accept(t.send(0x11, &req(&[tcp(22)]), 1));
    assert_eq!(d.key_name, "alice");
    assert_eq!(d.key_id, keys(0x11).key_id());
    assert_eq!(d.action, Action::Open);
    assert_eq!(d.addr, SRC);
    assert_eq!(d.grants, vec![tcp(22)]);
    assert_eq!(d.duration_secs, 30, "0 asks for the server default");
    assert!(!d.capped);
    assert!(t.recorded(0x11, 1));
    assert_eq!(
        t.st.replay.len(),
        1,
        "accepted datagrams are in the replay record"
    );
}

#[test]
fn close_and_ipv6_sources_are_carried_through() {
    let mut t = Bench::new();
    let mut r = req(&[tcp(22)]);
    r.action = Action::Close;
    let src6 = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2));
    let d = accept(t.judge(&seal(0x11, &r, 2), src6, NOW));
    assert_eq!(d.action, Action::Close);
    assert_eq!(d.addr, src6);
}

#[test]
fn duration_is_capped_at_the_keys_maximum() {
    let mut t = Bench::new();
    for (n, (asked, got, capped)) in [
        (60, 60, false),
        (59, 59, false),
        (61, 60, true),
        (u32::MAX, 60, true),
        (1, 1, false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = req(&[tcp(22)]);
        r.duration_secs = asked;
        let d = accept(t.send(0x11, &r, n as u8));
        assert_eq!((d.duration_secs, d.capped), (got, capped), "asked {asked}");
    }
}

#[test]
fn default_duration_above_the_keys_maximum_is_capped_too() {
    let mut t = Bench::new();
    t.cfg.default_duration = 1000;
    let d = accept(t.send(0x11, &req(&[tcp(22)]), 1));
    assert_eq!(d.duration_secs, 60);
    assert!(d.capped);
}

#[test]
fn grants_the_key_may_not_open_are_denied() {
    let mut t = Bench::new();
    let cases: &[(&[Grant], Grant)] = &[
        (&[tcp(443)], tcp(443)),
        (&[tcp(22), tcp(443)], tcp(443)),
        (
            &[Grant::new(Proto::Udp, 22).unwrap()],
            Grant::new(Proto::Udp, 22).unwrap(),
        ),
        (&[tcp(53)], tcp(53)),
    ];
    for (n, (grants, bad)) in cases.iter().enumerate() {
        let v = t.send(0x11, &req(grants), n as u8);
        assert_eq!(
            v,
            Verdict::Deny(PolicyReject::NotAllowed {
                key_name: "alice".into(),
                grant: *bad
            })
        );
    }
    // Bob's policy is his own: tcp/443 yes, tcp/22 no.
    let v = t.send(0x22, &req(&[tcp(22)]), 9);
    assert!(
        matches!(v, Verdict::Deny(PolicyReject::NotAllowed { .. })),
        "{v:?}"
    );
    let d = accept(t.send(0x22, &req(&[tcp(443)]), 10));
    assert_eq!(d.key_name, "bob");
    assert_eq!(d.duration_secs, 30);
}

#[test]
fn deny_display_names_the_key_and_the_grant() {
    let p = PolicyReject::NotAllowed {
        key_name: "alice".into(),
        grant: tcp(443),
    };
    assert_eq!(p.to_string(), "key `alice` may not open tcp/443");
    let p = PolicyReject::OtherAddress {
        key_name: "bob".into(),
        addr: SRC,
    };
    assert!(p.to_string().contains("198.18.0.2"));
}

#[test]
fn grants_are_sorted_and_deduplicated() {
    let mut t = Bench::new();
    let udp53 = Grant::new(Proto::Udp, 53).unwrap();
    let d = accept(t.send(0x11, &req(&[udp53, tcp(22), udp53, tcp(22)]), 1));
    assert_eq!(d.grants, vec![tcp(22), udp53]);
}

#[test]
fn another_address_needs_the_keys_permission() {
    let mut t = Bench::new();
    let other = Ipv4Addr::new(198, 19, 0, 7);
    let mut r = req(&[tcp(22)]);
    r.allow = AllowAddr::V4(other);
    let d = accept(t.send(0x11, &r, 1));
    assert_eq!(d.addr, IpAddr::V4(other), "alice may name another address");

    let mut r = req(&[tcp(443)]);
    r.allow = AllowAddr::V4(other);
    let v = t.send(0x22, &r, 2);
    assert_eq!(
        v,
        Verdict::Deny(PolicyReject::OtherAddress {
            key_name: "bob".into(),
            addr: IpAddr::V4(other)
        })
    );
    // Naming one's own source explicitly is not "another address".
    let mut r = req(&[tcp(443)]);
    r.allow = AllowAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    let d = accept(t.send(0x22, &r, 3));
    assert_eq!(d.addr, SRC);
}

/// Finding 11: every address of the review is refused, named or as the
/// source, for a key that may name any address.
#[test]
fn unusable_addresses_are_denied() {
    let mut t = Bench::new();
    let bad: Vec<IpAddr> = [
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
        "::1",
        "255.255.255.255",
        "240.0.0.1",
        "fe80::1",
        "169.254.0.1",
        "224.0.0.1",
        "ff02::1",
        "::",
        "::198.18.200.1",
        "::ffff:127.0.0.1",
        "::ffff:0.0.0.0",
        "::ffff:224.0.0.1",
        // The server's own address and its subnet's broadcast (is_local).
        "198.18.0.1",
        "198.18.0.255",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let local = |a: IpAddr| a == ip("198.18.0.1") || a == ip("198.18.0.255");
    let mut n = 0u8;
    for a in bad {
        let mut r = req(&[tcp(22)]);
        r.allow = match a {
            IpAddr::V4(v4) => AllowAddr::V4(v4),
            IpAddr::V6(v6) => AllowAddr::V6(v6),
        };
        n += 1;
        let v = t.judge_local(&seal(0x11, &r, n), SRC, NOW, local);
        assert!(
            matches!(v, Verdict::Deny(PolicyReject::UnusableAddress { .. })),
            "named {a}: {v:?}"
        );
        // The same address as the datagram's source (spoofed by a key
        // holder) is refused too.
        n += 1;
        let v = t.judge_local(&seal(0x11, &req(&[tcp(22)]), n), a, NOW, local);
        assert!(
            matches!(v, Verdict::Deny(PolicyReject::UnusableAddress { .. })),
            "source {a}: {v:?}"
        );
    }
    let p = PolicyReject::UnusableAddress {
        key_name: "alice".into(),
        addr: ip("127.0.0.1"),
        why: Unusable::Loopback,
    };
    assert_eq!(p.code(), "unusable_address");
    assert!(p.to_string().contains("loopback"), "{p}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Finding 12: `::ffff:A` is `A`. The decision carries the IPv4 form, and
/// naming one's own source in mapped form is not "another address".
#[test]
fn ipv4_mapped_addresses_are_canonicalised() {
    let mut t = Bench::new();
    let mut r = req(&[tcp(22)]);
    r.allow = AllowAddr::V6(Ipv4Addr::new(198, 19, 0, 7).to_ipv6_mapped());
    let d = accept(t.send(0x11, &r, 1));
    assert_eq!(d.addr, ip("198.19.0.7"));
    // Bob may not name other addresses; his own, mapped, is his own.
    let mut r = req(&[tcp(443)]);
    r.allow = AllowAddr::V6(Ipv4Addr::new(198, 18, 0, 2).to_ipv6_mapped());
    let d = accept(t.send(0x22, &r, 2));
    assert_eq!(d.addr, SRC);
    // A mapped source is the IPv4 source.
    let mapped_src = ip("::ffff:198.18.0.2");
    let d = accept(t.judge(&seal(0x22, &req(&[tcp(443)]), 3), mapped_src, NOW));
    assert_eq!(d.addr, SRC);
}

/// Finding 14: a key with `require_explicit_address` opens only an
/// address the sealed request names, never "whoever sent this".
#[test]
fn require_explicit_address_refuses_the_source_form() {
    let mut t = Bench::new();
    t.cfg.keys[1].require_explicit_address = true;
    let v = t.send(0x22, &req(&[tcp(443)]), 1);
    assert_eq!(
        v,
        Verdict::Deny(PolicyReject::ExplicitAddressRequired {
            key_name: "bob".into()
        })
    );
    // Named: accepted, for that address only, from that address only
    // (bob may not name others), so a copy resent from elsewhere is
    // refused.
    let mut r = req(&[tcp(443)]);
    r.allow = AllowAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    let d = accept(t.send(0x22, &r, 2));
    assert_eq!(d.addr, SRC);
    let v = t.judge(&seal(0x22, &r, 3), ip("198.18.9.9"), NOW);
    assert!(
        matches!(v, Verdict::Deny(PolicyReject::OtherAddress { .. })),
        "{v:?}"
    );
}

#[test]
fn protocol_rejections_come_through_with_their_reason() {
    let mut t = Bench::new();
    let good = seal(0x11, &req(&[tcp(22)]), 1);
    accept(t.judge(&good, SRC, NOW));
    assert_eq!(t.judge(&good, SRC, NOW), Verdict::Reject(Reject::Replayed));
    // Unknown key, wrong server, outside the window, garbage, a flipped bit.
    assert_eq!(
        t.send(0x33, &req(&[tcp(22)]), 2),
        Verdict::Reject(Reject::UnknownKeyId)
    );
    let mut r = req(&[tcp(22)]);
    r.server = ServerId::from_name("other");
    assert_eq!(t.send(0x11, &r, 3), Verdict::Reject(Reject::WrongServer));
    let mut r = req(&[tcp(22)]);
    r.timestamp = NOW - 31;
    assert!(matches!(
        t.send(0x11, &r, 4),
        Verdict::Reject(Reject::TooOld { .. })
    ));
    r.timestamp = NOW + 31;
    assert!(matches!(
        t.send(0x11, &r, 5),
        Verdict::Reject(Reject::InFuture { .. })
    ));
    assert_eq!(
        t.judge(&[0u8; 10], SRC, NOW),
        Verdict::Reject(Reject::WrongLength { got: 10 })
    );
    let mut flipped = seal(0x11, &req(&[tcp(22)]), 6);
    flipped[100] ^= 1;
    assert_eq!(
        t.judge(&flipped, SRC, NOW),
        Verdict::Reject(Reject::AuthFailed)
    );
    assert_eq!(
        t.st.replay.len(),
        1,
        "only the accepted datagram is recorded"
    );
}

/// Finding 9: a denied datagram is committed to the record like an
/// accepted one, so it stays refused when replayed (also after a
/// restart: the commit wrote it).
#[test]
fn a_denied_datagram_is_recorded_and_committed() {
    let mut t = Bench::new();
    let bob443 = seal(0x22, &req(&[tcp(22)]), 1);
    let v = t.judge(&bob443, SRC, NOW);
    assert!(matches!(v, Verdict::Deny(_)), "{v:?}");
    assert!(t.recorded(0x22, 1));
    assert_eq!(t.st.replay.len(), 1);
    assert_eq!(
        t.judge(&bob443, SRC, NOW),
        Verdict::Reject(Reject::Replayed)
    );
    assert_eq!(t.st.replay.len(), 1, "a rejection records nothing");
}

/// Finding 3: bob's flood of denied datagrams fills only bob's share of
/// the record; alice is accepted at once.
#[test]
fn one_keys_denied_flood_does_not_lock_out_another_key() {
    let mut t = Bench::new();
    let share = spa_proto::replay::share_of(64, t.cfg.keys.len());
    t.st = JudgeState::new(DurableReplay::in_memory(ReplayRecord::new(
        TimeWindow::default(),
        share,
    )));
    for n in 0..share {
        let v = t.send(0x22, &req(&[tcp(22)]), n as u8);
        assert!(matches!(v, Verdict::Deny(_)), "{n}: {v:?}");
    }
    assert_eq!(
        t.send(0x22, &req(&[tcp(443)]), 200),
        Verdict::Reject(Reject::ReplayRecordFull)
    );
    accept(t.send(0x11, &req(&[tcp(22)]), 9));
}

/// Finding 16: over its token bucket a key's new datagrams are refused
/// with their own reason, unrecorded; other keys and replays are not
/// affected, and the bucket refills with the time passed in.
#[test]
fn a_keys_token_bucket_refuses_its_new_datagrams_over_the_rate() {
    let mut t = Bench::new();
    t.cfg.keys[0].rate = crate::ratelimit::Rate {
        per_minute: 60,
        burst: 2,
    };
    let first = seal(0x11, &req(&[tcp(22)]), 1);
    accept(t.judge(&first, SRC, NOW));
    accept(t.send(0x11, &req(&[tcp(22)]), 2));
    let third = seal(0x11, &req(&[tcp(22)]), 3);
    assert_eq!(
        t.judge(&third, SRC, NOW),
        Verdict::Reject(Reject::RateLimited)
    );
    assert_eq!(Reject::RateLimited.code(), "rate_limited");
    assert_eq!(t.st.replay.len(), 2, "the refused one is not recorded");
    // A replay is still named a replay and spends nothing.
    assert_eq!(t.judge(&first, SRC, NOW), Verdict::Reject(Reject::Replayed));
    // Bob has his own bucket.
    accept(t.send(0x22, &req(&[tcp(443)]), 4));
    // One second later alice has one token again, and the refused
    // datagram (never recorded) may come through.
    accept(t.judge(&third, SRC, NOW + 1));
    assert_eq!(
        t.judge(&seal(0x11, &req(&[tcp(22)]), 5), SRC, NOW + 1),
        Verdict::Reject(Reject::RateLimited)
    );
}

/// Issue 15, item 1: a key with `from` opens nothing for a datagram
/// sent from elsewhere, and the denial names the key and the source.
#[test]
fn a_key_used_from_outside_its_networks_is_denied() {
    let mut t = Bench::new();
    t.cfg.keys[1].rules.from = crate::policy::parse_from(&["198.18.0.0/24".into()]).unwrap();
    accept(t.send(0x22, &req(&[tcp(443)]), 1));
    let other: IpAddr = "198.18.1.2".parse().unwrap();
    t.st = replay();
    let v = t.judge(&seal(0x22, &req(&[tcp(443)]), 2), other, NOW);
    let Verdict::Deny(p) = v else {
        panic!("expected a denial, got {v:?}")
    };
    assert_eq!(p.code(), "source_not_allowed");
    assert_eq!(
        p.to_string(),
        "key `bob` may not be used from 198.18.1.2 (its `from` networks)"
    );
    // Recorded like every denial: its replay stays refused.
    assert_eq!(t.st.replay.len(), 1);
}

/// Issue 15, item 2: an expired key is refused with its own reason, and
/// a grant of a key about to expire ends at the expiry instant.
#[test]
fn an_expired_key_is_denied_and_grants_end_at_its_expiry() {
    let mut t = Bench::new();
    t.cfg.keys[1].rules.expires = Some(NOW + 100);
    let mut r = req(&[tcp(443)]);
    r.duration_secs = 300;
    let d = accept(t.send(0x22, &r, 1));
    // It starts by NOW + 1 and ends by NOW + 100.
    assert_eq!(d.duration_secs, 99);
    assert!(d.capped && d.until_expiry);
    t.cfg.keys[1].rules.expires = Some(NOW);
    let v = t.send(0x22, &r, 2);
    let Verdict::Deny(p) = v else {
        panic!("expected a denial, got {v:?}")
    };
    assert_eq!(p.code(), "key_expired");
    assert!(
        p.to_string().contains("expired at 2023-11-14T22:13:20Z"),
        "{p}"
    );
}

#[test]
fn a_key_removed_from_the_config_is_unknown() {
    let mut t = Bench::new();
    t.cfg.by_id.clear();
    assert_eq!(
        t.send(0x11, &req(&[tcp(22)]), 1),
        Verdict::Reject(Reject::UnknownKeyId)
    );
}

proptest! {
    /// Arbitrary bytes never panic and are never accepted.
    #[test]
    fn arbitrary_bytes_are_never_accepted(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut t = Bench::new();
        let v = t.judge(&bytes, SRC, NOW);
        prop_assert!(matches!(v, Verdict::Reject(_)));
    }

    /// Any single flipped bit of an authentic datagram is rejected.
    #[test]
    fn any_flipped_bit_is_rejected(pos in 0usize..spa_proto::DATAGRAM_LEN, bit in 0u8..8) {
        let mut t = Bench::new();
        let mut d = seal(0x11, &req(&[tcp(22)]), 1);
        d[pos] ^= 1 << bit;
        let v = t.judge(&d, SRC, NOW);
        prop_assert!(matches!(v, Verdict::Reject(_)), "{:?}", v);
    }

    /// An authentic request is accepted exactly when every grant is
    /// allowed, and its duration never exceeds the key's maximum.
    #[test]
    fn policy_holds_for_any_request(
        ports in proptest::collection::vec((any::<bool>(), 1u16..100), 1..=8),
        duration in any::<u32>(),
    ) {
        let mut t = Bench::new();
        let grants: Vec<Grant> = ports
            .iter()
            .map(|&(t, p)| Grant::new(if t { Proto::Tcp } else { Proto::Udp }, p).unwrap())
            .collect();
        let mut r = req(&grants);
        r.duration_secs = duration;
        let allowed = t.cfg.keys[0].allow.clone();
        let v = t.send(0x11, &r, 1);
        match v {
            Verdict::Accept(d) => {
                prop_assert!(grants.iter().all(|g| allowed.contains(g)));
                prop_assert!(d.duration_secs <= 60 && d.duration_secs >= 1);
            }
            Verdict::Deny(PolicyReject::NotAllowed { grant, .. }) => {
                prop_assert!(!allowed.contains(&grant));
                prop_assert!(grants.contains(&grant));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
