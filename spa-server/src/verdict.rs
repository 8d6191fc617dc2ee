//! From captured bytes to a decision: the pure heart of the server.
//!
//! `judge` runs the whole receive-side check (spa_proto::verify: length,
//! magic, version, key-id, AEAD, plaintext, server id, time window, replay,
//! with the key's token bucket asked just before the record takes a new
//! datagram) and then the per-key policy, and returns a typed [`Verdict`].
//! It does no I/O: the daemon persists what the record took (for every
//! verdict, a denial too) and applies the firewall change afterwards, and
//! logs the verdict once.

use crate::address::{self, Unusable};
use crate::config::{Config, KeyPolicy};
use crate::ratelimit::Buckets;
use crate::state::{DurableReplay, Refused, StateError};
use spa_proto::{Action, AllowAddr, Grant, KeyId, Reject, Request, Seen};
use std::fmt;
use std::net::IpAddr;

/// What to do for one accepted datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key_name: String,
    pub key_id: KeyId,
    pub action: Action,
    /// The address the rule is scoped to, canonical (IPv4-mapped IPv6
    /// becomes IPv4) and checked by `address::usable`.
    pub addr: IpAddr,
    pub grants: Vec<Grant>,
    /// Seconds, after the server default and the key's cap are applied.
    pub duration_secs: u32,
    /// True when the requested duration was cut down to the key's cap.
    pub capped: bool,
    /// True when it was cut to end at the key's `expires` (policy.rs).
    pub until_expiry: bool,
}

/// Why an authentic datagram was still refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyReject {
    /// The key may not open this grant.
    NotAllowed { key_name: String, grant: Grant },
    /// The request named an address other than its source and the key may not.
    OtherAddress { key_name: String, addr: IpAddr },
    /// No grant may be scoped to this address (loopback, broadcast, ours...).
    UnusableAddress {
        key_name: String,
        addr: IpAddr,
        why: Unusable,
    },
    /// The key has `require_explicit_address` and the request said "my
    /// source address".
    ExplicitAddressRequired { key_name: String },
    /// The datagram came from outside the key's `from` networks.
    SourceNotAllowed { key_name: String, src: IpAddr },
    /// The key's `expires` instant (Unix seconds) has passed.
    KeyExpired { key_name: String, at: u64 },
    /// A forwarded grant's host behind the gateway is of the other address
    /// family than the requester (no DNAT between IPv4 and IPv6).
    ForwardFamily {
        key_name: String,
        grant: Grant,
        to: std::net::SocketAddr,
    },
}

impl PolicyReject {
    /// Stable name for the log's `reason=` field.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyReject::NotAllowed { .. } => "not_allowed",
            PolicyReject::OtherAddress { .. } => "other_address",
            PolicyReject::UnusableAddress { .. } => "unusable_address",
            PolicyReject::ExplicitAddressRequired { .. } => "explicit_address_required",
            PolicyReject::SourceNotAllowed { .. } => crate::policy::Refusal::Source.code(),
            PolicyReject::KeyExpired { at, .. } => {
                crate::policy::Refusal::Expired { at: *at }.code()
            }
            PolicyReject::ForwardFamily { .. } => "forward_family",
        }
    }
}

impl fmt::Display for PolicyReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyReject::NotAllowed { key_name, grant } => {
                write!(f, "key `{key_name}` may not open {grant}")
            }
            PolicyReject::OtherAddress { key_name, addr } => {
                write!(f, "key `{key_name}` may not name another address ({addr})")
            }
            PolicyReject::UnusableAddress {
                key_name,
                addr,
                why,
            } => write!(f, "key `{key_name}`: {addr} is {why}, no grant for it"),
            PolicyReject::ExplicitAddressRequired { key_name } => write!(
                f,
                "key `{key_name}` must name the address to open (require_explicit_address; \
                 spa-client send --allow-ip)"
            ),
            PolicyReject::SourceNotAllowed { key_name, src } => {
                write!(
                    f,
                    "key `{key_name}` may not be used from {src} (its `from` networks)"
                )
            }
            PolicyReject::ForwardFamily {
                key_name,
                grant,
                to,
            } => write!(
                f,
                "key `{key_name}` forwards {grant} to {to}, another address family than the \
                 requester's: send from (or --allow-ip) an address of that family"
            ),
            PolicyReject::KeyExpired { key_name, at } => write!(
                f,
                "key `{key_name}` expired at {} (its `expires`)",
                crate::policy::utc_text(*at)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept(Decision),
    Reject(Reject),
    Deny(PolicyReject),
}

