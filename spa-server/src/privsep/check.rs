//! What the privileged side lets through, judged against the configuration
//! it read itself, never against anything the network side says about it.
//!
//! A grant to add must be one that some owner in the configuration may
//! open (a `[[key]]`'s `allow`, a door's grant), end no later than that
//! owner could make it end (`max_duration`, the door's duration), and be
//! scoped to a usable unicast address. So a compromised network side can at
//! worst open what some key could already open, for as long as that key
//! could. Removes only ever close; their number is bounded.

use crate::config::Config;
use crate::firewall::Access;
use crate::legacy::DoorAction;
use std::fmt;
use std::net::IpAddr;

/// Why a request was refused (one log line on the privileged side, and the
/// reply's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No key or door in the configuration may open this grant.
    NoOwner(Access),
    /// It would end later than any owner allowed to open it could make it.
    TooLong { access: Access, limit: u64 },
    /// Not an address a grant may be for (loopback, broadcast, ours...).
    Address(Access, &'static str),
    /// More adds than the firewall may hold.
    TooMany(usize),
    /// A forward the configuration does not name for this grant (or none
    /// where it names one).
    Forward(Access),
    /// A capture socket for an interface the configuration does not name
    /// (`None`: every interface, while some are named).
    Interface(Option<String>),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoOwner(a) => write!(f, "{a}: no key or door may open {}", a.grant),
            Refusal::TooLong { access, limit } => write!(
                f,
                "{access}: ends after {limit}, the latest any owner of {} may ask",
                access.grant
            ),
            Refusal::Address(a, why) => write!(f, "{a}: not a usable address ({why})"),
            Refusal::Forward(a) => write!(
                f,
                "{a}: not the forward the configuration names for {}",
                a.grant
            ),
            Refusal::TooMany(n) => write!(f, "{n} adds in one batch: over max_grants_total"),
            Refusal::Interface(Some(name)) => write!(
                f,
                "a capture socket on interface {name:?}: not in the configuration's interfaces"
            ),
            Refusal::Interface(None) => f.write_str(
                "a capture socket on every interface: the configuration names its interfaces",
            ),
        }
    }
}

/// The latest Unix second any owner in `cfg` may make `access.grant` end
/// at, for a grant opened at `now`; `None` when no one may open it. Grants
/// end at ceil(now) + duration: one second of slack. A key's grants end by
/// its `expires` (policy.rs), and an expired key opens nothing.
fn latest_end(cfg: &Config, access: &Access, now: u64) -> Option<u64> {
    let start = now.saturating_add(1);
    let keys = cfg
        .keys
        .iter()
        .filter(|k| k.allow.contains(&access.grant))
        .filter_map(|k| {
            let end = start.saturating_add(u64::from(k.max_duration));
            match k.rules.expires {
                Some(at) if at <= start => None,
                Some(at) => Some(end.min(at)),
                None => Some(end),
            }
        });
    let doors = cfg.doors.iter().filter_map(|d| match d.action {
        DoorAction::Open {
            grant,
            duration_secs,
        } if grant == access.grant => {
            Some(start.saturating_add(u64::from(duration_secs.unwrap_or(cfg.default_duration))))
        }
        _ => None,
    });
    keys.chain(doors).max()
}

/// Checks one `Apply` at Unix time `now` (seconds). `is_local` tells
/// whether an address is this host's own.
pub fn apply(
    cfg: &Config,
    add: &[Access],
    now: u64,
    mut is_local: impl FnMut(IpAddr) -> bool,
) -> Result<(), Refusal> {
    if add.len() > cfg.max_grants_total {
        return Err(Refusal::TooMany(add.len()));
    }
    for a in add {
        let latest = latest_end(cfg, a, now).ok_or(Refusal::NoOwner(*a))?;
        // A forward goes only where the configuration sends that grant.
        if a.forward != crate::policy::forwards(&cfg.keys).get(&a.grant).copied() {
            return Err(Refusal::Forward(*a));
        }
        if a.expires_at > latest {
            return Err(Refusal::TooLong {
                access: *a,
                limit: latest,
            });
        }
        match crate::address::usable(a.addr, &mut is_local) {
            Ok(c) if c == a.addr => {}
            Ok(_) => return Err(Refusal::Address(*a, "not in canonical form")),
            Err(why) => return Err(Refusal::Address(*a, why.code())),
        }
    }
    Ok(())
}

