use super::*;
use crate::firewall::access;
use spa_proto::Proto;

/// Issue 15: a forward is a map element (DNAT) and a set element
/// (forward accept), both with the grant's timeout, in one transaction.
#[test]
fn a_forward_is_a_map_and_a_set_element() {
    let o = FirewallOptions::default();
    let mut a = access("198.18.0.2", Proto::Tcp, 2222, 100);
    a.forward = Some("10.20.0.5:22".parse().unwrap());
    assert_eq!(
        apply_script(&o, &[a], &[a], 70_000),
        "delete element inet filter spa4_dnat { 198.18.0.2 . tcp . 2222 }\n\
         delete element inet filter spa4_fwd { 198.18.0.2 . 10.20.0.5 . tcp . 22 }\n\
         add element inet filter spa4_dnat { 198.18.0.2 . tcp . 2222 timeout 30s : 10.20.0.5 . 22 }\n\
         add element inet filter spa4_fwd { 198.18.0.2 . 10.20.0.5 . tcp . 22 timeout 30s }\n"
    );
    let setup = crate::firewall::forward::nft_setup_script(&o, "forward", true, false);
    assert!(
        setup.contains("type nat hook prerouting priority dstnat"),
        "{setup}"
    );
    assert!(
        setup.contains("insert rule inet filter forward ct state new ip saddr . ip daddr . meta l4proto . th dport @spa4_fwd accept"),
        "{setup}"
    );
}

#[test]
fn setup_text() {
    let o = FirewallOptions::default();
    assert_eq!(
        setup_script(&o, true, true),
        "add set inet filter spa4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }\n\
         insert rule inet filter input ct state new ip saddr . meta l4proto . th dport @spa4 accept comment \"spa-server\"\n\
         add set inet filter spa6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }\n\
         insert rule inet filter input ct state new ip6 saddr . meta l4proto . th dport @spa6 accept comment \"spa-server\"\n"
    );
    let o = FirewallOptions {
        nft_family: "ip".into(),
        ..Default::default()
    };
    assert!(!setup_script(&o, true, false).contains("spa6"));
}

#[test]
fn apply_text() {
    let o = FirewallOptions::default();
    let old = access("198.18.11.2", Proto::Tcp, 22, 1000);
    let new = access("198.18.11.2", Proto::Tcp, 22, 1030);
    let v6 = access("2001:2:0:11::2", Proto::Udp, 53, 1010);
    assert_eq!(
        apply_script(&o, &[new, v6], &[old], 999_500),
        "delete element inet filter spa4 { 198.18.11.2 . tcp . 22 }\n\
         add element inet filter spa4 { 198.18.11.2 . tcp . 22 timeout 30s500ms }\n\
         add element inet filter spa6 { 2001:2:0:11::2 . udp . 53 timeout 10s500ms }\n"
    );
    // Expired: never `timeout 0` (which would mean "forever").
    assert_eq!(apply_script(&o, &[old], &[], 1_000_000), "");
    assert_eq!(timeout_ms(1000, 999_999), Some(1));
    assert_eq!(timeout_ms(1000, 1_000_000), None);
    assert_eq!(timeout_ms(u64::MAX, 0), Some(MAX_TIMEOUT_MS));
    assert_eq!(timeout_text(1), "1ms");
    assert_eq!(timeout_text(30_000), "30s");
    assert_eq!(timeout_text(MAX_TIMEOUT_MS), "4294967s");
}

#[test]
fn plan_skips_expired_and_in_place_refreshes() {
    let old = access("198.18.11.2", Proto::Tcp, 22, 1000);
    let new = access("198.18.11.2", Proto::Tcp, 22, 1030);
    let other = access("198.18.11.3", Proto::Tcp, 22, 1000);
    let gone = access("198.18.11.4", Proto::Tcp, 22, 990);
    let now = 995_000;
    assert_eq!(
        plan(&[new], &[old, other, gone], now, false),
        (vec![new], vec![old, other])
    );
    assert_eq!(
        plan(&[new], &[old, other, gone], now, true),
        (vec![new], vec![other])
    );
    // Same key through an IPv4-mapped address is still the same element.
    let mapped = access("::ffff:198.18.11.2", Proto::Tcp, 22, 1000);
    assert_eq!(plan(&[new], &[mapped], now, true), (vec![new], vec![]));
    // Another port is another element.
    let udp = access("198.18.11.2", Proto::Udp, 22, 1000);
    assert_eq!(plan(&[new], &[udp], now, true), (vec![new], vec![udp]));
}

#[test]
fn listing_parse() {
    let text = r#"table inet filter { # handle 1
	set spa4 { # handle 4
		type ipv4_addr . inet_proto . inet_service
		flags timeout
		elements = { 198.18.98.2 . tcp . 22 timeout 3m20s expires 2m27s112ms,
			     198.18.98.3 . tcp . 22 timeout 40d expires 39d23h59m59s976ms }
	}

	set spa6 { # handle 5
		type ipv6_addr . inet_proto . inet_service
		flags timeout
	}

	chain input { # handle 1
		type filter hook input priority filter; policy accept;
		ip6 saddr . meta l4proto . th dport @spa6 accept comment "spa-server" # handle 7
		ip saddr . meta l4proto . th dport @spa4 accept comment "spa-server" # handle 6
		ct state established,related accept # handle 2
		tcp dport 22 accept comment "spa-server-not" # handle 9
		tcp dport 22 reject # handle 3
	}
	chain other { # handle 10
		ip saddr @spa4 accept comment "spa-server" # handle 11
	}
}
"#;
    let l = parse_listing(text, "spa-server");
    assert_eq!(
        l.rules,
        vec![
            ("input".to_string(), 7),
            ("input".to_string(), 6),
            ("other".to_string(), 11)
        ]
    );
    assert_eq!(l.sets, vec!["spa4".to_string(), "spa6".to_string()]);
    assert_eq!(parse_listing("", "spa-server"), Listing::default());
}
