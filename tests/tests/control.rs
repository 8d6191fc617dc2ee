//! The control socket (issue 11): `spa-server status` shows grants opened
//! by a datagram, an HMAC knock and a legacy door, with owner and a time
//! left that counts down; `spa-server revoke` by address and by key ends
//! exactly those grants; the socket refuses other users; malformed,
//! oversized and silent clients get an error or are dropped, never a
//! crash or a stall. The real daemon, both backends.
//!
//! Namespace ids 80..=82 (engineer I's range is 80..=89, 225..=235).

use serde_json::Value;
use spa_e2e::{bin, run_ok, Server, Testbed, PORT};
use std::net::IpAddr;
use std::time::{Duration, Instant};

const SID: &str = "e2e-control";
const KNOCK: &str = "/usr/bin/knock";

fn write_config(r: &Testbed) -> String {
    let mut t = String::new();
    for name in ["alice", "bob"] {
        t.push_str(&format!(
            "[[key]]\nname = \"{name}\"\nfile = \"{}\"\nallow = [\"tcp/{PORT}\"]\nmax_duration = 300\n\n",
            r.key_path(name).display()
        ));
    }
    t.push_str(
        "[legacy]\nenabled = true\n\n[[legacy.door]]\nname = \"openSSH\"\nsequence = \"7000,8000,9000\"\n\
         open = \"tcp/22\"\nduration = 200\n\n[legacy.hmac]\nenabled = true\n",
    );
    let p = r.dir.join("server.toml");
    std::fs::write(&p, t).expect("write server.toml");
    p.display().to_string()
}

