//! LegacyKnocks: both knock kinds behind one call.

use super::*;
use spa_proto::{Grant, Grants, MasterKey};
use std::sync::Arc;

#[test]
fn legacy_knocks_routes_both_kinds() {
    let c: LegacyConfig = toml::from_str("[hmac]\nenabled = true\n").unwrap();
    let key = Arc::new(MasterKey::from_bytes([5; 32]).derive());
    let server = ServerId::from_name("srv");
    let grants = Grants::new(&[Grant::tcp(22).unwrap()]).unwrap();
    let mut lk = LegacyKnocks::new(
        &c,
        c.doors().unwrap(),
        server,
        vec![HmacKey {
            keys: key.clone(),
            grants,
        }],
    )
    .unwrap();
    assert!(lk.tracker().is_some());
    assert_eq!(lk.ports().hmac, Some((Proto::Tcp, 10_000, 60_000)));
    let a: IpAddr = "198.18.0.2".parse().unwrap();
    let unix = 1_700_000_000;
    let mut evs = vec![];
    for (i, p) in [7000u16, 8000, 9000].into_iter().enumerate() {
        evs.extend(lk.observe(a, Proto::Tcp, p, tcp_flag::SYN, i as u64, unix));
    }
    assert!(matches!(
        evs.as_slice(),
        [LegacyEvent::Door(KnockEvent::Open { .. })]
    ));
    let params = KnockParams::default();
    let seq = spa_proto::knock::sequence(&key, &server, params.step_at(unix), &params);
    let mut evs = vec![];
    for (i, &p) in seq.iter().enumerate() {
        // A non-SYN TCP packet is no HMAC knock.
        assert!(lk
            .observe(a, Proto::Tcp, p, tcp_flag::ACK, 10, unix)
            .is_empty());
        evs.extend(lk.observe(a, Proto::Tcp, p, tcp_flag::SYN, 10 + i as u64, unix));
    }
    assert!(
        matches!(evs.as_slice(), [LegacyEvent::Hmac(HmacOpen { grants: g, .. })] if *g == grants)
    );

    // Without doors and with HMAC disabled, nothing is tracked.
    let c = LegacyConfig::default();
    let mut lk = LegacyKnocks::new(&c, vec![], server, vec![]).unwrap();
    assert!(lk.tracker().is_none() && lk.hmac().is_none());
    assert!(lk
        .observe(a, Proto::Tcp, 7000, tcp_flag::SYN, 0, unix)
        .is_empty());
}
