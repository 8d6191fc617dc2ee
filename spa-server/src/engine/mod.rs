//! The daemon's core: one event (a captured packet, a tick, a reload) and
//! the time in, a decision and its firewall change out. The event loop
//! (daemon/) owns poll, signals, the watchdog and the sockets; this owns
//! the ordering guarantees, so they can be unit-tested with the fake
//! firewall:
//!
//! - the replay entry is durable before any firewall change
//!   ([`crate::state::DurableReplay::check_and_commit`] inside `judge`);
//! - the grant table changes only after its firewall batch applied
//!   ([`GrantTable`]);
//! - caps are checked before the batch; an owner touches only its own
//!   grants.
//!
//! The firewall is reached only through the `Box<dyn Firewall>` inside
//! [`GrantTable`]: the real backends in the daemon, the fake in tests. The clock
//! is read once per wake-up by the loop and passed in as [`Now`].
//!
//! This file: the events, datagrams, caps and expiry; knock.rs: knocks and
//! the HMAC knock record; reload.rs: a new configuration; manual.rs: revoke
//! by hand; limiter.rs: the log-line rate limit; wire_id.rs: the key-id.

use crate::capture::local::LocalAddrs;
use crate::capture::Packet;
use crate::config::Config;
use crate::firewall::FwError;
use crate::grants::{Change, GrantTable, Owner, Via};
use crate::knocks;
use crate::state::DurableReplay;
use crate::stats::Stats;
use crate::verdict::{self, JudgeState, Verdict};
use spa_proto::{Action, Reject};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

mod knock;
mod limiter;
mod manual;
mod reload;
pub use manual::Selector;
#[cfg(test)]
mod tests;
mod wire_id;

pub use knock::restore_hmac_record;
use limiter::LogLimiter;
use wire_id::WireId;

/// The time, read once per wake-up of the event loop.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Unix time in milliseconds (a clock before 1970 reads as 0).
    pub ms: u64,
    /// The monotonic clock at the same moment, for rate limits and caches.
    pub mono: Instant,
}

impl Now {
    pub fn read() -> Now {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Now {
            ms,
            mono: Instant::now(),
        }
    }

    /// Unix seconds, rounded down: the replay window and expiry checks.
    pub fn secs(&self) -> u64 {
        self.ms / 1000
    }

    /// Unix seconds rounded up: grants end at `ceil(now) + duration`, so an
    /// N-second grant lasts at least N seconds (expiry, and the kernel's
    /// `--datestop`, have one-second resolution).
    pub fn ceil_secs(&self) -> u64 {
        self.ms.div_ceil(1000)
    }
}

/// One thing that happened, for [`Engine::handle`].
#[derive(Debug)]
pub enum Event<'a> {
    /// A packet the capture passed (a datagram or a knock).
    Packet(Packet<'a>),
    /// Time passed: expire grants.
    Tick,
    /// A new configuration, already loaded and validated (and the capture
    /// already moved to it by the loop).
    Reload(Box<Config>),
}

