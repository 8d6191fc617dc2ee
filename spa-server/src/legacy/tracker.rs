//! knockd-compatible knock sequences: doors, per-source progress, events.
//!
//! The rules are those of knockd 0.8 (src/knockd.c, `sniff()` and
//! `process_attempt()`), restated so they can be tested:
//!
//! 1. A source with no progress that knocks on the first step of one or more
//!    doors (protocol, port and the door's `tcpflags` all matching) starts
//!    one attempt per such door. The time of that first knock starts the
//!    door's `seq_timeout` clock.
//! 2. A source with progress: for each of its attempts, a knock whose TCP
//!    flags do not match the door's `tcpflags` is ignored (it neither
//!    advances nor resets); a knock on the expected next (port, protocol)
//!    advances; any other knock on a knock port invalidates that attempt.
//!    This knock never starts a new attempt, even if it is a first step: a
//!    knocker who fumbles must wait for one more knock (as in knockd).
//! 3. An attempt whose first knock is `seq_timeout` or more ago is gone
//!    before the knock is looked at (knockd checks `now - seq_start >=
//!    seq_timeout` at each packet, in whole seconds; we use milliseconds).
//! 4. The attempt that reaches the last step completes its door: one event.
//! 5. Knocks on ports that are no step of any door are not knocks: they
//!    change nothing (knockd never sees them: its pcap filter lists only the
//!    doors' ports).
//!
//! Deliberate differences from knockd: progress lives in a bounded table
//! (see `table.rs`); `target` and `one_time_sequences` are not supported;
//! two doors may not share an identical sequence (knockd would run both
//! commands; we reject the ambiguity at load time).

mod error;

pub use error::{DoorError, FlagsError, SequenceError};

use super::table::{BoundedTable, TableStats};
use spa_proto::{Grant, Proto};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// knockd's own default `seq_timeout` (SEQ_TIMEOUT in knockd.c), used for
/// imported doors that do not set one. Debian's stock knockd.conf sets 5.
pub const KNOCKD_DEFAULT_SEQ_TIMEOUT_SECS: u32 = 25;
/// knockd's default `cmd_timeout` (CMD_TIMEOUT in knockd.c).
pub const KNOCKD_DEFAULT_CMD_TIMEOUT_SECS: u32 = 10;
/// knockd's SEQ_MAX: the longest sequence it accepts.
pub const MAX_SEQUENCE_LEN: usize = 32;
/// More doors than anyone configures; keeps door indexes in a u16.
pub const MAX_DOORS: usize = 1024;
/// Default capacity of the progress table (sources with a partial sequence).
pub const DEFAULT_MAX_SOURCES: usize = 65_536;

/// TCP header flag bits, as in the TCP header's flags byte.
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

const FLAG_NAMES: [(&str, u8); 6] = [
    ("fin", tcp_flag::FIN),
    ("syn", tcp_flag::SYN),
    ("rst", tcp_flag::RST),
    ("psh", tcp_flag::PSH),
    ("ack", tcp_flag::ACK),
    ("urg", tcp_flag::URG),
];

/// knockd's `tcpflags`: flags that must be set and flags that must be clear
/// (`!flag`); others are "don't care". Applies to TCP knocks only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags {
    pub set: u8,
    pub clear: u8,
}

impl TcpFlags {
    /// knockd's default: any flags.
    pub const ANY: TcpFlags = TcpFlags { set: 0, clear: 0 };
    /// What the stock `knock` client sends and what our own doors default to.
    pub const SYN: TcpFlags = TcpFlags {
        set: tcp_flag::SYN,
        clear: 0,
    };

