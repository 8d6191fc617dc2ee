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

pub mod hmac;
pub mod knockd_conf;
mod table;
pub mod tracker;

pub use hmac::{HmacKey, HmacKnocks, HmacOpen};
pub use knockd_conf::{parse_knockd_conf, read_knockd_conf, KnockdConfError, KnockdImport};
pub use table::TableStats;
pub use tracker::{
    default_doors, parse_sequence, tcp_flag, Door, DoorAction, DoorSetError, KnockEvent,
    SequenceTracker, Step, TcpFlags, DEFAULT_MAX_SOURCES, KNOCKD_DEFAULT_CMD_TIMEOUT_SECS,
    KNOCKD_DEFAULT_SEQ_TIMEOUT_SECS,
};

use serde::Deserialize;
use spa_proto::{Grant, KnockParams, Proto, ServerId};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

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

/// A `[legacy]` problem. `field` is the TOML path (`legacy.door[1].open`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyConfigError {
    Field { field: String, msg: String },
    Knockd(KnockdConfError),
}

impl fmt::Display for LegacyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegacyConfigError::Field { field, msg } => write!(f, "{field}: {msg}"),
            LegacyConfigError::Knockd(e) => write!(f, "legacy.knockd_conf: {e}"),
        }
    }
}

impl std::error::Error for LegacyConfigError {}

fn field_err(field: impl Into<String>, msg: impl Into<String>) -> LegacyConfigError {
    LegacyConfigError::Field {
        field: field.into(),
        msg: msg.into(),
    }
}

/// Parses `tcp/22` or `udp/53`.
pub fn parse_grant(s: &str) -> Result<Grant, String> {
    // knockd's commands always name the protocol; so do our doors.
    if !s.contains('/') {
        return Err(format!("{s:?} is not proto/port, e.g. \"tcp/22\""));
    }
    s.parse::<Grant>()
        .map_err(|e| format!("`{}`: {e}", s.trim()))
}

fn check_secs(field: &str, v: u32) -> Result<u32, LegacyConfigError> {
    if v == 0 || v > MAX_SECS {
        return Err(field_err(
            field,
            format!("{v} is not 1..={MAX_SECS} seconds"),
        ));
    }
    Ok(v)
}

fn check_max_sources(field: &str, v: usize) -> Result<usize, LegacyConfigError> {
    if v == 0 || v > MAX_MAX_SOURCES {
        return Err(field_err(
            field,
            format!("{v} is not 1..={MAX_MAX_SOURCES}"),
        ));
    }
    Ok(v)
}

