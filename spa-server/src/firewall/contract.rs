//! The [`Firewall`] trait's promises as one suite, run against every
//! backend: the fake in this module's unit tests, iptables and nftables
//! against the real tools and kernel in a network namespace
//! (tests/tests/firewall_contract.rs). A backend that passes here can stand
//! in for any other, and the fake the engine's tests rely on behaves as the
//! real ones do, not as its author hoped.
//!
//! A clause talks to the backend only through the trait, and to the world
//! around it through [`World`]: whether a connection gets in, the whole
//! ruleset, the clock, an admin who reloads the firewall. It returns what
//! it found broken instead of panicking: this is library code.

use super::{Access, Firewall, Silence};
use spa_proto::{Grant, IpFamily};
use std::net::{IpAddr, SocketAddr};

/// What a clause needs around a backend.
pub trait World {
    /// A new backend on this world's firewall, as a (re)started daemon
    /// builds it.
    fn backend(&mut self) -> Box<dyn Firewall>;
    /// Two client addresses of `family` (not the host's own).
    fn clients(&self, family: IpFamily) -> [IpAddr; 2];
    /// Two grants the admin's baseline refuses and a service listens on.
    fn grants(&self) -> [Grant; 2];
    /// A forward target behind the host (issue 15), IPv4.
    fn forward_target(&self) -> SocketAddr;
    /// Unix seconds now, as the firewall's clock sees it.
    fn now(&self) -> u64;
    /// Returns once `unix` (seconds) has passed for the firewall.
    fn wait_until(&mut self, unix: u64);
    /// Does a new connection from `src` to this host's `grant` get in?
    fn admits(&mut self, src: IpAddr, grant: Grant) -> bool;
    /// The whole ruleset, comparable: the same before `setup` and after
    /// `teardown` when the backend keeps its promise.
    fn ruleset(&mut self) -> String;
    /// What an admin's firewall reload does: the baseline back, ours gone.
    fn reload_behind_its_back(&mut self);
    /// Makes the `family` half of the next batch fail (a real backend: its
    /// pieces for that family removed by hand; the fake: an injected
    /// failure).
    fn break_family(&mut self, family: IpFamily);
}

/// One promise: `Err` says how it was broken.
pub type Clause = fn(&mut dyn World) -> Result<(), String>;

/// Every clause, by name.
pub const CLAUSES: &[(&str, Clause)] = &[
    (
        "setup_is_idempotent_and_teardown_restores_the_ruleset",
        setup_teardown,
    ),
    ("intact_reports_a_removed_piece", intact_after_reload),
    (
        "a_grant_admits_only_its_source_and_port",
        only_source_and_port,
    ),
    (
        "a_refresh_keeps_it_open_and_a_remove_closes",
        refresh_then_remove,
    ),
    ("a_vanished_remove_does_not_fail_the_batch", vanished_remove),
    ("a_failed_batch_changes_nothing", failed_batch),
    ("a_grant_closes_at_its_expiry", expiry),
    ("a_new_instance_starts_without_old_grants", new_instance),
    (
        "a_forward_opens_no_local_port_and_goes_with_teardown",
        forward,
    ),
];

