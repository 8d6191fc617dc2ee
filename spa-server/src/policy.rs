//! Per-key rules that fwknop's `access.conf` has and a key's allow list
//! does not: where a key may be used from (`from`, fwknop's `SOURCE`) and
//! until when (`expires`, fwknop's `ACCESS_EXPIRE`).
//!
//! Why a module of its own: the same two checks bind a datagram (verdict/)
//! and an HMAC knock (knocks.rs), and a key's grants are cut to end at its
//! expiry instant, so the kernel (nft timeout, iptables `--datestop`) ends
//! them even when the daemon is not running. Pure: time is passed in.

mod error;

pub use error::PolicyError;

use spa_proto::Grant;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// How far ahead `check-config` and the daily warning look (7 days).
pub const EXPIRY_NOTICE_SECS: u64 = 7 * 86_400;
/// How often the daemon repeats the warning for keys about to expire.
pub const EXPIRY_WARNING_EVERY_SECS: u64 = 86_400;

/// One network of a key's `from` list: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address is
    /// its IPv4 host (the address check canonicalises the same way).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Net {
    type Err = PolicyError;

    /// `203.0.113.0/24`, `2001:db8::/32`, or one address (a /32 or /128).
    /// Host bits set below the prefix are refused: `10.0.0.5/8` is almost
    /// always a typo for something narrower, and silently widening it would
    /// let a whole /8 use the key.
    fn from_str(s: &str) -> Result<Net, PolicyError> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| PolicyError::NotANetwork {
            entry: s.to_owned(),
        })?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(PolicyError::BadPrefix {
                        entry: s.to_owned(),
                        max,
                    })
                }
            },
        };
        let net = Net { addr, prefix };
        if !net.contains(addr) || net.network() != addr {
            return Err(PolicyError::HostBits {
                entry: s.to_owned(),
                prefix,
                network: net.network(),
            });
        }
        Ok(net)
    }
}

impl Net {
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(n) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(n) & mask).into())
            }
            IpAddr::V6(n) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(n) & mask).into())
            }
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A key's `from`, `expires` (and, later, forwards): what the server's
/// configuration says an accepted request of this key may mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRules {
    /// Networks the key may be used from; empty: anywhere.
    pub from: Vec<Net>,
    /// Unix second from which the key is refused; None: never.
    pub expires: Option<u64>,
    /// `[key.forward]`: grants that open a path through this gateway to a
    /// host behind it (DNAT + forward ACCEPT) instead of a local port.
    pub forward: Vec<(Grant, SocketAddr)>,
}

/// Why a key's rules refuse a request (a datagram or an HMAC knock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sender is outside the key's `from` networks.
    Source,
    /// The key's `expires` instant has passed.
    Expired { at: u64 },
}

impl Refusal {
    /// Stable name for the log's `reason=` field.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Source => "source_not_allowed",
            Refusal::Expired { .. } => "key_expired",
        }
    }
}

impl KeyRules {
    /// Checks a request from `src` at `now` (the clock's whole seconds):
    /// expiry first (an expired key is refused wherever it is used from),
    /// then the source networks. A key is refused from its last second on:
    /// a grant starts at the next whole second, so none could fit.
    pub fn check(&self, src: IpAddr, now: u64) -> Result<(), Refusal> {
        if let Some(at) = self.expires {
            if now.saturating_add(1) >= at {
                return Err(Refusal::Expired { at });
            }
        }
        if !self.from.is_empty() && !self.from.iter().any(|n| n.contains(src)) {
            return Err(Refusal::Source);
        }
        Ok(())
    }

    /// `duration_secs` cut so the grant ends no later than the key's expiry:
    /// its rule then ends by that instant in the kernel, daemon or not.
    /// `now` is the clock's whole seconds; the daemon starts a grant at the
    /// next whole second (`ceil`), so that second is kept back. Returns the
    /// duration and whether the expiry cut it.
    pub fn cap_duration(&self, duration_secs: u32, now: u64) -> (u32, bool) {
        match self.expires {
            Some(at) => {
                let left =
                    u32::try_from(at.saturating_sub(now.saturating_add(1))).unwrap_or(u32::MAX);
                if left < duration_secs {
                    (left, true)
                } else {
                    (duration_secs, false)
                }
            }
            None => (duration_secs, false),
        }
    }

