//! Revocation on reload (issue 10, item 3): removing a key and reloading
//! (SIGHUP) ends that key's live grant at once while another key's grant
//! stays; lowering a key's `max_duration` shortens its live grant. One log
//! line per revoked grant. The real daemon, both backends.
//!
//! Namespace ids 211, 212 (engineer F's range is 200..=219).

use spa_e2e::{Testbed, PORT};
use std::time::{Duration, Instant};

const SID: &str = "e2e-revoke";

fn write_config(r: &Testbed, keys: &[(&str, u32)]) -> String {
    let mut t = String::new();
    for (name, max) in keys {
        t.push_str(&format!(
            "[[key]]\nname = \"{name}\"\nfile = \"{}\"\nallow = [\"tcp/{PORT}\"]\nmax_duration = {max}\n\n",
            r.key_path(name).display()
        ));
    }
    let p = r.dir.join("server.toml");
    std::fs::write(&p, t).expect("write server.toml");
    p.display().to_string()
}

fn hup(pid: u32) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(st.success());
}

fn revoke_on_reload(id: u8, backend: &'static str) {
    let r = Testbed::new(id, "revoke", backend, SID, &["alice", "bob"]);
    let v4 = r.pair.v4();
    let conf = write_config(&r, &[("alice", 300), ("bob", 300)]);
    let s = r.server_without_key("server.log", &["--config", &conf]);
    let pid = s.pid().expect("pid");
    let bob = r.key_path("bob").display().to_string();
    r.send(v4.cli, v4.srv, &["--open", "22", "-d", "300"]);
    r.send_with_key(&bob, v4.cli_b, v4.srv, &["--open", "22", "-d", "300"]);
    s.expect_lines(&["accepted open"], 2);
    r.expect_connect(v4.cli, v4.srv, true, "alice before", &s);
    r.expect_connect(v4.cli_b, v4.srv, true, "bob before", &s);

    // bob removed: his grant ends at once, alice's stays.
    write_config(&r, &[("alice", 300)]);
    hup(pid);
    s.expect_lines(
        &["grant revoked on reload", "key bob is no longer configured"],
        1,
    );
    assert!(
        r.pair
            .wait_connect(v4.cli_b, v4.srv, PORT, false, Duration::from_secs(1)),
        "bob's grant survived his removal; log:\n{}",
        s.log_text()
    );
    r.expect_connect(
        v4.cli,
        v4.srv,
        true,
        "alice's grant after bob's removal",
        &s,
    );
    assert_eq!(s.lines_with(&["grant revoked on reload"]).len(), 1);

    // alice's max_duration lowered to 3 s: her 300 s grant now ends within it.
    write_config(&r, &[("alice", 3)]);
    let lowered = Instant::now();
    hup(pid);
    s.expect_lines(
        &[
            "grant shortened on reload",
            "key alice",
            "max_duration is now 3 s",
        ],
        1,
    );
    r.expect_connect(v4.cli, v4.srv, true, "alice right after the shortening", &s);
    assert!(
        r.pair
            .wait_connect(v4.cli, v4.srv, PORT, false, Duration::from_secs(8)),
        "alice's grant outlived her new max_duration; log:\n{}",
        s.log_text()
    );
    assert!(
        lowered.elapsed() <= Duration::from_secs(5),
        "closed {:?} after the reload",
        lowered.elapsed()
    );
    r.done(&format!("revoke_on_reload {backend}"));
}

#[test]
fn reload_revokes_a_removed_keys_grant_and_shortens_iptables() {
    revoke_on_reload(211, "iptables");
}

#[test]
fn reload_revokes_a_removed_keys_grant_and_shortens_nftables() {
    revoke_on_reload(212, "nftables");
}