    /// Parses knockd's syntax: `syn`, `syn,ack`, `fin,!ack` (case
    /// insensitive). Unlike knockd (last one wins) a flag that is both
    /// required and forbidden is an error.
    pub fn parse(s: &str) -> Result<Self, FlagsError> {
        let mut out = TcpFlags::ANY;
        for raw in s.split(',') {
            let word = raw.trim().to_ascii_lowercase();
            let (neg, name) = match word.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, word.as_str()),
            };
            let bit = FLAG_NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| *b)
                .ok_or_else(|| FlagsError::UnknownFlag {
                    word: raw.trim().to_owned(),
                })?;
            if neg {
                out.clear |= bit;
            } else {
                out.set |= bit;
            }
        }
        if out.set & out.clear != 0 {
            return Err(FlagsError::Contradiction { text: s.to_owned() });
        }
        Ok(out)
    }

    /// knockd's `flags_match`: UDP knocks always match.
    pub fn matches(self, proto: Proto, flags: u8) -> bool {
        match proto {
            Proto::Udp => true,
            Proto::Tcp => flags & self.set == self.set && flags & self.clear == 0,
        }
    }

    /// [`TcpFlags::parse`] for a door: also refuses flags that a bare SYN
    /// does not satisfy (`ack`, `fin`, `!syn`…). Why: the capture passes TCP
    /// knocks to user space as bare SYNs only (what every knock client
    /// sends, and what keeps established traffic in the kernel), so such a
    /// door could never open; knockd would accept it, we say so instead.
    pub fn parse_door(s: &str) -> Result<Self, FlagsError> {
        let f = Self::parse(s)?;
        if !f.matches(Proto::Tcp, tcp_flag::SYN) {
            return Err(FlagsError::NeverBareSyn { text: s.to_owned() });
        }
        Ok(f)
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, bit) in FLAG_NAMES {
            let neg = if self.set & bit != 0 {
                false
            } else if self.clear & bit != 0 {
                true
            } else {
                continue;
            };
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if neg {
                f.write_str("!")?;
            }
            f.write_str(name)?;
        }
        if first {
            f.write_str("any")?;
        }
        Ok(())
    }
}

/// One knock of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Step {
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.port, self.proto.name())
    }
}

/// Parses knockd's sequence syntax: `7000,8000:udp,9000:tcp`; the protocol
/// defaults to TCP. Ports must be 1..=65535 (knockd's atoi would quietly
/// turn a typo into port 0).
pub fn parse_sequence(s: &str) -> Result<Vec<Step>, SequenceError> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(SequenceError::EmptyStep { text: s.to_owned() });
        }
        let (port, proto) = match item.split_once(':') {
            Some((p, proto)) => (p.trim(), Some(proto.trim())),
            None => (item, None),
        };
        let port: u16 =
            port.parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| SequenceError::BadPort {
                    port: port.to_owned(),
                })?;
        let proto = match proto.map(str::to_ascii_lowercase).as_deref() {
            None | Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            Some(other) => {
                return Err(SequenceError::UnknownProto {
                    proto: other.to_owned(),
                })
            }
        };
        out.push(Step { port, proto });
        if out.len() > MAX_SEQUENCE_LEN {
            return Err(SequenceError::TooLong);
        }
    }
    Ok(out)
}

/// What completing a door does for the knocking source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorAction {
    /// knockd's `command` with `iptables -A/-I` (duration None: the door
    /// gave none, the server applies its default/maximum), or
    /// `start_command` + `cmd_timeout` + `stop_command` (a timed open).
    Open {
        grant: Grant,
        duration_secs: Option<u32>,
    },
    /// knockd's `command` with `iptables -D`.
    Close { grant: Grant },
}

/// A validated door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Door {
    /// Section name (knockd) or `name` (our config); for logs.
    pub name: Arc<str>,
    pub sequence: Vec<Step>,
    pub seq_timeout_ms: u64,
    pub tcpflags: TcpFlags,
    pub action: DoorAction,
}

impl Door {
    /// Shape rules shared by both config sources.
    pub fn check(&self) -> Result<(), DoorError> {
        if self.sequence.is_empty() {
            return Err(DoorError::EmptySequence);
        }
        if self.sequence.len() > MAX_SEQUENCE_LEN {
            return Err(DoorError::TooLong);
        }
        if self.seq_timeout_ms == 0 {
            return Err(DoorError::ZeroTimeout);
        }
        if self.sequence.iter().any(|s| s.port == 0) {
            return Err(DoorError::ZeroPort);
        }
        Ok(())
    }
}

/// A completed door, for the daemon to apply to its grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnockEvent {
    Open {
        door: Arc<str>,
        addr: IpAddr,
        grant: Grant,
        duration_secs: Option<u32>,
    },
    Close {
        door: Arc<str>,
        addr: IpAddr,
        grant: Grant,
    },
}

/// Why `SequenceTracker::new` refused a set of doors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoorSetError {
    TooMany { got: usize },
    Invalid { door: Arc<str>, reason: DoorError },
    SameSequence { a: Arc<str>, b: Arc<str> },
}

