//! Port specifications: `22`, `tcp/22`, `udp/53`, `53/udp`, lists `22,443`.

use crate::error::ClientError;
use spa_proto::{Grant, MAX_GRANTS};

fn bad(spec: &str, reason: impl Into<String>) -> ClientError {
    ClientError::BadPort {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

/// A port number 1-65535. Shared with `--port` so every port error reads
/// the same.
pub fn parse_port(spec: &str, s: &str) -> Result<u16, ClientError> {
    // The grammar's port rule: a bare number is a tcp grant of that port.
    let t = s.trim();
    if t.contains('/') {
        return Err(bad(spec, spa_proto::GrantSyntax::NotANumber.to_string()));
    }
    t.parse::<Grant>()
        .map(|g| g.port.get())
        .map_err(|e| bad(spec, e.to_string()))
}

/// One grant, in the one grammar ([`Grant`]'s `FromStr` in spa-proto, also
/// the server's): `PORT`, `tcp/PORT`, `udp/PORT` or `PORT/PROTO` (knockd's
/// order). TCP when no protocol is given, as ssh is the usual reason.
pub fn parse_grant(spec: &str) -> Result<Grant, ClientError> {
    spec.parse::<Grant>().map_err(|e| bad(spec, e.to_string()))
}

/// A comma-separated list; duplicates are dropped (keeping the first) so
/// they do not use up the datagram's [`MAX_GRANTS`] slots.
pub fn parse_grants<'a>(
    specs: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Grant>, ClientError> {
    let mut out: Vec<Grant> = Vec::new();
    for list in specs {
        for item in list.split(',') {
            if item.trim().is_empty() {
                return Err(bad(list, "empty entry in the port list"));
            }
            let g = parse_grant(item)?;
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    if out.is_empty() {
        return Err(ClientError::Request(spa_proto::RequestError::NoGrants));
    }
    if out.len() > MAX_GRANTS {
        return Err(ClientError::Request(
            spa_proto::RequestError::TooManyGrants { got: out.len() },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spa_proto::Proto;

    fn g(p: Proto, port: u16) -> Grant {
        Grant::new(p, port).unwrap()
    }

    #[test]
    fn single_ports_and_protocols() {
        assert_eq!(parse_grant("22").unwrap(), g(Proto::Tcp, 22));
        assert_eq!(parse_grant("tcp/22").unwrap(), g(Proto::Tcp, 22));
        assert_eq!(parse_grant("UDP/53").unwrap(), g(Proto::Udp, 53));
        assert_eq!(parse_grant("53/udp").unwrap(), g(Proto::Udp, 53));
        assert_eq!(parse_grant(" 65535 ").unwrap(), g(Proto::Tcp, 65535));
        assert_eq!(parse_grant("1").unwrap(), g(Proto::Tcp, 1));
    }

    #[test]
    fn lists() {
        assert_eq!(
            parse_grants(["22,443", "udp/53"]).unwrap(),
            vec![g(Proto::Tcp, 22), g(Proto::Tcp, 443), g(Proto::Udp, 53)]
        );
        assert_eq!(
            parse_grants(["22,tcp/22,22/tcp"]).unwrap(),
            vec![g(Proto::Tcp, 22)]
        );
        assert_eq!(
            parse_grants(["tcp/22,udp/22"]).unwrap(),
            vec![g(Proto::Tcp, 22), g(Proto::Udp, 22)]
        );
    }

    #[test]
    fn invalid_ports() {
        for (spec, needle) in [
            ("0", "port 0"),
            ("65536", "65535"),
            ("99999999999", "65535"),
            ("-1", "1 to 65535"),
            ("", "1 to 65535"),
            ("ssh", "1 to 65535"),
            ("sctp/22", "unknown protocol 'sctp'"),
            ("tcp/", "1 to 65535"),
            ("/22", "unknown protocol"),
            ("tcp/0", "port 0"),
            ("22/icmp", "unknown protocol 'icmp'"),
        ] {
            let e = parse_grant(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec:?}: {e}");
            assert!(e.starts_with(&format!("invalid port '{spec}'")), "{e}");
        }
    }

    #[test]
    fn list_limits() {
        let nine = (1..=9).map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        let e = parse_grants([nine.as_str()]).unwrap_err().to_string();
        assert!(e.contains("at most 8"), "{e}");
        let eight = (1..=8).map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(parse_grants([eight.as_str()]).unwrap().len(), 8);
        assert!(parse_grants(["22,,23"]).is_err());
        assert!(parse_grants(Vec::<&str>::new()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn every_valid_port_parses(port in 1u16.., udp: bool) {
            let spec = if udp { format!("udp/{port}") } else { port.to_string() };
            let want = g(if udp { Proto::Udp } else { Proto::Tcp }, port);
            proptest::prop_assert_eq!(parse_grant(&spec).unwrap(), want);
        }

        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = parse_grants([s.as_str()]);
        }
    }
}
