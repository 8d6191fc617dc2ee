//! Doors and the sequence tracker: parsing, knockd semantics, the bounded table.

use super::tcp_flag::*;
use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC612_0000 | (n & 0xffff)))
}

fn tracker() -> SequenceTracker {
    SequenceTracker::new(default_doors(5), 1000).unwrap()
}

fn syn(t: &mut SequenceTracker, src: IpAddr, port: u16, now: u64) -> Option<KnockEvent> {
    t.observe(src, Proto::Tcp, port, SYN, now)
}

fn knock_all(t: &mut SequenceTracker, src: IpAddr, ports: &[u16], t0: u64) -> Option<KnockEvent> {
    let mut last = None;
    for (i, &p) in ports.iter().enumerate() {
        last = syn(t, src, p, t0 + i as u64);
    }
    last
}

fn ssh() -> Grant {
    Grant::tcp(22).unwrap()
}

#[test]
fn default_doors_are_knockds() {
    let d = default_doors(5);
    assert_eq!(d[0].name.as_ref(), "openSSH");
    assert_eq!(d[0].sequence, parse_sequence("7000,8000,9000").unwrap());
    assert_eq!(
        d[1].sequence,
        parse_sequence("9000:tcp,8000:tcp,7000:tcp").unwrap()
    );
    assert_eq!(
        d[0].action,
        DoorAction::Open {
            grant: ssh(),
            duration_secs: None
        }
    );
    assert_eq!(d[1].action, DoorAction::Close { grant: ssh() });
}

#[test]
fn open_then_close() {
    let mut t = tracker();
    let a = ip(1);
    assert_eq!(syn(&mut t, a, 7000, 0), None);
    assert_eq!(syn(&mut t, a, 8000, 10), None);
    assert_eq!(
        syn(&mut t, a, 9000, 20),
        Some(KnockEvent::Open {
            door: "openSSH".into(),
            addr: a,
            grant: ssh(),
            duration_secs: None
        })
    );
    assert_eq!(t.tracked_sources(), 0);
    assert_eq!(
        knock_all(&mut t, a, &[9000, 8000, 7000], 100),
        Some(KnockEvent::Close {
            door: "closeSSH".into(),
            addr: a,
            grant: ssh()
        })
    );
}

#[test]
fn ipv6_sources_work() {
    let mut t = tracker();
    let a = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1));
    assert!(matches!(
        knock_all(&mut t, a, &[7000, 8000, 9000], 0),
        Some(KnockEvent::Open { .. })
    ));
}

#[test]
fn wrong_order_fails_and_the_wrong_knock_does_not_restart() {
    let mut t = tracker();
    let a = ip(1);
    assert_eq!(knock_all(&mut t, a, &[7000, 9000, 8000], 0), None);
    // knockd: 7000 7000 8000 9000 fails too: the second 7000 invalidates
    // and does not start over; 8000 and 9000 then are no first knock.
    assert_eq!(knock_all(&mut t, a, &[7000, 7000, 8000, 9000], 100), None);
    // ... but that last 9000 started closeSSH, and so a retry right now
    // fails as well: its 7000 is a wrong knock for closeSSH (knockd too).
    assert_eq!(t.tracked_sources(), 1);
    assert_eq!(knock_all(&mut t, a, &[7000, 8000, 9000], 200), None);
    // A clean retry once nothing is pending works.
    assert!(knock_all(&mut t, a, &[7000, 8000, 9000], 6000).is_some());
}

#[test]
fn too_slow_expires_measured_from_first_knock() {
    let mut t = tracker();
    let a = ip(1);
    syn(&mut t, a, 7000, 0);
    syn(&mut t, a, 8000, 4000);
    assert_eq!(
        syn(&mut t, a, 9000, 5000),
        None,
        "5 s after the first knock is too late"
    );
    let mut t = tracker();
    syn(&mut t, a, 7000, 0);
    syn(&mut t, a, 8000, 4000);
    assert!(syn(&mut t, a, 9000, 4999).is_some());
    // An expired attempt does not block a fresh start with the same knock.
    let mut t = tracker();
    syn(&mut t, a, 7000, 0);
    assert_eq!(syn(&mut t, a, 7000, 6000), None);
    syn(&mut t, a, 8000, 6001);
    assert!(syn(&mut t, a, 9000, 6002).is_some());
}

#[test]
fn interleaved_sources_are_independent() {
    let mut t = tracker();
    let (a, b) = (ip(1), ip(2));
    syn(&mut t, a, 7000, 0);
    syn(&mut t, b, 9000, 1);
    syn(&mut t, a, 8000, 2);
    syn(&mut t, b, 8000, 3);
    assert!(matches!(syn(&mut t, a, 9000, 4), Some(KnockEvent::Open { addr, .. }) if addr == a));
    assert!(matches!(syn(&mut t, b, 7000, 5), Some(KnockEvent::Close { addr, .. }) if addr == b));
}

