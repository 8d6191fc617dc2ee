//! Silent ports (issue 10, item 4): what arrives for the SPA port and the
//! enabled knock ports is dropped by our own chain/rules, so the host sends
//! nothing back (no ICMP port-unreachable, no RST) and a scan sees those
//! ports as filtered, like every other port behind a default-drop policy.
//! The capture reads frames before netfilter, so it still sees them.
//!
//! Ports are kept as ranges: an HMAC knock range is tens of thousands of
//! ports, and both tools take a range in one rule.

use spa_proto::Proto;

/// The ports to drop, as sorted, merged `(proto, first, last)` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Silence {
    pub ranges: Vec<(Proto, u16, u16)>,
}

impl Silence {
    /// From port lists in any order (duplicates allowed).
    pub fn new(udp: &[u16], tcp: &[u16]) -> Silence {
        let mut ranges = Vec::new();
        for (proto, ports) in [(Proto::Udp, udp), (Proto::Tcp, tcp)] {
            let mut p = ports.to_vec();
            p.sort_unstable();
            p.dedup();
            let mut it = p.into_iter();
            let Some(first) = it.next() else { continue };
            let (mut lo, mut hi) = (first, first);
            for port in it {
                if hi.checked_add(1) == Some(port) {
                    hi = port;
                } else {
                    ranges.push((proto, lo, hi));
                    lo = port;
                    hi = port;
                }
            }
            ranges.push((proto, lo, hi));
        }
        Silence { ranges }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// `62201` or `10000:20000` (iptables) / `10000-20000` (nft).
pub fn range_text(lo: u16, hi: u16, sep: char) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}{sep}{hi}")
    }
}

/// The comment our drop rules carry: told apart from grants and jumps.
pub fn comment(base: &str) -> String {
    format!("{base} silent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        let s = Silence::new(
            &[62201, 7001, 7000, 7002, 7000],
            &[9000, 8000, 65535, 65534],
        );
        assert_eq!(
            s.ranges,
            vec![
                (Proto::Udp, 7000, 7002),
                (Proto::Udp, 62201, 62201),
                (Proto::Tcp, 8000, 8000),
                (Proto::Tcp, 9000, 9000),
                (Proto::Tcp, 65534, 65535),
            ]
        );
        assert!(Silence::new(&[], &[]).is_empty());
        assert_eq!(range_text(1, 1, ':'), "1");
        assert_eq!(range_text(1, 5, '-'), "1-5");
    }
}