/// Runs every clause, each from a clean firewall (a fresh backend's
/// teardown after it, whatever happened); returns the broken ones.
pub fn run_all(world: &mut dyn World) -> Vec<(&'static str, String)> {
    let mut broken = Vec::new();
    for (name, clause) in CLAUSES {
        if let Err(why) = clause(world) {
            broken.push((*name, why));
        }
        let _ = world.backend().teardown();
    }
    broken
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn call<T>(what: &str, r: Result<T, super::FwError>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn access(addr: IpAddr, grant: Grant, expires_at: u64) -> Access {
    Access {
        addr,
        grant,
        expires_at,
        forward: None,
    }
}

/// setup twice is one setup; teardown with nothing there is fine; teardown
/// (with silenced ports and grants of both families) leaves the ruleset as
/// it was found, byte for byte, and nothing admitted.
fn setup_teardown(w: &mut dyn World) -> Result<(), String> {
    let base = w.ruleset();
    let mut fw = w.backend();
    call("teardown with nothing installed", fw.teardown())?;
    check(w.ruleset() == base, || {
        "teardown with nothing installed changed the ruleset".into()
    })?;
    call("set_silence", fw.set_silence(&Silence::new(&[62201], &[])))?;
    call("setup", fw.setup())?;
    let once = w.ruleset();
    call("second setup", fw.setup())?;
    let twice = w.ruleset();
    check(once == twice, || {
        format!("a second setup changed the ruleset:\n--- once\n{once}\n--- twice\n{twice}")
    })?;
    check(call("intact", fw.intact())?, || {
        "intact() says no right after setup".into()
    })?;
    let [g, _] = w.grants();
    let (a4, a6) = (w.clients(IpFamily::V4)[0], w.clients(IpFamily::V6)[0]);
    let exp = w.now() + 600;
    call(
        "apply",
        fw.apply(&[access(a4, g, exp), access(a6, g, exp)], &[]),
    )?;
    check(w.admits(a4, g) && w.admits(a6, g), || {
        "a grant after a double setup does not admit".into()
    })?;
    call("teardown", fw.teardown())?;
    let after = w.ruleset();
    check(after == base, || {
        format!("teardown left a trace:\n--- before\n{base}\n--- after\n{after}")
    })?;
    check(!w.admits(a4, g) && !w.admits(a6, g), || {
        "a grant still admits after teardown".into()
    })?;
    call("second teardown", fw.teardown())?;
    check(w.ruleset() == base, || {
        "a second teardown changed the ruleset".into()
    })
}

/// intact() is true after setup, false once an admin's reload took our
/// pieces away, true again after setup, which also makes grants work again.
fn intact_after_reload(w: &mut dyn World) -> Result<(), String> {
    let mut fw = w.backend();
    call("setup", fw.setup())?;
    check(call("intact", fw.intact())?, || {
        "intact() false after setup".into()
    })?;
    w.reload_behind_its_back();
    check(!call("intact after a reload", fw.intact())?, || {
        "intact() still true after our pieces were removed".into()
    })?;
    call("setup after the reload", fw.setup())?;
    check(call("intact", fw.intact())?, || {
        "intact() false after setup repaired it".into()
    })?;
    let [g, _] = w.grants();
    let a = w.clients(IpFamily::V4)[0];
    let exp = w.now() + 600;
    call("apply", fw.apply(&[access(a, g, exp)], &[]))?;
    check(w.admits(a, g), || "no grant after the repair".into())?;
    call("teardown", fw.teardown())
}

/// In each family: closed before, and a grant admits its source to its
/// port and neither another source nor another port.
fn only_source_and_port(w: &mut dyn World) -> Result<(), String> {
    let mut fw = w.backend();
    call("setup", fw.setup())?;
    let [g, other] = w.grants();
    for family in [IpFamily::V4, IpFamily::V6] {
        let [a, b] = w.clients(family);
        check(!w.admits(a, g), || {
            format!("{a} is admitted to {g} before any grant (the baseline?)")
        })?;
        let exp = w.now() + 600;
        call("apply", fw.apply(&[access(a, g, exp)], &[]))?;
        check(w.admits(a, g), || {
            format!("the grant does not admit {a} to {g}")
        })?;
        check(!w.admits(b, g), || format!("a grant for {a} admits {b}"))?;
        check(!w.admits(a, other), || {
            format!("a grant for {g} admits {a} to {other}")
        })?;
    }
    call("teardown", fw.teardown())
}

/// A refresh (remove the old access, add the new, one batch) keeps it open;
/// removing the new one closes it.
fn refresh_then_remove(w: &mut dyn World) -> Result<(), String> {
    let mut fw = w.backend();
    call("setup", fw.setup())?;
    let [g, _] = w.grants();
    for family in [IpFamily::V4, IpFamily::V6] {
        let a = w.clients(family)[0];
        let now = w.now();
        let (old, new) = (access(a, g, now + 300), access(a, g, now + 600));
        call("apply", fw.apply(&[old], &[]))?;
        call("refresh", fw.apply(&[new], &[old]))?;
        check(w.admits(a, g), || format!("{a}: closed by its refresh"))?;
        call("remove", fw.apply(&[], &[new]))?;
        check(!w.admits(a, g), || {
            format!("{a}: still admitted after its remove")
        })?;
    }
    call("teardown", fw.teardown())
}

/// A remove of something that is not there (flushed by hand, expired in
/// the kernel) does not make the batch's add fail.
fn vanished_remove(w: &mut dyn World) -> Result<(), String> {
    let mut fw = w.backend();
    call("setup", fw.setup())?;
    let [g, other] = w.grants();
    let [a, b] = w.clients(IpFamily::V4);
    let exp = w.now() + 600;
    call(
        "a batch with a vanished remove",
        fw.apply(&[access(b, g, exp)], &[access(a, other, exp)]),
    )?;
    check(w.admits(b, g), || {
        "the add of that batch does not admit".into()
    })?;
    call("teardown", fw.teardown())
}

/// All or nothing: when the IPv6 half of a batch fails, its IPv4 half
/// (an add and a remove) is not left behind.
fn failed_batch(w: &mut dyn World) -> Result<(), String> {
    let mut fw = w.backend();
    call("setup", fw.setup())?;
    let [g, other] = w.grants();
    let [a4, b4] = w.clients(IpFamily::V4);
    let a6 = w.clients(IpFamily::V6)[0];
    let exp = w.now() + 600;
    let kept = access(a4, other, exp);
    call("apply", fw.apply(&[kept], &[]))?;
    w.break_family(IpFamily::V6);
    let r = fw.apply(&[access(b4, g, exp), access(a6, g, exp)], &[kept]);
    check(r.is_err(), || {
        "a batch whose IPv6 half cannot apply succeeded".into()
    })?;
    check(w.admits(a4, other), || {
        "the failed batch's remove took effect".into()
    })?;
    check(!w.admits(b4, g), || {
        "the failed batch's IPv4 add took effect".into()
    })?;
    call("setup after the breakage", fw.setup())?;
    call("teardown", fw.teardown())
}

/// The firewall closes a grant at its `expires_at` by itself (no call
/// after the add).
fn expiry(w: &mut dyn World) -> Result<(), String> {
    let mut fw = w.backend();
    call("setup", fw.setup())?;
    let [g, _] = w.grants();
    let a = w.clients(IpFamily::V4)[0];
    let exp = w.now() + 3;
    call("apply", fw.apply(&[access(a, g, exp)], &[]))?;
    check(w.admits(a, g), || "a 3 s grant does not admit".into())?;
    w.wait_until(exp + 1);
    check(!w.admits(a, g), || {
        format!("still admitted after its expiry {exp}")
    })?;
    call("teardown", fw.teardown())
}

/// A new instance's setup removes what an old one left (a killed daemon's
/// grants do not survive a restart).
fn new_instance(w: &mut dyn World) -> Result<(), String> {
    let base = w.ruleset();
    let mut old = w.backend();
    call("setup", old.setup())?;
    let [g, _] = w.grants();
    let a = w.clients(IpFamily::V4)[0];
    let exp = w.now() + 600;
    call("apply", old.apply(&[access(a, g, exp)], &[]))?;
    drop(old);
    let mut fw = w.backend();
    call("the new instance's setup", fw.setup())?;
    check(!w.admits(a, g), || {
        "the old instance's grant survived".into()
    })?;
    call("teardown", fw.teardown())?;
    check(w.ruleset() == base, || "teardown left a trace".into())
}

/// A forward grant (issue 15) opens no port on the host itself, and
/// teardown removes its pieces (NAT included).
fn forward(w: &mut dyn World) -> Result<(), String> {
    let base = w.ruleset();
    let mut fw = w.backend();
    fw.set_forwarding(true);
    call("setup with forwarding", fw.setup())?;
    let [g, _] = w.grants();
    let a = w.clients(IpFamily::V4)[0];
    let fwd = Access {
        forward: Some(w.forward_target()),
        ..access(a, g, w.now() + 600)
    };
    call("apply a forward", fw.apply(&[fwd], &[]))?;
    check(!w.admits(a, g), || {
        "a forward grant opened the host's own port".into()
    })?;
    call("remove the forward", fw.apply(&[], &[fwd]))?;
    call("teardown", fw.teardown())?;
    let after = w.ruleset();
    check(after == base, || {
        format!("teardown after forwarding left a trace:\n--- before\n{base}\n--- after\n{after}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::FakeFirewall;

    /// The fake's world: what its live set admits (no forwards: those go
    /// elsewhere), on a clock of its own.
    struct FakeWorld {
        fake: FakeFirewall,
        now: u64,
    }

    impl World for FakeWorld {
        fn backend(&mut self) -> Box<dyn Firewall> {
            Box::new(self.fake.clone())
        }
        fn clients(&self, family: IpFamily) -> [IpAddr; 2] {
            match family {
                IpFamily::V4 => ["198.18.1.2".parse().unwrap(), "198.18.1.3".parse().unwrap()],
                IpFamily::V6 => ["2001:2::2".parse().unwrap(), "2001:2::3".parse().unwrap()],
            }
        }
        fn grants(&self) -> [Grant; 2] {
            [Grant::tcp(22).unwrap(), Grant::tcp(2222).unwrap()]
        }
        fn forward_target(&self) -> SocketAddr {
            "198.18.1.9:22".parse().unwrap()
        }
        fn now(&self) -> u64 {
            self.now
        }
        fn wait_until(&mut self, unix: u64) {
            self.now = self.now.max(unix);
        }
        fn admits(&mut self, src: IpAddr, grant: Grant) -> bool {
            self.fake
                .open_at(self.now)
                .iter()
                .any(|a| a.canonical_addr() == src && a.grant == grant && a.forward.is_none())
        }
        fn ruleset(&mut self) -> String {
            format!(
                "set up: {}, live: {:?}",
                self.fake.is_set_up(),
                self.fake.live()
            )
        }
        fn reload_behind_its_back(&mut self) {
            self.fake.clear_behind_our_back();
        }
        fn break_family(&mut self, _: IpFamily) {
            self.fake.fail_next(1);
        }
    }

    #[test]
    fn the_fake_keeps_the_contract() {
        let mut w = FakeWorld {
            fake: FakeFirewall::new(),
            now: 1_700_000_000,
        };
        let broken = run_all(&mut w);
        assert!(broken.is_empty(), "{broken:#?}");
    }
}
