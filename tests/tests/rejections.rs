//! Rejections say what the server knows (issue 10, item 7): each refusal
//! line of the real daemon names the key (once authenticated) and what the
//! server expected: its id, its clock, what the key may open; an unknown
//! key-id is logged as the client printed it; a capped duration names the
//! key; an accepted request whose firewall change failed counts as failed,
//! not accepted, in the totals.
//!
//! Namespace ids 206, 207 (engineer F's range is 200..=219).

use spa_e2e::{bin, keygen, Testbed};

const SID: &str = "e2e-rej";

/// `spa-client send` (not quiet) in the client namespace; its stdout.
fn send_loud(r: &Testbed, key: &str, args: &[&str]) -> String {
    let client = bin("spa-client");
    let (src, dst) = (r.pair.cli_ip4.to_string(), r.pair.srv_ip4.to_string());
    let mut argv = vec![client.to_str().expect("utf-8 path"), "send", "--key", key];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--source", &src, &dst]);
    let out = spa_e2e::run_ok(&mut r.pair.cli(&argv));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The hex after "key-id " in the client's output.
fn printed_key_id(out: &str) -> String {
    out.split("key-id ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_hexdigit()).next())
        .unwrap_or_else(|| panic!("no key-id in the client's output: {out}"))
        .to_owned()
}

#[test]
fn rejection_lines_name_the_key_and_what_was_expected() {
    let r = Testbed::new(206, "rejections", "iptables", SID, &["alice"]);
    let s = r.server("server.log", &["--max-duration", "60"]);

    // Unknown key-id: the line carries the id the client printed.
    let stranger = keygen(&r.dir.join("stranger.key"), "stranger", SID);
    let id = printed_key_id(&send_loud(&r, &stranger, &["--open", "22"]));
    s.expect_lines(&["unknown key-id", &id, "key(s) configured"], 1);

    // Wrong server id: the key and this server's id.
    r.send(
        r.pair.cli_ip4.into(),
        r.pair.srv_ip4.into(),
        &["--open", "22", "--server-id", "other"],
    );
    s.expect_lines(
        &[
            "another server id",
            "key=\"alice\"",
            &format!("server's id is \"{SID}\""),
        ],
        1,
    );

    // Too old: the key, the server's clock and the window.
    r.send(
        r.pair.cli_ip4.into(),
        r.pair.srv_ip4.into(),
        &["--open", "22", "--time-offset", "-300"],
    );
    s.expect_lines(
        &["too old", "key=\"alice\"", "server clock", "window -30 s"],
        1,
    );

    // Not allowed: what the key may open.
    r.send(
        r.pair.cli_ip4.into(),
        r.pair.srv_ip4.into(),
        &["--open", "23"],
    );
    s.expect_lines(
        &[
            "reason=\"not_allowed\"",
            "key=\"alice\"",
            "may open tcp/22 for up to 60 s",
        ],
        1,
    );

    // Capped: the key and its max_duration.
    r.send(
        r.pair.cli_ip4.into(),
        r.pair.srv_ip4.into(),
        &["--open", "22", "-d", "600"],
    );
    s.expect_lines(
        &["accepted open", "capped to key alice's max_duration 60 s"],
        1,
    );
    r.done("rejection_lines_name_the_key_and_what_was_expected");
}

/// A request accepted whose firewall change fails (the admin deleted the
/// whole table the nftables backend lives in) counts as failed.
#[test]
fn a_failed_firewall_change_counts_as_failed_not_accepted() {
    let r = Testbed::new(207, "rejections", "nftables", SID, &["alice"]);
    let mut s = r.server("server.log", &[]);
    r.pair.srv_sh("nft delete table inet filter");
    r.send(
        r.pair.cli_ip4.into(),
        r.pair.srv_ip4.into(),
        &["--open", "22"],
    );
    s.expect_lines(&["firewall change failed", "key_id="], 1);
    s.stop();
    let totals = s.lines_with(&["totals since start"]);
    assert_eq!(totals.len(), 1, "{}", s.log_text());
    assert!(
        totals[0].contains("datagrams_accepted=0") && totals[0].contains("datagrams_failed=1"),
        "{}",
        totals[0]
    );
    r.done("a_failed_firewall_change_counts_as_failed_not_accepted");
}