impl fmt::Display for DoorSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DoorSetError::TooMany { got } => {
                write!(f, "{got} knock doors configured; at most {MAX_DOORS}")
            }
            DoorSetError::Invalid { door, reason } => write!(f, "door {door}: {reason}"),
            DoorSetError::SameSequence { a, b } => write!(
                f,
                "doors {a} and {b} have the same knock sequence; a knock could not tell them apart"
            ),
        }
    }
}

impl std::error::Error for DoorSetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DoorSetError::Invalid { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    door: u16,
    /// Steps matched so far (1 after the first knock).
    stage: u8,
}

#[derive(Debug)]
struct Progress(Vec<Attempt>);

fn advanced(p: &Progress) -> bool {
    p.0.iter().any(|a| a.stage >= 2)
}

/// Per-source progress over a fixed set of doors. Pure: time comes in as
/// `now_ms`, a monotonic millisecond counter with any origin (the daemon
/// passes milliseconds since it started); it must not go backwards by more
/// than a few ms (a backwards step only makes attempts live longer).
#[derive(Debug)]
pub struct SequenceTracker {
    doors: Vec<Door>,
    /// Doors indexed by their first step.
    first: HashMap<Step, Vec<u16>>,
    /// Every step of every door: anything else is not a knock.
    ports: HashSet<Step>,
    max_timeout_ms: u64,
    table: BoundedTable<Progress>,
    /// now_ms of the last "table full" warning, to log it once per 10 s.
    last_full_warning_ms: Option<u64>,
}

impl SequenceTracker {
    /// `max_sources` bounds the number of sources with partial progress.
    pub fn new(doors: Vec<Door>, max_sources: usize) -> Result<Self, DoorSetError> {
        if doors.len() > MAX_DOORS {
            return Err(DoorSetError::TooMany { got: doors.len() });
        }
        let mut first: HashMap<Step, Vec<u16>> = HashMap::new();
        let mut ports = HashSet::new();
        let mut seen: HashMap<&[Step], &Arc<str>> = HashMap::new();
        for (i, d) in doors.iter().enumerate() {
            d.check().map_err(|reason| DoorSetError::Invalid {
                door: d.name.clone(),
                reason,
            })?;
            if let Some(prev) = seen.insert(&d.sequence, &d.name) {
                return Err(DoorSetError::SameSequence {
                    a: prev.clone(),
                    b: d.name.clone(),
                });
            }
            ports.extend(d.sequence.iter().copied());
            // i < MAX_DOORS <= u16::MAX, checked above.
            first.entry(d.sequence[0]).or_default().push(i as u16);
        }
        let max_timeout_ms = doors.iter().map(|d| d.seq_timeout_ms).max().unwrap_or(1);
        Ok(SequenceTracker {
            doors,
            first,
            ports,
            max_timeout_ms,
            table: BoundedTable::new(max_sources),
            last_full_warning_ms: None,
        })
    }

    pub fn doors(&self) -> &[Door] {
        &self.doors
    }

    /// Sources with partial progress right now (never above `max_sources`).
    pub fn tracked_sources(&self) -> usize {
        self.table.len()
    }

    pub fn max_sources(&self) -> usize {
        self.table.cap()
    }

    pub fn stats(&self) -> TableStats {
        self.table.stats
    }

    /// True if (proto, port) is a step of some door.
    pub fn is_knock_port(&self, proto: Proto, port: u16) -> bool {
        self.ports.contains(&Step { port, proto })
    }

