//! A key's `from` and `expires` end to end (issue 15, items 1 and 2): the
//! real daemon, client and iptables in a pair of network namespaces.
//! A key used from outside its networks, or after its expiry, opens nothing
//! and says why, naming the key; a grant of a key about to expire ends at the
//! expiry instant in the kernel, with the daemon killed.
//!
//! Namespace id 240 (engineer H's range is 240..=250, then 90..=99). Every
//! wait is bounded; the server is killed on drop and the namespaces are
//! deleted, also when a test fails.

use spa_e2e::{bin, run_ok, unix_now, wait_for, Testbed};
use std::time::Duration;

const SID: &str = "e2e-rules";

#[test]
fn from_and_expires_bind_the_real_daemon() {
    let r = Testbed::new(240, "rules", "iptables", SID, &["alice", "bob", "carol"]);
    let v4 = r.pair.v4();
    let (cli, cli_b, srv) = (v4.cli, v4.cli_b, v4.srv);
    // carol expires in 12 s (a date-time, UTC); bob expired in 2020.
    let carol_ends = unix_now() + 12;
    let carol_text = spa_server::policy::utc_text(carol_ends);
    let key = |n: &str| r.key_path(n).display().to_string();
    let conf = r.dir.join("server.toml");
    std::fs::write(
        &conf,
        format!(
            "[[key]]\nname = \"alice\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\nfrom = [\"{cli}/32\"]\n\n\
             [[key]]\nname = \"bob\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\nexpires = 2020-01-01\n\n\
             [[key]]\nname = \"carol\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\nexpires = {carol_text}\n",
            key("alice"),
            key("bob"),
            key("carol"),
        ),
    )
    .expect("write server.toml");
    let conf = conf.display().to_string();

    // check-config names both: bob expired, carol within 7 days.
    let out = run_ok(&mut r.pair.srv(&[
        bin("spa-server").to_str().expect("utf-8 path"),
        "--config",
        &conf,
        "check-config",
    ]));
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("key alice") && out.contains(&format!("from {cli}/32")),
        "{out}"
    );
    assert!(
        out.contains("warning: key `bob` expired at 2020-01-02T00:00:00Z"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "warning: key `carol` expires at {carol_text} (in 0 d 0 h)"
        )),
        "{out}"
    );

    let s = r.server_without_key("server.log", &["--config", &conf]);
    // The start warning, once per key about to expire.
    assert_eq!(
        s.lines_with(&["WARN", "key_expiring", "`carol` expires at"])
            .len(),
        1,
        "{}",
        s.log_text()
    );

    // alice from her network: open. From the other address: denied, named.
    r.send_with_key(&key("alice"), cli, srv, &["--open", "22"]);
    r.expect_connect(cli, srv, true, "alice from her network", &s);
    r.send_with_key(&key("alice"), cli_b, srv, &["--open", "22"]);
    s.expect_lines(
        &[
            "reason=\"source_not_allowed\"",
            "key=\"alice\"",
            &format!("may not be used from {cli_b}"),
            &format!("may be used from {cli}/32 (from)"),
        ],
        1,
    );
    assert!(
        !r.connects(cli_b, srv),
        "alice's key from outside `from` opened {cli_b}: {}",
        s.log_text()
    );

    // bob after his expiry: denied with its own reason.
    r.send_with_key(&key("bob"), cli_b, srv, &["--open", "22"]);
    s.expect_lines(&["reason=\"key_expired\"", "key=\"bob\""], 1);
    assert!(!r.connects(cli_b, srv), "bob's expired key opened");

    // carol asks for 300 s; her grant ends at her expiry, in the kernel.
    r.send_with_key(&key("carol"), cli_b, srv, &["--open", "22", "-d", "300"]);
    s.expect_lines(&["accepted open", "capped to key carol's expires"], 1);
    r.expect_connect(cli_b, srv, true, "carol before her expiry", &s);
    let rules = r.grant_rules("iptables");
    assert!(
        rules
            .iter()
            .any(|l| l.contains(&format!(" {cli_b},tcp:22 "))
                && l.contains(&format!("exp={carol_ends}\""))),
        "carol's grant must end at {carol_ends}: {rules:?}"
    );
    // SIGKILL: no daemon left to remove the rule; the kernel ends it.
    drop(s);
    assert!(
        wait_for(Duration::from_secs(20), || unix_now() > carol_ends),
        "clock"
    );
    assert!(
        !r.connects(cli_b, srv),
        "carol's grant outlived her expiry: {:?}",
        r.grant_rules("iptables")
    );
    // The kernel ended carol's set entry (its timeout), with no process.
    let left = r.grant_rules("iptables");
    assert!(
        !left
            .iter()
            .any(|l| l.contains(&format!(" {cli_b},tcp:22 "))),
        "{left:?}"
    );
    r.done("from_and_expires_bind_the_real_daemon");
}