    /// The `from` list as the log and check-config print it.
    pub fn from_text(&self) -> String {
        if self.from.is_empty() {
            "anywhere".into()
        } else {
            self.from
                .iter()
                .map(Net::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}

/// Parses a key's `from` list; the error names the entry.
pub fn parse_from(list: &[String]) -> Result<Vec<Net>, PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::EmptyFrom);
    }
    list.iter().map(|s| s.trim().parse()).collect()
}

/// Parses one `[key.forward]` target: `10.20.0.5:22` or
/// `[2001:db8:20::5]:22`, a unicast host with a port.
pub fn parse_target(s: &str) -> Result<SocketAddr, PolicyError> {
    let entry = || s.to_owned();
    let t: SocketAddr = s
        .trim()
        .parse()
        .map_err(|_| PolicyError::NotHostPort { entry: entry() })?;
    let ip = t.ip().to_canonical();
    if t.port() == 0 {
        return Err(PolicyError::ZeroPort { entry: entry() });
    }
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(PolicyError::NotAHost { entry: entry() });
    }
    Ok(SocketAddr::new(ip, t.port()))
}

/// What the checks over all keys read of one key. A trait because
/// `config` builds its keys from this module's rules: naming its
/// `KeyPolicy` here would make the two modules import each other.
pub trait PolicyKey {
    fn name(&self) -> &str;
    /// The grants the key may ask for.
    fn allow(&self) -> &[Grant];
    fn rules(&self) -> &KeyRules;
}

/// Every forwarded grant of the configuration and its target. One grant
/// means one thing on the gateway: `check_forwards` refuses a grant that
/// one key forwards and another opens locally or forwards elsewhere.
pub fn forwards<K: PolicyKey>(keys: &[K]) -> HashMap<Grant, SocketAddr> {
    keys.iter()
        .flat_map(|k| k.rules().forward.iter().copied())
        .collect()
}

