//! The daemon's core: one event (a captured packet, a tick, a reload) and
//! the time in, a decision and its firewall change out. The event loop
//! (daemon/) owns poll, signals, the watchdog and the sockets; this owns
//! the ordering guarantees, so they can be unit-tested with the fake
//! firewall:
//!
//! - the replay entry is durable before any firewall change
//!   ([`crate::state::DurableReplay::check_and_commit`] inside `judge`);
//! - the grant table changes only after its firewall batch applied
//!   ([`Grants`]);
//! - caps are checked before the batch; an owner touches only its own
//!   grants.
//!
//! The firewall is reached only through the `Box<dyn Firewall>` inside
//! [`Grants`]: the real backends in the daemon, the fake in tests. The clock
//! is read once per wake-up by the loop and passed in as [`Now`].

use crate::capture::local::LocalAddrs;
use crate::capture::Packet;
use crate::config::Config;
use crate::firewall::FwError;
use crate::grants::{Change, Grants, Owner, Via};
use crate::knocks;
use crate::state::{DurableReplay, StateError};
use crate::stats::Stats;
use crate::verdict::{self, JudgeState, Verdict};
use spa_proto::{replay::share_of, Action, Reject};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, error, info, warn};

mod manual;
pub use manual::Selector;
#[cfg(test)]
mod tests;
mod wire_id;

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

