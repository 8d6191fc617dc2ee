//! One instance (issue 10, item 2): a second `spa-server` with the same
//! state directory refuses to start, naming the first one's PID, and changes
//! nothing; `spa-server flush` by hand refuses while the daemon runs unless
//! `--force` (and then the running daemon re-installs what it flushed).
//! The real daemon and firewall tools, both backends.
//!
//! Namespace ids 200, 201 (engineer F's range is 200..=219).

use spa_e2e::{bin, Server, Testbed};
use std::time::Duration;

const SID: &str = "e2e-instance";

fn second_instance_and_flush(id: u8, backend: &'static str) {
    let r = Testbed::new(id, "instance", backend, SID, &["alice"]);
    let v4 = r.pair.v4();
    let (cli, srv) = (v4.cli, v4.srv);
    let s = r.server("first.log", &[]);
    r.send(cli, srv, &["--open", "22", "-d", "300"]);
    s.expect_lines(&["accepted open"], 1);
    r.expect_connect(cli, srv, true, "after the first daemon's open", &s);
    let snap = r.pair.firewall_snapshot(backend);

    // The second instance: same arguments, same state directory.
    let state = r.state_dir().display().to_string();
    let args = r.server_args_with_key();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut second = Server::spawn(&r.pair, &r.dir.join("second.log"), &args);
    assert!(
        spa_e2e::wait_for(Duration::from_secs(10), || !second.is_running()),
        "the second instance must exit; log:\n{}",
        second.log_text()
    );
    let pid = s.pid().expect("first daemon's pid").to_string();
    let text = second.log_text();
    assert!(
        text.contains(&format!("PID {pid}")) && text.contains("error"),
        "the refusal must name the running PID {pid}:\n{text}"
    );
    assert_eq!(
        r.pair.firewall_snapshot(backend),
        snap,
        "the second instance changed the firewall"
    );
    r.expect_connect(cli, srv, true, "after the second instance", &s);

    // flush by hand while the daemon runs: refused, nothing changes.
    let server = bin("spa-server");
    let server = server.to_str().expect("utf-8 path");
    let flush = |extra: &[&str]| {
        let mut argv = vec![
            server,
            "--state-dir",
            &state,
            "--firewall",
            backend,
            "flush",
        ];
        argv.extend_from_slice(extra);
        r.pair.srv(&argv).output().expect("run spa-server flush")
    };
    let out = flush(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "flush must refuse: {err}");
    assert!(
        err.contains(&format!("PID {pid}")) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(r.pair.firewall_snapshot(backend), snap, "flush changed it");
    r.expect_connect(cli, srv, true, "after the refused flush", &s);

    // With --force it flushes.
    let out = flush(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("flushed every"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running daemon sees its chain vanish and puts it back with its
    // live grant (issue 10, item 1): a forced flush does not strand it.
    s.expect_lines(&["firewall reloaded by someone else"], 1);
    r.expect_connect(
        cli,
        srv,
        true,
        "the daemon re-installed after flush --force",
        &s,
    );
    r.done(&format!("second_instance_and_flush {backend}"));
}

#[test]
fn second_instance_refused_and_flush_needs_force_iptables() {
    second_instance_and_flush(200, "iptables");
}

#[test]
fn second_instance_refused_and_flush_needs_force_nftables() {
    second_instance_and_flush(201, "nftables");
}
