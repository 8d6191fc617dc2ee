//! The real daemon with `--firewall nftables`: open/close over IPv4 and IPv6
//! through set elements in the admin's `inet filter input` chain, and a
//! SIGTERM that leaves the admin's ruleset byte-identical. Namespace id 7.

use spa_e2e::{Family, Testbed};

const SID: &str = "e2e-nft";

/// Our set elements (`198.18.7.2 . tcp . 22 ...`) in spa4/spa6.
fn elements(bed: &Testbed) -> String {
    bed.pair.srv_sh(
        "nft list set inet filter spa4 2>/dev/null; nft list set inet filter spa6 2>/dev/null; true",
    )
}

/// Case 7: the same open/close with the nftables backend, both families.
#[test]
fn nftables_open_close_v4_v6_and_sigterm_restores_ruleset() {
    let bed = Testbed::new(7, "daemon", "nftables", SID, &["alice"]);
    let pair = &bed.pair;
    let baseline = pair.nft_snapshot();

    for f in [pair.v4(), pair.v6()] {
        assert!(!bed.connects(f.cli, f.srv), "{}: refused before", f.srv);
    }

    let mut s = bed.server("server.log", &[]);
    assert!(s.log_text().contains("nftables"), "{}", s.log_text());

    let mut opens = 0;
    let mut closes = 0;
    for Family { cli, cli_b, srv } in [pair.v4(), pair.v6()] {
        bed.send(cli, srv, &["--open", "22"]);
        opens += 1;
        s.expect_lines(&["accepted open"], opens);
        bed.expect_connect(cli, srv, true, "after --open", &s);
        assert!(!bed.connects(cli_b, srv), "{cli_b} must stay refused");
        let el = elements(&bed);
        assert!(
            el.contains(&format!("{cli} . tcp . 22")),
            "element for {cli} missing:\n{el}"
        );

        bed.send(cli, srv, &["--close", "22"]);
        closes += 1;
        s.expect_lines(&["accepted close", "removed=1"], closes);
        bed.expect_connect(cli, srv, false, "after --close", &s);
        assert!(!elements(&bed).contains(&format!("{cli} . tcp")));
    }

    // Stop with a live grant: the admin's ruleset comes back byte-identical.
    let v4 = pair.v4();
    bed.send(v4.cli, v4.srv, &["--open", "22"]);
    s.expect_lines(&["accepted open"], opens + 1);
    let st = s.stop().expect("exit on SIGTERM within 10 s");
    assert!(st.success(), "{st:?}: {}", s.log_text());
    assert_eq!(pair.nft_snapshot(), baseline, "baseline must be intact");
    assert!(!bed.connects(v4.cli, v4.srv));
    bed.done("nftables");
}