/// Logs at most `per_sec` rejections and denials a second, then one summary
/// line: a garbage flood, or a key holder's flood of denied requests, must
/// not turn into a log flood (and a CPU flood).
struct LogLimiter {
    per_sec: u32,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    fn new(per_sec: u32) -> Self {
        LogLimiter {
            per_sec,
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let expired = self
            .window_start
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if expired {
            if self.suppressed > 0 {
                warn!(
                    suppressed = self.suppressed,
                    "rejections and denials not logged in the last second (rate limit)"
                );
            }
            self.window_start = Some(now);
            self.used = 0;
            self.suppressed = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

pub struct Engine {
    cfg: Config,
    /// The durable replay record and the per-key token buckets.
    judge: JudgeState,
    grants: Grants,
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
        grants: Grants,
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

    pub fn grants(&self) -> &Grants {
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

    fn knock(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: spa_proto::Proto,
        dport: u16,
        tcp_flags: u8,
        now: &Now,
    ) -> Vec<Outcome> {
        if !self.local.contains(dst, now.mono) {
            debug!(%src, %dst, dport, "knock ignored: not addressed to this host");
            return vec![Outcome::Ignored("not_local")];
        }
        // The same address check as for datagrams, before the knock counts
        // at all: a spoofed sequence from this host's own (or a loopback,
        // broadcast...) address opens nothing.
        let mono = now.mono;
        let src = match crate::address::usable(src, |a| self.local.contains(a, mono)) {
            Ok(a) => a,
            Err(why) => {
                self.stats.knock_reject(why.code());
                if self.limiter.allow(now.mono) {
                    info!(%src, dport, reason = why.code(), "knock rejected: {src} is {why}");
                }
                return vec![Outcome::Refused(why.code())];
            }
        };
        let events = self
            .legacy
            .observe(&self.cfg, src, proto, dport, tcp_flags, now.secs());
        events
            .into_iter()
            .map(|ev| self.knock_outcome(ev, now))
            .collect()
    }

    fn knock_outcome(&mut self, ev: knocks::Outcome, now: &Now) -> Outcome {
        let at = now.ceil_secs();
        match ev {
            knocks::Outcome::Open {
                owner,
                addr,
                grants,
                duration_secs,
                via,
                hmac,
            } => {
                if owner == Owner::Doors
                    && knocks::door_grant_fresh(&self.grants, addr, &grants, duration_secs, at)
                {
                    if self.limiter.allow(now.mono) {
                        info!(%addr, via = %via, reason = "door_fresh",
                            "knock ignored: the door grant still has more than half its time (not re-added)");
                    }
                    return Outcome::Ignored("door_fresh");
                }
                if let Err(hit) = self.check_caps(&owner, addr, &grants, at) {
                    self.stats.knock_reject("grant_cap");
                    if self.limiter.allow(now.mono) {
                        warn!(%addr, via = %via, reason = "grant_cap",
                            "knock rejected: {owner} holds {hit} (a spoofed knock flood?)");
                    }
                    return Outcome::Refused("grant_cap");
                }
                // Durable before effective, as for datagrams: a restart must
                // not make this HMAC sequence usable again.
                if hmac {
                    let used = self.legacy.hmac_used();
                    if let Err(e) = crate::state::save_hmac_used(&self.cfg.state_dir, &used) {
                        self.stats.knock_reject("not_persisted");
                        error!(%addr, via = %via, "knock rejected: cannot persist the used sequence: {e}");
                        return Outcome::NotPersisted;
                    }
                }
                match self.grants.open(&owner, addr, &grants, duration_secs, at) {
                    Ok(c) => {
                        let how = match (&owner, hmac) {
                            (_, true) | (Owner::Key(_), _) => Via::HmacKnock,
                            (Owner::Doors, false) => Via::Door(
                                via.strip_prefix("legacy door ").unwrap_or(&via).to_owned(),
                            ),
                        };
                        self.grants.note_origin(&owner, addr, &grants, how, at);
                        self.stats.knocks_accepted += 1;
                        info!(%addr, via = %via, added = c.added, refreshed = c.refreshed,
                            duration = duration_secs, "knock accepted: rule added");
                        Outcome::Opened(c)
                    }
                    Err(e) => {
                        self.stats.firewall_failures += 1;
                        error!(%addr, via = %via, "knock accepted, but the firewall change failed: {e}");
                        Outcome::FirewallFailed
                    }
                }
            }
            knocks::Outcome::Close {
                owner,
                addr,
                grants,
                via,
            } => match self.grants.close(&owner, addr, &grants, at) {
                Ok(c) => {
                    self.stats.knocks_accepted += 1;
                    info!(%addr, via = %via, removed = c.removed, "knock accepted: rule removed");
                    Outcome::Closed(c)
                }
                Err(e) => {
                    self.stats.firewall_failures += 1;
                    error!(%addr, via = %via, "knock accepted, but the firewall change failed: {e}");
                    Outcome::FirewallFailed
                }
            },
            knocks::Outcome::Rejected {
                addr,
                via,
                code,
                reason,
            } => {
                self.stats.knock_reject(code);
                if self.limiter.allow(now.mono) {
                    info!(%addr, via = %via, reason = code, "knock rejected: {reason}");
                }
                Outcome::Refused(code)
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

    /// Reload: ends or shortens at once the live grants the new
    /// configuration no longer allows (grants::revoke), one line each.
    fn revoke_unfit(&mut self, new: &Config, now: &Now) -> usize {
        let at = now.ms.div_ceil(1000);
        let old = &self.cfg;
        let fit = |o: &Owner, g, t| crate::grants::revoke::fit(old, new, o, g, t, at);
        match self.grants.revoke(at, fit) {
            Ok(list) => {
                for r in &list {
                    match r.until {
                        None => warn!(owner = %r.owner, addr = %r.addr, grant = %r.grant,
                            "grant revoked on reload: {}", r.why),
                        Some(t) => warn!(owner = %r.owner, addr = %r.addr, grant = %r.grant,
                            until = t, "grant shortened on reload: {}", r.why),
                    }
                }
                list.len()
            }
            Err(e) => {
                self.stats.firewall_failures += 1;
                error!(
                    "reload: grants that no longer fit could not be revoked (they run until \
                     their end; restart to drop them now): {}",
                    crate::logging::one_line(&e.to_string())
                );
                0
            }
        }
    }

    /// A new configuration: keys, policy, limits and doors change; the
    /// live grants that no longer fit are revoked or shortened at once,
    /// the others kept (issue 10, item 3).
    fn reload(&mut self, new: Config, now: &Now) -> Outcome {
        self.judge
            .replay
            .set_limits(new.window, share_of(new.replay_capacity, new.keys.len()));
        self.judge.buckets.retain(|id| new.key(id).is_some());
        // v2 ids map to key indices of the old configuration.
        self.judge.v2_ids.clear();
        self.grants.set_forwards(crate::policy::forwards(&new.keys));
        if let Err(e) = self.grants.set_silence(&knocks::silence(&new)) {
            warn!("reload: the silent ports' drop rules could not be replaced (the old ones stay): {e}");
        }
        let hmac_was_on = self.cfg.legacy.hmac.enabled;
        self.legacy.reload(&self.cfg, &new);
        if new.legacy.hmac.enabled && !hmac_was_on {
            // Turned on by this reload: what an earlier run used is on disk
            // only (lost or missing: the floor, as at start).
            if let Err(e) = restore_hmac_record(&mut self.legacy, &new, false, now.secs()) {
                error!("reload: cannot write the HMAC knock record: {e}");
            }
        }
        let revoked = self.revoke_unfit(&new, now);
        info!(
            keys = new.keys.len(),
            grants = self.grants.len(),
            revoked,
            "reloaded: grants that still fit the configuration kept"
        );
        self.cfg = new;
        self.stats.reloads += 1;
        self.expiry_warnings.reset();
        self.warn_expiring_keys(now);
        Outcome::Reloaded
    }

    /// The loop refused a reload (the configuration or the capture).
    pub fn reload_refused(&mut self) {
        self.stats.reloads_refused += 1;
    }
}

/// Reads the HMAC knock record back (lost: the steps that could have been
/// used are refused, finding 10) and writes it at once, so a missing file
/// at a later start always means lost state.
pub fn restore_hmac_record(
    legacy: &mut knocks::Runtime,
    cfg: &Config,
    first_start: bool,
    now: u64,
) -> Result<(), StateError> {
    let rec = crate::state::load_hmac_used(&cfg.state_dir, first_start);
    legacy.restore_hmac_used(&rec.used);
    if let Some(was) = legacy.hmac_cap_floor(now) {
        error!(
            dir = %cfg.state_dir.display(),
            floor_step = was,
            "HMAC knock floor on disk was beyond the current step + 1 (the clock was ahead when \
             it was written, or the file was altered): capped; check the clock (NTP)"
        );
    }
    if let Some(why) = rec.lost {
        legacy.hmac_after_loss(now);
        error!(
            dir = %cfg.state_dir.display(),
            "HMAC knock record LOST ({why}): refusing the sequences of the current and next \
             time step (HMAC knocks work again after that)"
        );
    }
    save_used(&cfg.state_dir, legacy)
}

fn save_used(dir: &Path, legacy: &knocks::Runtime) -> Result<(), StateError> {
    crate::state::save_hmac_used(dir, &legacy.hmac_used())
}
