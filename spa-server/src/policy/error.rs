//! Why a key's `from`, `expires` or `[key.forward]` is refused: the facts
//! (the entry as written, the limit, the keys in conflict), so a caller can
//! match on them; the text is made here only, and `config/` puts the file,
//! line and field in front of it.

use spa_proto::Grant;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A refused policy value. `entry` is the text as the admin wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// `from = []`: the key could never be used.
    EmptyFrom,
    /// A `from` entry that is not an address or network.
    NotANetwork { entry: String },
    /// A `from` prefix length that is not a number up to `max` (32, 128).
    BadPrefix { entry: String, max: u8 },
    /// Host bits set below the prefix: `network/prefix` was likely meant.
    HostBits {
        entry: String,
        prefix: u8,
        network: IpAddr,
    },
    /// A forward target that is not `host:port`.
    NotHostPort { entry: String },
    /// A forward target with port 0.
    ZeroPort { entry: String },
    /// A forward target that is unspecified, loopback or multicast.
    NotAHost { entry: String },
    /// `grant` is forwarded by `other` to `to`, but `key` opens it locally
    /// (`mine` None) or forwards it elsewhere (`mine`). `other` is None
    /// only if no key could be named.
    ForwardConflict {
        grant: Grant,
        to: SocketAddr,
        other: Option<String>,
        key: String,
        mine: Option<SocketAddr>,
    },
    /// `expires` is a bare time of day.
    TimeWithoutDate,
    /// `expires` before the Unix epoch; `value` as TOML wrote it.
    Before1970 { value: String },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::EmptyFrom => write!(
                f,
                "an empty list would refuse the key everywhere: remove `from` (anywhere) \
                 or list networks"
            ),
            PolicyError::NotANetwork { entry } => write!(
                f,
                "{entry:?} is not an address or network (203.0.113.0/24, 2001:db8::/48)"
            ),
            PolicyError::BadPrefix { entry, max } => {
                write!(f, "{entry:?}: the prefix length must be 0-{max}")
            }
            PolicyError::HostBits {
                entry,
                prefix,
                network,
            } => write!(
                f,
                "{entry:?} has host bits set below /{prefix}: write {network}/{prefix}"
            ),
            PolicyError::NotHostPort { entry } => write!(
                f,
                "{entry:?} is not host:port (10.20.0.5:22, [2001:db8:20::5]:22)"
            ),
            PolicyError::ZeroPort { entry } => write!(f, "{entry:?}: the port must be 1-65535"),
            PolicyError::NotAHost { entry } => write!(
                f,
                "{entry:?} is not a host behind the gateway (unspecified, loopback or multicast)"
            ),
            PolicyError::ForwardConflict {
                grant,
                to,
                other,
                key,
                mine,
            } => {
                let other = other.as_deref().unwrap_or("?");
                write!(f, "key `{other}` forwards {grant} to {to} but key `{key}` ")?;
                match mine {
                    Some(t) => write!(f, "forwards it to {t}")?,
                    None => write!(f, "opens it on the gateway itself")?,
                }
                write!(
                    f,
                    ": a grant means one thing on the gateway; use another port for one of them"
                )
            }
            PolicyError::TimeWithoutDate => write!(
                f,
                "a time without a date: write a date (2027-01-31) or a date-time \
                 (2027-01-31T18:00:00Z)"
            ),
            PolicyError::Before1970 { value } => write!(f, "{value} is before 1970"),
        }
    }
}

impl std::error::Error for PolicyError {}

#[cfg(test)]
mod tests {
    use crate::config::{Config, KeyPolicy};
    use crate::policy::{check_forwards, parse_expires, parse_from, parse_target, Net};
    use spa_proto::Grant;

    /// Every message of the policy parsers, byte for byte: admins read
    /// them after `file:line: field`, and scripts match them.
    #[test]
    fn messages_are_pinned() {
        let net = |s: &str| s.parse::<Net>().unwrap_err().to_string();
        assert_eq!(
            parse_from(&[]).unwrap_err().to_string(),
            "an empty list would refuse the key everywhere: remove `from` (anywhere) or list networks"
        );
        assert_eq!(
            net("example.org"),
            "\"example.org\" is not an address or network (203.0.113.0/24, 2001:db8::/48)"
        );
        assert_eq!(
            net("10.0.0.0/33"),
            "\"10.0.0.0/33\": the prefix length must be 0-32"
        );
        assert_eq!(
            net("2001:db8::/x"),
            "\"2001:db8::/x\": the prefix length must be 0-128"
        );
        assert_eq!(
            net("10.0.0.5/8"),
            "\"10.0.0.5/8\" has host bits set below /8: write 10.0.0.0/8"
        );
        assert_eq!(
            parse_from(&["10.0.0.0/8".into(), " 10.0.0.5/8 ".into()])
                .unwrap_err()
                .to_string(),
            "\"10.0.0.5/8\" has host bits set below /8: write 10.0.0.0/8"
        );
        let target = |s: &str| parse_target(s).unwrap_err().to_string();
        assert_eq!(
            target("nope"),
            "\"nope\" is not host:port (10.20.0.5:22, [2001:db8:20::5]:22)"
        );
        assert_eq!(
            target("10.0.0.1:0"),
            "\"10.0.0.1:0\": the port must be 1-65535"
        );
        assert_eq!(
            target("127.0.0.1:22"),
            "\"127.0.0.1:22\" is not a host behind the gateway (unspecified, loopback or multicast)"
        );
        let v: toml::Table = toml::from_str("e = 18:00:00\nf = 1969-12-31T00:00:00Z").unwrap();
        let expires = |k: &str| match &v[k] {
            toml::Value::Datetime(d) => parse_expires(d).unwrap_err().to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            expires("e"),
            "a time without a date: write a date (2027-01-31) or a date-time (2027-01-31T18:00:00Z)"
        );
        assert_eq!(expires("f"), "1969-12-31T00:00:00Z is before 1970");
    }

    /// The configuration-wide forward rule's message, both shapes.
    #[test]
    fn forward_conflict_messages_are_pinned() {
        let ssh = Grant::tcp(22).unwrap();
        let key = |name: &str, byte, to: Option<&str>| {
            let mut k = KeyPolicy::for_tests(name, byte, &[ssh], 30);
            if let Some(t) = to {
                k.rules.forward.push((ssh, t.parse().unwrap()));
            }
            k
        };
        let mut cfg = Config::for_tests(
            vec![
                key("a", 1, Some("10.20.0.5:22")),
                key("b", 2, Some("10.20.0.6:22")),
            ],
            30,
        );
        assert_eq!(
            check_forwards(&cfg.keys).unwrap_err().to_string(),
            "key `b` forwards tcp/22 to 10.20.0.6:22 but key `a` forwards it to 10.20.0.5:22: \
             a grant means one thing on the gateway; use another port for one of them"
        );
        cfg.keys[1] = key("b", 2, None);
        assert_eq!(
            check_forwards(&cfg.keys).unwrap_err().to_string(),
            "key `a` forwards tcp/22 to 10.20.0.5:22 but key `b` opens it on the gateway \
             itself: a grant means one thing on the gateway; use another port for one of them"
        );
    }
}
