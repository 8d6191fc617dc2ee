//! Grant owners end to end (issue 16, findings 2 and 5): the real daemon,
//! client, `knock` and iptables in a pair of network namespaces. A key holder
//! behind the same address, or a spoofable door sequence, must not end or
//! shorten another owner's grant.
//!
//! Namespace ids 120..=122 and 126 (engineer B's range is 120..=139). Every wait is
//! bounded; the server is killed on drop and the namespaces are deleted, also
//! when a test fails.

use spa_e2e::Testbed;
use std::time::Duration;

const SID: &str = "e2e-owners";
const KNOCK: &str = "/usr/bin/knock";

/// The `exp=` of the one grant rule (its end, Unix seconds).
fn one_rule_exp(r: &Testbed) -> String {
    let rules = r.grant_rules("iptables");
    assert_eq!(rules.len(), 1, "{rules:?}");
    rules[0]
        .split("exp=")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap_or_else(|| panic!("no exp= in {rules:?}"))
        .to_owned()
}

/// Finding 2: bob, sending from alice's address (as behind one NAT), can
/// neither shorten alice's grant with a 1 s open nor end it with a close.
#[test]
fn another_key_cannot_shorten_or_close_a_grant() {
    let r = Testbed::new(120, "owners", "iptables", SID, &["alice", "bob"]);
    let v4 = r.pair.v4();
    let (cli, srv) = (v4.cli, v4.srv);
    let bob = r.key_path("bob").display().to_string();
    let s = r.server("server.log", &["--key", &bob]);
    // Finding 14: one start warning per key without require_explicit_address.
    for k in ["key=alice", "key=bob"] {
        assert_eq!(
            s.lines_with(&["WARN", "require_explicit_address = true", k])
                .len(),
            1,
            "{}",
            s.log_text()
        );
    }

    r.send(cli, srv, &["--open", "22", "-d", "300"]);
    s.expect_lines(&["accepted open", "key=alice"], 1);
    r.expect_connect(cli, srv, true, "after alice's --open", &s);
    let alice_exp = one_rule_exp(&r);

    r.send_with_key(&bob, cli, srv, &["--open", "22", "-d", "1"]);
    s.expect_lines(&["accepted open", "key=bob"], 1);
    assert_eq!(
        one_rule_exp(&r),
        alice_exp,
        "bob's 1 s open must not shorten alice's rule; log:\n{}",
        s.log_text()
    );

    r.send_with_key(&bob, cli, srv, &["--close", "22"]);
    s.expect_lines(&["accepted close", "key=bob"], 1);
    assert_eq!(
        one_rule_exp(&r),
        alice_exp,
        "bob's close must leave alice's rule; log:\n{}",
        s.log_text()
    );
    // Past bob's 1 s, alice's grant still lets her in.
    std::thread::sleep(Duration::from_millis(1500));
    r.expect_connect(cli, srv, true, "after bob's open, 1 s and close", &s);

    r.send(cli, srv, &["--close", "22"]);
    s.expect_lines(&["accepted close", "key=alice", "removed=1"], 1);
    assert!(r.grant_rules("iptables").is_empty());
    r.done("another_key_cannot_shorten_or_close_a_grant");
}

/// Finding 5: with knockd's default doors on, a close sequence (anyone can
/// send it, from any source) from alice's address leaves her datagram grant.
#[test]
fn a_door_close_sequence_leaves_a_key_grant() {
    assert!(
        std::path::Path::new(KNOCK).exists(),
        "{KNOCK} missing: apt-get install knockd"
    );
    let r = Testbed::new(121, "owners", "iptables", SID, &["alice"]);
    let v4 = r.pair.v4();
    let (cli, srv) = (v4.cli, v4.srv);
    let s = r.server("server.log", &["--legacy-knock"]);
    assert!(
        s.wait_lines(&["ready", "server_id="], 1, Duration::from_secs(10)),
        "spa-server did not log ready:\n{}",
        s.log_text()
    );

    r.send(cli, srv, &["--open", "22", "-d", "300"]);
    s.expect_lines(&["accepted open", "key=alice"], 1);
    let alice_exp = one_rule_exp(&r);

    // `knock` sends from the client's primary address: alice's.
    let srv_s = srv.to_string();
    spa_e2e::run_ok(
        &mut r
            .pair
            .cli(&["timeout", "20", KNOCK, &srv_s, "9000", "8000", "7000"]),
    );
    assert!(
        s.wait_lines(&["knock accepted: rule removed"], 1, Duration::from_secs(5)),
        "the close sequence was not seen:\n{}",
        s.log_text()
    );
    assert_eq!(s.lines_with(&["knock accepted", "removed=0"]).len(), 1);
    assert_eq!(
        one_rule_exp(&r),
        alice_exp,
        "a door's close must not end a key's grant; log:\n{}",
        s.log_text()
    );
    r.expect_connect(cli, srv, true, "after the door's close sequence", &s);
    r.done("a_door_close_sequence_leaves_a_key_grant");
}

