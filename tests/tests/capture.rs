//! The capture on a real veth in a network namespace: a datagram of the right
//! size to the SPA port is seen with its true source; other sizes, other
//! ports and outgoing traffic never reach user space; knocks are seen; an
//! interface that goes down, or is deleted and re-created, does not end it.
//!
//! The capture runs in a thread that joined the server namespace with
//! setns(2) (a thread's namespace is its own), so no helper binary is needed.
//! Packets come from the client namespace via `python3`.

mod capture_probe;

use capture_probe::*;
use spa_e2e::{Family, NetPair};
use spa_proto::{Proto, DATAGRAM_LEN};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The shared body for one address family.
fn family_checks(pair: &NetPair, probe: &mut Probe, f: Family) {
    let Family { srv, cli, cli_b } = f;
    // Negatives first, then a positive marker on the same path: once the
    // marker arrives, the negatives would have too.
    udp(pair, cli, srv, SPA, DATAGRAM_LEN - 1, 1);
    udp(pair, cli, srv, SPA, DATAGRAM_LEN + 1, 1);
    udp(pair, cli, srv, SPA, 0, 1);
    udp(pair, cli, srv, SPA + 1, DATAGRAM_LEN, 1);
    udp(pair, cli, srv, KNOCK_TCP, DATAGRAM_LEN, 1); // a TCP knock port, but UDP
    tcp_connect(pair, cli, srv, KNOCK_UDP); // a UDP knock port, but TCP
    tcp_connect(pair, cli, srv, SPA);
    udp(pair, cli, srv, SPA, DATAGRAM_LEN, 1);
    let e = probe.expect("SPA datagram", is_spa_from(cli));
    assert!(matches!(e, Ev::Spa { dst, .. } if dst == srv), "{e:?}");
    udp(pair, cli_b, srv, SPA, DATAGRAM_LEN, 1);
    probe.expect("SPA datagram from the second address", is_spa_from(cli_b));

    tcp_connect(pair, cli, srv, KNOCK_TCP);
    let e = probe.expect("TCP knock", is_knock(cli, Proto::Tcp, KNOCK_TCP));
    assert!(
        matches!(e, Ev::Knock { flags, .. } if flags & 0x12 == 0x02),
        "{e:?}"
    );
    udp(pair, cli_b, srv, KNOCK_UDP, 3, 1);
    probe.expect("UDP knock", is_knock(cli_b, Proto::Udp, KNOCK_UDP));

    probe.settle(Duration::from_millis(300));
    let spa = probe
        .seen
        .iter()
        .filter(|e| matches!(e, Ev::Spa { .. }))
        .count();
    let knocks = probe
        .seen
        .iter()
        .filter(|e| matches!(e, Ev::Knock { .. }))
        .count();
    // Exactly the two datagrams and two knocks (the refused connect is one
    // SYN: the RST comes back at once, no retransmission).
    assert_eq!(
        (spa, knocks),
        (2, 2),
        "unexpected packets: {:?}",
        probe.seen
    );
}

#[test]
fn ipv4_spa_and_knocks_on_a_named_interface() {
    let pair = NetPair::new(20);
    let mut probe = Probe::start(&pair.srv_ns, vec![pair.srv_if.clone()], spec());
    family_checks(&pair, &mut probe, pair.v4());
    let (_, stats) = probe.stop();
    assert_eq!(stats.unparsed, 0, "{stats:?}");
    assert_eq!(stats.frames, 4, "{stats:?}");
}

#[test]
fn ipv6_spa_and_knocks_on_all_interfaces() {
    let pair = NetPair::new(21);
    let mut probe = Probe::start(&pair.srv_ns, Vec::new(), spec());
    family_checks(&pair, &mut probe, pair.v6());
    let (_, stats) = probe.stop();
    assert_eq!(stats.unparsed, 0, "{stats:?}");
}

