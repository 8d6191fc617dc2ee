//! Glue between the capture's knock packets and the pure knock logic in
//! `legacy`: builds the per-configuration runtime, tells the capture which
//! ports to let through, and turns completed sequences into grant changes.

use crate::config::Config;
use crate::grants::Owner;
use crate::legacy::{HmacKey, KnockEvent, LegacyEvent, LegacyKnocks};
use crate::policy::Refusal;
use spa_proto::{Grant, Grants, Proto};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Whether a start note is a warning (an insecure mode is on) or news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteLevel {
    Warn,
    Info,
}

/// What the daemon says at start about the knock modes in force, one line
/// each. Why separate lines: fixed-sequence doors are replayable by anyone
/// who sees them (INSECURE), HMAC knocks are not; an admin who turned on
/// only HMAC knocks must not be told otherwise, nor the reverse.
pub fn start_notes(cfg: &Config) -> Vec<(NoteLevel, String)> {
    let mut notes = Vec::new();
    if !cfg.doors.is_empty() {
        notes.push((
            NoteLevel::Warn,
            format!(
                "legacy knockd doors enabled ({}): INSECURE, anyone who sees a door's knock sequence can replay it, \
                 and a spoofed sequence opens for the spoofed address",
                cfg.doors.len()
            ),
        ));
    }
    if cfg.legacy.hmac.enabled {
        notes.push((
            NoteLevel::Info,
            format!(
                "HMAC knocks enabled: a key's sequence changes every {} s and opens once (not replayable); \
                 knocks are not encrypted: an on-path attacker who races the last knock can take the grant \
                 within the step, and knocks show that a key holder knocked (SPA datagrams have neither weakness)",
                cfg.legacy.hmac.step_secs
            ),
        ));
    }
    notes
}

/// True when the doors already hold every one of `grants` for `addr` with
/// more than half of `duration_secs` left: re-adding it would cost a
/// firewall batch (2-17 ms) and give the source little, so a public
/// sequence repeated from one address (500 a second in the review) costs
/// the daemon nothing after the first (issue 16, finding 4). Per source:
/// another address's grant never counts.
pub fn door_grant_fresh(
    table: &crate::grants::GrantTable,
    addr: IpAddr,
    grants: &[Grant],
    duration_secs: u32,
    now: u64,
) -> bool {
    !grants.is_empty()
        && grants.iter().all(|g| {
            table
                .held_until(&Owner::Doors, addr, *g, now)
                .is_some_and(|t| t.saturating_sub(now).saturating_mul(2) > u64::from(duration_secs))
        })
}

/// What a knock did, for the daemon to apply and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Open {
        /// The door, or the key of an HMAC knock: a door's grant is the
        /// door's, so its close sequence (spoofable) never ends a key's.
        owner: Owner,
        addr: IpAddr,
        grants: Vec<Grant>,
        duration_secs: u32,
        via: String,
        /// An HMAC sequence: persist the used list before acting.
        hmac: bool,
    },
    Close {
        owner: Owner,
        addr: IpAddr,
        grants: Vec<Grant>,
        via: String,
    },
    /// An authentic HMAC knock the key's rules refuse (policy.rs).
    Rejected {
        addr: IpAddr,
        via: String,
        /// Stable `reason=` name (`Refusal::code`).
        code: &'static str,
        reason: String,
    },
}

/// Ports the capture filter must let through for knocks: (tcp, udp), each
/// sorted without duplicates. An HMAC range is passed as every port in it;
/// the capture turns long lists into a kernel range check.
pub fn knock_ports(cfg: &Config) -> (Vec<u16>, Vec<u16>) {
    let hmac = cfg.legacy.hmac_params().ok().flatten();
    let p = crate::legacy::knock_ports(&cfg.doors, hmac);
    let (mut tcp, mut udp) = (p.tcp, p.udp);
    if let Some((proto, lo, hi)) = p.hmac {
        let range = lo..=hi;
        match proto {
            Proto::Tcp => tcp.extend(range),
            Proto::Udp => udp.extend(range),
        }
    }
    for v in [&mut tcp, &mut udp] {
        v.sort_unstable();
        v.dedup();
    }
    (tcp, udp)
}

/// Every configured key may HMAC-knock for the grants it may request by
/// datagram (the first [`spa_proto::MAX_GRANTS`] of them).
fn hmac_keys(cfg: &Config) -> Vec<HmacKey> {
    cfg.keys
        .iter()
        .enumerate()
        // HMAC knocks derive from the master: v1 keys only.
        .filter(|(i, _)| cfg.v2.keys.get(*i).is_none_or(|v| v.protocols.v1))
        .filter_map(|(_, k)| {
            let n = k.allow.len().min(spa_proto::MAX_GRANTS);
            let grants = Grants::new(&k.allow[..n]).ok()?;
            Some(HmacKey {
                keys: k.keys.clone(),
                grants,
            })
        })
        .collect()
}

