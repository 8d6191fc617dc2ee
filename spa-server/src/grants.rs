//! The live grants: what is open, for whom, until when, and who asked. Every
//! change is one firewall batch, and the in-memory view changes only when the
//! batch succeeded, so memory and firewall never disagree about what we added.
//!
//! Every grant has an [`Owner`]: the key that sent the datagram or HMAC knock,
//! or the legacy doors (one owner for all of them: knockd pairs an open door
//! with a separate close door, `openSSH`/`closeSSH`, so a door must close
//! what another door opened). An owner refreshes and closes
//! only its own grant, so one key holder cannot close or shorten another's
//! (issue 16, finding 2) and a spoofed door sequence cannot touch a key's
//! grant (finding 5).
//!
//! Two owners may hold the same (address, grant). The firewall keeps ONE
//! rule for it, expiring at the latest of its owners' expiries: the kernel
//! needs no notion of owners, a packet matches the same single rule, and the
//! rule stays until the last owner's grant ends (docs/firewall.md). When an
//! owner closes or shortens, the rule is rewritten to the latest expiry of
//! the owners that remain, in the same one-batch way as a refresh.

use crate::firewall::{Access, Firewall, FwError};
use ends::Ends;
use spa_proto::Grant;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

mod ends;
mod memory;
pub mod revoke;
pub mod view;
pub use revoke::{Fit, Revoked};
pub use view::{GrantView, Via};

/// Who a grant is for: the key or the doors that opened it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A `[[key]]` (by name), through a datagram or an HMAC knock.
    Key(String),
    /// The legacy fixed-sequence doors, all together: their sequences are
    /// public, a close door ends what an open door opened, and they share
    /// one cap.
    Doors,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Key(n) => write!(f, "key {n}"),
            Owner::Doors => f.write_str("legacy doors"),
        }
    }
}

/// What an `open` or `close` changed, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// Rules the firewall did not have.
    pub added: usize,
    /// Grants that already had a rule (this owner's or another's).
    pub refreshed: usize,
    /// This owner's grants ended by a close.
    pub removed: usize,
}

/// Which cap an open would break (`reason=grant_cap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapHit {
    /// The owner holds `live` grants and may hold `cap`.
    Owner { live: usize, cap: usize },
    /// The firewall holds `live` grant rules in all and may hold `cap`.
    Total { live: usize, cap: usize },
}

impl fmt::Display for CapHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapHit::Owner { live, cap } => {
                write!(f, "{live} live grants, its cap is {cap} (max_grants)")
            }
            CapHit::Total { live, cap } => write!(
                f,
                "{live} live grants in all, the cap is {cap} (max_grants_total)"
            ),
        }
    }
}

/// One rule and the owners it stands for (owner → its own expiry).
#[derive(Debug)]
struct Entry {
    rule: Access,
    owners: HashMap<Owner, u64>,
}

impl Entry {
    /// The latest expiry of the owners other than `but` still running at `now`.
    fn others_until(&self, but: &Owner, now: u64) -> Option<u64> {
        self.owners
            .iter()
            .filter(|(o, &t)| *o != but && t > now)
            .map(|(_, &t)| t)
            .max()
    }

    fn held_by(&self, owner: &Owner, now: u64) -> bool {
        self.owners.get(owner).is_some_and(|&t| t > now)
    }
}

/// Expiry wakes the loop at most once per window of this many seconds: at
/// the first rule end, it waits for the last end within the window and
/// forgets them all in one wake-up. The kernel already ended each grant on
/// time (set timeouts), so this only delays the log line and the memory
/// clean-up, by at most this long, and 10,000 grants ending together cost
/// one wake-up like one grant does (issue 14).
pub const EXPIRY_WINDOW_SECS: u64 = 2;

type Key = (IpAddr, Grant);

pub struct GrantTable {
    fw: Box<dyn Firewall>,
    live: HashMap<Key, Entry>,
    /// The rules' ends: the next expiry and what is due without a scan.
    rule_ends: Ends<Key>,
    /// Every owner's own end: forgetting ended owners, counting running grants.
    owner_ends: Ends<(IpAddr, Grant, Owner)>,
    /// Each owner's grants by end: its cap without a scan.
    by_owner: HashMap<Owner, Ends<Key>>,
    /// Grants the configuration forwards to a host behind the gateway
    /// (`[key.forward]`, policy.rs): a new rule for one is a forward.
    forwards: HashMap<Grant, std::net::SocketAddr>,
    /// When and how each owner's grant was opened, for status (view.rs).
    origins: HashMap<(IpAddr, Grant, Owner), view::Origin>,
    /// Times our chain/sets were found gone and re-installed.
    repairs: u64,
}

fn dedup(grants: &[Grant]) -> Vec<Grant> {
    let mut g = grants.to_vec();
    g.sort_unstable();
    g.dedup();
    g
}

impl GrantTable {
    pub fn new(fw: Box<dyn Firewall>) -> Self {
        GrantTable {
            fw,
            live: HashMap::new(),
            rule_ends: Ends::default(),
            owner_ends: Ends::default(),
            by_owner: HashMap::new(),
            forwards: HashMap::new(),
            origins: HashMap::new(),
            repairs: 0,
        }
    }

