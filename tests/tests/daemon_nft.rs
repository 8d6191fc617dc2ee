//! The real daemon with `--firewall nftables`: open/close over IPv4 and IPv6
//! through set elements in the admin's `inet filter input` chain, and a
//! SIGTERM that leaves the admin's ruleset byte-identical. Namespace id 7.

use spa_e2e::{bin, keygen, Guard, NetPair, Scratch, Server};
use std::net::IpAddr;
use std::time::{Duration, Instant};

const SID: &str = "e2e-nft";

fn client(pair: &NetPair, args: &[&str]) {
    let client = bin("spa-client");
    let mut argv = vec![client.to_str().expect("utf-8 path")];
    argv.extend_from_slice(args);
    let out = pair.cli(&argv).output().expect("spawn spa-client");
    assert!(
        out.status.success(),
        "spa-client {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn send(pair: &NetPair, key: &str, src: IpAddr, dst: IpAddr, what: &[&str]) {
    let (src, dst) = (src.to_string(), dst.to_string());
    let mut argv = vec!["send", "--quiet", "--key", key];
    argv.extend_from_slice(what);
    argv.extend_from_slice(&["--source", &src, &dst]);
    client(pair, &argv);
}

fn must_connect(pair: &NetPair, src: IpAddr, dst: IpAddr, want: bool, what: &str) {
    assert!(
        pair.wait_connect(src, dst, 22, want, Duration::from_secs(5)),
        "{what}: connect {src} -> {dst}:22 should {}",
        if want { "succeed" } else { "be refused" }
    );
}

/// Our set elements (`198.18.7.2 . tcp . 22 ...`) in spa4/spa6.
fn elements(pair: &NetPair) -> String {
    pair.srv_sh(
        "nft list set inet filter spa4 2>/dev/null; nft list set inet filter spa6 2>/dev/null; true",
    )
}

/// Case 7: the same open/close with the nftables backend, both families.
#[test]
fn nftables_open_close_v4_v6_and_sigterm_restores_ruleset() {
    let started = Instant::now();
    let pair = NetPair::new(7);
    pair.nft_baseline(22);
    let _listener = Guard(pair.listen(22));
    let dir = Scratch::new("daemon7");
    let key = keygen(&dir.join("k.key"), "alice", SID);
    let state = dir.join("state").display().to_string();
    let baseline = pair.nft_snapshot();

    for (cli, srv) in [
        (IpAddr::from(pair.cli_ip4), IpAddr::from(pair.srv_ip4)),
        (pair.cli_ip6.into(), pair.srv_ip6.into()),
    ] {
        assert!(!pair.can_connect(cli, srv, 22), "{srv}: refused before");
    }

    let mut s = Server::start(
        &pair,
        &dir.join("server.log"),
        &[
            "--interface",
            &pair.srv_if,
            "--key",
            &key,
            "--allow",
            "tcp/22",
            "--server-id",
            SID,
            "--state-dir",
            &state,
            "--firewall",
            "nftables",
        ],
    );
    assert!(s.log_text().contains("nftables"), "{}", s.log_text());

    let mut opens = 0;
    let mut closes = 0;
    for (cli, cli_b, srv) in [
        (
            IpAddr::from(pair.cli_ip4),
            IpAddr::from(pair.cli_ip4_b),
            IpAddr::from(pair.srv_ip4),
        ),
        (
            pair.cli_ip6.into(),
            pair.cli_ip6_b.into(),
            pair.srv_ip6.into(),
        ),
    ] {
        send(&pair, &key, cli, srv, &["--open", "22"]);
        opens += 1;
        s.expect_lines(&["accepted open"], opens);
        must_connect(&pair, cli, srv, true, "after --open");
        assert!(
            !pair.can_connect(cli_b, srv, 22),
            "{cli_b} must stay refused"
        );
        let el = elements(&pair);
        assert!(
            el.contains(&format!("{cli} . tcp . 22")),
            "element for {cli} missing:\n{el}"
        );

        send(&pair, &key, cli, srv, &["--close", "22"]);
        closes += 1;
        s.expect_lines(&["accepted close", "removed=1"], closes);
        must_connect(&pair, cli, srv, false, "after --close");
        assert!(!elements(&pair).contains(&format!("{cli} . tcp")));
    }

    // Stop with a live grant: the admin's ruleset comes back byte-identical.
    send(
        &pair,
        &key,
        pair.cli_ip4.into(),
        pair.srv_ip4.into(),
        &["--open", "22"],
    );
    s.expect_lines(&["accepted open"], opens + 1);
    let st = s.stop().expect("exit on SIGTERM within 10 s");
    assert!(st.success(), "{st:?}: {}", s.log_text());
    assert_eq!(pair.nft_snapshot(), baseline, "baseline must be intact");
    assert!(!pair.can_connect(pair.cli_ip4.into(), pair.srv_ip4.into(), 22));
    eprintln!("nftables: {:.2} s", started.elapsed().as_secs_f64());
}