/// What judging remembers from one datagram to the next.
pub struct JudgeState {
    /// Every authenticated datagram inside the window, whatever its verdict,
    /// in memory and on disk ([`DurableReplay::check_and_commit`]).
    pub replay: DurableReplay,
    /// Each key's token bucket (finding 16).
    pub buckets: Buckets,
    /// Protocol v2's wire ids of the previous, current and next minute
    /// (spa_proto::v2::IdMap); cleared when the keys change.
    pub v2_ids: spa_proto::IdMap,
}

impl JudgeState {
    pub fn new(replay: DurableReplay) -> Self {
        JudgeState {
            replay,
            buckets: Buckets::default(),
            v2_ids: spa_proto::IdMap::new(),
        }
    }
}

/// Judges one datagram from `src`, at Unix time `now`. Whenever the result
/// is `Ok(Accept)` or `Ok(Deny)`, the replay record holds the datagram in
/// memory and on disk already (an accepted *and* a denied one: persisting
/// only accepted ones let a denied datagram be replayed after a restart and
/// a policy change, issue 16, finding 9), so the caller may act on it at
/// once. `Err`: the record took it but could not persist it; act on nothing.
/// `is_local` tells whether an address is this host's own (or a local
/// broadcast); see `address::usable`.
///
/// The key is looked up once: the same `KeyPolicy` gives the AEAD keys, the
/// token bucket's rate and the policy.
pub fn judge(
    payload: &[u8],
    src: IpAddr,
    now: u64,
    cfg: &Config,
    state: &mut JudgeState,
    is_local: impl FnOnce(IpAddr) -> bool,
) -> Result<Verdict, StateError> {
    // Dispatch on the version byte: each version has its own id map.
    let (policy, opened) = if spa_proto::version_of(payload) == Some(spa_proto::VERSION_V2) {
        match crate::v2::open(payload, cfg, &mut state.v2_ids, now) {
            Ok((i, o)) => match cfg.keys.get(i) {
                Some(p) => (p, o),
                None => return Ok(Verdict::Reject(Reject::UnknownKeyId)),
            },
            Err(r) => return Ok(Verdict::Reject(r)),
        }
    } else {
        let header = match spa_proto::parse_header(payload) {
            Ok(h) => h,
            Err(r) => return Ok(Verdict::Reject(r)),
        };
        let Some(policy) = cfg.key(&header.key_id()) else {
            return Ok(Verdict::Reject(Reject::UnknownKeyId));
        };
        let opened = match header.open(&policy.keys) {
            Ok(o) => o,
            Err(r) => return Ok(Verdict::Reject(r)),
        };
        if opened.request.server != cfg.server_id {
            return Ok(Verdict::Reject(Reject::WrongServer));
        }
        (policy, opened)
    };
    let seen = Seen {
        timestamp: opened.request.timestamp,
        key_id: opened.key_id,
        nonce: opened.nonce,
    };
    let buckets = &mut state.buckets;
    let admit = || {
        if buckets.take(&policy.key_id, policy.rate, now) {
            Ok(())
        } else {
            Err(Reject::RateLimited)
        }
    };
    match state.replay.check_and_commit(&seen, now, admit) {
        Ok(()) => {}
        Err(Refused::Reject(r)) => return Ok(Verdict::Reject(r)),
        Err(Refused::NotPersisted(e)) => return Err(e),
    }
    Ok(policy_verdict(
        policy,
        opened.request,
        src,
        now,
        cfg,
        is_local,
    ))
}

