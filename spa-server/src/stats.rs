//! Every counter the daemon keeps, in one place: the stop line reads it
//! today; a status command, metrics and the systemd status line read the
//! same values (issue 11). The per-line logs are rate limited; these are
//! not, so they are the only complete count under a flood.

/// Counts since start. Plain integers: one thread owns them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams whose grant change the firewall took (open or close).
    pub datagrams_accepted: u64,
    /// Accepted, but the firewall change failed: not counted as accepted.
    pub datagrams_failed: u64,
    /// Datagrams refused, whatever the reason (includes the two below).
    pub datagrams_rejected: u64,
    /// Of `datagrams_rejected`: over their key's token bucket.
    pub datagrams_rate_limited: u64,
    /// Of `datagrams_rejected`: the replay entry could not be persisted.
    pub datagrams_not_persisted: u64,
    /// Knock sequences that opened or closed a grant.
    pub knocks_accepted: u64,
    /// Knocks refused (address, cap, sequence, persistence).
    pub knocks_rejected: u64,
    /// Grants removed because they expired.
    pub grants_expired: u64,
    /// Firewall batches that failed (the grant table kept its state).
    pub firewall_failures: u64,
    /// Reloads applied, and refused.
    pub reloads: u64,
    pub reloads_refused: u64,
}
