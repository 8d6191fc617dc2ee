//! The iptables backend against the real iptables/ip6tables and ipset inside
//! a fresh network namespace (ids 10..=14, 145..=146): grant set entries
//! appear and disappear as asked, a real TCP connect follows them, the
//! kernel closes a grant on its own at its expiry, a failed batch changes
//! nothing, teardown leaves the admin's baseline byte for byte (no set).

use spa_e2e::{kernel_closes_at_expiry, tcp_access as acc, unix_now as now, Guard, NetPair};
use spa_server::firewall::{backend, Access, BackendKind, Firewall, FirewallOptions, FwError};
use std::time::{Duration, Instant};

const PORT: u16 = 22;

fn fw(p: &NetPair) -> Box<dyn Firewall> {
    backend(BackendKind::Iptables, &p.fw_options())
}

/// `iptables-save` and `ip6tables-save` without the timestamped comments.
fn save(p: &NetPair) -> String {
    p.iptables_snapshot()
}

fn rules(p: &NetPair, tool: &str, chain: &str) -> Vec<String> {
    p.srv_sh(&format!("{tool} -S {chain}"))
        .lines()
        .filter(|l| l.starts_with("-A"))
        .map(str::to_owned)
        .collect()
}

/// The grant set entries of `tool`'s family (`add SPA4 198.18.0.2,tcp:22 ...`).
fn entries(p: &NetPair, tool: &str) -> Vec<String> {
    p.set_entries(tool)
}

/// The rules of our chain other than the one that matches the grant set.
fn grant_rules(p: &NetPair, tool: &str) -> Vec<String> {
    rules(p, tool, "SPA")
        .into_iter()
        .filter(|l| !l.contains("--match-set"))
        .collect()
}

fn jumps(p: &NetPair, tool: &str) -> usize {
    rules(p, tool, "INPUT")
        .iter()
        .filter(|l| l.contains("-j SPA"))
        .count()
}

#[test]
fn setup_is_idempotent_and_teardown_restores_baseline() {
    let p = NetPair::new(10);
    p.iptables_baseline(PORT);
    let baseline = save(&p);
    let mut f = fw(&p);
    // Teardown with nothing there is fine.
    f.teardown().unwrap();
    assert_eq!(save(&p), baseline);

    f.setup().unwrap();
    f.setup().unwrap();
    for tool in ["iptables", "ip6tables"] {
        assert_eq!(jumps(&p, tool), 1, "{tool}: exactly one jump");
        let input = rules(&p, tool, "INPUT");
        assert!(input[0].contains("-j SPA"), "{tool}: jump first: {input:?}");
        assert!(input[0].contains("spa-server"), "{input:?}");
        let set = if tool == "iptables" { "SPA4" } else { "SPA6" };
        assert_eq!(
            rules(&p, tool, "SPA"),
            vec![format!(
                "-A SPA -m set --match-set {set} src,dst -m comment --comment spa-server -j ACCEPT"
            )],
            "{tool}: one rule matches the grant set"
        );
    }

    // A grant left by a "previous instance" is cleared by the next setup.
    f.apply(&[acc(p.cli_ip4, PORT, now() + 600)], &[]).unwrap();
    f.apply(&[acc(p.cli_ip6, PORT, now() + 600)], &[]).unwrap();
    assert_eq!(entries(&p, "iptables").len(), 1);
    let mut g = fw(&p);
    g.setup().unwrap();
    assert!(entries(&p, "iptables").is_empty());
    assert!(entries(&p, "ip6tables").is_empty());
    assert!(grant_rules(&p, "iptables").is_empty());
    assert_eq!(jumps(&p, "iptables"), 1);

    // A duplicate jump, here in the form versions before issue 16 wrote
    // (every state), is removed too.
    p.srv_sh("iptables -I INPUT 1 -m comment --comment spa-server -j SPA");
    assert_eq!(jumps(&p, "iptables"), 2);
    g.apply(&[acc(p.cli_ip4, PORT, now() + 600)], &[]).unwrap();
    g.teardown().unwrap();
    assert_eq!(save(&p), baseline, "teardown leaves the admin's baseline");
    g.teardown().unwrap();
    assert_eq!(save(&p), baseline);
}