impl DoorConfig {
    fn to_door(&self, i: usize, default_timeout: u32) -> Result<Door, LegacyConfigError> {
        let f = |name: &str| format!("legacy.door[{i}].{name}");
        let name: Arc<str> = match &self.name {
            Some(n) if n.trim().is_empty() => return Err(field_err(f("name"), "empty name")),
            Some(n) => {
                // Door names reach every knock log line.
                spa_keys::check_label(n).map_err(|m| field_err(f("name"), m))?;
                Arc::from(n.trim())
            }
            None => Arc::from(format!("door{i}")),
        };
        let sequence = parse_sequence(&self.sequence).map_err(|m| field_err(f("sequence"), m))?;
        let seq_timeout = match self.seq_timeout {
            Some(t) => check_secs(&f("seq_timeout"), t)?,
            None => default_timeout,
        };
        let tcpflags = match &self.tcpflags {
            Some(s) => TcpFlags::parse_door(s).map_err(|m| field_err(f("tcpflags"), m))?,
            None => TcpFlags::SYN,
        };
        let grant = |field: &str, s: &str| parse_grant(s).map_err(|m| field_err(f(field), m));
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
                    return Err(field_err(f("duration"), "only an open door has a duration"));
                }
                DoorAction::Close {
                    grant: grant("close", c)?,
                }
            }
            (Some(_), Some(_)) => {
                return Err(field_err(
                    f("close"),
                    "a door either opens or closes, not both",
                ))
            }
            (None, None) => {
                return Err(field_err(
                    f("open"),
                    "a door needs open = \"tcp/22\" or close = \"tcp/22\"",
                ))
            }
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
                    format!("door name {:?} used twice (also {})", d.name, prev.name),
                ));
            }
            if let Some(prev) = doors[..i].iter().find(|p| p.sequence == d.sequence) {
                return Err(field_err(
                    self.door_field(i, "sequence"),
                    format!("same sequence as door {:?}", prev.name),
                ));
            }
        }
        if doors.len() > tracker::MAX_DOORS {
            return Err(field_err(
                "legacy.door",
                format!("more than {} doors", tracker::MAX_DOORS),
            ));
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
                format!(
                    "{} is not 1..={}",
                    h.ports,
                    spa_proto::knock::MAX_KNOCK_PORTS
                ),
            ));
        }
        if h.ports < 3 {
            return Err(field_err(
                "legacy.hmac.ports",
                "fewer than 3 knocks is too easy to guess",
            ));
        }
        if h.step_secs == 0 || h.step_secs > 3600 {
            return Err(field_err(
                "legacy.hmac.step_secs",
                format!("{} is not 1..=3600 seconds", h.step_secs),
            ));
        }
        params
            .validate()
            .map_err(|m| field_err("legacy.hmac.range", m))?;
        if h.range[1] - h.range[0] < 1000 {
            return Err(field_err(
                "legacy.hmac.range",
                "fewer than 1000 ports makes sequences guessable",
            ));
        }
        let proto = match h.protocol.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => {
                return Err(field_err(
                    "legacy.hmac.protocol",
                    format!("{other:?} is not tcp or udp"),
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
        let fix = match need {
            Some(n) => format!(
                "set legacy.hmac.ports = {n} ({:.1} bits) or widen legacy.hmac.range",
                hmac_knock_bits(n, h.range, keys)
            ),
            None => {
                "widen legacy.hmac.range (e.g. [10000, 60000] with ports = 5) or use fewer keys"
                    .to_string()
            }
        };
        Err(field_err(
            "legacy.hmac.ports",
            format!(
                "{} knocks over {span} ports with {keys} key(s) give {bits:.1} bits against a guesser, \
                 fewer than {MIN_HMAC_KNOCK_BITS}: {fix} (clients need the same --ports/--range)",
                h.ports
            ),
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
                .map_err(|e| field_err("legacy.door", e.to_string()))?;
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
mod tests {
    use super::*;
    use spa_proto::{Grants, MasterKey};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        legacy: LegacyConfig,
    }

    fn cfg(toml_text: &str) -> LegacyConfig {
        toml::from_str::<File>(toml_text).unwrap().legacy
    }

    fn field_of(r: Result<impl std::fmt::Debug, LegacyConfigError>) -> String {
        match r {
            Err(LegacyConfigError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn empty_section_gives_knockd_defaults() {
        let c = cfg("");
        assert_eq!(c, LegacyConfig::default());
        let doors = c.doors().unwrap();
        assert_eq!(doors, default_doors(5));
        assert_eq!(c.hmac_params().unwrap(), None);
        let p = knock_ports(&doors, None);
        assert_eq!(p.tcp, vec![7000, 8000, 9000]);
        assert!(p.udp.is_empty());
    }

    #[test]
    fn full_example_parses() {
        let c = cfg(r#"
[legacy]
seq_timeout = 7
max_sources = 1000

[[legacy.door]]
name = "web"
sequence = "7000:tcp,8000:udp,9000"
tcpflags = "syn"
open = "tcp/443"
duration = 60

[[legacy.door]]
sequence = "9000,8000:udp,7000"
seq_timeout = 3
close = "tcp/443"

[legacy.hmac]
enabled = true
ports = 5
step_secs = 20
range = [20000, 40000]
protocol = "udp"
"#);
        let doors = c.doors().unwrap();
        assert_eq!(doors.len(), 2);
        assert_eq!(doors[0].name.as_ref(), "web");
        assert_eq!(doors[0].seq_timeout_ms, 7000);
        assert_eq!(
            doors[0].action,
            DoorAction::Open {
                grant: Grant::tcp(443).unwrap(),
                duration_secs: Some(60)
            }
        );
        assert_eq!(doors[1].name.as_ref(), "door1");
        assert_eq!(doors[1].seq_timeout_ms, 3000);
        let (params, proto) = c.hmac_params().unwrap().unwrap();
        assert_eq!(
            params,
            KnockParams {
                ports: 5,
                step_secs: 20,
                range: (20_000, 40_000)
            }
        );
        assert_eq!(proto, Proto::Udp);
        let p = knock_ports(&doors, Some((params, proto)));
        assert_eq!(p.tcp, vec![7000, 9000]);
        assert_eq!(p.udp, vec![8000]);
        assert_eq!(p.hmac, Some((Proto::Udp, 20_000, 40_000)));
    }

    #[test]
    fn explicit_empty_door_list_means_none() {
        let c = cfg("[legacy]\ndoor = []\n[legacy.hmac]\nenabled = true\n");
        assert!(c.doors().unwrap().is_empty());
        assert!(c.hmac_params().unwrap().is_some());
    }

    #[test]
    fn unknown_fields_are_rejected_by_serde() {
        for t in [
            "[legacy]\nseq_timout = 5\n",
            "[[legacy.door]]\nsequence = \"1\"\nopen = \"tcp/22\"\nport = 22\n",
            "[legacy.hmac]\nenable = true\n",
        ] {
            let e = toml::from_str::<File>(t).err().expect(t).to_string();
            assert!(e.contains("unknown field"), "{t}: {e}");
        }
    }

    #[test]
    fn validation_errors_name_the_field() {
        let door = |extra: &str| cfg(&format!("[[legacy.door]]\n{extra}\n"));
        let cases: &[(&str, &str)] = &[
            ("sequence = \"7000,x\"\nopen = \"tcp/22\"", "legacy.door[0].sequence"),
            ("sequence = \"7000\"", "legacy.door[0].open"),
            ("sequence = \"7000\"\nopen = \"tcp/22\"\nclose = \"tcp/22\"", "legacy.door[0].close"),
            ("sequence = \"7000\"\nopen = \"icmp/22\"", "legacy.door[0].open"),
            ("sequence = \"7000\"\nopen = \"tcp/0\"", "legacy.door[0].open"),
            ("sequence = \"7000\"\nclose = \"22\"", "legacy.door[0].close"),
            ("sequence = \"7000\"\nclose = \"tcp/22\"\nduration = 5", "legacy.door[0].duration"),
            ("sequence = \"7000\"\nopen = \"tcp/22\"\nduration = 0", "legacy.door[0].duration"),
            ("sequence = \"7000\"\nopen = \"tcp/22\"\nseq_timeout = 0", "legacy.door[0].seq_timeout"),
            ("sequence = \"7000\"\nopen = \"tcp/22\"\ntcpflags = \"xmas\"", "legacy.door[0].tcpflags"),
            ("sequence = \"7000\"\nopen = \"tcp/22\"\nname = \" \"", "legacy.door[0].name"),
            (
                "sequence = \"7000\"\nopen = \"tcp/22\"\n[[legacy.door]]\nsequence = \"7000:tcp\"\nclose = \"tcp/22\"",
                "legacy.door[1].sequence",
            ),
            (
                "name = \"a\"\nsequence = \"1\"\nopen = \"tcp/22\"\n[[legacy.door]]\nname = \"a\"\nsequence = \"2\"\nclose = \"tcp/22\"",
                "legacy.door[1].name",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(field_of(door(text).doors()), *field, "{text}");
        }
        assert_eq!(
            field_of(cfg("[legacy]\nseq_timeout = 0\n").doors()),
            "legacy.seq_timeout"
        );
        assert_eq!(
            field_of(cfg("[legacy]\nmax_sources = 0\n").doors()),
            "legacy.max_sources"
        );
        let hmac =
            |extra: &str| cfg(&format!("[legacy.hmac]\nenabled = true\n{extra}\n")).hmac_params();
        assert_eq!(field_of(hmac("ports = 0")), "legacy.hmac.ports");
        assert_eq!(field_of(hmac("ports = 9")), "legacy.hmac.ports");
        assert_eq!(field_of(hmac("ports = 2")), "legacy.hmac.ports");
        assert_eq!(field_of(hmac("step_secs = 0")), "legacy.hmac.step_secs");
        assert_eq!(field_of(hmac("range = [0, 100]")), "legacy.hmac.range");
        assert_eq!(field_of(hmac("range = [5000, 4000]")), "legacy.hmac.range");
        assert_eq!(field_of(hmac("range = [5000, 5100]")), "legacy.hmac.range");
        assert_eq!(
            field_of(hmac("protocol = \"sctp\"")),
            "legacy.hmac.protocol"
        );
        assert_eq!(field_of(hmac("seq_timeout = 0")), "legacy.hmac.seq_timeout");
        assert_eq!(field_of(hmac("max_sources = 0")), "legacy.hmac.max_sources");
        // Disabled: not checked.
        assert_eq!(cfg("[legacy.hmac]\nports = 0\n").hmac_params(), Ok(None));
    }

    #[test]
    fn knockd_conf_is_imported_alongside_our_doors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("knockd.conf");
        std::fs::write(
            &p,
            "[options]\n  UseSyslog\n[openSSHtimed]\n sequence = 7100,8100,9100\n seq_timeout = 5\n \
             start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n cmd_timeout = 10\n \
             stop_command = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n tcpflags = syn\n",
        )
        .unwrap();
        let mut c = LegacyConfig {
            knockd_conf: Some(p.clone()),
            ..LegacyConfig::default()
        };
        let doors = c.doors().unwrap();
        assert_eq!(
            doors.len(),
            1,
            "knockd_conf without [[legacy.door]]: only its doors"
        );
        assert_eq!(
            doors[0].action,
            DoorAction::Open {
                grant: Grant::tcp(22).unwrap(),
                duration_secs: Some(10)
            }
        );
        c.doors = Some(vec![DoorConfig {
            name: Some("openSSHtimed".into()),
            sequence: "1,2,3".into(),
            seq_timeout: None,
            tcpflags: None,
            open: Some("tcp/22".into()),
            close: None,
            duration: None,
        }]);
        let e = c.doors().unwrap_err().to_string();
        assert!(e.contains("used twice"), "{e}");
        std::fs::write(&p, "[d]\nsequence = 1\ncommand = sh -c 'true'\n").unwrap();
        let e = c.doors().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("legacy.knockd_conf: {}:3:", p.display())),
            "{e}"
        );
    }

    #[test]
    fn legacy_knocks_routes_both_kinds() {
        let c = cfg("[legacy.hmac]\nenabled = true\n");
        let key = Arc::new(MasterKey::from_bytes([5; 32]).derive());
        let server = ServerId::from_name("srv");
        let grants = Grants::new(&[Grant::tcp(22).unwrap()]).unwrap();
        let mut lk = LegacyKnocks::new(
            &c,
            c.doors().unwrap(),
            server,
            vec![HmacKey {
                keys: key.clone(),
                grants,
            }],
        )
        .unwrap();
        assert!(lk.tracker().is_some());
        assert_eq!(lk.ports().hmac, Some((Proto::Tcp, 10_000, 60_000)));
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let unix = 1_700_000_000;
        let mut evs = vec![];
        for (i, p) in [7000u16, 8000, 9000].into_iter().enumerate() {
            evs.extend(lk.observe(a, Proto::Tcp, p, tcp_flag::SYN, i as u64, unix));
        }
        assert!(matches!(
            evs.as_slice(),
            [LegacyEvent::Door(KnockEvent::Open { .. })]
        ));
        let params = KnockParams::default();
        let seq = spa_proto::knock::sequence(&key, &server, params.step_at(unix), &params);
        let mut evs = vec![];
        for (i, &p) in seq.iter().enumerate() {
            // A non-SYN TCP packet is no HMAC knock.
            assert!(lk
                .observe(a, Proto::Tcp, p, tcp_flag::ACK, 10, unix)
                .is_empty());
            evs.extend(lk.observe(a, Proto::Tcp, p, tcp_flag::SYN, 10 + i as u64, unix));
        }
        assert!(
            matches!(evs.as_slice(), [LegacyEvent::Hmac(HmacOpen { grants: g, .. })] if *g == grants)
        );

        // Without doors and with HMAC disabled, nothing is tracked.
        let c = LegacyConfig::default();
        let mut lk = LegacyKnocks::new(&c, vec![], server, vec![]).unwrap();
        assert!(lk.tracker().is_none() && lk.hmac().is_none());
        assert!(lk
            .observe(a, Proto::Tcp, 7000, tcp_flag::SYN, 0, unix)
            .is_empty());
    }

    proptest::proptest! {
        /// Arbitrary door fields never panic; errors always name a field.
        #[test]
        fn arbitrary_door_fields_never_panic(
            seq in "\\PC{0,30}", flags in proptest::option::of("\\PC{0,12}"),
            open in proptest::option::of("\\PC{0,10}"), close in proptest::option::of("(tcp|udp)/[0-9]{1,6}"),
            timeout in proptest::option::of(0u32..100_000), duration in proptest::option::of(0u32..100_000),
        ) {
            let c = LegacyConfig {
                doors: Some(vec![DoorConfig { name: None, sequence: seq, seq_timeout: timeout, tcpflags: flags,
                    open, close, duration }]),
                ..LegacyConfig::default()
            };
            match c.doors() {
                Ok(d) => proptest::prop_assert_eq!(d.len(), 1),
                Err(LegacyConfigError::Field { field, .. }) => proptest::prop_assert!(field.starts_with("legacy.door[0].")),
                Err(e) => proptest::prop_assert!(false, "unexpected {e}"),
            }
        }
    }

    /// Finding 15: settings a blind guesser can beat are refused, with the
    /// bits computed and how to reach 64; the defaults pass.
    #[test]
    fn hmac_settings_under_64_bits_are_refused_with_the_bits_and_the_fix() {
        // The issue's example: 3 ports over 1001 with 10 keys, ~25 bits.
        let weak = cfg("[legacy.hmac]\nenabled = true\nports = 3\nrange = [10000, 11000]\n");
        assert!(weak.hmac_params().is_ok(), "the structural checks pass");
        let e = weak.check_hmac_strength(10).unwrap_err();
        assert_eq!(field_of(Err::<(), _>(e.clone())), "legacy.hmac.ports");
        let msg = e.to_string();
        assert!(msg.contains("25.0 bits"), "{msg}");
        assert!(msg.contains("fewer than 64"), "{msg}");
        assert!(msg.contains("ports = 7"), "how to reach 64: {msg}");
        // The old default, 4 over 50001, is 60.9 bits with one key.
        let four = cfg("[legacy.hmac]\nenabled = true\nports = 4\n");
        let msg = four.check_hmac_strength(1).unwrap_err().to_string();
        assert!(
            msg.contains("60.9 bits") && msg.contains("ports = 5"),
            "{msg}"
        );
        // The new default passes, up to thousands of keys.
        let default = cfg("[legacy.hmac]\nenabled = true\n");
        assert_eq!(default.hmac.ports, 5);
        assert!(default.check_hmac_strength(1).is_ok());
        assert!(default.check_hmac_strength(5000).is_ok());
        assert!(default.check_hmac_strength(10_000).is_err());
        // Disabled: nothing to guess.
        assert!(cfg("").check_hmac_strength(1_000_000).is_ok());
        // 8 ports cannot save a range too narrow: widen it.
        let narrow = cfg("[legacy.hmac]\nenabled = true\nports = 8\nrange = [10000, 10100]\n");
        let msg = narrow.check_hmac_strength(1).unwrap_err().to_string();
        assert!(msg.contains("widen legacy.hmac.range"), "{msg}");
        assert!((hmac_knock_bits(5, [10_000, 60_000], 1) - 76.46).abs() < 0.01);
    }

    #[test]
    fn parse_grant_forms() {
        assert_eq!(parse_grant("tcp/22"), Ok(Grant::tcp(22).unwrap()));
        assert_eq!(
            parse_grant(" UDP / 53 "),
            Ok(Grant::new(Proto::Udp, 53).unwrap())
        );
        for bad in ["22", "tcp/", "tcp/65536", "tcp/-1", "/22", "tcp/22/1"] {
            assert!(parse_grant(bad).is_err(), "{bad}");
        }
    }
}
