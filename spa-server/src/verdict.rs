//! From captured bytes to a decision: the pure heart of the server.
//!
//! `judge` runs the whole receive-side check (spa_proto::verify: length,
//! magic, version, key-id, AEAD, plaintext, server id, time window, replay)
//! and then the per-key policy, and returns a typed [`Verdict`]. It does no
//! I/O: the daemon persists the replay entry and applies the firewall change
//! afterwards, and logs the verdict once.

use crate::config::Config;
use spa_proto::{Action, AllowAddr, Grant, KeyId, Reject, ReplayRecord, Seen};
use std::fmt;
use std::net::IpAddr;

/// What to do for one accepted datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key_name: String,
    pub key_id: KeyId,
    pub action: Action,
    /// The address the rule is scoped to.
    pub addr: IpAddr,
    pub grants: Vec<Grant>,
    /// Seconds, after the server default and the key's cap are applied.
    pub duration_secs: u32,
    /// True when the requested duration was cut down to the key's cap.
    pub capped: bool,
    /// The replay entry to persist before acting.
    pub seen: Seen,
}

/// Why an authentic datagram was still refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyReject {
    /// The key may not open this grant.
    NotAllowed { key_name: String, grant: Grant },
    /// The request named an address other than its source and the key may not.
    OtherAddress { key_name: String, addr: IpAddr },
    /// An IPv4 grant for an IPv6 source or the reverse cannot be scoped.
    FamilyMismatch { key_name: String },
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
            PolicyReject::FamilyMismatch { key_name } => {
                write!(f, "key `{key_name}`: unusable allow address")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept(Decision),
    Reject(Reject),
    Deny(PolicyReject),
}

/// Judges one datagram from `src`, at Unix time `now`. On success the replay
/// record already holds the datagram (in memory); the caller persists
/// `decision.seen` before touching the firewall.
pub fn judge(
    payload: &[u8],
    src: IpAddr,
    now: u64,
    cfg: &Config,
    replay: &mut ReplayRecord,
) -> Verdict {
    let opened = match spa_proto::verify(
        payload,
        |id| cfg.key(id).map(|k| &*k.keys),
        &cfg.server_id,
        now,
        replay,
    ) {
        Ok(o) => o,
        Err(r) => return Verdict::Reject(r),
    };
    let seen = Seen {
        timestamp: opened.request.timestamp,
        key_id: opened.key_id,
        nonce: opened.nonce,
    };
    // verify() only returns keys found by this same lookup.
    let Some(policy) = cfg.key(&opened.key_id) else {
        return Verdict::Reject(Reject::UnknownKeyId);
    };
    let req = opened.request;
    let addr = match req.allow {
        AllowAddr::Source => src,
        AllowAddr::V4(a) => IpAddr::V4(a),
        AllowAddr::V6(a) => IpAddr::V6(a),
    };
    if addr != src && !policy.allow_other_address {
        return Verdict::Deny(PolicyReject::OtherAddress {
            key_name: policy.name.clone(),
            addr,
        });
    }
    if addr.is_unspecified() || addr.is_multicast() {
        return Verdict::Deny(PolicyReject::FamilyMismatch {
            key_name: policy.name.clone(),
        });
    }
    let grants = req.grants.as_slice();
    if let Some(g) = grants.iter().find(|g| !policy.allow.contains(g)) {
        return Verdict::Deny(PolicyReject::NotAllowed {
            key_name: policy.name.clone(),
            grant: *g,
        });
    }
    let asked = if req.duration_secs == 0 {
        cfg.default_duration
    } else {
        req.duration_secs
    };
    let duration_secs = asked.min(policy.max_duration);
    let mut grants = grants.to_vec();
    grants.sort();
    grants.dedup();
    Verdict::Accept(Decision {
        key_name: policy.name.clone(),
        key_id: opened.key_id,
        action: req.action,
        addr,
        grants,
        duration_secs,
        capped: duration_secs < asked,
        seen,
    })
}
