//! The `[legacy]` section: its serde shape, its checks (every error names
//! its `legacy.…` field) and what it turns into: the doors in force
//! (knockd.conf imported) and the HMAC knock parameters. Not
//! `crate::config`, which legacy/ never imports: that module hands this one
//! its section.

use super::{
    default_doors, parse_sequence, read_knockd_conf, tracker, Door, DoorAction, KnockdImport,
    TcpFlags, DEFAULT_MAX_SOURCES,
};
use serde::Deserialize;
use spa_proto::{Grant, KnockParams, Proto};
use std::path::PathBuf;
use std::sync::Arc;

mod error;

pub(super) use error::field_err;
pub use error::{DoorGrantError, FieldProblem, LegacyConfigError};
use FieldProblem as P;

/// Our default `seq_timeout`, as in Debian's stock knockd.conf (knockd's
/// compiled-in default is 25 s, which only widens the replay window).
pub const DEFAULT_SEQ_TIMEOUT_SECS: u32 = 5;
/// Largest `max_sources`: beyond this the table itself is the DoS.
pub const MAX_MAX_SOURCES: usize = 4_000_000;
/// Longest `seq_timeout`/`duration` we accept, one day.
const MAX_SECS: u32 = 86_400;
/// The least guessing work HMAC knock settings may leave an attacker, in
/// bits (see [`hmac_knock_bits`]): 2^64 knocks is out of reach at any
/// packet rate, where the old floor (3 ports over 1001) fell in seconds.
pub const MIN_HMAC_KNOCK_BITS: f64 = 64.0;

/// Bits of work a blind guesser faces against HMAC knocks:
/// `n·log2(range) − log2(3 × keys)`. Why per knock, not per sequence: a
/// wrong knock restarts as a first knock, so every knock sent may be the
/// last of a completing guess, and any of the 3 × keys sequences in the
/// window (steps s−1, s, s+1 of every key) counts. One knock thus succeeds
/// with probability `3 × keys / range^n`.
pub fn hmac_knock_bits(ports: usize, range: [u16; 2], keys: usize) -> f64 {
    let span = f64::from(range[1].saturating_sub(range[0])) + 1.0;
    ports as f64 * span.log2() - (3.0 * keys.max(1) as f64).log2()
}

fn default_seq_timeout() -> u32 {
    DEFAULT_SEQ_TIMEOUT_SECS
}
fn default_max_sources() -> usize {
    DEFAULT_MAX_SOURCES
}

/// The `[legacy]` section of /etc/spa/server.toml.
///
/// ```toml
/// [legacy]
/// seq_timeout = 5                      # seconds, from the first knock
/// max_sources = 65536                  # sources with partial progress
/// knockd_conf = "/etc/knockd.conf"     # optional: import its doors
///
/// [[legacy.door]]                      # absent (and no knockd_conf): knockd's
/// name = "openSSH"                     # openSSH/closeSSH on 7000,8000,9000
/// sequence = "7000,8000:udp,9000:tcp"
/// tcpflags = "syn"                     # default "syn"
/// open = "tcp/22"                      # or close = "tcp/22"
/// duration = 30                        # optional, only with open
///
/// [legacy.hmac]
/// enabled = true
/// ports = 5
/// step_secs = 30
/// range = [10000, 60000]
/// protocol = "tcp"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyConfig {
    /// Fixed-sequence doors (knockd semantics) are served only when this is
    /// true or `--legacy-knock` is given: they are replayable, so never on
    /// by accident (an `[legacy.hmac]` section alone does not enable them).
    #[serde(default)]
    pub enabled: bool,
    /// Default sequence timeout in seconds for doors that set none.
    #[serde(default = "default_seq_timeout")]
    pub seq_timeout: u32,
    /// Capacity of the per-source progress table.
    #[serde(default = "default_max_sources")]
    pub max_sources: usize,
    /// A knockd.conf whose doors are imported (added to `door`).
    #[serde(default)]
    pub knockd_conf: Option<PathBuf>,
    /// Our own doors. Absent (and no `knockd_conf`): knockd's defaults.
    /// `door = []`: no fixed-sequence doors at all (HMAC knocks only).
    #[serde(default, rename = "door")]
    pub doors: Option<Vec<DoorConfig>>,
    #[serde(default)]
    pub hmac: HmacConfig,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        LegacyConfig {
            enabled: false,
            seq_timeout: DEFAULT_SEQ_TIMEOUT_SECS,
            max_sources: DEFAULT_MAX_SOURCES,
            knockd_conf: None,
            doors: None,
            hmac: HmacConfig::default(),
        }
    }
}

/// One `[[legacy.door]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorConfig {
    pub name: Option<String>,
    /// knockd syntax: `7000,8000:udp,9000` (protocol defaults to tcp).
    pub sequence: String,
    pub seq_timeout: Option<u32>,
    /// knockd syntax: `syn`, `fin,!ack`; default `syn`.
    pub tcpflags: Option<String>,
    /// `tcp/22`: completing the door opens this for the source.
    pub open: Option<String>,
    /// `tcp/22`: completing the door closes this for the source.
    pub close: Option<String>,
    /// Seconds an `open` lasts; absent: the server's default duration.
    pub duration: Option<u32>,
}