/// `spa-server --config CONF --state-dir STATE <args>` in the server
/// namespace: (exit code, stdout, stderr).
fn ctl(r: &Testbed, conf: &str, args: &[&str]) -> (i32, String, String) {
    let server = bin("spa-server").display().to_string();
    let state = r.state_dir().display().to_string();
    let mut argv = vec![server.as_str(), "--config", conf, "--state-dir", &state];
    argv.extend_from_slice(args);
    let out = r.pair.srv(&argv).output().expect("run spa-server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_json(r: &Testbed, conf: &str) -> Value {
    let (code, out, err) = ctl(r, conf, &["status", "--json"]);
    assert_eq!(code, 0, "status --json failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The grants of `v` as (owner_kind, owner, address, via) rows, sorted.
fn rows(v: &Value) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = v["grants"]
        .as_array()
        .expect("grants array")
        .iter()
        .map(|g| {
            let s = |k: &str| g[k].as_str().unwrap_or("?").to_owned();
            (s("owner_kind"), s("owner"), s("address"), s("via"))
        })
        .collect();
    out.sort();
    out
}

fn row(kind: &str, owner: &str, addr: IpAddr, via: &str) -> (String, String, String, String) {
    (kind.into(), owner.into(), addr.to_string(), via.into())
}

fn status_and_revoke(id: u8, backend: &'static str) {
    assert!(
        std::path::Path::new(KNOCK).exists(),
        "{KNOCK} missing: apt-get install knockd"
    );
    let r = Testbed::new(id, "control", backend, SID, &["alice", "bob"]);
    let v4 = r.pair.v4();
    let conf = write_config(&r);

    // No daemon yet: a clear message and exit 1.
    let (code, _, err) = ctl(&r, &conf, &["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no spa-server is running"), "{err}");

    let s = r.server_without_key("server.log", &["--config", &conf]);
    let sock = r.state_dir().join("control.sock");
    let mode = std::fs::metadata(&sock).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.ok(), Some(0o600), "control socket mode");

    // A datagram (alice, from B), an HMAC knock (bob, from B), a door (from A).
    let bob = r.key_path("bob").display().to_string();
    r.send(v4.cli_b, v4.srv, &["--open", "22", "-d", "300"]);
    let (b, srv) = (v4.cli_b.to_string(), v4.srv.to_string());
    r.client(&["knock", "--key", &bob, "--source", &b, &srv]);
    run_ok(
        &mut r
            .pair
            .cli(&["timeout", "20", KNOCK, &srv, "7000", "8000", "9000"]),
    );
    s.expect_lines(&["accepted open"], 1);
    s.expect_lines(&["knock accepted: rule added"], 2);

    let first = status_json(&r, &conf);
    assert_eq!(first["schema"], 1);
    assert_eq!(first["server_id"], SID);
    assert_eq!(first["backend"], backend);
    assert_eq!(
        rows(&first),
        vec![
            row("door", "openSSH", v4.cli, "door"),
            row("key", "alice", v4.cli_b, "datagram"),
            row("key", "bob", v4.cli_b, "hmac_knock"),
        ],
        "{first}"
    );
    let c = &first["counters"];
    assert_eq!(c["datagrams_accepted"], 1, "{c}");
    assert_eq!(c["knocks_accepted"], 2, "{c}");
    assert!(c["frames"].as_u64().unwrap_or(0) >= 1 + 5 + 3, "{c}");
    let left = |v: &Value, owner: &str| {
        v["grants"]
            .as_array()
            .and_then(|a| a.iter().find(|g| g["owner"] == owner))
            .and_then(|g| g["time_left_secs"].as_u64())
            .unwrap_or_else(|| panic!("no grant of {owner}: {v}"))
    };
    let alice_left = left(&first, "alice");
    assert!((295..=301).contains(&alice_left), "{alice_left}");
    assert!(left(&first, "openSSH") <= 201);

    // The text form names owners, addresses and how.
    let (code, text, err) = ctl(&r, &conf, &["status"]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "key alice",
        "key bob",
        "door openSSH",
        "hmac_knock",
        "tcp/22",
        "grants: 3",
    ] {
        assert!(text.contains(want), "status lacks {want:?}:\n{text}");
    }
    eprintln!("{text}");

    // Time left counts down.
    std::thread::sleep(Duration::from_millis(2100));
    let later = status_json(&r, &conf);
    let now_left = left(&later, "alice");
    assert!(
        now_left + 2 <= alice_left && now_left + 4 >= alice_left,
        "time left {alice_left} then {now_left} 2.1 s later"
    );

    // Revoke by key: bob's HMAC grant goes, alice's grant of the same
    // address and port stays (B still connects).
    let (code, out, err) = ctl(&r, &conf, &["revoke", "--key", "bob"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked 1 grant"), "{out}");
    s.expect_lines(&["grant revoked by hand", "key bob"], 1);
    assert_eq!(
        rows(&status_json(&r, &conf)),
        vec![
            row("door", "openSSH", v4.cli, "door"),
            row("key", "alice", v4.cli_b, "datagram"),
        ]
    );
    r.expect_connect(
        v4.cli_b,
        v4.srv,
        true,
        "alice's grant after bob's revoke",
        &s,
    );

    // Revoke by address: A's door grant goes, A is refused at once.
    let a = v4.cli.to_string();
    let (code, out, err) = ctl(&r, &conf, &["revoke", "--address", &a]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked 1 grant"), "{out}");
    let after = status_json(&r, &conf);
    assert_eq!(
        rows(&after),
        vec![row("key", "alice", v4.cli_b, "datagram")]
    );
    assert_eq!(after["counters"]["grants_revoked"], 2);
    assert!(
        r.pair
            .wait_connect(v4.cli, v4.srv, PORT, false, Duration::from_secs(1)),
        "A still connects after revoke --address; log:\n{}",
        s.log_text()
    );
    r.expect_connect(v4.cli_b, v4.srv, true, "B after A's revoke", &s);

    // SIGUSR1 logs the status line and keeps the daemon (before: exit 138,
    // chain left behind).
    let pid = s.pid().expect("pid").to_string();
    run_ok(std::process::Command::new("kill").args(["-USR1", &pid]));
    s.expect_lines(&["status: 1 grant; 3 accepted"], 1);

    // Nothing matches: exit 0, nothing revoked.
    let (code, out, _) = ctl(&r, &conf, &["revoke", "--key", "nobody"]);
    assert_eq!((code, out.contains("revoked 0 grant")), (0, true), "{out}");
    r.done(&format!("status_and_revoke {backend}"));
}

#[test]
fn status_shows_and_revoke_ends_grants_iptables() {
    status_and_revoke(80, "iptables");
}

#[test]
fn status_shows_and_revoke_ends_grants_nftables() {
    status_and_revoke(81, "nftables");
}

/// python3 in the server namespace as `uid` (0: root), connecting to the
/// socket and sending `payload` (a Python bytes expression); prints the
/// reply, or the exception's class name.
fn raw_client(r: &Testbed, uid: u32, sock: &str, payload: &str, hold_ms: u64) -> String {
    let script = format!(
        "import socket,time\n\
         try:\n\
         \x20   s=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM)\n\
         \x20   s.settimeout(5)\n\
         \x20   s.connect('{sock}')\n\
         \x20   time.sleep({hold})\n\
         \x20   try:\n\
         \x20       s.sendall({payload})\n\
         \x20       s.shutdown(socket.SHUT_WR)\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         \x20   out=b''\n\
         \x20   while True:\n\
         \x20       d=s.recv(65536)\n\
         \x20       if not d: break\n\
         \x20       out+=d\n\
         \x20   print(out.decode(errors='replace'))\n\
         except Exception as e:\n\
         \x20   print(type(e).__name__)\n",
        hold = hold_ms as f64 / 1000.0
    );
    let uid = uid.to_string();
    let argv = [
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        &script,
    ];
    let out = r.pair.srv(&argv).output().expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Another uid is kept out twice: by the socket's mode (connect fails), and
/// by the daemon's peer check when the mode is opened by hand. Malformed,
/// oversized and silent clients get an error or are dropped; meanwhile a
/// status answers at once and a datagram opens.
#[test]
fn the_socket_refuses_other_users_and_bad_requests() {
    let r = Testbed::new(82, "control", "iptables", SID, &["alice"]);
    let v4 = r.pair.v4();
    let s = r.server("server.log", &[]);
    let state = r.state_dir();
    let sock_path = state.join("control.sock");
    let sock = sock_path.display().to_string();
    // uid 4242: neither root nor the network side's user (nobody when the
    // test host has no `spa`). Let it reach the socket through the state directory (0711 is
    // still private: nobody but root can list or write it).
    run_ok(std::process::Command::new("chmod").args(["0711", &state.display().to_string()]));

    let nobody = raw_client(&r, 4242, &sock, "b'status json\\n'", 0);
    assert_eq!(nobody, "PermissionError", "uid 4242 through mode 0600");
    run_ok(std::process::Command::new("chmod").args(["0666", &sock]));
    let nobody = raw_client(&r, 4242, &sock, "b'status json\\n'", 0);
    assert!(
        nobody.starts_with("error: uid 4242 may not use this socket"),
        "uid 4242 with the mode opened by hand got: {nobody}"
    );
    run_ok(std::process::Command::new("chmod").args(["0600", &sock]));

    for (payload, want) in [
        ("b'A'*100000", "error: request longer than 512 bytes"),
        ("b'bogus\\n'", "error: unknown request `bogus`"),
        ("b'\\x00\\xff\\n'", "error: request is not UTF-8"),
        ("b''", "error: empty request"),
        (
            "b'revoke address 300.1.1.1\\n'",
            "error: `300.1.1.1` is not an IP",
        ),
    ] {
        let got = raw_client(&r, 0, &sock, payload, 0);
        assert!(got.starts_with(want), "{payload}: got {got:?}");
    }

    // Three clients connect and say nothing; status still answers at once
    // and a datagram still opens.
    let silent: Vec<_> = (0..3)
        .map(|_| {
            let script = format!(
                "import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.connect('{sock}')\ntime.sleep(4)\n"
            );
            r.pair
                .srv(&["python3", "-c", &script])
                .spawn()
                .expect("python3")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let got = raw_client(&r, 0, &sock, "b'status json\\n'", 0);
    let took = t.elapsed();
    assert!(got.starts_with("ok\n{\"schema\":1"), "{got}");
    assert!(took < Duration::from_millis(500), "status took {took:?}");
    r.send(v4.cli, v4.srv, &["--open", "22"]);
    r.expect_connect(v4.cli, v4.srv, true, "datagram beside silent clients", &s);
    for mut c in silent {
        let _ = c.wait();
    }
    // The silent ones were dropped after their 2 s deadline.
    s.expect_lines(&["control socket: a client took too long"], 3);
    let mut s: Server = s;
    assert!(s.is_running(), "daemon died; log:\n{}", s.log_text());
    s.stop();
    assert!(!sock_path.exists(), "socket left behind at stop");
    r.done("control_refusals");
}