/// The key's policy over an authentic, recorded request.
fn policy_verdict(
    policy: &KeyPolicy,
    req: Request,
    src: IpAddr,
    now: u64,
    cfg: &Config,
    is_local: impl FnOnce(IpAddr) -> bool,
) -> Verdict {
    // The key's own rules (`expires`, `from`) come first: an expired key
    // or one used from elsewhere opens nothing, whatever it asks.
    match policy.rules.check(src, now) {
        Ok(()) => {}
        Err(crate::policy::Refusal::Source) => {
            return Verdict::Deny(PolicyReject::SourceNotAllowed {
                key_name: policy.name.clone(),
                src: src.to_canonical(),
            })
        }
        Err(crate::policy::Refusal::Expired { at }) => {
            return Verdict::Deny(PolicyReject::KeyExpired {
                key_name: policy.name.clone(),
                at,
            })
        }
    }
    let addr = match req.allow {
        AllowAddr::Source if policy.require_explicit_address => {
            return Verdict::Deny(PolicyReject::ExplicitAddressRequired {
                key_name: policy.name.clone(),
            })
        }
        AllowAddr::Source => src,
        AllowAddr::V4(a) => IpAddr::V4(a),
        AllowAddr::V6(a) => IpAddr::V6(a),
    };
    // The one place an address becomes canonical: `::ffff:A` and `A` are
    // one client, one grant, one rule.
    let addr = match address::usable(addr, is_local) {
        Ok(a) => a,
        Err(why) => {
            return Verdict::Deny(PolicyReject::UnusableAddress {
                key_name: policy.name.clone(),
                addr: addr.to_canonical(),
                why,
            })
        }
    };
    if addr != src.to_canonical() && !policy.allow_other_address {
        return Verdict::Deny(PolicyReject::OtherAddress {
            key_name: policy.name.clone(),
            addr,
        });
    }
    let grants = req.grants.as_slice();
    if let Some(g) = grants.iter().find(|g| !policy.allow.contains(g)) {
        return Verdict::Deny(PolicyReject::NotAllowed {
            key_name: policy.name.clone(),
            grant: *g,
        });
    }
    if let Some((g, to)) = policy
        .rules
        .forward
        .iter()
        .find(|(g, to)| grants.contains(g) && to.is_ipv4() != addr.is_ipv4())
    {
        return Verdict::Deny(PolicyReject::ForwardFamily {
            key_name: policy.name.clone(),
            grant: *g,
            to: *to,
        });
    }
    let asked = if req.duration_secs == 0 {
        cfg.default_duration
    } else {
        req.duration_secs
    };
    // A grant of an expiring key ends at the expiry instant, kernel-side.
    let (duration_secs, until_expiry) = policy
        .rules
        .cap_duration(asked.min(policy.max_duration), now);
    let mut grants = grants.to_vec();
    grants.sort();
    grants.dedup();
    Verdict::Accept(Decision {
        key_name: policy.name.clone(),
        key_id: policy.key_id,
        action: req.action,
        addr,
        grants,
        duration_secs,
        capped: duration_secs < asked,
        until_expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyPolicy;
    use proptest::prelude::*;
    use spa_proto::{
        seal_with, Grants, KeySet, MasterKey, Proto, ReplayRecord, ServerId, TimeWindow,
    };
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::PathBuf;

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
        let k = keys(b);
        KeyPolicy {
            name: name.to_owned(),
            key_id: k.key_id(),
            keys: std::sync::Arc::new(k),
            allow: allow.to_vec(),
            max_duration: max,
            allow_other_address: other,
            require_explicit_address: false,
            max_grants: 16,
            // Generous: the policy tests send many datagrams at one `NOW`;
            // the bucket's own test sets a small one.
            rate: crate::ratelimit::Rate {
                per_minute: 60,
                burst: 1000,
            },
            rules: crate::policy::KeyRules::default(),
            file: PathBuf::from(format!("/etc/spa/{name}.key")),
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

    /// `super::judge` over a memory-only record, which never fails to persist.
    fn judge(
        payload: &[u8],
        src: IpAddr,
        now: u64,
        cfg: &Config,
        state: &mut JudgeState,
        is_local: impl FnOnce(IpAddr) -> bool,
    ) -> Verdict {
        super::judge(payload, src, now, cfg, state, is_local).expect("memory-only record")
    }

    fn accept(v: Verdict) -> Decision {
        match v {
            Verdict::Accept(d) => d,
            other => panic!("expected Accept, got {other:?}"),
        }
    }

    #[test]
    fn accepts_an_open_for_the_source_with_the_default_duration() {
        let cfg = config();
        let mut rr = replay();
        let d = accept(judge(
            &seal(0x11, &req(&[tcp(22)]), 1),
            SRC,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        ));
        assert_eq!(d.key_name, "alice");
        assert_eq!(d.key_id, keys(0x11).key_id());
        assert_eq!(d.action, Action::Open);
        assert_eq!(d.addr, SRC);
        assert_eq!(d.grants, vec![tcp(22)]);
        assert_eq!(d.duration_secs, 30, "0 asks for the server default");
        assert!(!d.capped);
        assert!(rr.replay.record().entries().any(|s| *s
            == Seen {
                timestamp: NOW,
                key_id: keys(0x11).key_id(),
                nonce: [1; 24]
            }));
        assert_eq!(
            rr.replay.len(),
            1,
            "accepted datagrams are in the replay record"
        );
    }

    #[test]
    fn close_and_ipv6_sources_are_carried_through() {
        let cfg = config();
        let mut rr = replay();
        let mut r = req(&[tcp(22)]);
        r.action = Action::Close;
        let src6 = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2));
        let d = accept(judge(
            &seal(0x11, &r, 2),
            src6,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        ));
        assert_eq!(d.action, Action::Close);
        assert_eq!(d.addr, src6);
    }

    #[test]
    fn duration_is_capped_at_the_keys_maximum() {
        let cfg = config();
        let mut rr = replay();
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
            let d = accept(judge(
                &seal(0x11, &r, n as u8),
                SRC,
                NOW,
                &cfg,
                &mut rr,
                no_local,
            ));
            assert_eq!((d.duration_secs, d.capped), (got, capped), "asked {asked}");
        }
    }

    #[test]
    fn default_duration_above_the_keys_maximum_is_capped_too() {
        let mut cfg = config();
        cfg.default_duration = 1000;
        let mut rr = replay();
        let d = accept(judge(
            &seal(0x11, &req(&[tcp(22)]), 1),
            SRC,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        ));
        assert_eq!(d.duration_secs, 60);
        assert!(d.capped);
    }

    #[test]
    fn grants_the_key_may_not_open_are_denied() {
        let cfg = config();
        let mut rr = replay();
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
            let v = judge(
                &seal(0x11, &req(grants), n as u8),
                SRC,
                NOW,
                &cfg,
                &mut rr,
                no_local,
            );
            assert_eq!(
                v,
                Verdict::Deny(PolicyReject::NotAllowed {
                    key_name: "alice".into(),
                    grant: *bad
                })
            );
        }
        // Bob's policy is his own: tcp/443 yes, tcp/22 no.
        let v = judge(
            &seal(0x22, &req(&[tcp(22)]), 9),
            SRC,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        );
        assert!(
            matches!(v, Verdict::Deny(PolicyReject::NotAllowed { .. })),
            "{v:?}"
        );
        let d = accept(judge(
            &seal(0x22, &req(&[tcp(443)]), 10),
            SRC,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        ));
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
        let cfg = config();
        let mut rr = replay();
        let udp53 = Grant::new(Proto::Udp, 53).unwrap();
        let d = accept(judge(
            &seal(0x11, &req(&[udp53, tcp(22), udp53, tcp(22)]), 1),
            SRC,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        ));
        assert_eq!(d.grants, vec![tcp(22), udp53]);
    }

    #[test]
    fn another_address_needs_the_keys_permission() {
        let cfg = config();
        let mut rr = replay();
        let other = Ipv4Addr::new(198, 19, 0, 7);
        let mut r = req(&[tcp(22)]);
        r.allow = AllowAddr::V4(other);
        let d = accept(judge(&seal(0x11, &r, 1), SRC, NOW, &cfg, &mut rr, no_local));
        assert_eq!(d.addr, IpAddr::V4(other), "alice may name another address");

        let mut r = req(&[tcp(443)]);
        r.allow = AllowAddr::V4(other);
        let v = judge(&seal(0x22, &r, 2), SRC, NOW, &cfg, &mut rr, no_local);
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
        let d = accept(judge(&seal(0x22, &r, 3), SRC, NOW, &cfg, &mut rr, no_local));
        assert_eq!(d.addr, SRC);
    }

    /// Finding 11: every address of the review is refused, named or as the
    /// source, for a key that may name any address.
    #[test]
    fn unusable_addresses_are_denied() {
        let cfg = config();
        let mut rr = replay();
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
            let v = judge(&seal(0x11, &r, n), SRC, NOW, &cfg, &mut rr, local);
            assert!(
                matches!(v, Verdict::Deny(PolicyReject::UnusableAddress { .. })),
                "named {a}: {v:?}"
            );
            // The same address as the datagram's source (spoofed by a key
            // holder) is refused too.
            n += 1;
            let v = judge(
                &seal(0x11, &req(&[tcp(22)]), n),
                a,
                NOW,
                &cfg,
                &mut rr,
                local,
            );
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
        let cfg = config();
        let mut rr = replay();
        let mut r = req(&[tcp(22)]);
        r.allow = AllowAddr::V6(Ipv4Addr::new(198, 19, 0, 7).to_ipv6_mapped());
        let d = accept(judge(&seal(0x11, &r, 1), SRC, NOW, &cfg, &mut rr, no_local));
        assert_eq!(d.addr, ip("198.19.0.7"));
        // Bob may not name other addresses; his own, mapped, is his own.
        let mut r = req(&[tcp(443)]);
        r.allow = AllowAddr::V6(Ipv4Addr::new(198, 18, 0, 2).to_ipv6_mapped());
        let d = accept(judge(&seal(0x22, &r, 2), SRC, NOW, &cfg, &mut rr, no_local));
        assert_eq!(d.addr, SRC);
        // A mapped source is the IPv4 source.
        let mapped_src = ip("::ffff:198.18.0.2");
        let d = accept(judge(
            &seal(0x22, &req(&[tcp(443)]), 3),
            mapped_src,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        ));
        assert_eq!(d.addr, SRC);
    }

    /// Finding 14: a key with `require_explicit_address` opens only an
    /// address the sealed request names, never "whoever sent this".
    #[test]
    fn require_explicit_address_refuses_the_source_form() {
        let mut cfg = config();
        cfg.keys[1].require_explicit_address = true;
        let mut rr = replay();
        let v = judge(
            &seal(0x22, &req(&[tcp(443)]), 1),
            SRC,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        );
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
        let d = accept(judge(&seal(0x22, &r, 2), SRC, NOW, &cfg, &mut rr, no_local));
        assert_eq!(d.addr, SRC);
        let v = judge(
            &seal(0x22, &r, 3),
            ip("198.18.9.9"),
            NOW,
            &cfg,
            &mut rr,
            no_local,
        );
        assert!(
            matches!(v, Verdict::Deny(PolicyReject::OtherAddress { .. })),
            "{v:?}"
        );
    }

    #[test]
    fn protocol_rejections_come_through_with_their_reason() {
        let cfg = config();
        let mut rr = replay();
        let good = seal(0x11, &req(&[tcp(22)]), 1);
        accept(judge(&good, SRC, NOW, &cfg, &mut rr, no_local));
        assert_eq!(
            judge(&good, SRC, NOW, &cfg, &mut rr, no_local),
            Verdict::Reject(Reject::Replayed)
        );
        // Unknown key, wrong server, outside the window, garbage, a flipped bit.
        assert_eq!(
            judge(
                &seal(0x33, &req(&[tcp(22)]), 2),
                SRC,
                NOW,
                &cfg,
                &mut rr,
                no_local
            ),
            Verdict::Reject(Reject::UnknownKeyId)
        );
        let mut r = req(&[tcp(22)]);
        r.server = ServerId::from_name("other");
        assert_eq!(
            judge(&seal(0x11, &r, 3), SRC, NOW, &cfg, &mut rr, no_local),
            Verdict::Reject(Reject::WrongServer)
        );
        let mut r = req(&[tcp(22)]);
        r.timestamp = NOW - 31;
        assert!(matches!(
            judge(&seal(0x11, &r, 4), SRC, NOW, &cfg, &mut rr, no_local),
            Verdict::Reject(Reject::TooOld { .. })
        ));
        r.timestamp = NOW + 31;
        assert!(matches!(
            judge(&seal(0x11, &r, 5), SRC, NOW, &cfg, &mut rr, no_local),
            Verdict::Reject(Reject::InFuture { .. })
        ));
        assert_eq!(
            judge(&[0u8; 10], SRC, NOW, &cfg, &mut rr, no_local),
            Verdict::Reject(Reject::WrongLength { got: 10 })
        );
        let mut flipped = seal(0x11, &req(&[tcp(22)]), 6);
        flipped[100] ^= 1;
        assert_eq!(
            judge(&flipped, SRC, NOW, &cfg, &mut rr, no_local),
            Verdict::Reject(Reject::AuthFailed)
        );
        assert_eq!(rr.replay.len(), 1, "only the accepted datagram is recorded");
    }

    /// Finding 9: a denied datagram is committed to the record like an
    /// accepted one, so it stays refused when replayed (also after a
    /// restart: the commit wrote it).
    #[test]
    fn a_denied_datagram_is_recorded_and_committed() {
        let cfg = config();
        let mut rr = replay();
        let bob443 = seal(0x22, &req(&[tcp(22)]), 1);
        let v = judge(&bob443, SRC, NOW, &cfg, &mut rr, no_local);
        assert!(matches!(v, Verdict::Deny(_)), "{v:?}");
        assert!(rr.replay.record().entries().any(|s| *s
            == Seen {
                timestamp: NOW,
                key_id: keys(0x22).key_id(),
                nonce: [1; 24]
            }));
        assert_eq!(rr.replay.len(), 1);
        assert_eq!(
            judge(&bob443, SRC, NOW, &cfg, &mut rr, no_local),
            Verdict::Reject(Reject::Replayed)
        );
        assert_eq!(rr.replay.len(), 1, "a rejection records nothing");
    }

    /// Finding 3: bob's flood of denied datagrams fills only bob's share of
    /// the record; alice is accepted at once.
    #[test]
    fn one_keys_denied_flood_does_not_lock_out_another_key() {
        let cfg = config();
        let share = spa_proto::replay::share_of(64, cfg.keys.len());
        let mut rr = JudgeState::new(DurableReplay::in_memory(ReplayRecord::new(
            TimeWindow::default(),
            share,
        )));
        for n in 0..share {
            let v = judge(
                &seal(0x22, &req(&[tcp(22)]), n as u8),
                SRC,
                NOW,
                &cfg,
                &mut rr,
                no_local,
            );
            assert!(matches!(v, Verdict::Deny(_)), "{n}: {v:?}");
        }
        assert_eq!(
            judge(
                &seal(0x22, &req(&[tcp(443)]), 200),
                SRC,
                NOW,
                &cfg,
                &mut rr,
                no_local
            ),
            Verdict::Reject(Reject::ReplayRecordFull)
        );
        accept(judge(
            &seal(0x11, &req(&[tcp(22)]), 9),
            SRC,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        ));
    }

    /// Finding 16: over its token bucket a key's new datagrams are refused
    /// with their own reason, unrecorded; other keys and replays are not
    /// affected, and the bucket refills with the time passed in.
    #[test]
    fn a_keys_token_bucket_refuses_its_new_datagrams_over_the_rate() {
        let mut cfg = config();
        cfg.keys[0].rate = crate::ratelimit::Rate {
            per_minute: 60,
            burst: 2,
        };
        let mut rr = replay();
        let first = seal(0x11, &req(&[tcp(22)]), 1);
        accept(judge(&first, SRC, NOW, &cfg, &mut rr, no_local));
        accept(judge(
            &seal(0x11, &req(&[tcp(22)]), 2),
            SRC,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        ));
        let third = seal(0x11, &req(&[tcp(22)]), 3);
        assert_eq!(
            judge(&third, SRC, NOW, &cfg, &mut rr, no_local),
            Verdict::Reject(Reject::RateLimited)
        );
        assert_eq!(Reject::RateLimited.code(), "rate_limited");
        assert_eq!(rr.replay.len(), 2, "the refused one is not recorded");
        // A replay is still named a replay and spends nothing.
        assert_eq!(
            judge(&first, SRC, NOW, &cfg, &mut rr, no_local),
            Verdict::Reject(Reject::Replayed)
        );
        // Bob has his own bucket.
        accept(judge(
            &seal(0x22, &req(&[tcp(443)]), 4),
            SRC,
            NOW,
            &cfg,
            &mut rr,
            no_local,
        ));
        // One second later alice has one token again, and the refused
        // datagram (never recorded) may come through.
        accept(judge(&third, SRC, NOW + 1, &cfg, &mut rr, no_local));
        assert_eq!(
            judge(
                &seal(0x11, &req(&[tcp(22)]), 5),
                SRC,
                NOW + 1,
                &cfg,
                &mut rr,
                no_local
            ),
            Verdict::Reject(Reject::RateLimited)
        );
    }

    /// Issue 15, item 1: a key with `from` opens nothing for a datagram
    /// sent from elsewhere, and the denial names the key and the source.
    #[test]
    fn a_key_used_from_outside_its_networks_is_denied() {
        let mut cfg = config();
        cfg.keys[1].rules.from = crate::policy::parse_from(&["198.18.0.0/24".into()]).unwrap();
        let v = judge(
            &seal(0x22, &req(&[tcp(443)]), 1),
            SRC,
            NOW,
            &cfg,
            &mut replay(),
            no_local,
        );
        accept(v);
        let other: IpAddr = "198.18.1.2".parse().unwrap();
        let mut st = replay();
        let v = judge(
            &seal(0x22, &req(&[tcp(443)]), 2),
            other,
            NOW,
            &cfg,
            &mut st,
            no_local,
        );
        let Verdict::Deny(p) = v else {
            panic!("expected a denial, got {v:?}")
        };
        assert_eq!(p.code(), "source_not_allowed");
        assert_eq!(
            p.to_string(),
            "key `bob` may not be used from 198.18.1.2 (its `from` networks)"
        );
        // Recorded like every denial: its replay stays refused.
        assert_eq!(st.replay.len(), 1);
    }

    /// Issue 15, item 2: an expired key is refused with its own reason, and
    /// a grant of a key about to expire ends at the expiry instant.
    #[test]
    fn an_expired_key_is_denied_and_grants_end_at_its_expiry() {
        let mut cfg = config();
        cfg.keys[1].rules.expires = Some(NOW + 100);
        let mut r = req(&[tcp(443)]);
        r.duration_secs = 300;
        let d = accept(judge(
            &seal(0x22, &r, 1),
            SRC,
            NOW,
            &cfg,
            &mut replay(),
            no_local,
        ));
        // It starts by NOW + 1 and ends by NOW + 100.
        assert_eq!(d.duration_secs, 99);
        assert!(d.capped && d.until_expiry);
        cfg.keys[1].rules.expires = Some(NOW);
        let v = judge(&seal(0x22, &r, 2), SRC, NOW, &cfg, &mut replay(), no_local);
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
        let mut cfg = config();
        cfg.by_id.clear();
        let mut rr = replay();
        assert_eq!(
            judge(
                &seal(0x11, &req(&[tcp(22)]), 1),
                SRC,
                NOW,
                &cfg,
                &mut rr,
                no_local
            ),
            Verdict::Reject(Reject::UnknownKeyId)
        );
    }

    proptest! {
        /// Arbitrary bytes never panic and are never accepted.
        #[test]
        fn arbitrary_bytes_are_never_accepted(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let cfg = config();
            let mut rr = replay();
            let v = judge(&bytes, SRC, NOW, &cfg, &mut rr, no_local);
            prop_assert!(matches!(v, Verdict::Reject(_)));
        }

        /// Any single flipped bit of an authentic datagram is rejected.
        #[test]
        fn any_flipped_bit_is_rejected(pos in 0usize..spa_proto::DATAGRAM_LEN, bit in 0u8..8) {
            let cfg = config();
            let mut rr = replay();
            let mut d = seal(0x11, &req(&[tcp(22)]), 1);
            d[pos] ^= 1 << bit;
            let v = judge(&d, SRC, NOW, &cfg, &mut rr, no_local);
            prop_assert!(matches!(v, Verdict::Reject(_)), "{:?}", v);
        }

        /// An authentic request is accepted exactly when every grant is
        /// allowed, and its duration never exceeds the key's maximum.
        #[test]
        fn policy_holds_for_any_request(
            ports in proptest::collection::vec((any::<bool>(), 1u16..100), 1..=8),
            duration in any::<u32>(),
        ) {
            let cfg = config();
            let mut rr = replay();
            let grants: Vec<Grant> = ports
                .iter()
                .map(|&(t, p)| Grant::new(if t { Proto::Tcp } else { Proto::Udp }, p).unwrap())
                .collect();
            let mut r = req(&grants);
            r.duration_secs = duration;
            let allowed = cfg.keys[0].allow.clone();
            let v = judge(&seal(0x11, &r, 1), SRC, NOW, &cfg, &mut rr, no_local);
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
}