pub struct Runtime {
    inner: Option<LegacyKnocks>,
    start: Instant,
}

impl Runtime {
    /// The configuration was validated when loaded, so building the runtime
    /// cannot fail on it; should it anyway, knocks stay off and it is logged.
    pub fn new(cfg: &Config) -> Runtime {
        let hmac_on = cfg.legacy.hmac.enabled;
        let inner = if cfg.doors.is_empty() && !hmac_on {
            None
        } else {
            match LegacyKnocks::new(
                &cfg.legacy,
                cfg.doors.clone(),
                cfg.server_id,
                if hmac_on { hmac_keys(cfg) } else { Vec::new() },
            ) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::error!("knocks disabled: {e}");
                    None
                }
            }
        };
        Runtime {
            inner,
            start: Instant::now(),
        }
    }

    /// Adopts a reloaded configuration. When the knock settings are
    /// unchanged, the HMAC record of used sequences is kept (only the keys
    /// are swapped), so a reload cannot reopen an accepted sequence. When
    /// they changed, the record is carried into the new runtime as long as
    /// steps still count the same (`step_secs` unchanged).
    pub fn reload(&mut self, old: &Config, new: &Config) {
        let same = old.legacy == new.legacy && old.doors == new.doors;
        match (&mut self.inner, same) {
            (Some(k), true) => {
                if let Some(h) = k.hmac_mut() {
                    h.set_keys(hmac_keys(new));
                }
            }
            _ => {
                let used = if old.legacy.hmac.step_secs == new.legacy.hmac.step_secs {
                    self.hmac_used()
                } else {
                    Vec::new()
                };
                let start = self.start;
                *self = Runtime::new(new);
                self.start = start;
                self.restore_hmac_used(&used);
            }
        }
    }

    /// HMAC sequences accepted recently (see `state::save_hmac_used`).
    pub fn hmac_used(&self) -> Vec<(spa_proto::KeyId, u64)> {
        self.inner
            .as_ref()
            .and_then(|k| k.hmac())
            .map(|h| h.used())
            .unwrap_or_default()
    }

    /// Restores sequences used before a restart.
    pub fn restore_hmac_used(&mut self, used: &[(spa_proto::KeyId, u64)]) {
        if let Some(h) = self.inner.as_mut().and_then(|k| k.hmac_mut()) {
            for &(id, step) in used {
                h.mark_used(id, step);
            }
        }
    }

    /// The HMAC knock record was lost: refuse what could have been used.
    pub fn hmac_after_loss(&mut self, now_unix: u64) {
        if let Some(h) = self.inner.as_mut().and_then(|k| k.hmac_mut()) {
            h.after_loss(now_unix);
        }
    }

    /// Caps an HMAC floor read back far ahead of `now_unix`; see
    /// `HmacKnocks::cap_floor`.
    pub fn hmac_cap_floor(&mut self, now_unix: u64) -> Option<u64> {
        self.inner
            .as_mut()
            .and_then(|k| k.hmac_mut())
            .and_then(|h| h.cap_floor(now_unix))
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Knock progress expires lazily (checked when the next knock arrives),
    /// so knocks never need a timer wake-up.
    pub fn next_deadline(&self) -> Option<Duration> {
        None
    }

    pub fn observe(
        &mut self,
        cfg: &Config,
        src: IpAddr,
        proto: Proto,
        dport: u16,
        flags: u8,
        unix_secs: u64,
    ) -> Vec<Outcome> {
        let Some(k) = &mut self.inner else {
            return Vec::new();
        };
        let now_ms = self.start.elapsed().as_millis() as u64;
        k.observe(src, proto, dport, flags, now_ms, unix_secs)
            .into_iter()
            .map(|ev| match ev {
                LegacyEvent::Door(KnockEvent::Open {
                    door,
                    addr,
                    grant,
                    duration_secs,
                }) => Outcome::Open {
                    owner: Owner::Doors,
                    addr,
                    grants: vec![grant],
                    duration_secs: duration_secs.unwrap_or(cfg.default_duration),
                    via: format!("legacy door {door}"),
                    hmac: false,
                },
                LegacyEvent::Door(KnockEvent::Close { door, addr, grant }) => Outcome::Close {
                    owner: Owner::Doors,
                    addr,
                    grants: vec![grant],
                    via: format!("legacy door {door}"),
                },
                LegacyEvent::Hmac(h) => {
                    let key = cfg.key(&h.key_id);
                    let name = key
                        .map(|k| k.name.clone())
                        .unwrap_or_else(|| h.key_id.to_string());
                    let via = format!("hmac knock key {name} step {}", h.step);
                    // The key's rules (`expires`, `from`) and its cap bind a
                    // knock as they bind a datagram.
                    if let Some(Err(r)) = key.map(|k| k.rules.check(src, unix_secs)) {
                        return Outcome::Rejected {
                            addr: h.addr,
                            via,
                            code: r.code(),
                            reason: match r {
                                Refusal::Source => format!(
                                    "key `{name}` may not be used from {src} (its `from` networks)"
                                ),
                                Refusal::Expired { at } => format!(
                                    "key `{name}` expired at {} (its `expires`)",
                                    crate::policy::utc_text(at)
                                ),
                            },
                        };
                    }
                    // No DNAT between families: a forward to the other
                    // family than the knocker's is refused, as for datagrams.
                    let fam = key.and_then(|k| {
                        k.rules.forward.iter().find(|(g, to)| {
                            h.grants.as_slice().contains(g) && to.is_ipv4() != h.addr.is_ipv4()
                        })
                    });
                    if let Some((g, to)) = fam {
                        return Outcome::Rejected {
                            addr: h.addr,
                            via,
                            code: "forward_family",
                            reason: format!(
                                "key `{name}` forwards {g} to {to}, another address family than the knocker's"
                            ),
                        };
                    }
                    let asked = h.duration_secs.unwrap_or(cfg.default_duration);
                    let duration_secs = key.map_or(asked, |k| {
                        k.rules.cap_duration(asked.min(k.max_duration), unix_secs).0
                    });
                    Outcome::Open {
                        owner: Owner::Key(name.clone()),
                        addr: h.addr,
                        grants: h.grants.as_slice().to_vec(),
                        duration_secs,
                        via,
                        hmac: true,
                    }
                }
            })
            .collect()
    }
}

