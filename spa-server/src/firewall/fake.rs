//! An in-memory firewall for unit tests of the daemon's grant logic: it keeps
//! the live set, records every call, and can be told to fail, so tests can
//! check "one batch per decision", "never a duplicate" and "a failed batch
//! changes nothing" without root.
//!
//! Clones share state: hand one clone to the daemon as `Box<dyn Firewall>`
//! and inspect through the other.

use super::{Access, Firewall, FwError};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// One call as the fake saw it (failed ones included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Setup,
    Apply {
        add: Vec<Access>,
        remove: Vec<Access>,
    },
    Teardown,
}

#[derive(Debug, Default)]
struct State {
    live: BTreeSet<Access>,
    calls: Vec<FakeCall>,
    fail_next: u32,
    set_up: bool,
    missing_removes: usize,
    duplicate_adds: usize,
    /// Our pieces were removed behind our back (until the next setup).
    gone: bool,
    /// What `expires_itself` says ([`FakeFirewall::expire_in_kernel`]).
    self_expiring: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FakeFirewall {
    state: Arc<Mutex<State>>,
}

impl FakeFirewall {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; the
        // data is still worth showing to the next assertion.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The grants a real firewall would hold now, sorted.
    pub fn live(&self) -> Vec<Access> {
        self.lock().live.iter().copied().collect()
    }

    /// The live grants still open at `now` (what the kernel would match
    /// with its own expiry).
    pub fn open_at(&self, now: u64) -> Vec<Access> {
        self.lock()
            .live
            .iter()
            .filter(|a| a.expires_at > now)
            .copied()
            .collect()
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Number of `apply` calls, failed ones included.
    pub fn apply_count(&self) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| matches!(c, FakeCall::Apply { .. }))
            .count()
    }

    /// The next `n` calls (any method) fail with [`FwError::Injected`] and
    /// change nothing.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    pub fn is_set_up(&self) -> bool {
        self.lock().set_up
    }

    /// Removes of grants that were not live (the real backends tolerate
    /// them and log; a test can assert the daemon never relies on that).
    pub fn missing_removes(&self) -> usize {
        self.lock().missing_removes
    }

    /// Adds of a grant that was already live and not removed in the same
    /// call: with iptables that would be a duplicate rule.
    pub fn duplicate_adds(&self) -> usize {
        self.lock().duplicate_adds
    }

    /// Makes [`Firewall::expires_itself`] say yes for every grant, as a
    /// set with element timeouts would (the grants stay in [`Self::live`]
    /// until removed; [`Self::open_at`] shows what would still match).
    pub fn expire_in_kernel(&self, on: bool) {
        self.lock().self_expiring = on;
    }

    /// Simulates an admin reloading the firewall: every grant and our
    /// chain gone, so [`Firewall::intact`] says no until the next setup.
    pub fn clear_behind_our_back(&self) {
        let mut s = self.lock();
        s.live.clear();
        s.gone = true;
    }
}

fn injected(s: &mut State, call: &'static str) -> Result<(), FwError> {
    if s.fail_next > 0 {
        s.fail_next -= 1;
        return Err(FwError::Injected { call });
    }
    Ok(())
}

impl Firewall for FakeFirewall {
    fn expires_itself(&self, _: &Access) -> bool {
        self.lock().self_expiring
    }

    fn name(&self) -> &'static str {
        "fake"
    }

    fn setup(&mut self) -> Result<(), FwError> {
        let mut s = self.lock();
        s.calls.push(FakeCall::Setup);
        injected(&mut s, "setup")?;
        s.live.clear();
        s.set_up = true;
        s.gone = false;
        Ok(())
    }

    fn apply(&mut self, add: &[Access], remove: &[Access]) -> Result<(), FwError> {
        let mut s = self.lock();
        s.calls.push(FakeCall::Apply {
            add: add.to_vec(),
            remove: remove.to_vec(),
        });
        injected(&mut s, "apply")?;
        if !s.set_up {
            return Err(FwError::NotSetUp);
        }
        for r in remove {
            if !s.live.remove(r) {
                s.missing_removes += 1;
            }
        }
        for a in add {
            if !s.live.insert(*a) && !remove.contains(a) {
                s.duplicate_adds += 1;
            }
        }
        Ok(())
    }

    fn teardown(&mut self) -> Result<(), FwError> {
        let mut s = self.lock();
        s.calls.push(FakeCall::Teardown);
        injected(&mut s, "teardown")?;
        s.live.clear();
        s.set_up = false;
        Ok(())
    }

    /// As the real backends: yes only between setup and teardown, and not
    /// after [`FakeFirewall::clear_behind_our_back`] (the contract,
    /// firewall/contract.rs, holds the fake to it).
    fn intact(&mut self) -> Result<bool, FwError> {
        let s = self.lock();
        Ok(s.set_up && !s.gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spa_proto::{Grant, Proto};

    fn acc(last: u8, port: u16, exp: u64) -> Access {
        Access {
            addr: std::net::IpAddr::from([198, 18, 1, last]),
            grant: Grant::new(Proto::Tcp, port).unwrap(),
            expires_at: exp,
            forward: None,
        }
    }

    #[test]
    fn records_and_applies() {
        let fake = FakeFirewall::new();
        let mut fw: Box<dyn Firewall> = Box::new(fake.clone());
        assert!(matches!(
            fw.apply(&[acc(2, 22, 10)], &[]),
            Err(FwError::NotSetUp)
        ));
        fw.setup().unwrap();
        fw.apply(&[acc(2, 22, 10), acc(3, 22, 20)], &[]).unwrap();
        // Refresh: remove old, add new.
        fw.apply(&[acc(2, 22, 40)], &[acc(2, 22, 10)]).unwrap();
        assert_eq!(fake.live(), vec![acc(2, 22, 40), acc(3, 22, 20)]);
        assert_eq!(fake.open_at(20), vec![acc(2, 22, 40)]);
        assert_eq!(fake.duplicate_adds(), 0);
        assert_eq!(fake.missing_removes(), 0);
        fw.apply(&[acc(3, 22, 20)], &[]).unwrap();
        assert_eq!(fake.duplicate_adds(), 1);
        fw.apply(&[], &[acc(9, 22, 1)]).unwrap();
        assert_eq!(fake.missing_removes(), 1);
        assert_eq!(fake.apply_count(), 5);
        fw.teardown().unwrap();
        assert!(fake.live().is_empty());
        assert!(!fake.is_set_up());
        assert_eq!(
            fake.calls().first(),
            Some(&FakeCall::Apply {
                add: vec![acc(2, 22, 10)],
                remove: vec![]
            })
        );
        assert_eq!(fake.calls().last(), Some(&FakeCall::Teardown));
    }

    #[test]
    fn injected_failure_changes_nothing() {
        let fake = FakeFirewall::new();
        let mut fw = fake.clone();
        fw.setup().unwrap();
        fw.apply(&[acc(2, 22, 10)], &[]).unwrap();
        fake.fail_next(1);
        let e = fw.apply(&[acc(3, 22, 10)], &[acc(2, 22, 10)]).unwrap_err();
        assert_eq!(e.to_string(), "fake firewall: injected failure in apply");
        assert_eq!(fake.live(), vec![acc(2, 22, 10)]);
        // Only the next call fails.
        fw.apply(&[acc(3, 22, 10)], &[]).unwrap();
        assert_eq!(fake.live().len(), 2);
        fake.clear_behind_our_back();
        assert!(fake.live().is_empty());
    }
}
