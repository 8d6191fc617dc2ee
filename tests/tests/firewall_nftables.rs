//! The nftables backend against the real nft inside a fresh network
//! namespace (ids 15..=19), with the admin's `inet filter input` chain
//! holding a reject that our accept must get past.

use spa_e2e::{kernel_closes_at_expiry, tcp_access as acc, unix_now as now, Guard, NetPair};
use spa_server::firewall::nftables::Nftables;
use spa_server::firewall::{backend, BackendKind, Firewall, FirewallOptions, FwError};
use std::time::Duration;

const PORT: u16 = 22;

fn fw(p: &NetPair) -> Box<dyn Firewall> {
    backend(BackendKind::Nftables, &p.fw_options())
}

/// The ruleset without counters and countdowns (`-s`), so two snapshots
/// taken a moment apart compare equal when nothing changed.
fn ruleset(p: &NetPair) -> String {
    p.nft_snapshot()
}

/// Elements of one of our sets, one per line, without timeouts.
fn elements(p: &NetPair, set: &str) -> Vec<String> {
    let out = p.srv_sh(&format!("nft -s list set inet filter {set}"));
    let Some(start) = out.find("elements = {") else {
        return Vec::new();
    };
    let body = &out[start + "elements = {".len()..];
    let body = &body[..body.find('}').unwrap()];
    body.split(',')
        .map(|e| e.split(" timeout").next().unwrap().trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect()
}

fn our_rules(p: &NetPair) -> Vec<String> {
    p.srv_sh("nft list chain inet filter input")
        .lines()
        .filter(|l| l.contains("comment \"spa-server\""))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn setup_needs_the_admins_chain_is_idempotent_and_teardown_restores_baseline() {
    let p = NetPair::new(15);
    let mut f = fw(&p);
    // No table at all: setup says what is missing, teardown has nothing to do.
    let e = f.setup().unwrap_err();
    assert!(matches!(e, FwError::MissingChain { .. }), "{e:?}");
    assert!(e.to_string().contains("`inet filter input`"), "{e}");
    f.teardown().unwrap();

    p.nft_baseline(PORT);
    let baseline = ruleset(&p);
    f.setup().unwrap();
    f.setup().unwrap();
    let ours = our_rules(&p);
    assert_eq!(
        ours,
        vec![
            "ct state new ip6 saddr . meta l4proto . th dport @spa6 accept comment \"spa-server\"",
            "ct state new ip saddr . meta l4proto . th dport @spa4 accept comment \"spa-server\"",
        ]
    );
    // Ours come first, before the admin's reject.
    let chain = p.srv_sh("nft list chain inet filter input");
    let first_rule = chain
        .lines()
        .map(str::trim)
        .find(|l| !l.starts_with("type ") && (l.contains("accept") || l.contains("reject")))
        .unwrap();
    assert!(first_rule.contains("spa-server"), "{chain}");

    // Grants from a "previous instance" are gone after the next setup.
    f.apply(
        &[
            acc(p.cli_ip4, PORT, now() + 600),
            acc(p.cli_ip6, PORT, now() + 600),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(elements(&p, "spa4").len(), 1);
    let mut g = fw(&p);
    g.setup().unwrap();
    assert!(elements(&p, "spa4").is_empty());
    assert!(elements(&p, "spa6").is_empty());
    assert_eq!(our_rules(&p).len(), 2);

    g.apply(&[acc(p.cli_ip4, PORT, now() + 600)], &[]).unwrap();
    g.teardown().unwrap();
    assert_eq!(
        ruleset(&p),
        baseline,
        "teardown leaves the admin's baseline"
    );
    g.teardown().unwrap();
    assert_eq!(ruleset(&p), baseline);
}

#[test]
fn grant_opens_refresh_keeps_one_element_remove_closes() {
    let p = NetPair::new(16);
    p.nft_baseline(PORT);
    let _l = Guard(p.listen(PORT));
    let mut f = Nftables::new(p.fw_options());
    f.setup().unwrap();
    // This kernel (6.10+) refreshes in place; cover the delete-then-add
    // refresh older kernels need as well.
    let in_place = f.refresh_in_place();
    eprintln!("kernel refreshes set timeouts in place: {in_place}");
    for mode in [in_place, !in_place] {
        f.set_refresh_in_place(mode);
        open_refresh_close(&p, &mut f);
    }
    f.teardown().unwrap();
    // The same through `nft -f -` per batch instead of the session.
    let mut f = Nftables::new(FirewallOptions {
        nft_session: false,
        ..p.fw_options()
    });
    f.setup().unwrap();
    open_refresh_close(&p, &mut f);
    f.teardown().unwrap();
}

fn open_refresh_close(p: &NetPair, f: &mut Nftables) {
    let (s4, c4, c6) = (p.v4().srv, p.v4().cli, p.v6().cli);
    p.assert_connect_v4_v6(PORT, |f| f.cli, false, "baseline refuses");

    let exp = now() + 600;
    let (a4, a6) = (acc(c4, PORT, exp), acc(c6, PORT, exp));
    f.apply(&[a4, a6], &[]).unwrap();
    assert_eq!(elements(p, "spa4"), vec![format!("{c4} . tcp . 22")]);
    assert_eq!(elements(p, "spa6"), vec![format!("{c6} . tcp . 22")]);
    p.assert_connect_v4_v6(PORT, |f| f.cli, true, "granted source connects");
    p.assert_connect_v4_v6(PORT, |f| f.cli_b, false, "other source still refused");

    // Refresh: one element, with the new (longer) timeout.
    let (n4, n6) = (acc(c4, PORT, exp + 3000), acc(c6, PORT, exp + 3000));
    f.apply(&[n4, n6], &[a4, a6]).unwrap();
    assert_eq!(elements(p, "spa4").len(), 1);
    assert_eq!(elements(p, "spa6").len(), 1);
    let listed = p.srv_sh("nft -s list set inet filter spa4");
    assert!(
        listed.contains("timeout 59m") || listed.contains("timeout 1h"),
        "refreshed timeout: {listed}"
    );
    assert!(p.can_connect(c4, s4, PORT));

    f.apply(&[], &[n4, n6]).unwrap();
    assert!(elements(p, "spa4").is_empty());
    assert!(elements(p, "spa6").is_empty());
    p.assert_connect_v4_v6(PORT, |f| f.cli, false, "closed again");
}

#[test]
fn kernel_closes_the_grant_at_expiry_without_the_daemon() {
    let p = NetPair::new(17);
    p.nft_baseline(PORT);
    let _l = Guard(p.listen(PORT));
    kernel_closes_at_expiry(
        &p,
        BackendKind::Nftables,
        PORT,
        2,
        Duration::from_secs(5),
        || {},
    );
}

#[test]
fn failed_batch_changes_nothing_and_vanished_removes_are_tolerated() {
    let p = NetPair::new(18);
    p.nft_baseline(PORT);
    // Through the persistent `nft -i` session and through `nft -f -`.
    for session in [true, false] {
        failed_batch(&p, session);
    }
}

fn failed_batch(p: &NetPair, session: bool) {
    let mut f = Nftables::new(FirewallOptions {
        nft_session: session,
        ..p.fw_options()
    });
    f.setup().unwrap();
    let (c4, c6) = (p.v4().cli, p.v6().cli);
    let exp = now() + 600;
    f.apply(&[acc(c4, PORT, exp)], &[]).unwrap();

    // Our v6 set is gone (rule deleted by hand, then the set): a batch that
    // touches both sets fails as one transaction, spa4 untouched.
    let handle = p
        .srv_sh("nft -a list chain inet filter input")
        .lines()
        .find(|l| l.contains("@spa6"))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_owned())
        .unwrap();
    p.srv_sh(&format!(
        "nft delete rule inet filter input handle {handle} && nft delete set inet filter spa6"
    ));
    let before = ruleset(p);
    let e = f
        .apply(
            &[acc(c4, 443, exp), acc(c6, 443, exp)],
            &[acc(c4, PORT, exp)],
        )
        .unwrap_err();
    let tool = if session { "(persistent)" } else { "nft -f -" };
    assert!(e.to_string().contains(tool), "{e}");
    assert!(e.to_string().contains("No such file or directory"), "{e}");
    assert_eq!(ruleset(p), before, "failed transaction left a trace");

    // A bogus table: fails, nothing changes.
    let mut bogus = backend(
        BackendKind::Nftables,
        &FirewallOptions {
            nft_table: "nope".into(),
            ..p.fw_options()
        },
    );
    assert!(bogus.apply(&[acc(c4, 80, exp)], &[]).is_err());
    assert_eq!(ruleset(p), before);
    drop(bogus);

    // The element vanished (deleted by hand): a refresh still works, also
    // where it needs a delete (which then fails and is retried without it).
    f.setup().unwrap();
    f.set_refresh_in_place(false);
    f.apply(&[acc(c4, PORT, exp)], &[]).unwrap();
    p.srv_sh(&format!(
        "nft delete element inet filter spa4 '{{ {c4} . tcp . 22 }}'"
    ));
    f.apply(&[acc(c4, PORT, exp + 30)], &[acc(c4, PORT, exp)])
        .unwrap();
    assert_eq!(elements(p, "spa4"), vec![format!("{c4} . tcp . 22")]);

    if session {
        // The session's nft dies (OOM killer, admin): the batch still goes
        // through (spawned nft), and the next one gets a new session.
        let killed = kill_nft_in(p);
        assert_eq!(killed, 1, "exactly our session's nft runs in the namespace");
        f.apply(&[acc(c4, 444, exp)], &[]).unwrap();
        f.apply(&[acc(c4, 445, exp)], &[]).unwrap();
        assert_eq!(elements(p, "spa4").len(), 3);
    }
    f.teardown().unwrap();
    assert!(!ruleset(p).contains("spa"));
}

/// SIGKILLs the `nft` processes in the server namespace (only ones this
/// test started there); returns how many.
fn kill_nft_in(p: &NetPair) -> usize {
    let pids = p.srv_pids("nft");
    for pid in &pids {
        let ok = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    // Give the kernel a moment to reap it so the pipe is closed.
    std::thread::sleep(Duration::from_millis(100));
    pids.len()
}
