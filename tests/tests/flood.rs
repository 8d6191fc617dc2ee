//! The flood tool of the scale benchmarks (`spa-flood`, issue 14) against
//! the real daemon: it refuses to leave the test namespaces, and a short
//! forgery flood and a replay flood are each judged in full (what the
//! daemon saw plus what the kernel dropped is what was sent), after which a
//! valid datagram still opens. Speeds are not asserted here: that is
//! `scripts/scale-flood.sh` (docs/benchmarks.md).
//!
//! Namespace ids 170-171 (engineer h5's range is 170-179).

use serde_json::Value;
use spa_e2e::{bin, Testbed, PORT};
use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

/// Datagrams per flood: a few rounds of the daemon's 4,096-packet drain,
/// quick in a debug build.
const N: u64 = 20_000;

fn flood(r: &Testbed, args: &[&str]) -> Output {
    let tool = bin("spa-flood").display().to_string();
    let mut argv = vec![tool.as_str()];
    argv.extend_from_slice(args);
    r.pair
        .cli(&argv)
        .output()
        .expect("run spa-flood in the client namespace")
}

fn counters(r: &Testbed) -> Value {
    let server = bin("spa-server").display().to_string();
    let state = r.state_dir().display().to_string();
    let out = r
        .pair
        .srv(&[&server, "--state-dir", &state, "status", "--json"])
        .output()
        .expect("run spa-server status");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "status --json ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["counters"].clone()
}

fn count(c: &Value, path: &[&str]) -> u64 {
    path.iter().fold(c, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// Waits until the daemon has seen or lost every datagram sent so far
/// (frames + kernel drops reach `sent`), at most 20 s.
fn settled(r: &Testbed, sent: u64) -> Value {
    let mut c = counters(r);
    for _ in 0..100 {
        if count(&c, &["frames"]) + count(&c, &["kernel_drops"]) >= sent {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        c = counters(r);
    }
    c
}

#[test]
fn spa_flood_refuses_the_host_namespace_and_other_destinations() {
    spa_e2e::require_root();
    // The host's own namespace: refused before any socket exists.
    let out = std::process::Command::new(bin("spa-flood"))
        .args([
            "198.18.170.2",
            "--key-id",
            "0011223344556677",
            "--count",
            "1",
        ])
        .output()
        .expect("run spa-flood");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ip netns exec"), "{err}");

    let r = Testbed::new(170, "flood", "iptables", "e2e-flood", &["alice"]);
    for dst in ["8.8.8.8", "198.51.100.1", "2001:db9::1", "::1"] {
        let out = flood(&r, &[dst, "--key-id", "0011223344556677", "--count", "1"]);
        assert_eq!(out.status.code(), Some(2), "{dst}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refusing destination"), "{dst}: {err}");
    }
}

#[test]
fn a_forgery_flood_and_a_replay_flood_are_judged_and_a_valid_datagram_opens_after() {
    spa_e2e::require_root();
    let r = Testbed::new(171, "flood", "iptables", "e2e-flood", &["alice"]);
    let (cli, srv): (IpAddr, IpAddr) = (r.pair.cli_ip4.into(), r.pair.srv_ip4.into());
    let mut s = r.server("server.log", &[]);
    let (src, dst, n) = (cli.to_string(), srv.to_string(), N.to_string());
    // Both datagram sockets (IPv4, IPv6) read through a receive ring, made
    // by the privileged side and mapped by the sandboxed network side.
    assert_eq!(
        s.lines_with(&["capture open", "rings=2"]).len(),
        1,
        "{}",
        s.log_text()
    );

    // Forgeries with alice's key-id: each one an AEAD open, auth_failed.
    let probe = r.dir.join("probe.bin");
    r.seal(&probe, &["--open", "22"]);
    let p = probe.display().to_string();
    let common = ["--from", &src, "--count", &n, "--seconds", "30"];
    let out = flood(
        &r,
        &[&[dst.as_str(), "--header-of", &p][..], &common].concat(),
    );
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with(&format!("sent {N} datagrams")), "{said}");
    let c = settled(&r, N);
    let (frames, drops) = (count(&c, &["frames"]), count(&c, &["kernel_drops"]));
    eprintln!(
        "forgery flood: {} seen {frames}, kernel drops {drops}",
        said.trim()
    );
    assert_eq!(
        frames + drops,
        N,
        "every datagram seen or counted lost: {c}"
    );
    assert_eq!(count(&c, &["rejects", "auth_failed"]), frames, "{c}");

    // Copies of one valid datagram: the first opens, every other is a replay.
    let out = flood(&r, &[&[dst.as_str(), "--replay", &p][..], &common].concat());
    assert!(out.status.success(), "{out:?}");
    let c = settled(&r, 2 * N);
    let (frames, drops) = (count(&c, &["frames"]), count(&c, &["kernel_drops"]));
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "then a replay flood: {} seen {frames}, kernel drops {drops} in all",
        said.trim()
    );
    assert_eq!(frames + drops, 2 * N, "{c}");
    let (accepted, replayed) = (
        count(&c, &["datagrams_accepted"]),
        count(&c, &["rejects", "replayed"]),
    );
    assert_eq!(
        accepted + replayed,
        frames - count(&c, &["rejects", "auth_failed"]),
        "{c}"
    );
    assert!(accepted <= 1, "one datagram opens at most once: {c}");

    // A fresh valid datagram right after both floods opens (closed first:
    // the replayed datagram's first copy opened it).
    r.send(cli, srv, &["--close", "22"]);
    assert!(
        r.pair
            .wait_connect(cli, srv, PORT, false, Duration::from_secs(10)),
        "closed before the last open: {}",
        s.log_text()
    );
    r.send(cli, srv, &["--open", "22"]);
    assert!(
        r.pair
            .wait_connect(cli, srv, PORT, true, Duration::from_secs(10)),
        "a valid datagram after the floods must open: {}",
        s.log_text()
    );
    s.stop();
}
