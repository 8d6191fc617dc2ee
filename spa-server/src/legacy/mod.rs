//! Port knocks for clients that cannot send an SPA datagram: knockd-style
//! fixed sequences (for users migrating from knockd) and HMAC knock
//! sequences (a plain `knock` client, but a sequence that changes every time
//! step and is accepted once). Pure: no sockets, files (except reading an
//! imported knockd.conf in [`LegacyConfig::doors`]) or clocks.
//!
//! Time: every `now_ms` is a monotonic millisecond counter chosen by the
//! daemon (e.g. milliseconds since start, from `Instant`), used only for
//! sequence timeouts; `unix_secs` is the wall clock, used only to pick the
//! HMAC time step (the client derives it from its own wall clock).
//!
//! Legacy sequences are insecure by construction: anyone who sees a knock
//! sequence on the wire can replay it. The daemon says so in its log at
//! start ([`LegacyKnocks::new`]). See docs/legacy.md.

mod config;
pub mod hmac;
pub mod knockd_conf;
mod table;
pub mod tracker;

pub use config::{
    hmac_knock_bits, parse_grant, DoorConfig, DoorGrantError, FieldProblem, HmacConfig,
    LegacyConfig, LegacyConfigError, DEFAULT_SEQ_TIMEOUT_SECS, MAX_MAX_SOURCES,
    MIN_HMAC_KNOCK_BITS,
};
pub use hmac::{HmacKey, HmacKnocks, HmacOpen};
pub use knockd_conf::{parse_knockd_conf, read_knockd_conf, KnockdConfError, KnockdImport};
pub use table::TableStats;
pub use tracker::{
    default_doors, parse_sequence, tcp_flag, Door, DoorAction, DoorSetError, KnockEvent,
    SequenceTracker, Step, TcpFlags, DEFAULT_MAX_SOURCES, KNOCKD_DEFAULT_CMD_TIMEOUT_SECS,
    KNOCKD_DEFAULT_SEQ_TIMEOUT_SECS,
};

use config::{check_max_sources, field_err};
use spa_proto::{KnockParams, Proto, ServerId};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// What the capture must deliver as `Packet::Knock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnockPorts {
    /// TCP ports of the fixed-sequence doors, sorted.
    pub tcp: Vec<u16>,
    /// UDP ports of the fixed-sequence doors, sorted.
    pub udp: Vec<u16>,
    /// HMAC knocks: (protocol, lo, hi), every port in lo..=hi (SYNs for TCP).
    pub hmac: Option<(Proto, u16, u16)>,
}

/// The ports the capture must watch for these doors and HMAC settings.
pub fn knock_ports(doors: &[Door], hmac: Option<(KnockParams, Proto)>) -> KnockPorts {
    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    for d in doors {
        for s in &d.sequence {
            match s.proto {
                Proto::Tcp => tcp.insert(s.port),
                Proto::Udp => udp.insert(s.port),
            };
        }
    }
    KnockPorts {
        tcp: tcp.into_iter().collect(),
        udp: udp.into_iter().collect(),
        hmac: hmac.map(|(p, proto)| (proto, p.range.0, p.range.1)),
    }
}

/// Anything a knock can complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyEvent {
    Door(KnockEvent),
    Hmac(HmacOpen),
}

/// Both knock kinds behind one call, for the daemon.
#[derive(Debug)]
pub struct LegacyKnocks {
    doors: Option<SequenceTracker>,
    hmac: Option<HmacKnocks>,
    ports: KnockPorts,
}

impl LegacyKnocks {
    /// `doors` from [`LegacyConfig::doors`] (empty: fixed sequences off, e.g.
    /// without `--legacy-knock`); `hmac_keys`: every key allowed to HMAC
    /// knock, with its allowed grants. Logs the replay warning when
    /// fixed-sequence doors are active.
    pub fn new(
        cfg: &LegacyConfig,
        doors: Vec<Door>,
        server: ServerId,
        hmac_keys: Vec<HmacKey>,
    ) -> Result<Self, LegacyConfigError> {
        let hmac_params = cfg.hmac_params()?;
        let ports = knock_ports(&doors, hmac_params);
        let tracker = if doors.is_empty() {
            None
        } else {
            let max = check_max_sources("legacy.max_sources", cfg.max_sources)?;
            let t = SequenceTracker::new(doors, max)
                .map_err(|e| field_err("legacy.door", config::FieldProblem::DoorSet(e)))?;
            tracing::warn!(
                doors = t.doors().len(),
                "legacy knock sequences enabled: anyone who sees a knock sequence on the network can replay it"
            );
            Some(t)
        };
        let hmac = hmac_params.map(|(params, proto)| {
            HmacKnocks::new(
                params,
                proto,
                server,
                u64::from(cfg.hmac.seq_timeout) * 1000,
                cfg.hmac.max_sources,
                hmac_keys,
            )
        });
        Ok(LegacyKnocks {
            doors: tracker,
            hmac,
            ports,
        })
    }

    pub fn ports(&self) -> &KnockPorts {
        &self.ports
    }

    pub fn tracker(&self) -> Option<&SequenceTracker> {
        self.doors.as_ref()
    }

    pub fn hmac(&self) -> Option<&HmacKnocks> {
        self.hmac.as_ref()
    }

    pub fn hmac_mut(&mut self) -> Option<&mut HmacKnocks> {
        self.hmac.as_mut()
    }

    /// Feeds one `Packet::Knock`. Usually returns nothing or one event; two
    /// only if a port is both a door step and in the HMAC range and the knock
    /// completes both.
    pub fn observe(
        &mut self,
        src: IpAddr,
        proto: Proto,
        dport: u16,
        tcp_flags: u8,
        now_ms: u64,
        unix_secs: u64,
    ) -> Vec<LegacyEvent> {
        let mut out = Vec::new();
        if let Some(t) = &mut self.doors {
            if let Some(e) = t.observe(src, proto, dport, tcp_flags, now_ms) {
                out.push(LegacyEvent::Door(e));
            }
        }
        if let Some(h) = &mut self.hmac {
            // HMAC knocks with TCP are SYNs, as `knock` sends them.
            if proto == Proto::Udp || tcp_flags & tcp_flag::SYN != 0 {
                if let Some(e) = h.observe(src, proto, dport, now_ms, unix_secs) {
                    out.push(LegacyEvent::Hmac(e));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
