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

    /// Puts `a` in as the rule of its (address, grant), replacing the old one.
    fn set_rule(&mut self, a: Access) {
        let key = (a.addr, a.grant);
        match self.live.get_mut(&key) {
            Some(e) => {
                self.rule_ends.remove(e.rule.expires_at, &key);
                e.rule = a;
            }
            None => {
                self.live.insert(
                    key,
                    Entry {
                        rule: a,
                        owners: HashMap::new(),
                    },
                );
            }
        }
        self.rule_ends.insert(a.expires_at, key);
    }

    /// `owner` holds `key` (which has a rule) until `until`.
    fn set_owner(&mut self, key: Key, owner: &Owner, until: u64) {
        let Some(e) = self.live.get_mut(&key) else {
            return;
        };
        if let Some(old) = e.owners.insert(owner.clone(), until) {
            self.unindex_owner(key, owner, old);
        }
        self.owner_ends.insert(until, (key.0, key.1, owner.clone()));
        self.by_owner
            .entry(owner.clone())
            .or_default()
            .insert(until, key);
    }

    fn unindex_owner(&mut self, key: Key, owner: &Owner, end: u64) {
        self.owner_ends.remove(end, &(key.0, key.1, owner.clone()));
        if let Some(mine) = self.by_owner.get_mut(owner) {
            mine.remove(end, &key);
            if mine.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    /// `owner` no longer holds `key` (memory only).
    fn drop_owner(&mut self, key: Key, owner: &Owner) {
        if let Some(t) = self.live.get_mut(&key).and_then(|e| e.owners.remove(owner)) {
            self.unindex_owner(key, owner, t);
        }
        self.origins.remove(&(key.0, key.1, owner.clone()));
    }

    /// The rule of `key` and its owners are gone (memory only).
    fn drop_entry(&mut self, key: Key) {
        let Some(e) = self.live.remove(&key) else {
            return;
        };
        self.rule_ends.remove(e.rule.expires_at, &key);
        for (o, t) in e.owners {
            self.unindex_owner(key, &o, t);
            self.origins.remove(&(key.0, key.1, o));
        }
    }

    fn clear(&mut self) {
        self.live.clear();
        self.rule_ends.clear();
        self.owner_ends.clear();
        self.by_owner.clear();
        self.origins.clear();
    }

    /// Forgets the owners whose own grant ended by `now` (the rule may stay
    /// for another owner). Each owner's end is visited once: amortised O(1).
    fn prune_owners(&mut self, now: u64) {
        let ended: Vec<(u64, IpAddr, Grant, Owner)> = self
            .owner_ends
            .due(now)
            .map(|(t, (a, g, o))| (t, *a, *g, o.clone()))
            .collect();
        for (t, a, g, o) in ended {
            let held = self.live.get(&(a, g)).and_then(|e| e.owners.get(&o)) == Some(&t);
            if held {
                self.drop_owner((a, g), &o);
            } else {
                self.unindex_owner((a, g), &o, t);
            }
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
mod tests {
    use super::*;
    use crate::firewall::FakeFirewall;

    fn key(n: &str) -> Owner {
        Owner::Key(n.into())
    }

    fn setup() -> (GrantTable, FakeFirewall, IpAddr, Grant) {
        let fw = FakeFirewall::new();
        let mut g = GrantTable::new(Box::new(fw.clone()));
        g.setup().unwrap();
        (
            g,
            fw,
            "198.18.0.2".parse().unwrap(),
            Grant::tcp(22).unwrap(),
        )
    }

    #[test]
    fn open_refresh_close_keep_memory_and_firewall_equal() {
        let (mut g, fw, a, ssh) = setup();
        let alice = key("alice");
        let c = g.open(&alice, a, &[ssh], 30, 1000).unwrap();
        assert_eq!((c.added, c.refreshed), (1, 0));
        let c = g.open(&alice, a, &[ssh, ssh], 30, 1010).unwrap();
        assert_eq!((c.added, c.refreshed), (0, 1));
        assert_eq!(fw.live().len(), 1, "a refresh never duplicates");
        assert_eq!(fw.live()[0].expires_at, 1040);
        assert_eq!(g.next_expiry(), Some(1040));
        // An owner may shorten its own grant.
        g.open(&alice, a, &[ssh], 5, 1010).unwrap();
        assert_eq!(fw.live()[0].expires_at, 1015);
        assert_eq!(g.close(&alice, a, &[ssh], 1011).unwrap().removed, 1);
        assert!(fw.live().is_empty() && g.is_empty());
        // Closing what is not open is a no-op, not a firewall call.
        let calls = fw.apply_count();
        assert_eq!(g.close(&alice, a, &[ssh], 1011).unwrap(), Change::default());
        assert_eq!(fw.apply_count(), calls);
    }

    /// Finding 2: bob's close or 1 s open for alice's (address, port) never
    /// ends or shortens alice's grant; the one rule lasts until the last
    /// owner's grant ends.
    #[test]
    fn another_owner_can_neither_close_nor_shorten_a_grant() {
        let (mut g, fw, a, ssh) = setup();
        let (alice, bob) = (key("alice"), key("bob"));
        g.open(&alice, a, &[ssh], 300, 1000).unwrap();
        // Bob closes alice's address: he holds nothing there, nothing changes.
        let calls = fw.apply_count();
        assert_eq!(g.close(&bob, a, &[ssh], 1001).unwrap().removed, 0);
        assert_eq!(fw.apply_count(), calls, "no firewall call");
        // Bob opens it for 1 s: alice's 300 s stand.
        let c = g.open(&bob, a, &[ssh], 1, 1002).unwrap();
        assert_eq!((c.added, c.refreshed), (0, 1));
        assert_eq!(fw.live().len(), 1);
        assert_eq!(fw.live()[0].expires_at, 1300, "not shortened to 1003");
        // Bob closes his own: alice's rule stays as it was.
        assert_eq!(g.close(&bob, a, &[ssh], 1002).unwrap().removed, 1);
        assert_eq!(fw.live().len(), 1);
        assert_eq!(fw.live()[0].expires_at, 1300);
        // Bob holds it longer than alice; his close brings the rule back
        // to alice's expiry, not to nothing.
        g.open(&bob, a, &[ssh], 900, 1010).unwrap();
        assert_eq!(fw.live()[0].expires_at, 1910);
        g.close(&bob, a, &[ssh], 1011).unwrap();
        assert_eq!(fw.live().len(), 1);
        assert_eq!(fw.live()[0].expires_at, 1300);
        assert_eq!(g.next_expiry(), Some(1300));
        // The rule goes when alice, its last owner, closes.
        assert_eq!(g.close(&alice, a, &[ssh], 1012).unwrap().removed, 1);
        assert!(fw.live().is_empty() && g.is_empty());
    }

    /// Finding 5: a door (spoofable by anyone) closes and refreshes only
    /// what a door opened, never a key's grant.
    #[test]
    fn a_door_touches_only_door_grants() {
        let (mut g, fw, a, ssh) = setup();
        let (alice, door) = (key("alice"), Owner::Doors);
        g.open(&alice, a, &[ssh], 300, 1000).unwrap();
        let calls = fw.apply_count();
        assert_eq!(g.close(&door, a, &[ssh], 1001).unwrap().removed, 0);
        assert_eq!(fw.apply_count(), calls);
        assert_eq!(fw.live()[0].expires_at, 1300);
        // A door open on top (30 s) neither shortens alice's grant nor lets
        // the door's close end it.
        g.open(&door, a, &[ssh], 30, 1001).unwrap();
        assert_eq!(fw.live()[0].expires_at, 1300);
        assert_eq!(g.close(&door, a, &[ssh], 1002).unwrap().removed, 1);
        assert_eq!(fw.live().len(), 1);
        assert_eq!(fw.live()[0].expires_at, 1300);
    }

    #[test]
    fn failed_batch_changes_nothing_in_memory() {
        let (mut g, fw, a, ssh) = setup();
        let (alice, bob) = (key("alice"), key("bob"));
        fw.fail_next(1);
        assert!(g.open(&alice, a, &[ssh], 30, 1000).is_err());
        assert!(g.is_empty() && fw.live().is_empty());
        g.open(&alice, a, &[ssh], 30, 1000).unwrap();
        fw.fail_next(1);
        assert!(g.close(&alice, a, &[ssh], 1001).is_err());
        assert_eq!(g.len(), 1, "still open, as in the firewall");
        assert_eq!(fw.live().len(), 1);
        // A failed rewrite keeps the owner: bob's open failed, so alice's
        // close still removes the rule.
        fw.fail_next(1);
        assert!(g.open(&bob, a, &[ssh], 900, 1001).is_err());
        assert_eq!(fw.live()[0].expires_at, 1030);
        g.close(&alice, a, &[ssh], 1002).unwrap();
        assert!(g.is_empty() && fw.live().is_empty());
    }

    #[test]
    fn expire_removes_only_what_is_due() {
        let (mut g, fw, a, ssh) = setup();
        let alice = key("alice");
        let web = Grant::tcp(443).unwrap();
        g.open(&alice, a, &[ssh], 10, 1000).unwrap();
        g.open(&alice, a, &[web], 20, 1000).unwrap();
        assert!(g.expire(1009).unwrap().is_empty());
        let gone = g.expire(1010).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].grant, ssh);
        assert_eq!(fw.live().len(), 1);
        assert_eq!(g.next_expiry(), Some(1020));
    }

    /// Issue 14: ends close together cost one wake-up; the indexes (next
    /// end, the owner's running grants, the count) follow opens, refreshes,
    /// closes and expiry without a scan, and agree with the table.
    #[test]
    fn expiry_is_indexed_and_batched_in_one_wake_up() {
        let (mut g, fw, _, ssh) = setup();
        let (alice, bob) = (key("alice"), key("bob"));
        let addr = |i: usize| IpAddr::from([198, 18, (i >> 8) as u8, i as u8]);
        for i in 0..10_000 {
            // 10,000 grants ending over 3 s (1010..=1012), as a burst of
            // opens does.
            g.open(&alice, addr(i), &[ssh], 10 + (i % 3) as u32, 1000)
                .unwrap();
        }
        g.open(&bob, addr(20_000), &[ssh], 60, 1000).unwrap();
        assert_eq!(g.next_expiry(), Some(1010));
        assert_eq!(g.next_wake(), Some(1012), "one wake-up for the burst");
        assert_eq!(g.count(1009), 10_001);
        assert_eq!(
            g.check_caps(&alice, addr(30_000), &[ssh], 1010, 6_667, 65_536),
            Ok(()),
            "3,333 of alice's ended at 1010"
        );
        let calls = fw.apply_count();
        let gone = g.expire(1012).unwrap();
        assert_eq!(gone.len(), 10_000);
        assert_eq!(fw.apply_count(), calls + 1, "one batch for all of them");
        assert_eq!((g.len(), g.count(1012)), (1, 1));
        assert_eq!((g.next_expiry(), g.next_wake()), (Some(1060), Some(1060)));
        // A refresh moves the end; a close of a shared rule keeps the other
        // owner's end; the indexes follow.
        g.open(&alice, addr(20_000), &[ssh], 100, 1013).unwrap();
        assert_eq!(g.next_expiry(), Some(1113));
        g.close(&alice, addr(20_000), &[ssh], 1014).unwrap();
        assert_eq!((g.next_expiry(), g.count(1014)), (Some(1060), 1));
        assert_eq!(
            g.check_caps(&alice, addr(1), &[ssh], 1014, 1, 65_536),
            Ok(())
        );
        assert!(g.expire(1060).unwrap().len() == 1 && g.is_empty());
        assert_eq!((g.next_expiry(), g.count(1060)), (None, 0));
        assert!(g.by_owner.is_empty() && g.owner_ends.is_empty());
    }

    /// Issue 14: grants the kernel ends itself (set timeouts) expire in
    /// memory with no firewall call: 10,000 of them cost no batch (and,
    /// through privsep, no frame to the privileged side).
    #[test]
    fn expiry_of_what_the_kernel_ends_calls_no_firewall() {
        let (mut g, fw, _, ssh) = setup();
        fw.expire_in_kernel(true);
        let alice = key("alice");
        for i in 0..10_000u32 {
            let a = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
            g.open(&alice, a, &[ssh], 10, 1000).unwrap();
        }
        let calls = fw.apply_count();
        assert_eq!(g.expire(1010).unwrap().len(), 10_000, "all forgotten");
        assert_eq!(fw.apply_count(), calls, "no batch: the kernel ends them");
        assert!(g.is_empty() && fw.open_at(1010).is_empty());
    }

    /// Finding 1: a key holds at most its cap of live grants, all owners at
    /// most the total; refreshes pass at the cap; doors share one cap.
    #[test]
    fn grant_caps_per_owner_and_in_all() {
        let (mut g, _fw, _, ssh) = setup();
        let addr = |i: usize| IpAddr::from([198, 18, (i >> 8) as u8, i as u8]);
        let (alice, bob) = (key("alice"), key("bob"));
        for i in 0..16 {
            assert_eq!(g.check_caps(&alice, addr(i), &[ssh], 1000, 16, 40), Ok(()));
            g.open(&alice, addr(i), &[ssh], 30, 1000).unwrap();
        }
        assert_eq!(
            g.check_caps(&alice, addr(16), &[ssh], 1000, 16, 40),
            Err(CapHit::Owner { live: 16, cap: 16 })
        );
        // A refresh adds nothing; a second port for a held address does.
        assert_eq!(g.check_caps(&alice, addr(3), &[ssh], 1000, 16, 40), Ok(()));
        let web = Grant::tcp(443).unwrap();
        assert!(g
            .check_caps(&alice, addr(3), &[ssh, web], 1000, 16, 40)
            .is_err());
        // Bob has his own cap; a grant alice's rule already covers adds no rule.
        assert_eq!(g.check_caps(&bob, addr(0), &[ssh], 1000, 16, 16), Ok(()));
        assert_eq!(
            g.check_caps(&bob, addr(99), &[ssh], 1000, 16, 16),
            Err(CapHit::Total { live: 16, cap: 16 })
        );
        // Alice's grants that ended no longer count, even before expire().
        assert_eq!(g.check_caps(&alice, addr(16), &[ssh], 1030, 16, 40), Ok(()));
        // Doors: one owner, one cap.
        g.open(&Owner::Doors, addr(200), &[ssh], 30, 1000).unwrap();
        assert_eq!(
            g.check_caps(&Owner::Doors, addr(201), &[ssh], 1000, 1, 40),
            Err(CapHit::Owner { live: 1, cap: 1 })
        );
        assert_eq!(
            g.check_caps(&Owner::Doors, addr(200), &[ssh], 1000, 1, 40),
            Ok(())
        );
    }
}