#[test]
fn tcpflags_mismatch_is_ignored_not_a_reset() {
    let mut t = tracker();
    let a = ip(1);
    syn(&mut t, a, 7000, 0);
    // An ACK to 9000 (e.g. stray traffic) neither advances nor resets.
    assert_eq!(t.observe(a, Proto::Tcp, 9000, ACK, 1), None);
    assert_eq!(t.observe(a, Proto::Tcp, 8000, RST | ACK, 2), None);
    syn(&mut t, a, 8000, 3);
    assert!(syn(&mut t, a, 9000, 4).is_some());
    // An ACK on the first port starts nothing.
    assert_eq!(t.observe(a, Proto::Tcp, 7000, ACK, 10), None);
    assert_eq!(t.tracked_sources(), 0);
}

#[test]
fn wrong_protocol_resets() {
    let mut t = SequenceTracker::new(
        vec![Door {
            name: "mixed".into(),
            sequence: parse_sequence("7000:tcp,8000:udp,9000").unwrap(),
            seq_timeout_ms: 5000,
            tcpflags: TcpFlags::SYN,
            action: DoorAction::Open {
                grant: ssh(),
                duration_secs: Some(30),
            },
        }],
        10,
    )
    .unwrap();
    let a = ip(1);
    syn(&mut t, a, 7000, 0);
    assert_eq!(t.observe(a, Proto::Udp, 7000, 0, 1), None); // 7000/udp is not a knock port
    assert_eq!(t.tracked_sources(), 1);
    syn(&mut t, a, 8000, 2); // 8000/tcp is not a step either: ignored
    assert_eq!(t.tracked_sources(), 1);
    t.observe(a, Proto::Udp, 8000, 0, 3);
    assert_eq!(
        syn(&mut t, a, 9000, 4),
        Some(KnockEvent::Open {
            door: "mixed".into(),
            addr: a,
            grant: ssh(),
            duration_secs: Some(30)
        })
    );
    syn(&mut t, a, 7000, 10);
    syn(&mut t, a, 9000, 11); // a step of the door, but not the next one
    assert_eq!(t.tracked_sources(), 0);
}

#[test]
fn knock_on_another_doors_port_resets() {
    let mut t = tracker();
    let a = ip(1);
    syn(&mut t, a, 7000, 0);
    syn(&mut t, a, 9000, 1);
    assert_eq!(t.tracked_sources(), 0);
}

#[test]
fn single_step_and_shared_prefix_doors() {
    let g = |p| Grant::tcp(p).unwrap();
    let door = |name: &str, seq: &str, port| Door {
        name: name.into(),
        sequence: parse_sequence(seq).unwrap(),
        seq_timeout_ms: 5000,
        tcpflags: TcpFlags::ANY,
        action: DoorAction::Open {
            grant: g(port),
            duration_secs: None,
        },
    };
    let mut t = SequenceTracker::new(
        vec![
            door("one", "1111", 1),
            door("short", "2000,3000", 2),
            door("long", "2000,3000,4000", 3),
        ],
        10,
    )
    .unwrap();
    let a = ip(1);
    assert!(
        matches!(syn(&mut t, a, 1111, 0), Some(KnockEvent::Open { grant, .. }) if grant == g(1))
    );
    assert_eq!(t.tracked_sources(), 0);
    syn(&mut t, a, 2000, 1);
    assert!(
        matches!(syn(&mut t, a, 3000, 2), Some(KnockEvent::Open { grant, .. }) if grant == g(2))
    );
    // knockd keeps the longer door going after the shorter completed.
    assert!(
        matches!(syn(&mut t, a, 4000, 3), Some(KnockEvent::Open { grant, .. }) if grant == g(3))
    );
}

#[test]
fn identical_sequences_and_bad_doors_are_rejected() {
    let mut d = default_doors(5);
    d[1].sequence = d[0].sequence.clone();
    assert!(matches!(
        SequenceTracker::new(d, 10),
        Err(DoorSetError::SameSequence { .. })
    ));
    let mut d = default_doors(5);
    d[0].seq_timeout_ms = 0;
    let e = SequenceTracker::new(d, 10).unwrap_err();
    assert!(e.to_string().contains("openSSH"), "{e}");
    let mut d = default_doors(5);
    d[0].sequence.clear();
    assert!(SequenceTracker::new(d, 10).is_err());
}

