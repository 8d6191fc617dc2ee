//! A reload in the engine: the new configuration's limits, keys and doors
//! take over, and the live grants it no longer allows end or shorten at
//! once (issue 10, item 3). The loop's side (reading it, new capture
//! sockets) is daemon/reload.rs.

use super::knock::restore_hmac_record;
use super::{Engine, Now, Outcome};
use crate::config::Config;
use crate::grants::Owner;
use crate::knocks;
use spa_proto::replay::share_of;
use tracing::{error, info, warn};

impl Engine {
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
    pub(super) fn reload(&mut self, new: Config, now: &Now) -> Outcome {
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
}
