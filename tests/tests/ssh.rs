//! The README's ssh recipe with the real OpenSSH (issue 12): `sshd` runs in
//! the server namespace behind the REJECT baseline, `ssh` in the client
//! namespace with a throwaway key and known_hosts and the recipe's
//! `Match originalhost gw1 exec "spa-client send --wait %n"`. A plain
//! `ssh gw1 true` succeeds with spa-server running and fails cleanly, in
//! bounded time, without it.
//!
//! Namespace id 163. No sshd runs outside the test's namespace: it is
//! started with `ip netns exec` (and a mount namespace of its own),
//! listens on the namespace's address only, and dies with the namespace
//! (NetPair's drop) or the guard.

use spa_e2e::sshd::{require_openssh, start_sshd, SSH};
use spa_e2e::{bin, keygen, NetPair, Scratch, Server};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `ssh -F CONFIG gw1 <argv>` in the client namespace, bounded by
/// `timeout`, with HOME in the scratch directory.
fn ssh(pair: &NetPair, dir: &Scratch, argv: &[&str]) -> (Output, Duration) {
    let cfg = dir.join("ssh_config").display().to_string();
    let mut a = vec!["timeout", "30", SSH, "-F", &cfg, "gw1"];
    a.extend_from_slice(argv);
    let t = Instant::now();
    let o = pair
        .cli(&a)
        .env("HOME", &dir.path)
        .stdin(Stdio::null())
        .output()
        .expect("spawn ssh");
    (o, t.elapsed())
}

#[test]
fn ssh_gw1_sends_the_datagram_waits_and_connects() {
    require_openssh();
    let pair = NetPair::new(163);
    pair.iptables_baseline(22);
    let dir = Scratch::new("ssh163");
    let srv = pair.srv_ip4.to_string();

    // The server side: a throwaway host key and sshd on the namespace's
    // address only.
    let sshd = start_sshd(&dir, &[&format!("{srv}:22")], |a| pair.srv(a));
    let sshd_log = || std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
    let d = dir.path.display();

    // The client side: a spa key and profile, the known host, and the
    // README's recipe.
    let key = keygen(&dir.join("alice.key"), "alice", "gw1");
    write(
        &dir.join("client.toml"),
        &format!("[server.gw1]\nhost = \"{srv}\"\nkey = \"{key}\"\nopen = [\"tcp/22\"]\n"),
    );
    let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).expect("host key");
    let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    write(
        &dir.join("known_hosts"),
        &format!("{srv} {}\n", host_pub.join(" ")),
    );
    // The recipe's Match line as the README has it; only the client's
    // path and the scratch configuration are filled in.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let recipe = readme
        .lines()
        .find(|l| l.starts_with("Match originalhost gw1 exec \"spa-client send"))
        .expect("README.md has the ssh recipe's Match line");
    let client = format!(
        "{} send --config {d}/client.toml",
        bin("spa-client").display()
    );
    let recipe = recipe.replacen("spa-client send", &client, 1);
    write(
        &dir.join("ssh_config"),
        &format!(
            "Host gw1\n  HostName {srv}\n  User root\n  IdentityFile {d}/id_ed25519\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  \
             GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  \
             ConnectTimeout 5\n\n{recipe}\n"
        ),
    );

    // Without spa-server: the datagram goes nowhere, --wait gives up after
    // 5 s with its diagnosis, and ssh meets the REJECT: a clean failure.
    let (o, took) = ssh(&pair, &dir, &["true"]);
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!(
        "--- ssh gw1 true, no spa-server ({:.1} s, {}):\n{err}",
        took.as_secs_f64(),
        o.status
    );
    assert!(!o.status.success(), "ssh must fail without spa-server");
    assert_eq!(
        o.status.code(),
        Some(255),
        "ssh's own failure, not the timeout: {err}"
    );
    assert!(took < Duration::from_secs(15), "bounded: {took:?}");
    assert!(
        err.contains("did not open within 5 s"),
        "the diagnosis shows: {err}"
    );
    assert!(err.contains("Connection refused"), "{err}");

    // With spa-server: the same command sends, waits for the port and logs in.
    let state = dir.join("state").display().to_string();
    let s = Server::start(
        &pair,
        &dir.join("server.log"),
        &[
            "--interface",
            &pair.srv_if,
            "--server-id",
            "gw1",
            "--state-dir",
            &state,
            "--firewall",
            "iptables",
            "--key",
            &key,
            "--allow",
            "tcp/22",
        ],
    );
    let (o, took) = ssh(&pair, &dir, &["echo", "hello-from-gw1"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    eprintln!(
        "--- ssh gw1 echo, spa-server up ({:.2} s, {}):\n{out}{err}",
        took.as_secs_f64(),
        o.status
    );
    assert!(
        o.status.success(),
        "ssh gw1 must log in through the grant: {err}\nserver:\n{}\nsshd:\n{}",
        s.log_text(),
        sshd_log()
    );
    assert_eq!(out.trim(), "hello-from-gw1");
    s.expect_lines(&["accepted open", "grants=tcp/22"], 1);
    assert!(
        sshd_log().contains("Accepted publickey for root"),
        "{}",
        sshd_log()
    );
    drop(sshd);
}