#[test]
fn tcpflags_parse_and_display() {
    assert_eq!(TcpFlags::parse("syn").unwrap(), TcpFlags::SYN);
    let f = TcpFlags::parse("FIN, !ack").unwrap();
    assert_eq!(
        f,
        TcpFlags {
            set: FIN,
            clear: ACK
        }
    );
    assert_eq!(f.to_string(), "fin,!ack");
    assert!(f.matches(Proto::Tcp, FIN));
    assert!(!f.matches(Proto::Tcp, FIN | ACK));
    assert!(f.matches(Proto::Udp, 0));
    assert!(TcpFlags::parse("syn,!syn").is_err());
    assert!(TcpFlags::parse("xmas").is_err());
    assert!(TcpFlags::parse("").is_err());
    assert_eq!(TcpFlags::ANY.to_string(), "any");
}

#[test]
fn door_flags_must_match_a_bare_syn() {
    for ok in ["syn", "SYN", "syn,!ack", "!fin", "!ack,!rst"] {
        assert!(TcpFlags::parse_door(ok).is_ok(), "{ok}");
    }
    for bad in ["ack", "fin,!ack", "!syn", "syn,ack", "psh"] {
        assert_eq!(
            TcpFlags::parse_door(bad),
            Err(FlagsError::NeverBareSyn { text: bad.into() })
        );
    }
    assert!(TcpFlags::parse_door("xmas").is_err());
}

#[test]
fn sequence_parse_errors() {
    assert!(parse_sequence("7000,,9000").is_err());
    assert!(parse_sequence("0").is_err());
    assert!(parse_sequence("65536").is_err());
    assert!(parse_sequence("7000:icmp").is_err());
    assert!(parse_sequence("abc").is_err());
    assert!(parse_sequence(&vec!["1"; 33].join(",")).is_err());
    assert_eq!(parse_sequence(&vec!["1"; 32].join(",")).unwrap().len(), 32);
    assert_eq!(
        parse_sequence(" 7000 : UDP ").unwrap(),
        vec![Step {
            port: 7000,
            proto: Proto::Udp
        }]
    );
}

/// The flood: 100k spoofed first knocks (20k pps, so 50 per ms)
/// interleaved with one real 3-knock sequence at 1 ms spacing; the real
/// one opens and the table never exceeds its cap.
#[test]
fn spoofed_first_knock_flood_does_not_stop_a_real_knocker() {
    let cap = 4096;
    let mut t = SequenceTracker::new(default_doors(5), cap).unwrap();
    let real = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    let real_knocks = [(40_000usize, 7000u16), (40_050, 8000), (40_100, 9000)];
    let mut opened = 0;
    let mut max_len = 0;
    for i in 0..100_000usize {
        let now = (i / 20) as u64; // 20 packets per ms = 20k pps
        let spoofed = IpAddr::V4(Ipv4Addr::from(0xC613_0000u32.wrapping_add(i as u32)));
        assert_eq!(syn(&mut t, spoofed, 7000, now), None);
        for &(at, port) in &real_knocks {
            if at == i {
                if let Some(KnockEvent::Open { addr, .. }) = syn(&mut t, real, port, now) {
                    assert_eq!(addr, real);
                    opened += 1;
                }
            }
        }
        max_len = max_len.max(t.tracked_sources());
        assert!(t.tracked_sources() <= cap);
    }
    assert_eq!(opened, 1);
    assert!(max_len <= cap);
    assert!(
        t.stats().evicted > 0,
        "the flood must have filled the table"
    );
    assert!(t.table.order_len() <= 2 * cap + 2);
}

/// Past its first knock a real knocker survives even a flood that turns
/// the table over between its knocks (second chance).
#[test]
fn advanced_knocker_survives_one_full_turnover() {
    let cap = 100;
    let mut t = SequenceTracker::new(default_doors(5), cap).unwrap();
    let real = ip(60_000);
    syn(&mut t, real, 7000, 0);
    syn(&mut t, real, 8000, 1);
    for i in 0..(cap as u32 + 50) {
        syn(&mut t, ip(i), 7000, 2);
    }
    assert!(syn(&mut t, real, 9000, 3).is_some());
}

