#[test]
fn every_backend_is_registered_once_by_its_names() {
    for kind in [BackendKind::Iptables, BackendKind::Nftables] {
        // A new variant fails to compile here until it is listed.
        match kind {
            BackendKind::Iptables | BackendKind::Nftables => {}
        }
        assert_eq!(BACKENDS.iter().filter(|r| r.kind == kind).count(), 1);
        assert_eq!(kind.as_str().parse::<BackendKind>().ok(), Some(kind));
    }
    assert_eq!(BackendKind::all().count(), BACKENDS.len());
    assert_eq!(
        "nft".parse::<BackendKind>().ok(),
        Some(BackendKind::Nftables)
    );
    assert!("ipfw".parse::<BackendKind>().is_err());
}
use super::*;
use spa_proto::Proto;

#[test]
fn backend_kind_parses() {
    assert_eq!("iptables".parse(), Ok(BackendKind::Iptables));
    assert_eq!("nftables".parse(), Ok(BackendKind::Nftables));
    let e = "pf".parse::<BackendKind>().unwrap_err();
    assert!(e.to_string().contains("\"pf\""));
    #[derive(Deserialize)]
    struct T {
        fw: BackendKind,
    }
    let t: T = toml::from_str("fw = \"nftables\"").unwrap();
    assert_eq!(t.fw, BackendKind::Nftables);
    assert!(toml::from_str::<T>("fw = \"Nftables\"").is_err());
}

#[test]
fn options_validate() {
    assert!(FirewallOptions::default().validate().is_ok());
    let o = FirewallOptions {
        comment: "a\" -j DROP".into(),
        ..Default::default()
    };
    let e = o.validate().unwrap_err();
    assert!(e.to_string().contains("firewall.comment"), "{e}");
    let o = FirewallOptions {
        nft_family: "bridge".into(),
        ..Default::default()
    };
    assert!(o.validate().is_err());
    let o: FirewallOptions = toml::from_str("chain = \"KNOCK\"").unwrap();
    assert_eq!(o.chain, "KNOCK");
    assert_eq!(o.nft_table, "filter");
    assert!(toml::from_str::<FirewallOptions>("chian = \"x\"").is_err());
}

#[test]
fn split_dedups_and_canonicalises() {
    let g = Grant::new(Proto::Tcp, 22).unwrap();
    let a = Access {
        addr: "::ffff:198.18.1.2".parse().unwrap(),
        grant: g,
        expires_at: 5,
        forward: None,
    };
    let b = Access {
        addr: "2001:2::2".parse().unwrap(),
        grant: g,
        expires_at: 5,
        forward: None,
    };
    let (v4, v6) = split_family(&[a, b, a]);
    assert_eq!(v4, vec![a]);
    assert_eq!(v6, vec![b]);
    assert_eq!(a.to_string(), "198.18.1.2 tcp/22 until 5");
}

#[test]
fn error_messages_name_the_command() {
    let e = Ran {
        cmd: "iptables-restore -w 3 --noflush".into(),
        code: Some(1),
        stdout: String::new(),
        stderr: "iptables-restore: line 2 failed\n".into(),
    }
    .into_error();
    assert_eq!(
        e.to_string(),
        "`iptables-restore -w 3 --noflush` failed (exit status 1): iptables-restore: line 2 failed"
    );
}