/// Checks one `OpenCapture`: only an interface the configuration names, or
/// every interface when it names none. The filter on the socket is not the
/// network side's to choose: the privileged side makes it from its own
/// configuration (helper.rs).
pub fn open_capture(cfg: &Config, interface: Option<&str>) -> Result<(), Refusal> {
    let ok = match interface {
        None => cfg.interfaces.is_empty(),
        Some(name) => cfg.interfaces.iter().any(|i| i == name),
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::Interface(interface.map(str::to_owned)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyPolicy;
    use spa_proto::{Grant, Proto};

    const NOW: u64 = 1_700_000_000;

    fn cfg() -> Config {
        let mut c = Config::for_tests(
            vec![KeyPolicy::for_tests(
                "alice",
                1,
                &[Grant::tcp(22).unwrap()],
                300,
            )],
            30,
        );
        c.doors = crate::legacy::default_doors(5);
        c
    }

    fn acc(addr: &str, proto: Proto, port: u16, exp: u64) -> Access {
        Access {
            addr: addr.parse().unwrap(),
            grant: Grant::new(proto, port).unwrap(),
            expires_at: exp,
            forward: None,
        }
    }

    fn no_local(_: IpAddr) -> bool {
        false
    }

    #[test]
    fn a_grant_some_key_may_open_passes() {
        let a = acc("198.18.0.2", Proto::Tcp, 22, NOW + 301);
        assert_eq!(apply(&cfg(), &[a], NOW, no_local), Ok(()));
    }

    #[test]
    fn a_port_no_key_or_door_may_open_is_refused() {
        let a = acc("198.18.0.2", Proto::Tcp, 25, NOW + 10);
        assert_eq!(apply(&cfg(), &[a], NOW, no_local), Err(Refusal::NoOwner(a)));
        let u = acc("198.18.0.2", Proto::Udp, 22, NOW + 10);
        assert_eq!(apply(&cfg(), &[u], NOW, no_local), Err(Refusal::NoOwner(u)));
    }

    #[test]
    fn longer_than_any_owner_may_is_refused() {
        let a = acc("198.18.0.2", Proto::Tcp, 22, NOW + 302);
        assert!(matches!(
            apply(&cfg(), &[a], NOW, no_local),
            Err(Refusal::TooLong { .. })
        ));
    }

    /// Issue 15: a key's grant may not outlive its `expires`, and an
    /// expired key (here the only owner of tcp/22) opens nothing.
    #[test]
    fn a_grant_past_its_keys_expiry_is_refused() {
        let mut c = cfg();
        c.doors.clear();
        c.keys[0].rules.expires = Some(NOW + 100);
        let ok = acc("198.18.0.2", Proto::Tcp, 22, NOW + 100);
        assert_eq!(apply(&c, &[ok], NOW, no_local), Ok(()));
        let late = acc("198.18.0.2", Proto::Tcp, 22, NOW + 101);
        assert!(matches!(
            apply(&c, &[late], NOW, no_local),
            Err(Refusal::TooLong { limit, .. }) if limit == NOW + 100
        ));
        c.keys[0].rules.expires = Some(NOW);
        assert!(matches!(
            apply(&c, &[ok], NOW, no_local),
            Err(Refusal::NoOwner(_))
        ));
    }

    #[test]
    fn unusable_addresses_are_refused() {
        for addr in ["127.0.0.1", "255.255.255.255", "::1", "::ffff:198.18.0.2"] {
            let a = acc(addr, Proto::Tcp, 22, NOW + 10);
            assert!(
                matches!(
                    apply(&cfg(), &[a], NOW, no_local),
                    Err(Refusal::Address(..))
                ),
                "{addr}"
            );
        }
        let ours = acc("198.18.0.1", Proto::Tcp, 22, NOW + 10);
        assert!(matches!(
            apply(&cfg(), &[ours], NOW, |a| a.to_string() == "198.18.0.1"),
            Err(Refusal::Address(..))
        ));
    }

    #[test]
    fn more_adds_than_the_total_cap_are_refused() {
        let mut c = cfg();
        c.max_grants_total = 1;
        let a = acc("198.18.0.2", Proto::Tcp, 22, NOW + 10);
        let b = acc("198.18.0.3", Proto::Tcp, 22, NOW + 10);
        assert_eq!(apply(&c, &[a, b], NOW, no_local), Err(Refusal::TooMany(2)));
    }

    #[test]
    fn a_capture_socket_only_for_a_configured_interface() {
        let mut c = cfg();
        // None configured: every interface, and no single one.
        assert_eq!(open_capture(&c, None), Ok(()));
        assert_eq!(
            open_capture(&c, Some("eth0")),
            Err(Refusal::Interface(Some("eth0".into())))
        );
        c.interfaces = vec!["eth0".into(), "eth1".into()];
        assert_eq!(open_capture(&c, Some("eth1")), Ok(()));
        for bad in ["eth2", "eth", "eth0 ", "lo"] {
            assert_eq!(
                open_capture(&c, Some(bad)),
                Err(Refusal::Interface(Some(bad.into()))),
                "{bad}"
            );
        }
        assert_eq!(open_capture(&c, None), Err(Refusal::Interface(None)));
    }
}