/// The configuration-wide rule for forwards (see `forwards`), the error
/// naming both keys.
pub fn check_forwards<K: PolicyKey>(keys: &[K]) -> Result<(), PolicyError> {
    let all = forwards(keys);
    for k in keys {
        for g in k.allow() {
            let Some(to) = all.get(g) else { continue };
            match k.rules().forward.iter().find(|(f, _)| f == g) {
                Some((_, mine)) if mine == to => {}
                mine => {
                    let other = keys
                        .iter()
                        .find(|o| o.rules().forward.iter().any(|(f, t)| f == g && t == to))
                        .map(|o| o.name().to_owned());
                    return Err(PolicyError::ForwardConflict {
                        grant: *g,
                        to: *to,
                        other,
                        key: k.name().to_owned(),
                        mine: mine.map(|(_, t)| *t),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A TOML `expires` value as a Unix second. A date (`2027-01-31`) means the
/// key works through that day (UTC) and is refused from the next midnight
/// UTC, as "expires after 31 January" is read; a date-time is the exact
/// instant, UTC unless it carries an offset. A bare time is refused.
pub fn parse_expires(v: &toml::value::Datetime) -> Result<u64, PolicyError> {
    let Some(d) = v.date else {
        return Err(PolicyError::TimeWithoutDate);
    };
    let days = days_from_civil(i64::from(d.year), u32::from(d.month), u32::from(d.day));
    let secs = match v.time {
        None => (days + 1) * 86_400,
        Some(t) => {
            let offset = match v.offset {
                Some(toml::value::Offset::Custom { minutes }) => i64::from(minutes) * 60,
                _ => 0,
            };
            days * 86_400
                + i64::from(t.hour) * 3600
                + i64::from(t.minute) * 60
                + i64::from(t.second)
                - offset
        }
    };
    u64::try_from(secs).map_err(|_| PolicyError::Before1970 {
        value: v.to_string(),
    })
}

/// A Unix second as `YYYY-MM-DDTHH:MM:SSZ`, for log lines and check-config.
pub fn utc_text(secs: u64) -> String {
    let (y, m, d) = crate::firewall::iptables::civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm; the inverse of the one iptables/text.rs uses for `--datestop`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Keys that expire within `EXPIRY_NOTICE_SECS` of `now` (or already have),
/// as (name, expiry), for check-config and the daily warning.
pub fn expiring_soon<K: PolicyKey>(keys: &[K], now: u64) -> Vec<(&str, u64)> {
    keys.iter()
        .filter_map(|k| k.rules().expires.map(|at| (k.name(), at)))
        .filter(|(_, at)| *at <= now.saturating_add(EXPIRY_NOTICE_SECS))
        .collect()
}

/// One line per key about to expire (or expired), as check-config prints it
/// and the daemon logs it.
pub fn expiry_note(name: &str, at: u64, now: u64) -> String {
    if at <= now {
        format!(
            "key `{name}` expired at {} (expires): it is refused; remove it or move the date",
            utc_text(at)
        )
    } else {
        let hours = (at - now) / 3600;
        format!(
            "key `{name}` expires at {} (in {} d {} h): renew it (expires) or tell its holder",
            utc_text(at),
            hours / 24,
            hours % 24
        )
    }
}

/// When the daemon last warned about expiring keys: once at start and
/// reload, then at most once a day, checked on wake-ups the daemon has
/// anyway (a grant's expiry, a packet, the watchdog): no timer of its own.
#[derive(Debug, Default)]
pub struct ExpiryWarnings {
    last: Option<u64>,
}

impl ExpiryWarnings {
    /// The lines to log now, if a day has passed since the last ones (or
    /// none were logged yet).
    pub fn due<K: PolicyKey>(&mut self, keys: &[K], now: u64) -> Vec<String> {
        if self
            .last
            .is_some_and(|t| now.saturating_sub(t) < EXPIRY_WARNING_EVERY_SECS)
        {
            return Vec::new();
        }
        let lines: Vec<String> = expiring_soon(keys, now)
            .into_iter()
            .map(|(name, at)| expiry_note(name, at, now))
            .collect();
        self.last = Some(now);
        lines
    }

    /// A reload logs the new configuration's keys at once.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_hosts_only() {
        let n: Net = "203.0.113.0/24".parse().unwrap();
        assert!(n.contains(ip("203.0.113.7")));
        assert!(n.contains(ip("::ffff:203.0.113.7")));
        assert!(!n.contains(ip("203.0.114.7")));
        assert!(!n.contains(ip("2001:db8::1")));
        let n6: Net = "2001:db8:5::/48".parse().unwrap();
        assert!(n6.contains(ip("2001:db8:5:ffff::1")));
        assert!(!n6.contains(ip("2001:db8:6::1")));
        assert!(!n6.contains(ip("203.0.113.7")));
        let all: Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("198.18.0.1")));
        let host: Net = "198.18.0.2".parse().unwrap();
        assert_eq!(host.to_string(), "198.18.0.2/32");
        assert!(!host.contains(ip("198.18.0.3")));
    }

    #[test]
    fn bad_networks_are_refused_with_the_entry() {
        for (s, want) in [
            ("10.0.0.5/8", "host bits"),
            ("10.0.0.0/33", "0-32"),
            ("2001:db8::/129", "0-128"),
            ("example.org", "not an address"),
            ("10.0.0.0/x", "0-32"),
        ] {
            let e = s.parse::<Net>().unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(s), "{s}: {e}");
        }
        assert_eq!(parse_from(&[]), Err(PolicyError::EmptyFrom));
    }

    #[test]
    fn expiry_comes_before_source_and_both_have_their_reason() {
        let r = KeyRules {
            from: vec!["198.18.0.0/24".parse().unwrap()],
            expires: Some(1000),
            forward: Vec::new(),
        };
        assert_eq!(r.check(ip("198.18.0.2"), 998), Ok(()));
        assert_eq!(r.check(ip("198.18.1.2"), 998), Err(Refusal::Source));
        assert_eq!(
            r.check(ip("198.18.0.2"), 999),
            Err(Refusal::Expired { at: 1000 })
        );
        assert_eq!(Refusal::Source.code(), "source_not_allowed");
        assert_eq!(
            KeyRules::default().check(ip("198.18.9.9"), u64::MAX),
            Ok(())
        );
    }

    #[test]
    fn grants_end_at_the_expiry_instant() {
        let r = KeyRules {
            from: Vec::new(),
            expires: Some(1000),
            forward: Vec::new(),
        };
        // Started at ceil(now) = 901 at the latest, it ends by 1000.
        assert_eq!(r.cap_duration(30, 900), (30, false));
        assert_eq!(r.cap_duration(300, 900), (99, true));
        assert_eq!(r.cap_duration(99, 900), (99, false));
        assert_eq!(KeyRules::default().cap_duration(300, 900), (300, false));
    }

    #[test]
    fn expires_dates_and_date_times_are_utc_instants() {
        let v: toml::Table = toml::from_str(
            "a = 2027-01-31\nb = 2027-01-31T18:00:00Z\nc = 2027-01-31T20:00:00+02:00\n\
             d = 2027-01-31T18:00:00\ne = 18:00:00\nf = 1969-12-31T00:00:00Z",
        )
        .unwrap();
        let get = |k: &str| match &v[k] {
            toml::Value::Datetime(d) => parse_expires(d),
            other => panic!("{other:?}"),
        };
        // 2027-02-01T00:00:00Z: the whole of 31 January is still usable.
        assert_eq!(get("a"), Ok(1_801_440_000));
        assert_eq!(utc_text(1_801_440_000), "2027-02-01T00:00:00Z");
        assert_eq!(get("b"), Ok(1_801_440_000 - 6 * 3600));
        assert_eq!(get("c"), get("b"));
        assert_eq!(get("d"), get("b"));
        assert_eq!(get("e"), Err(PolicyError::TimeWithoutDate));
        assert_eq!(
            get("f"),
            Err(PolicyError::Before1970 {
                value: "1969-12-31T00:00:00Z".into()
            })
        );
    }

    #[test]
    fn expiring_keys_are_named_at_most_once_a_day() {
        let mut cfg = crate::config::Config::for_tests(Vec::new(), 30);
        let now = 1_700_000_000;
        let mut w = ExpiryWarnings::default();
        assert!(w.due(&cfg.keys, now).is_empty());
        cfg.keys.push(crate::config::KeyPolicy {
            max_grants: 1,
            rules: KeyRules {
                from: Vec::new(),
                expires: Some(now + 3 * 86_400 + 7200),
                forward: Vec::new(),
            },
            ..crate::config::KeyPolicy::for_tests("contractor", 7, &[], 30)
        });
        let mut w = ExpiryWarnings::default();
        let lines = w.due(&cfg.keys, now);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("`contractor` expires at 2023-11-18T00:13:20Z (in 3 d 2 h)"),
            "{}",
            lines[0]
        );
        assert!(w.due(&cfg.keys, now + 86_399).is_empty());
        assert_eq!(w.due(&cfg.keys, now + 86_400).len(), 1);
        assert!(w.due(&cfg.keys, now + 86_401).is_empty());
        w.reset();
        assert_eq!(w.due(&cfg.keys, now + 86_402).len(), 1);
        // Eight days before: not yet.
        assert!(expiring_soon(&cfg.keys, now - 5 * 86_400).is_empty());
        assert!(expiry_note("contractor", now, now + 1).contains("expired at"));
    }

    proptest! {
        #[test]
        fn days_from_civil_inverts_the_datestop_calendar(days in 0i64..200_000) {
            let text = utc_text(days as u64 * 86_400);
            let y: i64 = text[0..4].parse().unwrap();
            let m: u32 = text[5..7].parse().unwrap();
            let d: u32 = text[8..10].parse().unwrap();
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn any_text_parses_or_is_refused(s in ".{0,40}") {
            let _ = s.parse::<Net>();
        }
    }
}
