//! HMAC knock sequences, client side: compute the current sequence (for
//! `spa-client knock-seq`, whose output feeds the stock `knock` client) and
//! send it (for `spa-client knock`).
//!
//! Why knocks at all when we have SPA datagrams: some clients (a phone app,
//! a router, a script on a box without our client) can only send a plain
//! `knock`. An HMAC sequence changes every time step and the server accepts
//! each one once, so unlike a fixed knockd sequence it cannot be replayed.
//! The derivation is `spa_proto::knock::sequence`, specified in
//! docs/protocol.md.

use spa_proto::{KeySet, KnockParams, Proto, ServerId};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// The sequence to knock now: `unix_secs` is the client's wall clock; the
/// server accepts the step before and after its own, so clocks may differ by
/// up to one `step_secs`. `server_id` is the server's `server_id` setting.
pub fn knock_seq(keys: &KeySet, server_id: &str, params: &KnockParams, unix_secs: u64) -> Vec<u16> {
    knock_seq_at_step(keys, server_id, params, params.step_at(unix_secs))
}

/// The sequence of an explicit time step. Each (key, step) opens once: to
/// knock again within the same step, use the next step (`step + 1`), which
/// the server accepts as clock skew.
pub fn knock_seq_at_step(
    keys: &KeySet,
    server_id: &str,
    params: &KnockParams,
    step: u64,
) -> Vec<u16> {
    spa_proto::knock::sequence(keys, &ServerId::from_name(server_id), step, params)
}

/// Ports as `knock` takes them: `12345 23456 34567 45678`; with UDP each is
/// suffixed `:udp` so `knock server $(spa-client knock-seq server)` is right
/// without `-u`.
pub fn format_ports(ports: &[u16], proto: Proto) -> String {
    let suffix = match proto {
        Proto::Tcp => "",
        Proto::Udp => ":udp",
    };
    ports
        .iter()
        .map(|p| format!("{p}{suffix}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends one knock per port, in order, to `addr`: a TCP SYN (a non-blocking
/// connect that is abandoned at once, as the stock `knock` client does: the
/// knock ports are closed and silent, so there is nothing to wait for) or a
/// one-byte UDP datagram. `source` binds the local address; `delay` is
/// slept between knocks (not after the last). Errors name the port.
pub fn send_knocks(
    addr: IpAddr,
    ports: &[u16],
    proto: Proto,
    source: Option<IpAddr>,
    delay: Duration,
) -> io::Result<()> {
    if let Some(s) = source {
        if s.is_ipv4() != addr.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("source {s} and server {addr} are of different address families"),
            ));
        }
    }
    for (i, &port) in ports.iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let dst = SocketAddr::new(addr, port);
        let r = match proto {
            Proto::Tcp => crate::sock::tcp_syn(dst, source),
            Proto::Udp => udp_knock(dst, source),
        };
        r.map_err(|e| io::Error::new(e.kind(), format!("knock on {}/{port}: {e}", proto.name())))?;
    }
    Ok(())
}

fn udp_knock(dst: SocketAddr, source: Option<IpAddr>) -> io::Result<()> {
    let local = source.unwrap_or(match dst {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let sock = UdpSocket::bind(SocketAddr::new(local, 0))?;
    // One byte, like `knock -u`: some middleboxes drop empty datagrams.
    sock.send_to(&[0u8], dst)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spa_proto::MasterKey;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn sequence_matches_the_protocol_and_the_step() {
        let k = MasterKey::from_bytes([9; 32]).derive();
        let p = KnockParams::default();
        let t = 1_700_000_000;
        let s = knock_seq(&k, "gw1", &p, t);
        assert_eq!(s.len(), p.ports);
        assert_eq!(
            s,
            spa_proto::knock::sequence(&k, &ServerId::from_name("gw1"), t / 30, &p)
        );
        // Same step, same ports; next step, different ports.
        assert_eq!(s, knock_seq(&k, "gw1", &p, t - t % 30 + 29));
        assert_ne!(s, knock_seq(&k, "gw1", &p, t - t % 30 + 30));
        assert_eq!(
            knock_seq_at_step(&k, "gw1", &p, t / 30 + 1),
            knock_seq(&k, "gw1", &p, t + 30)
        );
        assert_ne!(s, knock_seq(&k, "gw2", &p, t));
    }

    #[test]
    fn formats_for_the_knock_client() {
        assert_eq!(format_ports(&[1, 22, 65535], Proto::Tcp), "1 22 65535");
        assert_eq!(format_ports(&[1, 2], Proto::Udp), "1:udp 2:udp");
        assert_eq!(format_ports(&[], Proto::Tcp), "");
    }

    #[test]
    fn udp_knocks_arrive_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let port = rx.local_addr().unwrap().port();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        send_knocks(
            lo,
            &[port, port],
            Proto::Udp,
            Some(lo),
            Duration::from_millis(1),
        )
        .unwrap();
        let mut buf = [0u8; 16];
        for _ in 0..2 {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(n, 1);
            assert_eq!(from.ip(), lo);
        }
    }

    #[test]
    fn tcp_knock_sends_a_syn_and_does_not_wait() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let start = Instant::now();
        send_knocks(lo, &[port], Proto::Tcp, Some(lo), Duration::ZERO).unwrap();
        // A listening port completes the handshake in the kernel, so the
        // SYN shows up as a queued connection.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut seen = false;
        while Instant::now() < deadline {
            match l.accept() {
                Ok(_) => {
                    seen = true;
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert!(seen, "no connection attempt arrived");
        // A closed port (RST) is no error, and nothing blocks.
        drop(l);
        send_knocks(lo, &[port, port], Proto::Tcp, None, Duration::ZERO).unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn mismatched_families_are_refused() {
        let e = send_knocks(
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            &[1],
            Proto::Tcp,
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn ipv6_loopback_udp() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 on this host
        };
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let port = rx.local_addr().unwrap().port();
        send_knocks(
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            &[port],
            Proto::Udp,
            None,
            Duration::ZERO,
        )
        .unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(rx.recv_from(&mut buf).unwrap().0, 1);
    }
}