/// Finding 1: a key holds at most `max_grants` (default 16) live grants; the
/// 17th, for yet another address, is refused with its own reason and adds
/// no rule, while a refresh of a held one still passes.
#[test]
fn a_key_holds_at_most_its_grant_cap() {
    let r = Testbed::new(122, "owners", "iptables", SID, &["alice"]);
    let v4 = r.pair.v4();
    let (cli, srv) = (v4.cli, v4.srv);
    // A configuration file: the key's token bucket (finding 16) must let 18
    // datagrams in a row through, so that only the cap can refuse one.
    let conf = r.dir.join("server.toml");
    std::fs::write(
        &conf,
        format!(
            "[[key]]\nname = \"alice\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\n\
             allow_other_address = true\nrate_burst = 100\n",
            r.key
        ),
    )
    .expect("write server.toml");
    let conf = conf.display().to_string();
    let s = r.server_without_key("server.log", &["--config", &conf]);
    for i in 1..=17 {
        let addr = format!("198.19.77.{i}");
        r.send(cli, srv, &["--open", "22", "--allow-ip", &addr]);
    }
    assert!(
        s.wait_lines(&["reason=\"grant_cap\""], 1, Duration::from_secs(10)),
        "the 17th open must be refused for the cap; log:\n{}",
        s.log_text()
    );
    s.expect_lines(&["accepted open"], 16);
    assert_eq!(s.lines_with(&["accepted open"]).len(), 16);
    assert_eq!(r.grant_rules("iptables").len(), 16);
    r.send(cli, srv, &["--open", "22", "--allow-ip", "198.19.77.3"]);
    s.expect_lines(&["accepted open", "refreshed=1"], 1);
    assert_eq!(r.grant_rules("iptables").len(), 16);
    r.done("a_key_holds_at_most_its_grant_cap");
}

/// Seconds in an nft duration such as `14m59s996ms` or `1h2m3s` (ms dropped).
fn nft_secs(t: &str) -> u64 {
    let (mut total, mut num) = (0u64, 0u64);
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(d) = c.to_digit(10) {
            num = num * 10 + u64::from(d);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3600,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0
            }
            'm' => 60,
            's' => 1,
            _ => panic!("unexpected {c:?} in nft duration {t:?}"),
        };
        total += num * unit;
        num = 0;
    }
    total
}

/// The seconds left on the one element of set `spa4`, from `expires ...`.
fn nft_expires(r: &Testbed) -> Option<u64> {
    let set = r.pair.srv_sh("nft list set inet filter spa4");
    let els: Vec<&str> = set.split("expires ").skip(1).collect();
    assert!(els.len() <= 1, "more than one element: {set}");
    els.first().map(|t| {
        nft_secs(
            t.split(|c: char| c.is_whitespace() || c == ',' || c == '}')
                .next()
                .unwrap_or(""),
        )
    })
}

/// Finding 2 on nftables: one element per (address, grant) whose timeout is
/// the latest owner's; when that owner closes, the element is rewritten to
/// the remaining owner's end (not removed), and goes with the last owner.
#[test]
fn nftables_element_follows_the_latest_owner() {
    let r = Testbed::new(126, "owners", "nftables", SID, &["alice", "bob"]);
    let v4 = r.pair.v4();
    let (cli, srv) = (v4.cli, v4.srv);
    let bob = r.key_path("bob").display().to_string();
    let s = r.server("server.log", &["--key", &bob, "--max-duration", "900"]);

    r.send(cli, srv, &["--open", "22", "-d", "300"]);
    s.expect_lines(&["accepted open", "key=alice"], 1);
    r.send_with_key(&bob, cli, srv, &["--open", "22", "-d", "900"]);
    s.expect_lines(&["accepted open", "key=bob"], 1);
    let left = nft_expires(&r).expect("one element");
    assert!(left > 800, "bob's 900 s: {left}");

    r.send_with_key(&bob, cli, srv, &["--close", "22"]);
    s.expect_lines(&["accepted close", "key=bob"], 1);
    let left = nft_expires(&r).expect("alice's element stays");
    assert!(
        (200..=300).contains(&left),
        "back to alice's 300 s: {left}; log:\n{}",
        s.log_text()
    );
    r.expect_connect(cli, srv, true, "after bob's close", &s);

    r.send(cli, srv, &["--close", "22"]);
    s.expect_lines(&["accepted close", "key=alice", "removed=1"], 1);
    assert_eq!(nft_expires(&r), None);
    r.done("nftables_element_follows_the_latest_owner");
}
