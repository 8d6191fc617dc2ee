//! `spa-server check-config` checks what a start would (issue 10, item 5),
//! in the server namespace with the real tools: each kind of broken
//! configuration is reported, all of them at once, with a non-zero exit;
//! the nftables error names `[firewall_options]` and the table; the
//! effective server_id is printed with where it came from; knockd.conf's
//! doors are listed.
//!
//! Namespace id 213 (engineer F's range is 200..=219).

use spa_e2e::{bin, keygen, NetPair, Scratch};
use std::process::Output;

const SID: &str = "e2e-check";

fn check(p: &NetPair, args: &[&str]) -> Output {
    let server = bin("spa-server");
    let mut argv = vec![server.to_str().expect("utf-8 path")];
    argv.extend_from_slice(args);
    argv.push("check-config");
    p.srv(&argv).output().expect("run check-config")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_config_reports_every_broken_thing() {
    let p = NetPair::new(213);
    let d = Scratch::new("check213");
    let key = keygen(&d.join("alice.key"), "alice", SID);
    let state = d.join("state").display().to_string();
    let conf = d.join("server.toml");
    let write = |body: &str| {
        std::fs::write(
            &conf,
            format!(
                "state_dir = \"{state}\"\n{body}\n[[key]]\nname = \"alice\"\nfile = \"{key}\"\n\
                 allow = [\"tcp/22\"]\n"
            ),
        )
        .unwrap();
    };
    let c = conf.display().to_string();

    // Two missing interfaces and, with no nftables ruleset at all, no
    // `inet filter input` chain: three errors in one run.
    write(&format!(
        "server_id = \"{SID}\"\ninterfaces = [\"nope0\", \"{}\", \"nope1\"]\nfirewall = \"nftables\"",
        p.srv_if
    ));
    let out = check(&p, &["--config", &c]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("\"nope0\"") && t.contains("\"nope1\""), "{t}");
    assert!(
        t.contains("inet filter input") && t.contains("[firewall_options]"),
        "{t}"
    );
    assert!(t.contains("3 error(s)"), "{t}");
    assert!(
        t.contains(&format!("server_id \"{SID}\" (from {c})")),
        "{t}"
    );

    // A firewall tool that is not there.
    write("firewall = \"iptables\"\n[firewall_options]\niptables = \"/nonexistent/iptables\"");
    let out = check(&p, &["--config", &c, "--server-id", "flagged"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("/nonexistent/iptables"), "{t}");
    assert!(
        t.contains("server_id \"flagged\" (from --server-id)"),
        "{t}"
    );

    // A good configuration with knockd.conf's doors: each is listed, and
    // the server id is the host name's.
    let knockd = d.join("knockd.conf");
    std::fs::write(
        &knockd,
        "[options]\n  UseSyslog\n\n[openSSH]\n  sequence = 7000,8000,9000\n  seq_timeout = 5\n\
         command = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n  tcpflags = syn\n\n\
         [closeSSH]\n  sequence = 9000,8000,7000\n  seq_timeout = 5\n\
         command = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n  tcpflags = syn\n",
    )
    .unwrap();
    write("firewall = \"iptables\"");
    let k = knockd.display().to_string();
    let out = check(&p, &["--config", &c, "--knockd-conf", &k]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("door openSSH") && t.contains("door closeSSH"),
        "{t}"
    );
    assert!(t.contains("(from the host name"), "{t}");
    assert!(t.contains("configuration OK"), "{t}");
}
