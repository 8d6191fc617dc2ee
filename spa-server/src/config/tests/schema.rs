//! The grant grammar and the documented defaults (schema.rs).

use super::*;

#[test]
fn minimal_file_gets_the_documented_defaults() {
    let env = Env::new();
    let cfg = env.load(ALICE).unwrap();
    assert_eq!(cfg.spa_port, DEFAULT_SPA_PORT);
    assert_eq!(cfg.default_duration, DEFAULT_DURATION);
    assert_eq!(cfg.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(cfg.firewall, BackendKind::Iptables);
    assert_eq!(cfg.server_name, hostname());
    assert_eq!(cfg.server_id, ServerId::from_name(&hostname()));
    assert!(cfg.interfaces.is_empty());
    assert_eq!(cfg.window.past_secs, spa_proto::replay::DEFAULT_WINDOW_SECS);
    assert_eq!(
        cfg.window.future_secs,
        spa_proto::replay::DEFAULT_WINDOW_SECS
    );
    assert_eq!(cfg.replay_capacity, spa_proto::replay::DEFAULT_CAPACITY);
    assert_eq!(cfg.keys.len(), 1);
    let k = &cfg.keys[0];
    assert_eq!(k.name, "alice");
    assert_eq!(k.allow, vec![tcp(22)]);
    assert_eq!(k.max_duration, DEFAULT_MAX_DURATION);
    assert_eq!(
        k.file,
        env.dir.path().join("alice.key"),
        "relative to the config"
    );
    let id = MasterKey::from_bytes([0x11; 32]).derive().key_id();
    assert_eq!(k.key_id, id);
    assert_eq!(cfg.key(&id).map(|k| k.name.as_str()), Some("alice"));
    assert!(cfg.key(&KeyId([0; 8])).is_none());
    assert!(cfg.doors.is_empty());
}

#[test]
fn parse_grant_accepts_the_documented_forms() {
    assert_eq!(parse_grant("22"), Ok(tcp(22)));
    assert_eq!(parse_grant(" tcp/22 "), Ok(tcp(22)));
    assert_eq!(
        parse_grant("UDP/53"),
        Ok(Grant::new(Proto::Udp, 53).unwrap())
    );
    assert_eq!(parse_grant("tcp/65535"), Ok(tcp(65535)));
    for bad in [
        "", "0", "tcp/0", "65536", "icmp/1", "tcp/-1", "tcp/22/1", "/22", "udp/",
    ] {
        let e = parse_grant(bad).unwrap_err();
        assert_eq!(e.text, bad.trim(), "the text as written");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the grammar's reason is kept"
        );
    }
    assert_eq!(
        parse_grant(" tcp/0 "),
        Err(GrantError {
            text: "tcp/0".into(),
            error: spa_proto::GrantSyntax::Zero
        })
    );
}

/// Every refusal of the grant grammar as `[[key]] allow`, `[key.forward]`
/// and `--allow` show it, byte for byte (the text trimmed, the protocol
/// lowercased).
#[test]
fn parse_grant_messages_are_pinned() {
    let text = |s: &str| parse_grant(s).unwrap_err().to_string();
    let nan = "a port is a number from 1 to 65535";
    assert_eq!(text(""), format!("invalid port ``: {nan}"));
    assert_eq!(text(" ssh "), format!("invalid port `ssh`: {nan}"));
    assert_eq!(text("tcp/-1"), format!("invalid port `tcp/-1`: {nan}"));
    assert_eq!(text("tcp/22/1"), format!("invalid port `tcp/22/1`: {nan}"));
    assert_eq!(
        text(" 0 "),
        "invalid port `0`: port 0 cannot be opened (ports are 1-65535)"
    );
    assert_eq!(
        text("tcp/0"),
        "invalid port `tcp/0`: port 0 cannot be opened (ports are 1-65535)"
    );
    assert_eq!(text("65536"), "invalid port `65536`: ports go up to 65535");
    assert_eq!(
        text("99999999999/udp"),
        "invalid port `99999999999/udp`: ports go up to 65535"
    );
    assert_eq!(
        text(" ICMP/1"),
        "unknown protocol 'icmp' (use tcp or udp) in `ICMP/1`"
    );
    assert_eq!(text("/22"), "unknown protocol '' (use tcp or udp) in `/22`");
}

proptest! {
    #[test]
    fn parse_grant_round_trips_and_never_panics(s in ".{0,12}", port in 1u16.., udp: bool) {
        let _ = parse_grant(&s);
        let g = Grant::new(if udp { Proto::Udp } else { Proto::Tcp }, port).unwrap();
        prop_assert_eq!(parse_grant(&g.to_string()), Ok(g));
    }
}
