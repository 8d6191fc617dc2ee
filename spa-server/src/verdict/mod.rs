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
        match crate::v2::open(payload, &cfg.v2, &mut state.v2_ids, now) {
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
mod tests;
