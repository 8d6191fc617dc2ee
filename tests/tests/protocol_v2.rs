//! Protocol v2 with the real binaries (issue 17): two servers (two state
//! directories, so two server uids) and one client master key. The server
//! key file the client made for server A stops server B at start (made for
//! another uid); with its own file, B opens for a datagram sealed for B and
//! refuses one sealed for A as an unknown key-id; A's log and B's never share
//! a wire id; check-config prints the uid.
//!
//! Namespace id 60 (engineer J's ranges are 60..=66 and 73..=79).

use spa_e2e::{bin, run_ok, Server, Testbed, PORT};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const SID: &str = "e2e-v2";

/// Runs a server once with the master key so it creates its uid; returns it.
fn uid_of(r: &Testbed, state: &Path, log: &str) -> String {
    let allow = format!("tcp/{PORT}");
    let mut s = r.server_in(state, log, &["--key", &r.key, "--allow", &allow]);
    s.stop();
    let uid = std::fs::read_to_string(state.join("server_uid")).expect("server_uid written");
    assert_eq!(uid.trim().len(), 32, "{uid:?}");
    uid.trim().to_owned()
}

/// `spa-client server-key` for `uid`, installed as a 0600 file.
fn server_key(r: &Testbed, uid: &str, file: &str) -> String {
    let out = r.client(&["server-key", "--server-uid", uid, "--key", &r.key]);
    let p = r.dir.join(file);
    std::fs::write(&p, &out.stdout).expect("write server key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p.display().to_string()
}

fn config(r: &Testbed, name: &str, key_file: &str) -> String {
    let p = r.dir.join(name);
    std::fs::write(
        &p,
        format!("[[key]]\nname = \"alice\"\nfile = \"{key_file}\"\nallow = [\"tcp/{PORT}\"]\n"),
    )
    .expect("write config");
    p.display().to_string()
}

#[test]
fn a_key_file_of_server_a_does_not_open_server_b() {
    let r = Testbed::new(60, "v2", "iptables", SID, &["alice"]);
    let (state_a, state_b) = (r.dir.join("state-a"), r.dir.join("state-b"));
    let uid_a = uid_of(&r, &state_a, "a0.log");
    let uid_b = uid_of(&r, &state_b, "b0.log");
    assert_ne!(uid_a, uid_b, "each server has its own uid");

    // check-config prints the uid and the enrollment command.
    let sb = state_b.display().to_string();
    let conf_check = r.dir.join("check.toml");
    std::fs::write(
        &conf_check,
        format!(
            "server_id = \"{SID}\"\nstate_dir = \"{sb}\"\nfirewall = \"{}\"\n\
             interfaces = [\"{}\"]\n{}",
            r.backend,
            r.pair.srv_if,
            std::fs::read_to_string(config(&r, "keys.toml", &r.key)).expect("read")
        ),
    )
    .expect("write check.toml");
    let out = run_ok(&mut r.pair.srv(&[
        bin("spa-server").to_str().expect("utf-8"),
        "check-config",
        "--config",
        conf_check.to_str().expect("utf-8"),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("server uid {uid_b}")), "{text}");

    let file_a = server_key(&r, &uid_a, "alice.a.key");
    let file_b = server_key(&r, &uid_b, "alice.b.key");

    // A's file installed at B: B refuses to start, naming both uids.
    let conf_taken = config(&r, "taken.toml", &file_a);
    let base = r.server_args(&state_b);
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend(["--config", &conf_taken]);
    let mut s = Server::spawn(&r.pair, &r.dir.join("b1.log"), &args);
    assert!(
        spa_e2e::wait_for(Duration::from_secs(10), || !s.is_running()),
        "B must refuse A's key file: {}",
        s.log_text()
    );
    let log = s.log_text();
    assert!(
        log.contains(&format!("made for server uid {uid_a}"))
            && log.contains(&format!("this server's is {uid_b}")),
        "{log}"
    );

    // B with its own file: a datagram for B opens, one for A does not.
    let conf_b = config(&r, "b.toml", &file_b);
    args.truncate(base.len());
    args.extend(["--config", &conf_b]);
    let s = Server::start(&r.pair, &r.dir.join("b2.log"), &args);
    let (cli, srv) = (r.pair.cli_ip4.into(), r.pair.srv_ip4.into());
    let open = format!("tcp/{PORT}");
    r.send(cli, srv, &["--open", &open, "--server-uid", &uid_a]);
    s.expect_lines(&["unknown key-id"], 1);
    assert!(
        !r.connects(cli, srv),
        "a datagram for A opened B:\n{}",
        s.log_text()
    );
    let (c, d) = (r.pair.cli_ip4.to_string(), r.pair.srv_ip4.to_string());
    let out = r.client(&[
        "send",
        "--key",
        &r.key,
        "--open",
        &open,
        "--server-uid",
        &uid_b,
        "--source",
        &c,
        &d,
    ]);
    r.expect_connect(cli, srv, true, "v2 datagram for B", &s);
    // The id the client printed is the one on the server's line (for grep).
    let printed = String::from_utf8_lossy(&out.stdout);
    let id = printed
        .split("key-id ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_hexdigit()).next())
        .unwrap_or_else(|| panic!("no key-id printed: {printed}"))
        .to_owned();
    s.expect_lines(&["accepted open", "alice", &id], 1);
    r.done("a_key_file_of_server_a_does_not_open_server_b");
}
