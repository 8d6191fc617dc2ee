use super::text::*;
use crate::firewall::access;
use crate::firewall::FirewallOptions;
use proptest::prelude::*;
use spa_proto::Proto;

/// Issue 15: a forward is a DNAT in the nat table and an ACCEPT in our
/// forward chain, both with the expiry, in the same restore input; an
/// input grant is a set entry and writes no rule (issue 14).
#[test]
fn a_forward_batch_writes_nat_and_forward_rules() {
    let o = FirewallOptions::default();
    let mut a = access("198.18.0.2", Proto::Tcp, 2222, 1_000_000_000);
    a.forward = Some("10.20.0.5:22".parse().unwrap());
    let local = access("198.18.0.2", Proto::Tcp, 22, 1_000_000_000);
    let b = batch(&o, &[a, local], &[]);
    let stop = datestop(1_000_000_000);
    assert_eq!(
        b,
        format!(
            "*filter\n-A SPA-FWD -s 198.18.0.2/32 -d 10.20.0.5/32 -p tcp -m tcp --dport 22 \
             -m time --datestop {stop} -m comment --comment \"spa-server exp=1000000000\" -j ACCEPT\nCOMMIT\n\
             *nat\n-A SPA -s 198.18.0.2/32 -p tcp -m tcp --dport 2222 -m addrtype --dst-type LOCAL \
             -m time --datestop {stop} -m comment --comment \"spa-server exp=1000000000\" \
             -j DNAT --to-destination 10.20.0.5:22\nCOMMIT\n"
        )
    );
}

#[test]
fn datestop_is_utc_and_one_second_early() {
    assert_eq!(datestop(1), "1970-01-01T00:00:00");
    assert_eq!(datestop(1_893_456_000), "2029-12-31T23:59:59");
    assert_eq!(datestop(1_893_456_001), "2030-01-01T00:00:00");
    // 2024-02-29 12:34:56 UTC
    assert_eq!(datestop(1_709_210_097), "2024-02-29T12:34:56");
    assert_eq!(datestop(u64::MAX), "2038-01-19T03:14:07");
    assert_eq!(datestop(0), "1970-01-01T00:00:00");
}

#[test]
fn input_grants_write_no_rule() {
    let o = FirewallOptions::default();
    let old = access("198.18.10.2", Proto::Tcp, 22, 1_893_456_001);
    let new = access("2001:2::2", Proto::Udp, 53, 1_893_456_031);
    assert!(rule_lines(&o, &old).is_empty());
    assert_eq!(batch(&o, &[new], &[old]), "*filter\nCOMMIT\n");
}

#[test]
fn jump_text() {
    let o = FirewallOptions::default();
    assert_eq!(
        restore_args(&jump_spec(&o)),
        "-m conntrack --ctstate NEW -m comment --comment spa-server -j SPA"
    );
}

proptest! {
    #[test]
    fn datestop_round_trips(t in 1u64..=MAX_DATESTOP) {
        let s = datestop(t + 1);
        let (date, time) = s.split_once('T').unwrap();
        let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
        let h: Vec<u64> = time.split(':').map(|x| x.parse().unwrap()).collect();
        // days_from_civil, the inverse, written independently.
        let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + d[2] - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        prop_assert_eq!(days as u64 * 86_400 + h[0] * 3600 + h[1] * 60 + h[2], t);
    }
}