/// What the capture's kernel filter passes: the SPA port at the datagram's
/// exact length, and the enabled knock ports.
pub fn filter_spec(cfg: &Config) -> crate::capture::FilterSpec {
    let (knock_tcp, knock_udp) = knock_ports(cfg);
    crate::capture::FilterSpec {
        spa_port: cfg.spa_port,
        spa_len: spa_proto::DATAGRAM_LEN,
        knock_tcp,
        knock_udp,
    }
}

/// What our chain/sets drop so the host answers nothing: the SPA port and
/// the enabled knock ports, unless `silent = false`.
pub fn silence(cfg: &Config) -> crate::firewall::Silence {
    if !cfg.silent {
        return crate::firewall::Silence::default();
    }
    let (tcp, mut udp) = knock_ports(cfg);
    udp.push(cfg.spa_port);
    crate::firewall::Silence::new(&udp, &tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::KeyPolicy;
    use crate::legacy::{tcp_flag, LegacyConfig};
    use spa_proto::KnockParams;

    /// One key that may open tcp/22 for at most `max` seconds, HMAC knocks
    /// on, and a server default of `default` seconds.
    fn config(default: u32, max: u32) -> Config {
        let mut legacy = LegacyConfig::default();
        legacy.hmac.enabled = true;
        let mut cfg = Config::for_tests(
            vec![KeyPolicy::for_tests(
                "alice",
                0x11,
                &[Grant::tcp(22).unwrap()],
                max,
            )],
            default,
        );
        cfg.legacy = legacy;
        cfg
    }

    fn hmac_knock(cfg: &Config) -> Vec<Outcome> {
        hmac_knock_with(&mut Runtime::new(cfg), cfg, "198.18.0.2")
    }

    fn hmac_knock_with(rt: &mut Runtime, cfg: &Config, src: &str) -> Vec<Outcome> {
        let unix = 1_700_000_010;
        let p = KnockParams::default();
        let seq =
            spa_proto::knock::sequence(&cfg.keys[0].keys, &cfg.server_id, p.step_at(unix), &p);
        let src: IpAddr = src.parse().unwrap();
        let mut out = Vec::new();
        for port in seq {
            out.extend(rt.observe(cfg, src, Proto::Tcp, port, tcp_flag::SYN, unix));
        }
        out
    }

    /// Issue 15: an HMAC knock is held to the key's `from` and `expires`
    /// as a datagram is, with the same reasons.
    #[test]
    fn hmac_knocks_obey_the_keys_source_networks_and_expiry() {
        let mut cfg = config(30, 300);
        cfg.keys[0].rules.from = crate::policy::parse_from(&["198.18.0.0/24".into()]).unwrap();
        duration_of(&hmac_knock(&cfg));
        match hmac_knock_with(&mut Runtime::new(&cfg), &cfg, "198.18.1.2").as_slice() {
            [Outcome::Rejected { code, reason, .. }] => {
                assert_eq!(*code, "source_not_allowed");
                assert!(
                    reason.contains("alice") && reason.contains("198.18.1.2"),
                    "{reason}"
                );
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        cfg.keys[0].rules.expires = Some(1_700_000_020);
        assert_eq!(duration_of(&hmac_knock(&cfg)), 9);
        cfg.keys[0].rules.expires = Some(1_700_000_010);
        match hmac_knock(&cfg).as_slice() {
            [Outcome::Rejected { code, .. }] => assert_eq!(*code, "key_expired"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        // A forward to an IPv6 host cannot serve an IPv4 knocker.
        cfg.keys[0].rules.expires = None;
        cfg.keys[0].rules.forward =
            vec![(Grant::tcp(22).unwrap(), "[2001:db8::5]:22".parse().unwrap())];
        match hmac_knock(&cfg).as_slice() {
            [Outcome::Rejected { code, .. }] => assert_eq!(*code, "forward_family"),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn duration_of(out: &[Outcome]) -> u32 {
        match out {
            [Outcome::Open { duration_secs, .. }] => *duration_secs,
            other => panic!("expected one open, got {other:?}"),
        }
    }

    /// Also (b): HMAC knocks alone are not called INSECURE; doors are.
    #[test]
    fn start_notes_call_doors_insecure_and_hmac_knocks_not() {
        let hmac_only = config(30, 300);
        let notes = start_notes(&hmac_only);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].0, NoteLevel::Info);
        assert!(notes[0].1.starts_with("HMAC knocks enabled"), "{notes:?}");
        assert!(!notes[0].1.contains("INSECURE"), "{notes:?}");

        let mut both = config(30, 300);
        both.doors = crate::legacy::default_doors(5);
        let notes = start_notes(&both);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(notes[0].0, NoteLevel::Warn);
        assert!(notes[0].1.contains("INSECURE") && notes[0].1.contains("replay"));

        let mut doors_only = both;
        doors_only.legacy.hmac.enabled = false;
        let notes = start_notes(&doors_only);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].1.contains("INSECURE"));

        let mut neither = doors_only;
        neither.doors.clear();
        assert!(start_notes(&neither).is_empty());
    }

    /// Finding 4: a door sequence repeated by a source whose door grant
    /// still has more than half its time is not re-added (no firewall
    /// batch); past half, or for another address, or over a key's grant,
    /// it is.
    #[test]
    fn a_fresh_door_grant_is_not_re_added() {
        use crate::firewall::FakeFirewall;
        let fw = FakeFirewall::new();
        let mut table = crate::grants::GrantTable::new(Box::new(fw.clone()));
        table.setup().unwrap();
        let ssh = [Grant::tcp(22).unwrap()];
        let (a, b): (IpAddr, IpAddr) =
            ("198.18.0.2".parse().unwrap(), "198.18.0.3".parse().unwrap());
        assert!(
            !door_grant_fresh(&table, a, &ssh, 30, 1000),
            "nothing held yet"
        );
        table.open(&Owner::Doors, a, &ssh, 30, 1000).unwrap();
        assert!(door_grant_fresh(&table, a, &ssh, 30, 1000));
        assert!(
            door_grant_fresh(&table, a, &ssh, 30, 1014),
            "16 s of 30 left"
        );
        assert!(
            !door_grant_fresh(&table, a, &ssh, 30, 1015),
            "15 s of 30 left: refresh"
        );
        assert!(
            !door_grant_fresh(&table, a, &ssh, 100, 1000),
            "a longer door re-adds"
        );
        assert!(!door_grant_fresh(&table, b, &ssh, 30, 1000), "per source");
        let more = [Grant::tcp(22).unwrap(), Grant::tcp(443).unwrap()];
        assert!(
            !door_grant_fresh(&table, a, &more, 30, 1000),
            "a port not held"
        );
        assert!(!door_grant_fresh(&table, a, &[], 30, 1000));
        // A key's grant of the same port is not the doors'.
        table
            .open(&Owner::Key("alice".into()), b, &ssh, 300, 1000)
            .unwrap();
        assert!(!door_grant_fresh(&table, b, &ssh, 30, 1000));
    }

    #[test]
    fn hmac_knock_duration_is_capped_by_the_keys_maximum() {
        assert_eq!(duration_of(&hmac_knock(&config(30, 300))), 30);
        assert_eq!(duration_of(&hmac_knock(&config(600, 60))), 60);
    }

    #[test]
    fn a_reload_that_changes_knock_settings_keeps_used_hmac_sequences() {
        let old = config(30, 300);
        let mut rt = Runtime::new(&old);
        duration_of(&hmac_knock_with(&mut rt, &old, "198.18.0.2"));
        // Another [legacy] setting changes: the runtime is rebuilt.
        let mut new = config(30, 300);
        new.legacy.seq_timeout += 1;
        rt.reload(&old, &new);
        assert_eq!(
            hmac_knock_with(&mut rt, &new, "198.18.0.3"),
            vec![],
            "the sequence was used before the reload"
        );
    }
}