/// `[legacy.hmac]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmacConfig {
    pub enabled: bool,
    /// Knocks per sequence, 1..=8.
    pub ports: usize,
    pub step_secs: u64,
    /// Inclusive port range the sequence is drawn from.
    pub range: [u16; 2],
    /// `tcp` (SYNs, as `knock` sends by default) or `udp` (`knock -u`).
    pub protocol: String,
    /// Seconds from the first knock to the last.
    pub seq_timeout: u32,
    pub max_sources: usize,
}

impl Default for HmacConfig {
    fn default() -> Self {
        let p = KnockParams::default();
        HmacConfig {
            enabled: false,
            ports: p.ports,
            step_secs: p.step_secs,
            range: [p.range.0, p.range.1],
            protocol: "tcp".into(),
            seq_timeout: DEFAULT_SEQ_TIMEOUT_SECS,
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

/// Parses `tcp/22` or `udp/53`.
pub fn parse_grant(s: &str) -> Result<Grant, DoorGrantError> {
    // knockd's commands always name the protocol; so do our doors.
    if !s.contains('/') {
        return Err(DoorGrantError::NoProtocol { text: s.to_owned() });
    }
    s.parse::<Grant>().map_err(|error| DoorGrantError::Syntax {
        text: s.trim().to_owned(),
        error,
    })
}

fn check_secs(field: &str, v: u32) -> Result<u32, LegacyConfigError> {
    if v == 0 || v > MAX_SECS {
        return Err(field_err(field, P::Secs { value: v }));
    }
    Ok(v)
}

pub(super) fn check_max_sources(field: &str, v: usize) -> Result<usize, LegacyConfigError> {
    if v == 0 || v > MAX_MAX_SOURCES {
        return Err(field_err(field, P::MaxSources { value: v }));
    }
    Ok(v)
}

impl DoorConfig {
    fn to_door(&self, i: usize, default_timeout: u32) -> Result<Door, LegacyConfigError> {
        let f = |name: &str| format!("legacy.door[{i}].{name}");
        let name: Arc<str> = match &self.name {
            Some(n) if n.trim().is_empty() => return Err(field_err(f("name"), P::EmptyName)),
            Some(n) => {
                // Door names reach every knock log line.
                spa_keys::check_label(n).map_err(|why| field_err(f("name"), P::BadName { why }))?;
                Arc::from(n.trim())
            }
            None => Arc::from(format!("door{i}")),
        };
        let sequence =
            parse_sequence(&self.sequence).map_err(|e| field_err(f("sequence"), P::Sequence(e)))?;
        let seq_timeout = match self.seq_timeout {
            Some(t) => check_secs(&f("seq_timeout"), t)?,
            None => default_timeout,
        };
        let tcpflags = match &self.tcpflags {
            Some(s) => {
                TcpFlags::parse_door(s).map_err(|e| field_err(f("tcpflags"), P::Flags(e)))?
            }
            None => TcpFlags::SYN,
        };
        let grant =
            |field: &str, s: &str| parse_grant(s).map_err(|e| field_err(f(field), P::Grant(e)));
        let action = match (&self.open, &self.close) {
            (Some(o), None) => DoorAction::Open {
                grant: grant("open", o)?,
                duration_secs: match self.duration {
                    Some(d) => Some(check_secs(&f("duration"), d)?),
                    None => None,
                },
            },
            (None, Some(c)) => {
                if self.duration.is_some() {
                    return Err(field_err(f("duration"), P::DurationOnClose));
                }
                DoorAction::Close {
                    grant: grant("close", c)?,
                }
            }
            (Some(_), Some(_)) => return Err(field_err(f("close"), P::OpenAndClose)),
            (None, None) => return Err(field_err(f("open"), P::NoAction)),
        };
        Ok(Door {
            name,
            sequence,
            seq_timeout_ms: u64::from(seq_timeout) * 1000,
            tcpflags,
            action,
        })
    }
}

impl LegacyConfig {
    /// All fixed-sequence doors: `[[legacy.door]]`, then the imported
    /// knockd.conf (read here; its warnings are logged), or knockd's default
    /// doors if neither is configured.
    pub fn doors(&self) -> Result<Vec<Door>, LegacyConfigError> {
        let imported = match &self.knockd_conf {
            Some(p) => {
                let imp = read_knockd_conf(p).map_err(LegacyConfigError::Knockd)?;
                for w in &imp.warnings {
                    tracing::warn!("{w}");
                }
                Some(imp)
            }
            None => None,
        };
        self.doors_with(imported)
    }

    /// [`Self::doors`] with the knockd.conf already imported (pure).
    pub fn doors_with(
        &self,
        imported: Option<KnockdImport>,
    ) -> Result<Vec<Door>, LegacyConfigError> {
        let timeout = check_secs("legacy.seq_timeout", self.seq_timeout)?;
        check_max_sources("legacy.max_sources", self.max_sources)?;
        let mut doors = Vec::new();
        match (&self.doors, imported) {
            (None, None) => doors = default_doors(timeout),
            (ours, imp) => {
                for (i, d) in ours.iter().flatten().enumerate() {
                    doors.push(d.to_door(i, timeout)?);
                }
                doors.extend(imp.into_iter().flat_map(|i| i.doors));
            }
        }
        // Names and sequences must be unique across both sources.
        for (i, d) in doors.iter().enumerate() {
            if let Some(prev) = doors[..i].iter().find(|p| p.name == d.name) {
                return Err(field_err(
                    self.door_field(i, "name"),
                    P::NameTwice {
                        name: d.name.clone(),
                        prev: prev.name.clone(),
                    },
                ));
            }
            if let Some(prev) = doors[..i].iter().find(|p| p.sequence == d.sequence) {
                return Err(field_err(
                    self.door_field(i, "sequence"),
                    P::SameSequence {
                        prev: prev.name.clone(),
                    },
                ));
            }
        }
        if doors.len() > tracker::MAX_DOORS {
            return Err(field_err("legacy.door", P::TooManyDoors));
        }
        Ok(doors)
    }

    fn door_field(&self, i: usize, name: &str) -> String {
        let ours = self.doors.as_ref().map_or(0, Vec::len);
        if i < ours {
            format!("legacy.door[{i}].{name}")
        } else {
            format!("legacy.knockd_conf (door {})", i - ours)
        }
    }

    /// The HMAC knock parameters, or None if `[legacy.hmac]` is disabled.
    pub fn hmac_params(&self) -> Result<Option<(KnockParams, Proto)>, LegacyConfigError> {
        let h = &self.hmac;
        if !h.enabled {
            return Ok(None);
        }
        let params = KnockParams {
            ports: h.ports,
            step_secs: h.step_secs,
            range: (h.range[0], h.range[1]),
        };
        if h.ports == 0 || h.ports > spa_proto::knock::MAX_KNOCK_PORTS {
            return Err(field_err(
                "legacy.hmac.ports",
                P::HmacPorts { value: h.ports },
            ));
        }
        if h.ports < 3 {
            return Err(field_err("legacy.hmac.ports", P::HmacTooFewPorts));
        }
        if h.step_secs == 0 || h.step_secs > 3600 {
            return Err(field_err(
                "legacy.hmac.step_secs",
                P::HmacStep { value: h.step_secs },
            ));
        }
        params
            .validate()
            .map_err(|why| field_err("legacy.hmac.range", P::HmacRange { why }))?;
        if h.range[1] - h.range[0] < 1000 {
            return Err(field_err("legacy.hmac.range", P::HmacNarrowRange));
        }
        let proto = match h.protocol.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => {
                return Err(field_err(
                    "legacy.hmac.protocol",
                    P::HmacProtocol {
                        value: other.to_owned(),
                    },
                ))
            }
        };
        check_secs("legacy.hmac.seq_timeout", h.seq_timeout)?;
        check_max_sources("legacy.hmac.max_sources", h.max_sources)?;
        Ok(Some((params, proto)))
    }

    /// Refuses HMAC knock settings that leave a guesser fewer than
    /// [`MIN_HMAC_KNOCK_BITS`] with `keys` keys configured (every key may
    /// knock). Separate from [`Self::hmac_params`] because the key count
    /// lives outside `[legacy]`.
    pub fn check_hmac_strength(&self, keys: usize) -> Result<(), LegacyConfigError> {
        let h = &self.hmac;
        if !h.enabled {
            return Ok(());
        }
        let bits = hmac_knock_bits(h.ports, h.range, keys);
        if bits >= MIN_HMAC_KNOCK_BITS {
            return Ok(());
        }
        let span = u32::from(h.range[1].saturating_sub(h.range[0])) + 1;
        let need = (spa_proto::knock::MAX_KNOCK_PORTS.min(h.ports)
            ..=spa_proto::knock::MAX_KNOCK_PORTS)
            .find(|&n| hmac_knock_bits(n, h.range, keys) >= MIN_HMAC_KNOCK_BITS);
        Err(field_err(
            "legacy.hmac.ports",
            P::HmacWeak {
                ports: h.ports,
                span,
                keys,
                bits,
                fix: need.map(|n| (n, hmac_knock_bits(n, h.range, keys))),
            },
        ))
    }

    /// Every check, reading the knockd.conf if one is configured. Silent:
    /// the import's warnings are logged once, by [`Self::doors`].
    pub fn validate(&self) -> Result<(), LegacyConfigError> {
        let imported = match &self.knockd_conf {
            Some(p) => Some(read_knockd_conf(p).map_err(LegacyConfigError::Knockd)?),
            None => None,
        };
        self.doors_with(imported)?;
        self.hmac_params()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
