//! The firewall side of the tests: snapshots of a namespace's ruleset, and
//! the backends driven directly (tests/tests/firewall_*.rs), their tools run
//! inside the server namespace.

use crate::{unix_now, NetPair};
use spa_proto::{Grant, Proto};
use spa_server::firewall::{backend, Access, BackendKind, FirewallOptions};
use std::net::IpAddr;
use std::time::{Duration, Instant};

impl NetPair {
    /// `iptables-save`, `ip6tables-save` and `ipset save` of the server
    /// namespace, without the date comments, packet counters and the set
    /// entries' remaining seconds, so two snapshots compare equal exactly
    /// when the rules and set entries are the same.
    /// Every line ends in a newline, so a caller may filter lines and
    /// compare again.
    pub fn iptables_snapshot(&self) -> String {
        let raw = self.srv_sh("iptables-save; ip6tables-save; ipset save 2>/dev/null || true");
        raw.lines()
            .filter(|l| !l.starts_with('#'))
            // ":INPUT ACCEPT [12:345]" -> ":INPUT ACCEPT"
            .map(|l| match l.find(" [") {
                Some(i) if l.starts_with(':') => format!("{}\n", &l[..i]),
                _ if l.starts_with("add ") => format!("{}\n", without_timeout(l)),
                _ => format!("{l}\n"),
            })
            .collect()
    }

    /// The grant set entries of the iptables backend (`ipset save` lines,
    /// `add SPA4 198.18.0.2,tcp:22 timeout 29 comment "spa-server exp=..."`)
    /// of `tool`'s family (iptables: SPA4, ip6tables: SPA6); none when the
    /// set is missing. The kernel hides an entry once its timeout passed.
    pub fn set_entries(&self, tool: &str) -> Vec<String> {
        let set = if tool == "ip6tables" { "SPA6" } else { "SPA4" };
        self.srv_sh(&format!("ipset save {set} 2>/dev/null || true"))
            .lines()
            .filter(|l| l.starts_with("add ") && l.contains("exp="))
            .map(str::to_owned)
            .collect()
    }

    /// `nft list ruleset` of the server namespace (stateless: no counters,
    /// no set element timeouts drifting).
    pub fn nft_snapshot(&self) -> String {
        self.srv_sh("nft -s list ruleset")
    }

    /// The whole firewall of the server namespace for a backend by name:
    /// `iptables_snapshot`, plus `nft_snapshot` for "nftables" (with
    /// iptables-nft, the ruleset is a second view of the same tables, so it
    /// is read only where nftables is the backend).
    pub fn firewall_snapshot(&self, backend: &str) -> String {
        let mut s = self.iptables_snapshot();
        if backend == "nftables" {
            s.push_str(&self.nft_snapshot());
        }
        s
    }
}

/// A tcp/`port` grant for `addr` until `expires_at`, as the daemon hands it
/// to a backend.
pub fn tcp_access(addr: impl Into<IpAddr>, port: u16, expires_at: u64) -> Access {
    Access {
        addr: addr.into(),
        grant: Grant::new(Proto::Tcp, port).expect("port > 0"),
        expires_at,
        forward: None,
    }
}

impl NetPair {
    /// Backend options whose every tool runs in the server namespace.
    pub fn fw_options(&self) -> FirewallOptions {
        FirewallOptions {
            exec_prefix: vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                self.srv_ns.clone(),
            ],
            ..Default::default()
        }
    }
}

/// What `kernel_closes_at_expiry` saw, for the backend's own checks.
pub struct Expiry {
    /// The first grant's `expires_at`.
    pub exp: u64,
    /// The re-opened grant's `expires_at`.
    pub again: u64,
    /// When the expiry wait began (after the "open before expiry" checks).
    pub waited_from: Instant,
}

/// The fail-closed property both backends must have: a grant for the
/// client (both families) ending `lifetime` s from now opens; the backend
/// is dropped, so no process of ours touches the firewall; the kernel
/// refuses the client again (within `within`) at `expires_at`, to the
/// second; `while_closed` runs then; a new backend re-opens by removing the
/// lapsed grant and adding a fresh one (600 s).
pub fn kernel_closes_at_expiry(
    p: &NetPair,
    kind: BackendKind,
    port: u16,
    lifetime: u64,
    within: Duration,
    while_closed: impl FnOnce(),
) -> Expiry {
    let (v4, v6) = (p.v4(), p.v6());
    let (c4, c6) = (v4.cli, v6.cli);
    let mut f = backend(kind, &p.fw_options());
    f.setup().unwrap();
    let exp = unix_now() + lifetime;
    f.apply(&[tcp_access(c4, port, exp), tcp_access(c6, port, exp)], &[])
        .unwrap();
    drop(f);
    p.assert_connect_v4_v6(port, |f| f.cli, true, "open before expiry");
    let waited_from = Instant::now();
    assert!(
        p.wait_connect(c4, v4.srv, port, false, within),
        "kernel never closed the grant"
    );
    let closed_at = unix_now();
    assert!(!p.can_connect(c6, v6.srv, port), "v6 closed too");
    while_closed();
    // The daemon comes back and re-opens: remove the lapsed grant, add anew.
    let mut f = backend(kind, &p.fw_options());
    let again = unix_now() + 600;
    f.apply(
        &[tcp_access(c4, port, again), tcp_access(c6, port, again)],
        &[tcp_access(c4, port, exp), tcp_access(c6, port, exp)],
    )
    .unwrap();
    p.assert_connect_v4_v6(port, |f| f.cli, true, "re-opened after expiry");
    // Closed at expires_at (second resolution), not before.
    assert!(closed_at >= exp, "closed early: {closed_at} < {exp}");
    assert!(closed_at <= exp + 1, "closed late: {closed_at} > {exp}+1");
    Expiry {
        exp,
        again,
        waited_from,
    }
}

/// An `ipset save` add line without its `timeout N` (it counts down).
fn without_timeout(line: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut words = line.split(' ');
    while let Some(w) = words.next() {
        if w == "timeout" {
            words.next();
        } else {
            out.push(w);
        }
    }
    out.join(" ")
}
