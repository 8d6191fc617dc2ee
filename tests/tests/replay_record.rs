//! The replay record under a key holder's attack (issue 16, findings 3 and
//! 9), end to end: the real daemon and iptables in namespaces, datagrams
//! sealed here with the testbed's real keys.
//!
//! Namespace ids 100 and 101.

use spa_e2e::{unix_now, Family, Testbed};
use spa_keys::KeyFile;
use spa_proto::{seal_with, Action, AllowAddr, Grant, Grants, Request, ServerId};

const SID: &str = "e2e-gw";

/// `count` datagrams of `key` asking for tcp/443, each with its own nonce,
/// stamped now, one after the other in one buffer.
fn sealed_443(tb: &Testbed, key: &str, count: u32) -> Vec<u8> {
    let kf = KeyFile::read(&tb.key_path(key)).expect("read key");
    let keys = kf.key.derive();
    let req = Request {
        action: Action::Open,
        timestamp: unix_now(),
        duration_secs: 0,
        allow: AllowAddr::Source,
        server: ServerId::from_name(SID),
        grants: Grants::new(&[Grant::tcp(443).expect("grant")]).expect("grants"),
    };
    let mut out = Vec::new();
    for n in 0..count {
        let mut nonce = [0u8; 24];
        nonce[..4].copy_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&seal_with(&keys, &req, &nonce, &[0x5a; 16]));
    }
    out
}

/// Sends `file`'s datagrams (140 bytes each) from `src` in one process.
const PY_SEND: &str = "import socket,sys
src,dst,f=sys.argv[1],sys.argv[2],sys.argv[3]
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src,0))
b=open(f,'rb').read()
for i in range(0,len(b),140):
    s.sendto(b[i:i+140],(dst,62201))
";

