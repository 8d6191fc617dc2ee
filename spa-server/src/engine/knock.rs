//! Knocks: a captured SYN or UDP packet to a knock port through the legacy
//! doors (knocks.rs, legacy/) to a grant change, and the HMAC knock record
//! they keep on disk. Datagrams are mod.rs's.

use super::{Engine, Now, Outcome};
use crate::config::Config;
use crate::grants::{Owner, Via};
use crate::knocks;
use crate::state::StateError;
use std::net::IpAddr;
use std::path::Path;
use tracing::{debug, error, info, warn};

impl Engine {
    pub(super) fn knock(
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