/// What handling one event did: one per decision. The log line is written
/// by the engine; this is for the loop's counters and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refused; the code is the log line's `reason=`.
    Refused(&'static str),
    /// The replay entry could not be persisted: nothing was done.
    NotPersisted,
    Opened(Change),
    Closed(Change),
    /// Accepted, but the firewall batch failed (table unchanged).
    FirewallFailed,
    /// Not addressed to this host, or a door grant still fresh.
    Ignored(&'static str),
    /// This many grants expired and were removed.
    Expired(usize),
    Reloaded,
}

pub struct Engine {
    cfg: Config,
    /// The durable replay record and the per-key token buckets.
    judge: JudgeState,
    grants: GrantTable,
    legacy: knocks::Runtime,
    /// Knocks count only when addressed to this host (not forwarded); the
    /// list is read at the first knock, so a server without knocks never
    /// reads it.
    local: LocalAddrs,
    limiter: LogLimiter,
    stats: Stats,
    /// Keys about to expire are named at start, at reload and once a day.
    expiry_warnings: crate::policy::ExpiryWarnings,
}

impl Engine {
    /// `grants` must be set up already (its chain installed).
    pub fn new(
        cfg: Config,
        replay: DurableReplay,
        grants: GrantTable,
        legacy: knocks::Runtime,
        local: LocalAddrs,
    ) -> Engine {
        Engine {
            cfg,
            judge: JudgeState::new(replay),
            grants,
            legacy,
            local,
            limiter: LogLimiter::new(20),
            stats: Stats::default(),
            expiry_warnings: crate::policy::ExpiryWarnings::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The counters without the firewall repairs, without a copy (for
    /// the systemd status line, read at every wake-up).
    pub fn stats_ref(&self) -> &Stats {
        &self.stats
    }

    /// Every counter (stats.rs), the firewall repairs included.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.firewall_repairs = self.grants.repairs();
        s
    }

    pub fn grants(&self) -> &GrantTable {
        &self.grants
    }

    /// Until when the loop may sleep for the engine's sake (the next grant
    /// expiry, a knock deadline).
    pub fn next_deadline(&self, now: &Now) -> Option<Duration> {
        let grant = self
            .grants
            .next_wake()
            .map(|s| Duration::from_millis(s.saturating_mul(1000).saturating_sub(now.ms)));
        match (grant, self.legacy.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The ruleset changed under us (fwwatch): re-install our chain/sets
    /// with every live grant if they are gone (`Some(grants re-added)`).
    pub fn ensure_installed(&mut self, now: &Now) -> Result<Option<usize>, FwError> {
        self.grants.ensure_installed(now.secs())
    }

    /// Removes every grant and our chain/sets (stop).
    pub fn teardown(&mut self) -> Result<(), FwError> {
        self.grants.teardown()
    }

    /// Logs keys that expire within 7 days, at most once a day. Called on
    /// every event (a wake-up the loop has anyway) and at start, so it adds
    /// no timer: an idle daemon warns at its next packet, expiry or watchdog.
    pub fn warn_expiring_keys(&mut self, now: &Now) {
        for line in self.expiry_warnings.due(&self.cfg.keys, now.secs()) {
            warn!(reason = "key_expiring", "{line}");
        }
    }

    pub fn handle(&mut self, ev: Event<'_>, now: &Now) -> Vec<Outcome> {
        self.warn_expiring_keys(now);
        match ev {
            Event::Packet(Packet::Spa { src, payload, .. }) => {
                vec![self.datagram(src, payload, now)]
            }
            Event::Packet(Packet::Knock {
                src,
                dst,
                proto,
                dport,
                tcp_flags,
            }) => self.knock(src, dst, proto, dport, tcp_flags, now),
            Event::Tick => {
                // The v2 ids of a new minute, on a wake-up the loop has
                // anyway, so the first datagram of the minute rarely pays
                // (a no-op within the minute; lazily at lookup otherwise).
                let v2 = &self.cfg.v2;
                self.judge
                    .v2_ids
                    .refresh(now.secs(), &v2.keys, |k| k.set.as_deref());
                vec![self.expire(now)]
            }
            Event::Reload(new) => vec![self.reload(*new, now)],
        }
    }

    fn datagram(&mut self, src: IpAddr, payload: &[u8], now: &Now) -> Outcome {
        // The cleartext key-id goes on every line, so a client's `--wait`
        // diagnosis can name the one grep that finds it.
        let wire_id = WireId::of(payload);
        let key_id = wire_id.as_str();
        let (local, mono) = (&mut self.local, now.mono);
        let judged = verdict::judge(payload, src, now.secs(), &self.cfg, &mut self.judge, |a| {
            local.contains(a, mono)
        });
        let v = match judged {
            Ok(v) => v,
            Err(e) => {
                // Durable before effective: a datagram the record could not
                // keep is not acted on (its one line is this).
                self.stats.reject("not_persisted");
                self.stats.datagrams_not_persisted += 1;
                if self.limiter.allow(now.mono) {
                    error!(%src, key_id, "rejected: cannot persist the replay record, not acting on this datagram: {e}");
                }
                return Outcome::NotPersisted;
            }
        };
        match v {
            Verdict::Reject(r) => {
                self.stats.reject(r.code());
                if r == Reject::RateLimited {
                    self.stats.datagrams_rate_limited += 1;
                }
                if self.limiter.allow(now.mono) {
                    // After authentication the key-id names a key: say which.
                    let key = match r {
                        Reject::UnknownKeyId | Reject::AuthFailed => None,
                        _ => crate::explain::key_for(&self.cfg, key_id),
                    };
                    let key = key.map_or("-", |k| k.name.as_str());
                    let why = crate::explain::reject(&self.cfg, &r, now.secs());
                    info!(%src, key_id, key, reason = r.code(), "rejected: {r}; {why}");
                }
                Outcome::Refused(r.code())
            }
            Verdict::Deny(p) => {
                self.stats.reject(p.code());
                self.stats.datagrams_denied += 1;
                if self.limiter.allow(now.mono) {
                    let k = crate::explain::key_for(&self.cfg, key_id);
                    let key = k.map_or("-", |k| k.name.as_str());
                    let why = crate::explain::policy(k, &p);
                    info!(%src, key_id, key, reason = p.code(), "rejected: {p}; {why}");
                }
                Outcome::Refused(p.code())
            }
            Verdict::Accept(d) => {
                let owner = Owner::Key(d.key_name.clone());
                let at = now.ceil_secs();
                if d.action == Action::Open {
                    if let Err(hit) = self.check_caps(&owner, d.addr, &d.grants, at) {
                        self.stats.reject("grant_cap");
                        self.stats.datagrams_denied += 1;
                        if self.limiter.allow(now.mono) {
                            info!(%src, key = %d.key_name, key_id, addr = %d.addr, reason = "grant_cap",
                                "rejected: key `{}` holds {hit}", d.key_name);
                        }
                        return Outcome::Refused("grant_cap");
                    }
                }
                let ports = d
                    .grants
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                let res = match d.action {
                    Action::Open => {
                        self.grants
                            .open(&owner, d.addr, &d.grants, d.duration_secs, at)
                    }
                    Action::Close => self.grants.close(&owner, d.addr, &d.grants, at),
                };
                if let (Action::Open, Ok(_)) = (d.action, &res) {
                    self.grants
                        .note_origin(&owner, d.addr, &d.grants, Via::Datagram, at);
                }
                // Counted as accepted only when the firewall took it.
                if res.is_ok() {
                    self.stats.datagrams_accepted += 1;
                } else {
                    self.stats.datagrams_failed += 1;
                }
                match (d.action, res) {
                    (Action::Open, Ok(c)) if d.capped => {
                        info!(
                            %src, key = %d.key_name, key_id, addr = %d.addr, grants = %ports,
                            duration = d.duration_secs, capped = d.capped,
                            added = c.added, refreshed = c.refreshed,
                            "accepted open: rule added; duration capped to key {}'s {} {} s",
                            d.key_name,
                            if d.until_expiry { "expires, in" } else { "max_duration" },
                            d.duration_secs
                        );
                        Outcome::Opened(c)
                    }
                    (Action::Open, Ok(c)) => {
                        info!(
                            %src, key = %d.key_name, key_id, addr = %d.addr, grants = %ports,
                            duration = d.duration_secs, capped = d.capped,
                            added = c.added, refreshed = c.refreshed,
                            "accepted open: rule added"
                        );
                        Outcome::Opened(c)
                    }
                    (Action::Close, Ok(c)) => {
                        info!(
                            %src, key = %d.key_name, key_id, addr = %d.addr, grants = %ports,
                            removed = c.removed, "accepted close: rule removed"
                        );
                        Outcome::Closed(c)
                    }
                    (_, Err(e)) => {
                        self.stats.firewall_failures += 1;
                        error!(
                            %src, key = %d.key_name, key_id, addr = %d.addr, grants = %ports,
                            "accepted, but the firewall change failed (firewall unchanged): {e}"
                        );
                        Outcome::FirewallFailed
                    }
                }
            }
        }
    }

    /// The caps an open by `owner` is held to: the key's `max_grants` (an
    /// HMAC knock counts as its key), the doors' shared part of the total,
    /// and `max_grants_total` for everyone.
    fn check_caps(
        &self,
        owner: &Owner,
        addr: IpAddr,
        grants: &[spa_proto::Grant],
        at: u64,
    ) -> Result<(), crate::grants::CapHit> {
        let total = self.cfg.max_grants_total;
        let cap = match owner {
            Owner::Key(name) => self
                .cfg
                .keys
                .iter()
                .find(|k| &k.name == name)
                .map_or(0, |k| k.max_grants),
            Owner::Doors => crate::limits::door_share(total),
        };
        self.grants.check_caps(owner, addr, grants, at, cap, total)
    }

    fn expire(&mut self, now: &Now) -> Outcome {
        match self.grants.expire(now.secs()) {
            Ok(gone) => {
                for a in &gone {
                    info!(addr = %a.addr, grant = %a.grant, "grant expired: rule removed");
                }
                self.stats.grants_expired += gone.len() as u64;
                Outcome::Expired(gone.len())
            }
            Err(e) => {
                self.stats.firewall_failures += 1;
                warn!("removing expired rules failed (the kernel already ignores them): {e}");
                Outcome::FirewallFailed
            }
        }
    }

    /// The loop refused a reload (the configuration or the capture).
    pub fn reload_refused(&mut self) {
        self.stats.reloads_refused += 1;
    }
}