#[test]
fn grant_opens_refresh_keeps_one_rule_remove_closes() {
    let p = NetPair::new(11);
    p.iptables_baseline(PORT);
    let _l = Guard(p.listen(PORT));
    let mut f = fw(&p);
    f.setup().unwrap();
    let (s4, c4, c6) = (p.v4().srv, p.v4().cli, p.v6().cli);
    p.assert_connect_v4_v6(PORT, |f| f.cli, false, "baseline refuses");

    let exp = now() + 600;
    let (a4, a6) = (acc(c4, PORT, exp), acc(c6, PORT, exp));
    f.apply(&[a4, a6], &[]).unwrap();
    let r4 = entries(&p, "iptables");
    assert_eq!(r4.len(), 1, "{r4:?}");
    assert!(
        r4[0].starts_with(&format!("add SPA4 {c4},tcp:22 timeout ")),
        "{r4:?}"
    );
    assert!(
        r4[0].ends_with(&format!("comment \"spa-server exp={exp}\"")),
        "{r4:?}"
    );
    let r6 = entries(&p, "ip6tables");
    assert_eq!(r6.len(), 1, "{r6:?}");
    assert!(r6[0].starts_with(&format!("add SPA6 {c6},tcp:22 timeout ")));
    assert!(grant_rules(&p, "iptables").is_empty(), "no rule per grant");
    p.assert_connect_v4_v6(PORT, |f| f.cli, true, "granted source connects");
    p.assert_connect_v4_v6(PORT, |f| f.cli_b, false, "other source still refused");

    // Refresh: remove old, add new; never two entries for one grant.
    let (n4, n6) = (acc(c4, PORT, exp + 30), acc(c6, PORT, exp + 30));
    f.apply(&[n4, n6], &[a4, a6]).unwrap();
    let r4 = entries(&p, "iptables");
    assert_eq!(r4.len(), 1, "{r4:?}");
    assert!(r4[0].contains(&format!("exp={}", exp + 30)), "{r4:?}");
    assert_eq!(entries(&p, "ip6tables").len(), 1);
    assert!(p.can_connect(c4, s4, PORT));

    f.apply(&[], &[n4, n6]).unwrap();
    assert!(entries(&p, "iptables").is_empty());
    assert!(entries(&p, "ip6tables").is_empty());
    p.assert_connect_v4_v6(PORT, |f| f.cli, false, "closed again");
    f.teardown().unwrap();
}

#[test]
fn kernel_closes_the_grant_at_expiry_without_the_daemon() {
    let p = NetPair::new(12);
    p.iptables_baseline(PORT);
    let _l = Guard(p.listen(PORT));
    let run = kernel_closes_at_expiry(
        &p,
        BackendKind::Iptables,
        PORT,
        3,
        Duration::from_secs(6),
        || {
            // The kernel removed the entry itself: no process of ours ran.
            assert!(entries(&p, "iptables").is_empty());
            assert!(entries(&p, "ip6tables").is_empty());
        },
    );
    assert!(run.waited_from.elapsed() < Duration::from_secs(5));
    let r = entries(&p, "iptables");
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].contains(&format!("exp={}", run.again)), "{r:?}");
}

#[test]
fn failed_batch_changes_nothing_and_vanished_removes_are_tolerated() {
    let p = NetPair::new(13);
    p.iptables_baseline(PORT);
    let mut f = fw(&p);
    f.setup().unwrap();
    let (c4, c6) = (p.v4().cli, p.v6().cli);
    let exp = now() + 600;
    f.apply(&[acc(c4, PORT, exp)], &[]).unwrap();
    let before = save(&p);

    // A chain (and so sets) that does not exist: the batch fails as a whole.
    let mut bogus = backend(
        BackendKind::Iptables,
        &FirewallOptions {
            chain: "NOPE".into(),
            ..p.fw_options()
        },
    );
    let e = bogus
        .apply(&[acc(c4, 80, exp), acc(c4, 81, exp)], &[])
        .unwrap_err();
    assert!(matches!(e, FwError::Failed { .. }), "{e:?}");
    assert!(e.to_string().contains("ipset"), "{e}");
    assert_eq!(save(&p), before, "failed batch left a trace");

    // Issue 14: the IPv6 set is no longer matched by any rule (our ip6tables
    // chain is gone, the set stays): the IPv4 half went in with it, in one
    // ipset call, and is undone; nothing changes.
    p.srv_sh(
        "ip6tables -D INPUT -m conntrack --ctstate NEW -m comment --comment spa-server -j SPA && ip6tables -F SPA && ip6tables -X SPA",
    );
    let before = save(&p);
    let e = f
        .apply(
            &[acc(c4, 443, exp), acc(c6, 443, exp)],
            &[acc(c4, PORT, exp)],
        )
        .unwrap_err();
    assert!(
        matches!(&e, FwError::Unreferenced { set } if set == "SPA6"),
        "{e:?}"
    );
    assert_eq!(save(&p), before, "v4 half not undone");

    // Someone removed the entry by hand (or the kernel expired it): a
    // refresh and a close still work.
    f.setup().unwrap();
    f.apply(&[acc(c4, PORT, exp)], &[]).unwrap();
    p.srv_sh(&format!("ipset del SPA4 {c4},tcp:{PORT}"));
    f.apply(&[acc(c4, PORT, exp + 30)], &[acc(c4, PORT, exp)])
        .unwrap();
    let r = entries(&p, "iptables");
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].contains(&format!("exp={}", exp + 30)));
    p.srv_sh(&format!("ipset del SPA4 {c4},tcp:{PORT}"));
    f.apply(&[], &[acc(c4, PORT, exp + 30)]).unwrap();
    assert!(entries(&p, "iptables").is_empty());

    // Someone flushed our chain by hand (`iptables -F SPA`): the set and
    // its entries survive but nothing matches them, so an open must not
    // report success: it fails as Unreferenced (which makes the daemon
    // re-install, tests/tests/fw_reload.rs) and leaves nothing behind.
    f.apply(&[acc(c4, PORT, exp)], &[]).unwrap();
    p.srv_sh("iptables -F SPA");
    let before = save(&p);
    let e = f.apply(&[acc(c4, 443, exp)], &[]).unwrap_err();
    assert!(
        matches!(&e, FwError::Unreferenced { set } if set == "SPA4"),
        "{e:?}"
    );
    assert_eq!(save(&p), before, "the failed open left an entry");
    assert!(!f.intact().unwrap(), "a flushed chain is not intact");
    // A repair (setup of a backend already set up) keeps the live entry
    // and puts the rule back: it matches again.
    f.setup().unwrap();
    assert!(f.intact().unwrap());
    let r = entries(&p, "iptables");
    assert_eq!(r.len(), 1, "the repair kept the live grant: {r:?}");
    f.teardown().unwrap();
    assert!(
        p.srv_sh("ipset list -n").trim().is_empty(),
        "teardown destroys the sets"
    );
}