#[test]
fn outgoing_is_ignored_and_filter_reload_applies() {
    let pair = NetPair::new(22);
    let mut probe = Probe::start(&pair.srv_ns, Vec::new(), spec());
    // The server itself sends SPA-shaped datagrams and SYNs out: never seen.
    let py_out = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.sendto((b'\\x8aSPA\\x01'+bytes({DATAGRAM_LEN}))[:{DATAGRAM_LEN}],('{}',{SPA}))\nt=socket.socket()\nt.settimeout(2)\nt.connect_ex(('{}',{KNOCK_TCP}))\n",
        pair.cli_ip4, pair.cli_ip4
    );
    let st = pair
        .srv(&["python3", "-c", &py_out])
        .status()
        .expect("python3");
    assert!(st.success());
    // Loopback inside the server namespace is "to this host": seen.
    let lo = IpAddr::from([127, 0, 0, 1]);
    let st = pair
        .srv(&[
            "python3",
            "-c",
            PY_UDP,
            "127.0.0.1",
            "127.0.0.1",
            &SPA.to_string(),
            &DATAGRAM_LEN.to_string(),
            "1",
        ])
        .status()
        .expect("python3");
    assert!(st.success());
    probe.expect("SPA datagram over loopback", is_spa_from(lo));
    probe.settle(Duration::from_millis(300));
    assert_eq!(
        probe.seen.len(),
        1,
        "outgoing traffic was captured: {:?}",
        probe.seen
    );

    // Reload: 7000 stops being a knock port, 7100 becomes one.
    let cli: IpAddr = pair.cli_ip4.into();
    let srv: IpAddr = pair.srv_ip4.into();
    let mut s = spec();
    s.knock_tcp = vec![7100];
    probe.set_filter(s);
    tcp_connect(&pair, cli, srv, KNOCK_TCP);
    tcp_connect(&pair, cli, srv, 7100);
    probe.expect("knock on the new port", is_knock(cli, Proto::Tcp, 7100));
    probe.settle(Duration::from_millis(300));
    assert!(
        !probe.seen.iter().any(is_knock(cli, Proto::Tcp, KNOCK_TCP)),
        "old knock port still captured: {:?}",
        probe.seen
    );

    // The kernel accepts the longest exact program and the range fallback.
    for n in [200u16, 1000] {
        let mut s = spec();
        s.knock_tcp = (0..n).map(|i| 10_000 + 2 * i).collect();
        s.knock_udp = (0..n).map(|i| 30_000 + 2 * i).collect();
        probe.set_filter(s);
        let (t, u) = (10_000 + 2 * (n - 1), 30_000 + 2 * (n / 2));
        tcp_connect(&pair, cli, srv, t);
        probe.expect("knock on a long list", is_knock(cli, Proto::Tcp, t));
        udp(&pair, cli, srv, u, 10, 1);
        probe.expect("udp knock on a long list", is_knock(cli, Proto::Udp, u));
        udp(&pair, cli, srv, SPA, DATAGRAM_LEN, 1);
        probe.seen.clear();
        probe.expect("SPA with a long list", is_spa_from(cli));
    }
}

/// Sends an SPA datagram from `src` every 200 ms until the probe sees one
/// (a link that just came back may need a moment, for its carrier, before
/// frames flow); fails with `what` after `WAIT`.
fn spa_until_seen(pair: &NetPair, probe: &mut Probe, src: IpAddr, srv: IpAddr, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        udp(pair, src, srv, SPA, DATAGRAM_LEN, 1);
        probe.settle(Duration::from_millis(200));
        if probe.seen.iter().any(is_spa_from(src)) {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: {:?}", probe.seen);
    }
}

