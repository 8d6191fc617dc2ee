//! Firewall reloads (issue 10, item 1): the admin reloads the firewall the
//! way Debian does (`nft -f` of a file that starts with `flush ruleset`, or
//! `iptables-restore` of the saved rules, as netfilter-persistent does)
//! while a grant is live. The daemon notices through nf_tables'
//! notifications, re-installs its chain/sets and re-adds the grant within
//! 1 s, and a new open after the reload works. The real daemon and tools.
//!
//! Namespace ids 208..=210 and 214 (engineer F's range is 200..=219).

use spa_e2e::{Testbed, PORT};
use std::time::{Duration, Instant};

const SID: &str = "e2e-fwreload";

fn reload_keeps_grants(r: &Testbed, reload: &str) {
    let (v4, v6) = (r.pair.v4(), r.pair.v6());
    let s = r.server("server.log", &[]);
    r.send(v4.cli, v4.srv, &["--open", "22", "-d", "300"]);
    r.send(v6.cli, v6.srv, &["--open", "22", "-d", "300"]);
    s.expect_lines(&["accepted open"], 2);
    r.expect_connect(v4.cli, v4.srv, true, "before the reload", &s);

    r.pair.srv_sh(reload);
    let reloaded = Instant::now();
    for f in [v4, v6] {
        let left = Duration::from_secs(1).saturating_sub(reloaded.elapsed());
        assert!(
            r.pair.wait_connect(f.cli, f.srv, PORT, true, left),
            "{}: the live grant was not back within 1 s of the reload; log:\n{}",
            f.cli,
            s.log_text()
        );
    }
    assert!(
        s.wait_lines(
            &["firewall reloaded by someone else"],
            1,
            Duration::from_secs(2)
        ),
        "{}",
        s.log_text()
    );
    // A new open after the reload, from another address.
    r.send(v4.cli_b, v4.srv, &["--open", "22"]);
    s.expect_lines(&["accepted open", &format!("src={}", v4.cli_b)], 1);
    r.expect_connect(v4.cli_b, v4.srv, true, "a new open after the reload", &s);
    assert!(
        s.lines_with(&["firewall change failed"]).is_empty(),
        "{}",
        s.log_text()
    );
}

/// `systemctl reload nftables`: `nft -f /etc/nftables.conf`, which starts
/// with `flush ruleset` (Debian's file).
#[test]
fn nft_flush_ruleset_reload_restores_grants_within_1s() {
    let r = Testbed::new(208, "fwreload", "nftables", SID, &["alice"]);
    let conf = r.dir.join("nftables.conf");
    std::fs::write(
        &conf,
        format!(
            "#!/usr/sbin/nft -f\nflush ruleset\n\
             table inet filter {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n\
             \x20   ct state established,related accept\n    tcp dport {PORT} reject with tcp reset\n  }}\n}}\n"
        ),
    )
    .unwrap();
    reload_keeps_grants(&r, &format!("nft -f {}", conf.display()));
    r.done("nft_flush_ruleset_reload_restores_grants_within_1s");
}

/// `netfilter-persistent reload`: `iptables-restore` (and ip6tables-restore)
/// of the admin's saved rules replaces the filter table.
#[test]
fn iptables_restore_reload_restores_grants_within_1s() {
    let r = Testbed::new(209, "fwreload", "iptables", SID, &["alice"]);
    let (v4, v6) = (r.dir.join("rules.v4"), r.dir.join("rules.v6"));
    r.pair.srv_sh(&format!(
        "iptables-save > {} && ip6tables-save > {}",
        v4.display(),
        v6.display()
    ));
    reload_keeps_grants(
        &r,
        &format!(
            "iptables-restore < {} && ip6tables-restore < {}",
            v4.display(),
            v6.display()
        ),
    );
    r.done("iptables_restore_reload_restores_grants_within_1s");
}

/// iptables-legacy announces nothing (it does not go through nf_tables):
/// after `iptables-legacy-restore` of the saved rules the grant is gone
/// until the next request, whose batch fails on the missing chain, which
/// re-installs it with the live grants and retries once: that request
/// opens, and the earlier grant is back.
#[test]
fn iptables_legacy_reload_is_repaired_by_the_next_request() {
    let r = Testbed::new(210, "fwreload", "iptables", SID, &["alice"]);
    // The baseline in the legacy tables instead of iptables-nft's.
    r.pair.srv_sh(
        "iptables -w -F INPUT && ip6tables -w -F INPUT && \
         for t in iptables-legacy ip6tables-legacy; do \
           $t -w -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT && \
           $t -w -A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset; done",
    );
    let (saved4, saved6) = (r.dir.join("rules.v4"), r.dir.join("rules.v6"));
    r.pair.srv_sh(&format!(
        "iptables-legacy-save > {} && ip6tables-legacy-save > {}",
        saved4.display(),
        saved6.display()
    ));
    let conf = r.dir.join("server.toml");
    std::fs::write(
        &conf,
        "[firewall_options]\niptables = \"iptables-legacy\"\nip6tables = \"ip6tables-legacy\"\n\
         iptables_restore = \"iptables-legacy-restore\"\nip6tables_restore = \"ip6tables-legacy-restore\"\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let v4 = r.pair.v4();
    let s = r.server("server.log", &["--config", &conf]);
    r.send(v4.cli, v4.srv, &["--open", "22", "-d", "300"]);
    s.expect_lines(&["accepted open"], 1);
    r.expect_connect(v4.cli, v4.srv, true, "before the reload", &s);

    r.pair.srv_sh(&format!(
        "iptables-legacy-restore < {} && ip6tables-legacy-restore < {}",
        saved4.display(),
        saved6.display()
    ));
    r.expect_connect(v4.cli, v4.srv, false, "legacy: gone after the reload", &s);
    r.send(v4.cli_b, v4.srv, &["--open", "22"]);
    s.expect_lines(&["accepted open", &format!("src={}", v4.cli_b)], 1);
    s.expect_lines(
        &[
            "firewall reloaded by someone else",
            "retrying the batch once",
        ],
        1,
    );
    r.expect_connect(
        v4.cli_b,
        v4.srv,
        true,
        "the request that met the reload",
        &s,
    );
    r.expect_connect(v4.cli, v4.srv, true, "the earlier grant, re-added", &s);
    r.done("iptables_legacy_reload_is_repaired_by_the_next_request");
}

/// `iptables -F SPA` by hand keeps our jump but empties the chain: the
/// missing drop rule tells the daemon, which puts the grant back.
#[test]
fn a_flushed_chain_gets_its_grant_back_within_1s() {
    let r = Testbed::new(214, "fwreload", "iptables", SID, &["alice"]);
    let v4 = r.pair.v4();
    let s = r.server("server.log", &[]);
    r.send(v4.cli, v4.srv, &["--open", "22", "-d", "300"]);
    s.expect_lines(&["accepted open"], 1);
    r.expect_connect(v4.cli, v4.srv, true, "before the flush", &s);
    r.pair.srv_sh("iptables -w -F SPA");
    assert!(
        r.pair
            .wait_connect(v4.cli, v4.srv, PORT, true, Duration::from_secs(1)),
        "the grant was not back within 1 s of `iptables -F SPA`; log:\n{}",
        s.log_text()
    );
    s.expect_lines(&["firewall reloaded by someone else"], 1);
    r.done("a_flushed_chain_gets_its_grant_back_within_1s");
}
