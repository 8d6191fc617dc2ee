//! Every counter the daemon keeps, in one place: the stop line, `spa-server
//! status` (text, JSON, Prometheus), the metrics file and the systemd status
//! line all read these values (issue 11). The per-line logs are rate
//! limited; these are not, so they are the only complete count under a
//! flood.

use std::collections::BTreeMap;

/// Counts since start. Plain integers: one thread owns them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams whose grant change the firewall took (open or close).
    pub datagrams_accepted: u64,
    /// Accepted, but the firewall change failed: not counted as accepted.
    pub datagrams_failed: u64,
    /// Datagrams refused, whatever the reason (includes the ones below).
    pub datagrams_rejected: u64,
    /// Of `datagrams_rejected`: over their key's token bucket.
    pub datagrams_rate_limited: u64,
    /// Of `datagrams_rejected`: the replay entry could not be persisted.
    pub datagrams_not_persisted: u64,
    /// Of `datagrams_rejected`: authenticated, but the key's policy denied
    /// the request (allow, from, expires, address, grant cap).
    pub datagrams_denied: u64,
    /// `datagrams_rejected` by reason code (the log line's `reason=`):
    /// the only place the split is kept, so status and metrics agree.
    pub rejects: BTreeMap<&'static str, u64>,
    /// Knock sequences that opened or closed a grant.
    pub knocks_accepted: u64,
    /// Knocks refused (address, cap, sequence, persistence).
    pub knocks_rejected: u64,
    /// `knocks_rejected` by reason code.
    pub knock_rejects: BTreeMap<&'static str, u64>,
    /// Grants removed because they expired.
    pub grants_expired: u64,
    /// Grants ended by `spa-server revoke`.
    pub grants_revoked: u64,
    /// Firewall batches that failed (the grant table kept its state).
    pub firewall_failures: u64,
    /// Our chain/sets found gone (a firewall reload by someone else) and
    /// re-installed with the live grants.
    pub firewall_repairs: u64,
    /// Reloads applied, and refused.
    pub reloads: u64,
    pub reloads_refused: u64,
}

impl Stats {
    /// One refused datagram, by reason code.
    pub fn reject(&mut self, reason: &'static str) {
        self.datagrams_rejected += 1;
        *self.rejects.entry(reason).or_default() += 1;
    }

    /// One refused knock, by reason code.
    pub fn knock_reject(&mut self, reason: &'static str) {
        self.knocks_rejected += 1;
        *self.knock_rejects.entry(reason).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reject_counts_in_all_and_by_reason() {
        let mut s = Stats::default();
        s.reject("replayed");
        s.reject("replayed");
        s.reject("auth_failed");
        s.knock_reject("sequence");
        assert_eq!(s.datagrams_rejected, 3);
        assert_eq!(s.rejects.get("replayed"), Some(&2));
        assert_eq!(s.rejects.values().sum::<u64>(), s.datagrams_rejected);
        assert_eq!((s.knocks_rejected, s.knock_rejects.len()), (1, 1));
    }
}
