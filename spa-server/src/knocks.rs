//! Glue between the capture's knock packets and the pure knock logic in
//! `legacy`: builds the per-configuration runtime, tells the capture which
//! ports to let through, and turns completed sequences into grant changes.

use crate::config::Config;
use crate::legacy::{HmacKey, KnockEvent, LegacyEvent, LegacyKnocks};
use spa_proto::{Grant, Grants, Proto};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What a knock did, for the daemon to apply and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Open {
        addr: IpAddr,
        grants: Vec<Grant>,
        duration_secs: u32,
        via: String,
        /// An HMAC sequence: persist the used list before acting.
        hmac: bool,
    },
    Close {
        addr: IpAddr,
        grants: Vec<Grant>,
        via: String,
    },
    Rejected {
        addr: IpAddr,
        via: String,
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
        .filter_map(|k| {
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
    /// are swapped), so a reload cannot reopen an accepted sequence.
    pub fn reload(&mut self, old: &Config, new: &Config) {
        let same = old.legacy == new.legacy && old.doors == new.doors;
        match (&mut self.inner, same) {
            (Some(k), true) => {
                if let Some(h) = k.hmac_mut() {
                    h.set_keys(hmac_keys(new));
                }
            }
            _ => {
                let start = self.start;
                *self = Runtime::new(new);
                self.start = start;
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
                    addr,
                    grants: vec![grant],
                    duration_secs: duration_secs.unwrap_or(cfg.default_duration),
                    via: format!("legacy door {door}"),
                    hmac: false,
                },
                LegacyEvent::Door(KnockEvent::Close { door, addr, grant }) => Outcome::Close {
                    addr,
                    grants: vec![grant],
                    via: format!("legacy door {door}"),
                },
                LegacyEvent::Hmac(h) => {
                    let name = cfg
                        .key(&h.key_id)
                        .map(|k| k.name.clone())
                        .unwrap_or_else(|| h.key_id.to_string());
                    Outcome::Open {
                        addr: h.addr,
                        grants: h.grants.as_slice().to_vec(),
                        duration_secs: h.duration_secs.unwrap_or(cfg.default_duration),
                        via: format!("hmac knock key {name} step {}", h.step),
                        hmac: true,
                    }
                }
            })
            .collect()
    }
}