/// Finding 3: bob floods policy-denied datagrams. They fill bob's share of
/// the replay record only: alice's datagram right after is accepted (it
/// was `replay_record_full` when the record was one global pool), and the
/// denial lines are rate-limited like rejections (each was logged before).
#[test]
fn one_keys_denied_flood_locks_out_no_other_key_and_no_log_flood() {
    let tb = Testbed::new(100, "replay", "iptables", SID, &["alice", "bob"]);
    let Family { cli, srv, .. } = tb.pair.v4();
    let conf = tb.dir.join("server.toml");
    // Capacity 256 for two keys: a share of 128 each. Bob's token bucket
    // is opened wide, so only the record and the log limiter are at work.
    std::fs::write(
        &conf,
        format!(
            "replay_capacity = 256\n\
             [[key]]\nname = \"alice\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\n\
             [[key]]\nname = \"bob\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\n\
             rate_per_minute = 60000\nrate_burst = 10000\n",
            tb.key_path("alice").display(),
            tb.key_path("bob").display()
        ),
    )
    .expect("write config");
    let conf = conf.display().to_string();
    let s = tb.server_without_key("server.log", &["--config", &conf]);

    let flood = tb.dir.join("flood.bin");
    let count = 300;
    std::fs::write(&flood, sealed_443(&tb, "bob", count)).expect("write flood");
    let st = tb
        .pair
        .cli(&[
            "python3",
            "-c",
            PY_SEND,
            &cli.to_string(),
            &srv.to_string(),
            &flood.display().to_string(),
        ])
        .status()
        .expect("python3");
    assert!(st.success());

    // Datagrams are judged in order: once alice's is, bob's all were.
    tb.send_with_key(
        &tb.key_path("alice").display().to_string(),
        cli,
        srv,
        &["--open", "22"],
    );
    s.expect_lines(&["accepted open", "key=alice"], 1);
    tb.expect_connect(cli, srv, true, "alice after bob's flood", &s);
    // Bob's share (128) filled and stopped there; every recorded datagram,
    // denied or accepted, is in the log (8-byte header, 44-byte records).
    let log_len = std::fs::metadata(tb.state_dir().join("replay.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(log_len, 8 + (128 + 1) * 44, "{}", s.log_text());
    let denials = s.lines_with(&["rejected", "may not open"]).len();
    assert!(
        (1..=100).contains(&denials),
        "{denials} denial lines for 128 denials: not rate-limited"
    );
    tb.done("denied flood");
}

/// Finding 9: bob's denied tcp/443 datagram, replayed after the admin
/// allowed tcp/443 and restarted, stays refused (it was persisted when it
/// was denied; before, only accepted datagrams were, and it opened).
#[test]
fn a_denied_datagram_stays_refused_after_a_restart_and_a_policy_change() {
    let tb = Testbed::new(101, "replay", "iptables", SID, &["alice"]);
    let Family { cli, srv, .. } = tb.pair.v4();
    let dg = tb.dir.join("open443.bin");
    std::fs::write(&dg, sealed_443(&tb, "alice", 1)).expect("write datagram");

    let mut s = tb.server("server1.log", &[]);
    tb.raw_send(&dg, cli, srv);
    s.expect_lines(&["rejected", "may not open"], 1);
    assert!(s.stop().expect("exit on SIGTERM").success());

    let s2 = tb.server_without_key(
        "server2.log",
        &["--key", &tb.key, "--allow", "tcp/22,tcp/443"],
    );
    let before = tb.pair.iptables_snapshot();
    tb.raw_send(&dg, cli, srv);
    s2.expect_lines(&["rejected", "replayed"], 1);
    assert!(s2.lines_with(&["accepted"]).is_empty(), "{}", s2.log_text());
    assert_eq!(tb.pair.iptables_snapshot(), before, "nothing added");
    tb.done("denied replay");
}

/// Finding 7: a state directory that group or others may write (where a
/// local user could plant a symlink for the daemon to write through) stops
/// the daemon at start with an error naming the path and the fix, before
/// the firewall is touched; after `chmod go-w` it starts.
#[test]
fn a_state_directory_others_may_write_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let tb = Testbed::new(102, "replay", "iptables", SID, &["alice"]);
    let state = tb.state_dir();
    std::fs::create_dir(&state).expect("create state dir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let before = tb.pair.iptables_snapshot();
    let server = spa_e2e::bin("spa-server");
    let st = state.display().to_string();
    let out = tb
        .pair
        .srv(&[
            "timeout",
            "10",
            server.to_str().expect("utf-8 path"),
            "--key",
            &tb.key,
            "--server-id",
            SID,
            "--interface",
            &tb.pair.srv_if,
            "--state-dir",
            &st,
        ])
        .output()
        .expect("spawn spa-server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&st) && err.contains("chmod go-w"), "{err}");
    assert_eq!(tb.pair.iptables_snapshot(), before, "firewall touched");

    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let s = tb.server("server.log", &[]);
    assert!(s.log_text().contains("replay record"), "{}", s.log_text());
    tb.done("state dir mode");
}

/// Finding 16: alice's token bucket (burst 3, one token a minute: nothing
/// refills during the test) lets 3 of her 10 new datagrams through; the
/// other 7 are refused `rate_limited`, add nothing to the firewall, and are
/// counted in the totals at stop.
#[test]
fn a_keys_token_bucket_refuses_datagrams_over_its_rate() {
    let tb = Testbed::new(103, "replay", "iptables", SID, &["alice"]);
    let Family { cli, srv, .. } = tb.pair.v4();
    let conf = tb.dir.join("server.toml");
    std::fs::write(
        &conf,
        format!(
            "[[key]]\nname = \"alice\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\n\
             rate_per_minute = 1\nrate_burst = 3\n",
            tb.key
        ),
    )
    .expect("write config");
    let conf = conf.display().to_string();
    let mut s = tb.server_without_key("server.log", &["--config", &conf]);
    for _ in 0..10 {
        tb.send(cli, srv, &["--open", "22"]);
    }
    s.expect_lines(&["rejected", "rate_limited"], 7);
    assert_eq!(
        s.lines_with(&["accepted open"]).len(),
        3,
        "{}",
        s.log_text()
    );
    assert_eq!(tb.grant_rules("iptables").len(), 1, "one grant, refreshed");
    assert!(s.stop().expect("exit on SIGTERM").success());
    assert_eq!(
        s.lines_with(&["totals since start", "datagrams_rate_limited=7"])
            .len(),
        1,
        "{}",
        s.log_text()
    );
    tb.done("rate limit");
}