#[test]
fn interface_down_up_and_recreated() {
    let pair = NetPair::new(23);
    let mut probe = Probe::start(&pair.srv_ns, vec![pair.srv_if.clone()], spec());
    let cli: IpAddr = pair.cli_ip4.into();
    let srv: IpAddr = pair.srv_ip4.into();
    udp(&pair, cli, srv, SPA, DATAGRAM_LEN, 1);
    probe.expect("SPA before", is_spa_from(cli));

    // Down and up: the socket gets ENETDOWN once, logs it, keeps going;
    // one check finds the interface back and up, and disarms.
    pair.srv_sh(&format!(
        "ip link set {} down && sleep 0.2 && ip link set {} up",
        pair.srv_if, pair.srv_if
    ));
    pair.cli_sh(&format!("ip link set {} up", pair.cli_if));
    let cli_b: IpAddr = pair.cli_ip4_b.into();
    spa_until_seen(&pair, &mut probe, cli_b, srv, "no SPA after down/up");
    let r = probe.rebind();
    assert_eq!(r.missing, Ok(vec![]));
    assert!(
        !r.after,
        "an interface back up needs no further check: {r:?}"
    );

    // Deleted: the link error arms the check (also when it arrived while the
    // name still resolved); rebind reports it missing and stays armed; the
    // capture keeps running.
    pair.srv_sh(&format!("ip link del {}", pair.srv_if));
    probe.settle(Duration::from_millis(200));
    let r = probe.rebind();
    assert!(r.before, "a deleted interface must ask for a rebind: {r:?}");
    assert_eq!(r.missing, Ok(vec![pair.srv_if.clone()]));
    assert!(r.after, "a missing interface stays watched: {r:?}");

    // Re-created with a new ifindex: rebind picks it up on the same fds.
    pair.recreate_veth();
    let r = probe.rebind();
    assert_eq!(r.missing, Ok(vec![]));
    probe.seen.clear();
    spa_until_seen(&pair, &mut probe, cli, srv, "no SPA after re-creation");

    // Down, then deleted while down (no second link error comes), then
    // re-created: the check stays armed while the link is down, so the
    // new ifindex is still picked up.
    pair.srv_sh(&format!("ip link set {} down", pair.srv_if));
    probe.settle(Duration::from_millis(200));
    let r = probe.rebind();
    assert_eq!(r.missing, Ok(vec![]));
    assert!(r.after, "a down interface stays watched: {r:?}");
    pair.srv_sh(&format!("ip link del {}", pair.srv_if));
    pair.recreate_veth();
    let r = probe.rebind();
    assert_eq!(r.missing, Ok(vec![]));
    probe.seen.clear();
    spa_until_seen(
        &pair,
        &mut probe,
        cli,
        srv,
        "no SPA after delete-while-down",
    );
    let (seen, _) = probe.stop();
    assert!(!seen.iter().any(|e| matches!(e, Ev::Error(_))), "{seen:?}");
}

/// Issue 4's figure: a flood of traffic for other ports and of wrong-size
/// datagrams to the SPA port copies nothing to user space. Issue 17: nor
/// does right-length garbage to the SPA port (wrong magic, a version we do
/// not speak), over IPv4 and IPv6.
#[test]
fn flood_of_non_matching_traffic_stays_in_the_kernel() {
    const N: usize = 20_000;
    let pair = NetPair::new(24);
    let mut probe = Probe::start(&pair.srv_ns, vec![pair.srv_if.clone()], spec());
    let cli: IpAddr = pair.cli_ip4.into();
    let srv: IpAddr = pair.srv_ip4.into();
    let started = Instant::now();
    udp(&pair, cli, srv, 9999, DATAGRAM_LEN, N);
    udp(&pair, cli, srv, SPA, DATAGRAM_LEN + 1, N);
    udp(&pair, cli, srv, SPA, 1200, N);
    let cli6: IpAddr = pair.cli_ip6.into();
    let srv6: IpAddr = pair.srv_ip6.into();
    udp(&pair, cli6, srv6, 9999, DATAGRAM_LEN, N);
    // The right length and port: a wrong magic, version 3 (v4), a wrong
    // magic (v6).
    udp_head(&pair, cli, srv, SPA, DATAGRAM_LEN, N, "8a53504201");
    udp_head(&pair, cli, srv, SPA, DATAGRAM_LEN, N, "8a53504103");
    udp_head(&pair, cli6, srv6, SPA, DATAGRAM_LEN, N, "0053504101");
    let sent = Instant::now() - started;
    // The marker: one legit datagram after the flood.
    udp(&pair, cli, srv, SPA, DATAGRAM_LEN, 1);
    probe.expect("SPA after the flood", is_spa_from(cli));
    probe.settle(Duration::from_millis(300));
    let (seen, stats) = probe.stop();
    let total = 7 * N;
    eprintln!(
        "flood: {total} non-matching datagrams ({} bytes of IP) sent in {sent:?}; reached user space: {} frames, {} bytes ({stats:?})",
        N * ((28 + DATAGRAM_LEN) * 3 + (28 + DATAGRAM_LEN + 1) + (28 + 1200) + (48 + DATAGRAM_LEN) * 2),
        stats.frames,
        stats.bytes
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(stats.frames, 1, "{stats:?}");
    assert_eq!(stats.unparsed, 0, "{stats:?}");
}