    /// The forwarded grants of the configuration (start, reload). Before
    /// `setup`, it also tells the backend to install its forwarding hooks.
    /// A live grant keeps the target it was opened with until it ends.
    pub fn set_forwards(&mut self, forwards: HashMap<Grant, std::net::SocketAddr>) {
        self.fw.set_forwarding(!forwards.is_empty());
        self.forwards = forwards;
    }

    pub fn backend(&self) -> &'static str {
        self.fw.name()
    }

    /// How often our chain/sets were found gone and re-installed (a
    /// firewall reload by someone else), for the counters.
    pub fn repairs(&self) -> u64 {
        self.repairs
    }

    /// The ports our chain/sets keep silent (see `firewall::silence`).
    pub fn set_silence(&mut self, s: &crate::firewall::Silence) -> Result<(), FwError> {
        self.fw.set_silence(s)
    }

    /// After a firewall reload by someone else (issue 10, item 1): if our
    /// chain/jump/sets are gone, installs them again and re-adds every live
    /// grant with its remaining time. `Ok(None)`: all was in place.
    /// Memory is unchanged either way.
    pub fn ensure_installed(&mut self, now: u64) -> Result<Option<usize>, FwError> {
        if self.fw.intact()? {
            return Ok(None);
        }
        self.reinstall(now).map(Some)
    }

    fn reinstall(&mut self, now: u64) -> Result<usize, FwError> {
        self.fw.setup()?;
        self.repairs += 1;
        let rules: Vec<Access> = self
            .live
            .values()
            .map(|e| e.rule)
            .filter(|r| r.expires_at > now)
            .collect();
        if !rules.is_empty() {
            self.fw.apply(&rules, &[])?;
        }
        Ok(rules.len())
    }

    /// One batch; when it fails because our objects vanished (a reload
    /// the watch has not reported yet, or iptables-legacy, which reports
    /// nothing), re-install and retry once, so the request that met the
    /// reload still gets through.
    fn apply(&mut self, add: &[Access], remove: &[Access], now: u64) -> Result<(), FwError> {
        let err = match self.fw.apply(add, remove) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if self.fw.intact().unwrap_or(true) {
            return Err(err);
        }
        let n = self.reinstall(now)?;
        tracing::warn!(
            grants = n,
            first_error = %crate::logging::one_line(&err.to_string()),
            "firewall reloaded by someone else: our chain/sets were gone; re-installed with the \
             live grants, retrying the batch once"
        );
        self.fw.apply(add, remove)
    }

    /// Clears what a previous instance left and installs our chain/sets.
    pub fn setup(&mut self) -> Result<(), FwError> {
        self.clear();
        self.fw.setup()
    }

    /// `Err` when opening `grants` for `addr` as `owner` would take the
    /// owner past `owner_cap` live grants or the firewall past `total_cap`
    /// rules. What the owner already holds (a refresh) never counts, and a
    /// grant another owner already holds adds no rule.
    pub fn check_caps(
        &self,
        owner: &Owner,
        addr: IpAddr,
        grants: &[Grant],
        now: u64,
        owner_cap: usize,
        total_cap: usize,
    ) -> Result<(), CapHit> {
        let grants = dedup(grants);
        let entries: Vec<Option<&Entry>> =
            grants.iter().map(|g| self.live.get(&(addr, *g))).collect();
        let new_owned = entries
            .iter()
            .filter(|e| !e.is_some_and(|e| e.held_by(owner, now)))
            .count();
        let new_rules = entries.iter().filter(|e| e.is_none()).count();
        if new_owned > 0 {
            let live = self.by_owner.get(owner).map_or(0, |m| m.running(now));
            if live + new_owned > owner_cap {
                return Err(CapHit::Owner {
                    live,
                    cap: owner_cap,
                });
            }
        }
        // Rules that ended are the kernel's already (not yet forgotten).
        let live = self.rule_ends.running(now);
        if new_rules > 0 && live + new_rules > total_cap {
            return Err(CapHit::Total {
                live,
                cap: total_cap,
            });
        }
        Ok(())
    }

    /// Opens (or refreshes) `owner`'s `grants` for `addr` until
    /// `now + duration`. Another owner's grant of the same (address, grant)
    /// keeps its own expiry: the rule ends at the later of the two, so a
    /// short refresh never shortens someone else's access. A rule that
    /// changes is replaced in the same batch: never a duplicate.
    pub fn open(
        &mut self,
        owner: &Owner,
        addr: IpAddr,
        grants: &[Grant],
        duration_secs: u32,
        now: u64,
    ) -> Result<Change, FwError> {
        self.prune_owners(now);
        let expires_at = now.saturating_add(u64::from(duration_secs));
        let mut add = Vec::new();
        let mut remove = Vec::new();
        let mut change = Change::default();
        for grant in dedup(grants) {
            match self.live.get(&(addr, grant)) {
                None => {
                    change.added += 1;
                    add.push(Access {
                        addr,
                        grant,
                        expires_at,
                        forward: self.forwards.get(&grant).copied(),
                    });
                }
                Some(e) => {
                    change.refreshed += 1;
                    let until = e
                        .others_until(owner, now)
                        .map_or(expires_at, |t| t.max(expires_at));
                    if until != e.rule.expires_at {
                        remove.push(e.rule);
                        add.push(Access {
                            expires_at: until,
                            ..e.rule
                        });
                    }
                }
            }
        }
        if !add.is_empty() || !remove.is_empty() {
            self.apply(&add, &remove, now)?;
        }
        for a in &add {
            self.set_rule(*a);
        }
        for grant in dedup(grants) {
            self.set_owner((addr, grant), owner, expires_at);
        }
        Ok(change)
    }

    /// Ends `owner`'s grants among `grants` for `addr`. A rule another owner
    /// still holds stays (until that owner's expiry); closing what the owner
    /// does not hold is a no-op, not an error.
    pub fn close(
        &mut self,
        owner: &Owner,
        addr: IpAddr,
        grants: &[Grant],
        now: u64,
    ) -> Result<Change, FwError> {
        let mut add = Vec::new();
        let mut remove = Vec::new();
        // (grant, the rule's new expiry; None: the rule goes).
        let mut mine: Vec<(Grant, Option<u64>)> = Vec::new();
        for grant in dedup(grants) {
            let Some(e) = self.live.get(&(addr, grant)) else {
                continue;
            };
            if !e.owners.contains_key(owner) {
                continue;
            }
            let rest = e.others_until(owner, now);
            mine.push((grant, rest));
            match rest {
                None => remove.push(e.rule),
                Some(t) if t != e.rule.expires_at => {
                    remove.push(e.rule);
                    add.push(Access {
                        expires_at: t,
                        ..e.rule
                    });
                }
                Some(_) => {}
            }
        }
        if mine.is_empty() {
            return Ok(Change::default());
        }
        if !add.is_empty() || !remove.is_empty() {
            self.apply(&add, &remove, now)?;
        }
        for &(grant, rest) in &mine {
            match rest {
                None => self.drop_entry((addr, grant)),
                Some(t) => {
                    self.drop_owner((addr, grant), owner);
                    if let Some(rule) = self.live.get(&(addr, grant)).map(|e| e.rule) {
                        self.set_rule(Access {
                            expires_at: t,
                            ..rule
                        });
                    }
                }
            }
        }
        Ok(Change {
            removed: mine.len(),
            ..Change::default()
        })
    }

    /// Removes every rule whose time is up (all its owners' grants ended);
    /// returns them for the log. The kernel already stopped matching them
    /// (kernel-side expiry) and removes set entries itself
    /// ([`Firewall::expires_itself`]: no batch, no tool, no privsep frame
    /// for those); this forgets them and tidies what stays (an iptables
    /// forward's rules). Owners whose own grant ended under a rule that
    /// stays are forgotten in memory only. Costs what is due, not the
    /// table's size.
    pub fn expire(&mut self, now: u64) -> Result<Vec<Access>, FwError> {
        self.prune_owners(now);
        let due: Vec<Access> = self
            .rule_ends
            .due(now)
            .filter_map(|(_, k)| self.live.get(k).map(|e| e.rule))
            .collect();
        if due.is_empty() {
            return Ok(due);
        }
        let tidy: Vec<Access> = due
            .iter()
            .filter(|a| !self.fw.expires_itself(a))
            .copied()
            .collect();
        let res = if tidy.is_empty() {
            Ok(())
        } else {
            self.fw.apply(&[], &tidy)
        };
        // Forget them even if the removal failed: the kernel no longer
        // matches them, and retrying forever would only repeat the error.
        for a in &due {
            self.drop_entry((a.addr, a.grant));
        }
        res.map(|_| due)
    }

    /// Until when `owner`'s own grant of `grant` for `addr` runs, if it
    /// still runs at `now` (another owner's longer grant does not count).
    pub fn held_until(&self, owner: &Owner, addr: IpAddr, grant: Grant, now: u64) -> Option<u64> {
        let t = *self.live.get(&(addr, grant))?.owners.get(owner)?;
        (t > now).then_some(t)
    }

    /// The earliest rule expiry (Unix seconds).
    pub fn next_expiry(&self) -> Option<u64> {
        self.rule_ends.first()
    }

    /// When the loop should wake to expire grants: the last rule end within
    /// [`EXPIRY_WINDOW_SECS`] of the first, so ends close together cost one
    /// wake-up (no per-grant timer).
    pub fn next_wake(&self) -> Option<u64> {
        let first = self.rule_ends.first()?;
        self.rule_ends
            .last_until(first.saturating_add(EXPIRY_WINDOW_SECS))
    }

    /// Grant rules in the firewall.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Removes every grant and our chain/sets/jump.
    pub fn teardown(&mut self) -> Result<(), FwError> {
        self.clear();
        self.fw.teardown()
    }
}

#[cfg(test)]
mod tests;
