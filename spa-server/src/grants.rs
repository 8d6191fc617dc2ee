//! The live grants: what is open, for whom, until when. Every change is one
//! firewall batch, and the in-memory view changes only when the batch
//! succeeded, so memory and firewall never disagree about what we added.

use crate::firewall::{Access, Firewall, FwError};
use spa_proto::Grant;
use std::collections::HashMap;
use std::net::IpAddr;

/// What an `open` or `close` changed, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    pub added: usize,
    pub refreshed: usize,
    pub removed: usize,
}

pub struct Grants {
    fw: Box<dyn Firewall>,
    live: HashMap<(IpAddr, Grant), Access>,
}

impl Grants {
    pub fn new(fw: Box<dyn Firewall>) -> Self {
        Grants {
            fw,
            live: HashMap::new(),
        }
    }

    pub fn backend(&self) -> &'static str {
        self.fw.name()
    }

    /// Clears what a previous instance left and installs our chain/sets.
    pub fn setup(&mut self) -> Result<(), FwError> {
        self.live.clear();
        self.fw.setup()
    }

    /// Opens (or refreshes) `grants` for `addr` until `now + duration`.
    /// Refreshing replaces the old rule in the same batch: never a duplicate.
    pub fn open(
        &mut self,
        addr: IpAddr,
        grants: &[Grant],
        duration_secs: u32,
        now: u64,
    ) -> Result<Change, FwError> {
        let expires_at = now.saturating_add(u64::from(duration_secs));
        let add: Vec<Access> = grants
            .iter()
            .map(|&grant| Access {
                addr,
                grant,
                expires_at,
            })
            .collect();
        let remove: Vec<Access> = grants
            .iter()
            .filter_map(|g| self.live.get(&(addr, *g)).copied())
            .collect();
        self.fw.apply(&add, &remove)?;
        for a in &add {
            self.live.insert((a.addr, a.grant), *a);
        }
        Ok(Change {
            added: add.len() - remove.len(),
            refreshed: remove.len(),
            removed: 0,
        })
    }

    /// Removes exactly these grants for `addr`; closing what is not open is
    /// a no-op, not an error.
    pub fn close(&mut self, addr: IpAddr, grants: &[Grant]) -> Result<Change, FwError> {
        let remove: Vec<Access> = grants
            .iter()
            .filter_map(|g| self.live.get(&(addr, *g)).copied())
            .collect();
        if remove.is_empty() {
            return Ok(Change::default());
        }
        self.fw.apply(&[], &remove)?;
        for a in &remove {
            self.live.remove(&(a.addr, a.grant));
        }
        Ok(Change {
            removed: remove.len(),
            ..Change::default()
        })
    }

    /// Removes every grant whose time is up; returns them for the log. The
    /// kernel already stopped matching them (kernel-side expiry); this only
    /// tidies the ruleset.
    pub fn expire(&mut self, now: u64) -> Result<Vec<Access>, FwError> {
        let due: Vec<Access> = self
            .live
            .values()
            .filter(|a| a.expires_at <= now)
            .copied()
            .collect();
        if due.is_empty() {
            return Ok(due);
        }
        let res = self.fw.apply(&[], &due);
        // Forget them even if the removal failed: the kernel no longer
        // matches them, and retrying forever would only repeat the error.
        for a in &due {
            self.live.remove(&(a.addr, a.grant));
        }
        res.map(|_| due)
    }

    /// How many of `grants` for `addr` an open would add (not refresh).
    pub fn new_count(&self, addr: IpAddr, grants: &[Grant]) -> usize {
        let mut fresh: Vec<&Grant> = grants
            .iter()
            .filter(|g| !self.live.contains_key(&(addr, **g)))
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        fresh.len()
    }

    /// The earliest expiry among live grants (Unix seconds).
    pub fn next_expiry(&self) -> Option<u64> {
        self.live.values().map(|a| a.expires_at).min()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Removes every grant and our chain/sets/jump.
    pub fn teardown(&mut self) -> Result<(), FwError> {
        self.live.clear();
        self.fw.teardown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::FakeFirewall;

    #[test]
    fn new_count_counts_only_what_an_open_would_add() {
        let mut g = Grants::new(Box::new(FakeFirewall::new()));
        g.setup().unwrap();
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "198.18.0.3".parse().unwrap();
        let ssh = Grant::tcp(22).unwrap();
        let web = Grant::tcp(443).unwrap();
        assert_eq!(g.new_count(a, &[ssh, ssh, web]), 2);
        g.open(a, &[ssh], 30, 1000).unwrap();
        assert_eq!(g.new_count(a, &[ssh]), 0, "a refresh adds nothing");
        assert_eq!(g.new_count(a, &[ssh, web]), 1);
        assert_eq!(g.new_count(b, &[ssh]), 1);
    }

    fn setup() -> (Grants, FakeFirewall, IpAddr, Grant) {
        let fw = FakeFirewall::new();
        let mut g = Grants::new(Box::new(fw.clone()));
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
        let c = g.open(a, &[ssh], 30, 1000).unwrap();
        assert_eq!((c.added, c.refreshed), (1, 0));
        let c = g.open(a, &[ssh], 30, 1010).unwrap();
        assert_eq!((c.added, c.refreshed), (0, 1));
        assert_eq!(fw.live().len(), 1, "a refresh never duplicates");
        assert_eq!(fw.live()[0].expires_at, 1040);
        assert_eq!(g.next_expiry(), Some(1040));
        assert_eq!(g.close(a, &[ssh]).unwrap().removed, 1);
        assert!(fw.live().is_empty() && g.is_empty());
        // Closing what is not open is a no-op, not a firewall call.
        let calls = fw.apply_count();
        assert_eq!(g.close(a, &[ssh]).unwrap(), Change::default());
        assert_eq!(fw.apply_count(), calls);
    }

    #[test]
    fn failed_batch_changes_nothing_in_memory() {
        let (mut g, fw, a, ssh) = setup();
        fw.fail_next(1);
        assert!(g.open(a, &[ssh], 30, 1000).is_err());
        assert!(g.is_empty() && fw.live().is_empty());
        g.open(a, &[ssh], 30, 1000).unwrap();
        fw.fail_next(1);
        assert!(g.close(a, &[ssh]).is_err());
        assert_eq!(g.len(), 1, "still open, as in the firewall");
        assert_eq!(fw.live().len(), 1);
    }

    #[test]
    fn expire_removes_only_what_is_due() {
        let (mut g, fw, a, ssh) = setup();
        let web = Grant::tcp(443).unwrap();
        g.open(a, &[ssh], 10, 1000).unwrap();
        g.open(a, &[web], 20, 1000).unwrap();
        assert!(g.expire(1009).unwrap().is_empty());
        let gone = g.expire(1010).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].grant, ssh);
        assert_eq!(fw.live().len(), 1);
        assert_eq!(g.next_expiry(), Some(1020));
    }
}