    /// Feeds one captured knock (a TCP segment or UDP datagram to `dport`
    /// with `tcp_flags`, 0 for UDP). Returns the door this knock completed,
    /// if any. Never panics; O(doors sharing the step) per knock.
    pub fn observe(
        &mut self,
        src: IpAddr,
        proto: Proto,
        dport: u16,
        tcp_flags: u8,
        now_ms: u64,
    ) -> Option<KnockEvent> {
        let step = Step { port: dport, proto };
        if !self.ports.contains(&step) {
            return None;
        }
        self.table.expire(now_ms, self.max_timeout_ms);
        if let Some(slot) = self.table.get_mut(&src) {
            let age = now_ms.saturating_sub(slot.started_ms);
            let doors = &self.doors;
            slot.value.0.retain(|a| {
                doors
                    .get(usize::from(a.door))
                    .is_some_and(|d| age < d.seq_timeout_ms)
            });
            if !slot.value.0.is_empty() {
                let mut completed = None;
                slot.value.0.retain_mut(|a| {
                    let Some(door) = doors.get(usize::from(a.door)) else {
                        return false;
                    };
                    if !door.tcpflags.matches(proto, tcp_flags) {
                        return true;
                    }
                    if door.sequence.get(usize::from(a.stage)) != Some(&step) {
                        tracing::debug!(%src, door = %door.name, stage = a.stage, knock = %step,
                            "knock out of order: attempt reset");
                        return false;
                    }
                    a.stage = a.stage.saturating_add(1);
                    if usize::from(a.stage) >= door.sequence.len() {
                        if completed.is_none() {
                            completed = Some(a.door);
                        }
                        return false;
                    }
                    true
                });
                if slot.value.0.is_empty() {
                    self.table.remove(&src);
                }
                return completed.and_then(|d| self.event(d, src));
            }
            // Every attempt had timed out: as in knockd, this knock is
            // looked at afresh below.
            self.table.remove(&src);
        }
        let mut attempts = Vec::new();
        let mut completed = None;
        if let Some(candidates) = self.first.get(&step) {
            for &d in candidates {
                let Some(door) = self.doors.get(usize::from(d)) else {
                    continue;
                };
                if !door.tcpflags.matches(proto, tcp_flags) {
                    continue;
                }
                if door.sequence.len() == 1 {
                    completed.get_or_insert(d);
                } else {
                    attempts.push(Attempt { door: d, stage: 1 });
                }
            }
        }
        if !attempts.is_empty() {
            let evicted_before = self.table.stats.evicted;
            self.table.insert(src, now_ms, Progress(attempts), advanced);
            if self.table.stats.evicted != evicted_before {
                self.warn_full(now_ms);
            }
        }
        completed.and_then(|d| self.event(d, src))
    }

    fn warn_full(&mut self, now_ms: u64) {
        let due = self
            .last_full_warning_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= 10_000);
        if due {
            self.last_full_warning_ms = Some(now_ms);
            tracing::warn!(
                capacity = self.table.cap(),
                evicted_total = self.table.stats.evicted,
                "knock progress table full (first-knock flood?): evicting the oldest attempts"
            );
        }
    }

    fn event(&self, door: u16, addr: IpAddr) -> Option<KnockEvent> {
        let d = self.doors.get(usize::from(door))?;
        tracing::info!(%addr, door = %d.name, "knock sequence complete");
        Some(match d.action {
            DoorAction::Open {
                grant,
                duration_secs,
            } => KnockEvent::Open {
                door: d.name.clone(),
                addr,
                grant,
                duration_secs,
            },
            DoorAction::Close { grant } => KnockEvent::Close {
                door: d.name.clone(),
                addr,
                grant,
            },
        })
    }
}

/// knockd's stock doors (Debian's /etc/knockd.conf `openSSH`/`closeSSH`):
/// SYNs to 7000, 8000, 9000 within `seq_timeout_secs` open tcp/22 for the
/// source; 9000, 8000, 7000 closes it.
pub fn default_doors(seq_timeout_secs: u32) -> Vec<Door> {
    const SSH: std::num::NonZeroU16 = match std::num::NonZeroU16::new(22) {
        Some(p) => p,
        None => std::num::NonZeroU16::MIN,
    };
    let ssh = Grant {
        proto: Proto::Tcp,
        port: SSH,
    };
    let seq = |ports: [u16; 3]| {
        ports
            .iter()
            .map(|&port| Step {
                port,
                proto: Proto::Tcp,
            })
            .collect::<Vec<_>>()
    };
    vec![
        Door {
            name: "openSSH".into(),
            sequence: seq([7000, 8000, 9000]),
            seq_timeout_ms: u64::from(seq_timeout_secs) * 1000,
            tcpflags: TcpFlags::SYN,
            action: DoorAction::Open {
                grant: ssh,
                duration_secs: None,
            },
        },
        Door {
            name: "closeSSH".into(),
            sequence: seq([9000, 8000, 7000]),
            seq_timeout_ms: u64::from(seq_timeout_secs) * 1000,
            tcpflags: TcpFlags::SYN,
            action: DoorAction::Close { grant: ssh },
        },
    ]
}

#[cfg(test)]
mod tests;