#[test]
fn without_ip6tables_v4_works_and_v6_fails_cleanly() {
    let p = NetPair::new(14);
    p.iptables_baseline(PORT);
    let o = FirewallOptions {
        ip6tables: "/nonexistent/ip6tables".into(),
        ip6tables_restore: "/nonexistent/ip6tables-restore".into(),
        ..p.fw_options()
    };
    let mut f = backend(BackendKind::Iptables, &o);
    f.setup().unwrap();
    let exp = now() + 600;
    f.apply(&[acc(p.cli_ip4, PORT, exp)], &[]).unwrap();
    let before = save(&p);
    let e = f
        .apply(&[acc(p.cli_ip4, 80, exp), acc(p.cli_ip6, PORT, exp)], &[])
        .unwrap_err();
    assert!(matches!(e, FwError::FamilyUnavailable { .. }), "{e:?}");
    assert_eq!(save(&p), before);
    f.teardown().unwrap();
    assert!(p.srv_sh("iptables -S").lines().all(|l| !l.contains("SPA")));
}

/// Median wall time of `f` over `n` runs, in microseconds.
fn median_us(n: usize, mut f: impl FnMut()) -> u128 {
    let mut t: Vec<u128> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_micros()
        })
        .collect();
    t.sort_unstable();
    t[n / 2]
}

/// What one apply costs the daemon, per backend, through the real code path
/// (spawn, pipe the batch, wait). The tools run via `nsenter --net`, whose
/// own cost is measured and shown so it can be subtracted. Prints figures
/// for docs/firewall.md; asserts only a loose bound (shared, loaded CI box).
#[test]
fn apply_latency_both_backends() {
    let p = NetPair::new(19);
    p.iptables_baseline(PORT);
    p.nft_baseline(PORT);
    let o = FirewallOptions {
        exec_prefix: vec!["nsenter".into(), format!("--net=/run/netns/{}", p.srv_ns)],
        ..Default::default()
    };
    let n = 60;
    let prefix = median_us(n, || {
        let ok = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", p.srv_ns))
            .arg("true")
            .status()
            .unwrap()
            .success();
        assert!(ok);
    });
    eprintln!("nsenter --net .. true: median {prefix} us");
    let spawn_nft = FirewallOptions {
        nft_session: false,
        ..o.clone()
    };
    for (kind, label, o) in [
        (BackendKind::Iptables, "iptables (ipset restore)", &o),
        (BackendKind::Nftables, "nft session", &o),
        (BackendKind::Nftables, "nft -f per batch", &spawn_nft),
    ] {
        let mut f = backend(kind, o);
        f.setup().unwrap();
        let base = now() + 600;
        let mut i = 0u64;
        let mut live: Option<Access> = None;
        // Open: add one grant (each a fresh source port, as for a new client).
        let open = median_us(n, || {
            i += 1;
            let a = acc(p.cli_ip4, 1000 + i as u16, base);
            f.apply(&[a], &[]).unwrap();
        });
        // Refresh: the same grant, later expiry.
        let refresh = median_us(n, || {
            i += 1;
            let new = acc(p.cli_ip4, PORT, base + i);
            let old: Vec<Access> = live.iter().copied().collect();
            f.apply(&[new], &old).unwrap();
            live = Some(new);
        });
        // Close: remove one of the grants opened above.
        let mut j = 0u64;
        let close = median_us(n, || {
            j += 1;
            f.apply(&[], &[acc(p.cli_ip4, 1000 + j as u16, base)])
                .unwrap();
        });
        eprintln!(
            "{label}: apply median open {open} us, refresh {refresh} us, close {close} us \
             (a spawned tool includes ~{prefix} us of nsenter; the nft session does not)"
        );
        assert!(open < 50_000, "{label}: open took {open} us");
        f.teardown().unwrap();
    }
}