/// Throughput and memory under a 1M-packet spoofed first-knock flood
/// with the default capacity: `cargo test --release -p spa-server
/// flood_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn flood_throughput() {
    let rss_kb = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let before = rss_kb();
    let mut t = SequenceTracker::new(default_doors(5), DEFAULT_MAX_SOURCES).unwrap();
    let n = 1_000_000u32;
    let start = std::time::Instant::now();
    for i in 0..n {
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i)));
        t.observe(src, Proto::Tcp, 7000, SYN, u64::from(i / 20));
    }
    let el = start.elapsed();
    println!(
        "{n} spoofed first knocks in {el:?}: {:.0} ns/knock, table {} (cap {}), evicted {}, expired {}",
        el.as_nanos() as f64 / f64::from(n),
        t.tracked_sources(),
        t.max_sources(),
        t.stats().evicted,
        t.stats().expired
    );
    println!("RSS grew by {} KiB", rss_kb().saturating_sub(before));
    assert!(t.tracked_sources() <= DEFAULT_MAX_SOURCES);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Never panics, never exceeds the cap, on arbitrary knocks and times.
    #[test]
    fn arbitrary_knocks_never_panic(
        knocks in proptest::collection::vec(
            (0u32..8, any::<bool>(), prop_oneof![Just(7000u16), Just(8000), Just(9000), any::<u16>()],
             any::<u8>(), 0u64..20_000),
            0..300)
    ) {
        let mut t = SequenceTracker::new(default_doors(5), 4).unwrap();
        let mut now = 0u64;
        for (src, udp, port, flags, dt) in knocks {
            now = now.saturating_add(dt);
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            let ev = t.observe(ip(src), proto, port, flags, now);
            if let Some(KnockEvent::Open { addr, .. } | KnockEvent::Close { addr, .. }) = ev {
                prop_assert_eq!(addr, ip(src));
            }
            prop_assert!(t.tracked_sources() <= 4);
        }
    }

    /// The correct sequence within the timeout always opens, whatever
    /// other sources do in between.
    #[test]
    fn correct_sequence_opens_despite_other_sources(
        noise in proptest::collection::vec((1u32..50, prop_oneof![Just(7000u16), Just(8000), Just(9000)]), 0..40),
        gaps in proptest::collection::vec(0u64..2000, 3),
    ) {
        let mut t = SequenceTracker::new(default_doors(5), 1000).unwrap();
        let real = ip(0);
        let mut now = 0;
        let mut got = None;
        for (k, &port) in [7000u16, 8000, 9000].iter().enumerate() {
            now += gaps[k] / 2;
            for &(s, p) in &noise {
                syn(&mut t, ip(s), p, now);
            }
            got = syn(&mut t, real, port, now);
        }
        let opened = matches!(got, Some(KnockEvent::Open { addr, .. }) if addr == real);
        prop_assert!(opened);
    }
}

/// The parsers' and the door check's messages, byte for byte (they reach
/// admins behind `file:line:` or `legacy.door[i].field:`).
#[test]
fn messages_are_pinned() {
    let flags = |s: &str| TcpFlags::parse(s).unwrap_err().to_string();
    assert_eq!(
        flags("syn, XMAS"),
        "unknown TCP flag \"XMAS\" (fin, syn, rst, psh, ack, urg, or !flag)"
    );
    assert_eq!(
        flags("syn,!syn"),
        "\"syn,!syn\" both requires and forbids the same flag"
    );
    assert_eq!(
        TcpFlags::parse_door("ack").unwrap_err().to_string(),
        "\"ack\" never matches a bare SYN, and spa captures TCP knocks as bare SYNs (what \
         knock clients send): this door could never open; use \"syn\" or remove the line"
    );
    assert_eq!(
        flags(""),
        "unknown TCP flag \"\" (fin, syn, rst, psh, ack, urg, or !flag)"
    );
    let seq = |s: &str| parse_sequence(s).unwrap_err().to_string();
    assert_eq!(seq("7000,,9000"), "empty step in sequence \"7000,,9000\"");
    assert_eq!(seq("0"), "\"0\" is not a port number 1..=65535");
    assert_eq!(seq("65536:udp"), "\"65536\" is not a port number 1..=65535");
    assert_eq!(seq("7000:icmp"), "unknown protocol \"icmp\" (tcp or udp)");
    assert_eq!(
        seq(&vec!["1"; 33].join(",")),
        "more than 32 steps (knockd's limit)"
    );
    let door = |sequence: Vec<Step>, seq_timeout_ms| Door {
        name: Arc::from("d"),
        sequence,
        seq_timeout_ms,
        tcpflags: TcpFlags::SYN,
        action: DoorAction::Close {
            grant: Grant::tcp(22).unwrap(),
        },
    };
    let step = |port| Step {
        port,
        proto: Proto::Tcp,
    };
    let check = |d: Door| d.check().unwrap_err().to_string();
    assert_eq!(check(door(Vec::new(), 1000)), "empty knock sequence");
    assert_eq!(check(door(vec![step(1); 33], 1000)), "more than 32 steps");
    assert_eq!(
        check(door(vec![step(1)], 0)),
        "seq_timeout must be at least 1 s"
    );
    assert_eq!(check(door(vec![step(0)], 1000)), "port 0 in sequence");
    assert_eq!(
        SequenceTracker::new(vec![door(vec![step(0)], 1000)], 10)
            .unwrap_err()
            .to_string(),
        "door d: port 0 in sequence"
    );
}
