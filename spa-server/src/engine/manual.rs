//! What an admin asks of the engine by hand, over the control socket:
//! `spa-server revoke`. Kept apart from the packet path in mod.rs.

use super::{Engine, Now};
use crate::firewall::FwError;
use crate::grants::Owner;
use tracing::{error, info, warn};

impl Engine {
    /// `spa-server revoke`: ends now the live grants `sel` picks, one
    /// firewall batch, one log line per grant (control socket).
    pub fn revoke_by_hand(
        &mut self,
        sel: &crate::control::Selector,
        now: &Now,
    ) -> Result<Vec<crate::grants::Revoked>, FwError> {
        use crate::control::Selector;
        use crate::grants::Fit;
        let at = now.ms.div_ceil(1000);
        let res = self.grants.revoke_at(at, |owner, addr, _, _| {
            let hit = match sel {
                Selector::All => true,
                Selector::Address(a) => a.to_canonical() == addr,
                Selector::Key(k) => matches!(owner, Owner::Key(n) if n == k),
            };
            if hit {
                Fit::Remove(format!("revoked by hand ({sel})"))
            } else {
                Fit::Keep
            }
        });
        match &res {
            Ok(list) => {
                for r in list {
                    warn!(owner = %r.owner, addr = %r.addr, grant = %r.grant,
                        "grant revoked by hand (spa-server revoke {sel})");
                }
                if list.is_empty() {
                    info!("spa-server revoke {sel}: no live grant matched");
                }
                self.stats.grants_revoked += list.len() as u64;
            }
            Err(e) => {
                self.stats.firewall_failures += 1;
                error!(
                    "spa-server revoke {sel}: the firewall change failed, nothing revoked: {}",
                    crate::logging::one_line(&e.to_string())
                );
            }
        }
        res
    }
}
