//! What an admin asks of the engine by hand, over the control socket:
//! `spa-server revoke`. Kept apart from the packet path in mod.rs.
//! [`Selector`] lives here, not in control/ (which parses it and
//! re-exports it), so that the engine does not import the control socket.

use super::{Engine, Now};
use crate::firewall::FwError;
use crate::grants::Owner;
use std::fmt;
use std::net::IpAddr;
use tracing::{error, info, warn};

/// Which grants `revoke` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    /// Every owner's grants for this address (IPv4-mapped IPv6 is taken as
    /// the IPv4 address, as grants are).
    Address(IpAddr),
    /// Every grant this key owns (datagrams and HMAC knocks).
    Key(String),
}

impl fmt::Display for Selector {
    /// The request's own words, for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all"),
            Selector::Address(a) => write!(f, "address {a}"),
            Selector::Key(k) => write!(f, "key {k}"),
        }
    }
}

impl Engine {
    /// `spa-server revoke`: ends now the live grants `sel` picks, one
    /// firewall batch, one log line per grant (control socket).
    pub fn revoke_by_hand(
        &mut self,
        sel: &Selector,
        now: &Now,
    ) -> Result<Vec<crate::grants::Revoked>, FwError> {
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
