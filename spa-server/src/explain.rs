//! What a rejection line says beyond its reason (issue 10, item 7): the
//! server knows things the client cannot see (its own id, its clock, what a
//! key may open), and the admin reading `journalctl | grep <key-id>` should
//! not have to look them up. Pure: the configuration and the clock come in.
//!
//! Only after authentication does a line name a key or its policy: for an
//! unknown key-id or a failed tag, the sender may be anyone, and the line
//! says only what the server expected in general.

use crate::config::{Config, KeyPolicy};
use crate::verdict::PolicyReject;
use spa_proto::Reject;

/// The key a cleartext key-id (hex, as logged) names, if any: one probe of
/// the configuration's key map. (A scan formatting every key's id cost ~1 ms
/// per logged line with 10,000 keys, issue 14.)
pub fn key_for<'a>(cfg: &'a Config, key_id: &str) -> Option<&'a KeyPolicy> {
    let id: spa_proto::KeyId = key_id.parse().ok()?;
    cfg.by_id.get(&id).and_then(|&i| cfg.keys.get(i))
}

/// `tcp/22,udp/53`.
pub fn allowed(k: &KeyPolicy) -> String {
    k.allow
        .iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The sentence after a rejection's reason, saying what the server expected.
pub fn reject(cfg: &Config, r: &Reject, now: u64) -> String {
    let w = cfg.window;
    match r {
        Reject::UnknownKeyId => format!(
            "no [[key]] of this server has that key-id ({} key(s) configured); the client \
             prints its key-id on its `sent` line",
            cfg.keys.len()
        ),
        Reject::AuthFailed => {
            "the key-id is known but the tag did not verify: a forged datagram, or the client's \
             key file differs from the server's"
                .into()
        }
        Reject::WrongServer => format!(
            "this server's id is {:?} (server_id); the client sealed for another: \
             spa-client send --server-id {:?}",
            cfg.server_name, cfg.server_name
        ),
        Reject::TooOld { .. } | Reject::InFuture { .. } => format!(
            "server clock {now} (Unix s), window -{} s / +{} s (window_secs); check both \
             clocks (NTP) or spa-client --time-offset",
            w.past_secs, w.future_secs
        ),
        Reject::Replayed => "this exact datagram was seen before; send a fresh one".into(),
        Reject::ReplayRecordFull => {
            "this key's share of the replay record is full (replay_capacity)".into()
        }
        Reject::RateLimited => "over the key's rate_per_minute / rate_burst".into(),
        _ => String::new(),
    }
}

/// The same for a policy refusal of key `k`.
pub fn policy(k: Option<&KeyPolicy>, p: &PolicyReject) -> String {
    match (p, k) {
        (PolicyReject::NotAllowed { .. }, Some(k)) => format!(
            "key {} may open {} for up to {} s (allow, max_duration)",
            k.name,
            allowed(k),
            k.max_duration
        ),
        (PolicyReject::OtherAddress { .. }, Some(k)) => format!(
            "key {} may open only for the address it sends from (allow_other_address = false)",
            k.name
        ),
        (PolicyReject::SourceNotAllowed { .. }, Some(k)) => format!(
            "key {} may be used from {} (from)",
            k.name,
            k.rules.from_text()
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_sentences_name_what_the_server_knows() {
        let cfg = Config::for_tests(vec![], 30);
        let s = reject(&cfg, &Reject::WrongServer, 5);
        assert!(s.contains("\"gw\""), "{s}");
        let s = reject(&cfg, &Reject::TooOld { age_secs: 99 }, 1_700_000_000);
        assert!(s.contains("1700000000") && s.contains("window"), "{s}");
        assert!(reject(&cfg, &Reject::UnknownKeyId, 5).contains("0 key(s)"));
        assert_eq!(reject(&cfg, &Reject::BadMagic, 5), "");
        assert!(key_for(&cfg, "00").is_none());
    }
}
