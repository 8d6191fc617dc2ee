//! Where the datagram goes: parsing `host`, `host:port`, `[v6]:port`,
//! resolving it, and the one `send_to`.

use crate::error::ClientError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

/// The server's SPA port unless told otherwise (fwknop's 62201, so existing
/// firewall holes and habits carry over).
pub const DEFAULT_SPA_PORT: u16 = 62201;

/// Which address family to use when a name has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    #[default]
    Any,
    V4,
    V6,
}

/// `-4` / `-6`, shared by every command that reaches a server.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct FamilyArgs {
    /// Use IPv4 only (when SERVER's name has both kinds of address).
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Use IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,
}

impl FamilyArgs {
    pub fn family(self) -> Family {
        match (self.ipv4, self.ipv6) {
            (true, _) => Family::V4,
            (_, true) => Family::V6,
            _ => Family::Any,
        }
    }
}

impl Family {
    fn admits(self, ip: &IpAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Family::Any => "usable",
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

fn bad(spec: &str, reason: &str) -> ClientError {
    ClientError::BadServer {
        spec: spec.to_string(),
        reason: reason.to_string(),
    }
}

fn port_of(spec: &str, p: &str) -> Result<u16, ClientError> {
    match p.parse::<u16>() {
        Ok(0) => Err(bad(spec, "port 0 is not a port (1-65535)")),
        Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(bad(
            spec,
            "the port after ':' must be a number from 1 to 65535",
        )),
    }
}

/// Splits SERVER into host and port. A bare IPv6 address needs no brackets
/// unless a port follows it.
pub fn parse_server(spec: &str, default_port: u16) -> Result<(String, u16), ClientError> {
    let s = spec.trim();
    if s.is_empty() {
        return Err(bad(spec, "empty"));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(spec, "missing ']' after the IPv6 address"))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(bad(
                spec,
                "brackets are only for IPv6 addresses: [ADDR]:PORT",
            ));
        }
        let port = match after {
            "" => default_port,
            p => match p.strip_prefix(':') {
                Some(p) => port_of(spec, p)?,
                None => return Err(bad(spec, "expected ':PORT' after ']'")),
            },
        };
        return Ok((host.to_string(), port));
    }
    match s.matches(':').count() {
        0 => Ok((s.to_string(), default_port)),
        1 => {
            let (host, p) = s.split_once(':').unwrap_or((s, ""));
            if host.is_empty() {
                return Err(bad(spec, "no host before ':'"));
            }
            Ok((host.to_string(), port_of(spec, p)?))
        }
        _ if s.parse::<Ipv6Addr>().is_ok() => Ok((s.to_string(), default_port)),
        _ => Err(bad(
            spec,
            "an IPv6 address with a port is written [ADDR]:PORT",
        )),
    }
}

/// Resolves host and port to one address of the wanted family (and of the
/// family of `source`, when one is given). A literal address is used as is.
pub fn resolve(
    host: &str,
    port: u16,
    family: Family,
    source: Option<IpAddr>,
) -> Result<SocketAddr, ClientError> {
    let family = match (family, source) {
        (Family::Any, Some(IpAddr::V4(_))) => Family::V4,
        (Family::Any, Some(IpAddr::V6(_))) => Family::V6,
        (f, _) => f,
    };
    let candidates: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => (host, port)
            .to_socket_addrs()
            .map_err(|source| ClientError::UnknownHost {
                host: host.to_string(),
                source,
            })?
            .collect(),
    };
    candidates
        .into_iter()
        .find(|a| family.admits(&a.ip()))
        .ok_or(ClientError::NoAddress {
            host: host.to_string(),
            wanted: family.name(),
        })
}

/// Sends `bytes` as one UDP datagram from an ephemeral port. No reply is
/// awaited: an SPA server never answers.
pub fn send_datagram(
    bytes: &[u8],
    dest: SocketAddr,
    source: Option<IpAddr>,
) -> Result<(), ClientError> {
    let bind_ip = source.unwrap_or(match dest {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let bind = SocketAddr::new(bind_ip, 0);
    let sock = UdpSocket::bind(bind).map_err(|source| ClientError::Bind { addr: bind, source })?;
    let sent = sock
        .send_to(bytes, dest)
        .map_err(|source| ClientError::Send { addr: dest, source })?;
    if sent != bytes.len() {
        return Err(ClientError::ShortSend {
            addr: dest,
            sent,
            len: bytes.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, u16) {
        parse_server(s, DEFAULT_SPA_PORT).unwrap()
    }

    #[test]
    fn server_forms() {
        assert_eq!(ok("gw1"), ("gw1".into(), 62201));
        assert_eq!(ok("gw1:1000"), ("gw1".into(), 1000));
        assert_eq!(ok("198.18.0.1"), ("198.18.0.1".into(), 62201));
        assert_eq!(ok("198.18.0.1:9"), ("198.18.0.1".into(), 9));
        assert_eq!(ok("2001:2::1"), ("2001:2::1".into(), 62201));
        assert_eq!(ok("[2001:2::1]"), ("2001:2::1".into(), 62201));
        assert_eq!(ok("[2001:2::1]:77"), ("2001:2::1".into(), 77));
        assert_eq!(ok("::1"), ("::1".into(), 62201));
    }

    #[test]
    fn server_errors() {
        for (s, needle) in [
            ("", "empty"),
            ("gw1:0", "port 0"),
            ("gw1:65536", "1 to 65535"),
            ("gw1:x", "1 to 65535"),
            ("gw1:+5", "1 to 65535"),
            (":22", "no host"),
            ("[::1", "missing ']'"),
            ("[gw1]:5", "only for IPv6"),
            ("[::1]22", "':PORT'"),
            ("a:b:c", "[ADDR]:PORT"),
        ] {
            let e = parse_server(s, DEFAULT_SPA_PORT).unwrap_err().to_string();
            assert!(e.contains(needle), "{s:?}: {e}");
        }
    }

    #[test]
    fn resolve_literals_and_families() {
        let a = resolve("127.0.0.1", 5, Family::Any, None).unwrap();
        assert_eq!(a, "127.0.0.1:5".parse().unwrap());
        assert!(resolve("127.0.0.1", 5, Family::V6, None).is_err());
        let e = resolve("::1", 5, Family::Any, Some("127.0.0.1".parse().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no IPv4 address"), "{e}");
        let a = resolve("localhost", 5, Family::V4, None).unwrap();
        assert!(a.ip().is_loopback());
    }

    #[test]
    fn send_reaches_a_local_socket() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let dest = rx.local_addr().unwrap();
        send_datagram(b"hello", dest, Some("127.0.0.1".parse().unwrap())).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
