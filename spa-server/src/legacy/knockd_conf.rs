//! Imports an existing knockd.conf (knockd 0.8 syntax) as our doors.
//!
//! Why: users migrating from knockd keep their sequences and clients on day
//! one. Only what we can honour exactly is accepted; anything else is an
//! error naming the file and line, never silently dropped, because a door
//! that quietly does something different from what its author wrote is a
//! security bug.
//!
//! Syntax as knockd's `parseconfig()`: lines are trimmed; empty lines and
//! lines starting with `#` are skipped; `[name]` opens a section (`options`
//! is global, anything else a door); `key = value` with a case-insensitive
//! key; the bare word `UseSyslog`.
//!
//! Supported door keys: `sequence`, `seq_timeout`/`timeout`, `tcpflags`,
//! `command`/`start_command`, `stop_command`, `cmd_timeout`, and the `_6`
//! variants when they describe the same grant as the IPv4 command (our grants
//! cover both families). Commands must have one of these shapes:
//!
//! ```text
//! [/path/]iptables|ip6tables -I|-A|-D INPUT -s %IP% -p tcp|udp [-m tcp|udp] --dport N -j ACCEPT
//! [/path/]knock_add -i|-a|-x [-c INPUT] [-p tcp|udp] -d N -f %IP%
//! ```
//!
//! `-I`/`-A` open, `-D` closes; `start_command` (open) + `stop_command`
//! (delete of the same rule) + `cmd_timeout` (default 10 s) is a timed open.
//! `[options]` keys `UseSyslog`, `LogFile`, `PidFile` and `Interface` only
//! concern knockd's own process: they are accepted and reported as warnings.
//! `target` and `one_time_sequences` are errors (see docs/legacy.md).

use super::tracker::{
    parse_sequence, Door, DoorAction, Step, TcpFlags, KNOCKD_DEFAULT_CMD_TIMEOUT_SECS,
    KNOCKD_DEFAULT_SEQ_TIMEOUT_SECS,
};
use spa_proto::{Grant, Proto};
use std::path::Path;
use std::sync::Arc;

mod error;

pub use error::{CommandError, KnockdConfError, KnockdProblem, SecsError};
use KnockdProblem as P;

/// A knockd.conf larger than this is not a knockd.conf.
pub const MAX_FILE_LEN: usize = 1 << 20;

/// The doors of a knockd.conf plus what was accepted but has no effect here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnockdImport {
    pub doors: Vec<Door>,
    /// "file:line: ..." lines for the daemon to log at start.
    pub warnings: Vec<String>,
}

/// Reads and imports `path`.
pub fn read_knockd_conf(path: &Path) -> Result<KnockdImport, KnockdConfError> {
    let err = |line, problem| KnockdConfError {
        file: path.to_path_buf(),
        line,
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(0, P::CannotRead(e)))?;
    if meta.len() > MAX_FILE_LEN as u64 {
        return Err(err(0, P::TooLarge));
    }
    let bytes = std::fs::read(path).map_err(|e| err(0, P::CannotRead(e)))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        err(line, P::NotUtf8)
    })?;
    parse_knockd_conf(path, text)
}

/// One parsed iptables-like command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleOp {
    Add,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    op: RuleOp,
    grant: Grant,
}

#[derive(Default)]
struct DoorDraft {
    name: String,
    line: usize,
    sequence: Option<Vec<Step>>,
    seq_timeout: Option<u32>,
    tcpflags: Option<TcpFlags>,
    start: Option<(usize, Rule)>,
    start6: Option<(usize, Rule)>,
    stop: Option<(usize, Rule)>,
    stop6: Option<(usize, Rule)>,
    cmd_timeout: Option<(usize, u32)>,
}

enum Section {
    None,
    Options,
    Door(DoorDraft),
}

/// Imports knockd.conf text; `file` only names it in errors.
pub fn parse_knockd_conf(file: &Path, text: &str) -> Result<KnockdImport, KnockdConfError> {
    let err = |line, problem| KnockdConfError {
        file: file.to_path_buf(),
        line,
        problem,
    };
    let mut warnings = Vec::new();
    let mut doors: Vec<Door> = Vec::new();
    let mut section = Section::None;
    for (i, raw) in text.lines().enumerate() {
        let ln = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') && line.len() >= 2 {
            let name = line[1..line.len() - 1].trim();
            if name.is_empty() {
                return Err(err(ln, P::EmptySectionName));
            }
            // Door names reach every knock log line.
            spa_keys::check_label(name).map_err(|why| err(ln, P::BadSectionName { why }))?;
            finish(
                std::mem::replace(&mut section, Section::None),
                file,
                &mut doors,
            )?;
            if name == "options" {
                section = Section::Options;
            } else {
                if doors.iter().any(|d| d.name.as_ref() == name) {
                    return Err(err(
                        ln,
                        P::DoorTwice {
                            door: name.to_owned(),
                        },
                    ));
                }
                section = Section::Door(DoorDraft {
                    name: name.to_string(),
                    line: ln,
                    ..DoorDraft::default()
                });
            }
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_uppercase(), Some(v.trim())),
            None => (line.to_ascii_uppercase(), None),
        };
        match (&mut section, key.as_str(), value) {
            (Section::None, _, _) => {
                return Err(err(ln, P::OutsideSection));
            }
            (_, "USESYSLOG", None) => {
                warnings.push(format!(
                    "{}:{ln}: UseSyslog ignored: spa logs through its own tracing output (journald)",
                    file.display()
                ));
            }
            (_, k, None) => {
                return Err(err(ln, P::NoValue { key: k.to_owned() }));
            }
            (Section::Options, "LOGFILE" | "PIDFILE", Some(_)) => {
                warnings.push(format!(
                    "{}:{ln}: {key} ignored: it configures knockd's own process",
                    file.display()
                ));
            }
            (Section::Options, "INTERFACE", Some(v)) => {
                warnings.push(format!(
                    "{}:{ln}: Interface = {v} ignored: spa captures on the interface of its own configuration",
                    file.display()
                ));
            }
            (Section::Options, k, Some(_)) => {
                return Err(err(ln, P::UnsupportedOption { key: k.to_owned() }));
            }
            (Section::Door(d), k, Some(v)) => match k {
                "SEQUENCE" => {
                    let seq = parse_sequence(v).map_err(|e| err(ln, P::Sequence(e)))?;
                    d.sequence = Some(seq);
                }
                "SEQ_TIMEOUT" | "TIMEOUT" => {
                    d.seq_timeout = Some(secs(v).map_err(|error| {
                        err(
                            ln,
                            P::Timeout {
                                key: "seq_timeout",
                                error,
                            },
                        )
                    })?);
                }
                "CMD_TIMEOUT" => {
                    d.cmd_timeout = Some((
                        ln,
                        secs(v).map_err(|error| {
                            err(
                                ln,
                                P::Timeout {
                                    key: "cmd_timeout",
                                    error,
                                },
                            )
                        })?,
                    ));
                }
                "TCPFLAGS" => {
                    d.tcpflags = Some(TcpFlags::parse_door(v).map_err(|e| err(ln, P::Flags(e)))?);
                }
                "COMMAND" | "START_COMMAND" | "COMMAND_6" | "START_COMMAND_6" | "STOP_COMMAND"
                | "STOP_COMMAND_6" => {
                    let rule = parse_command(v).map_err(|error| {
                        err(
                            ln,
                            P::Command {
                                key: k.to_ascii_lowercase(),
                                error,
                            },
                        )
                    })?;
                    let slot = match k {
                        "COMMAND" | "START_COMMAND" => &mut d.start,
                        "COMMAND_6" | "START_COMMAND_6" => &mut d.start6,
                        "STOP_COMMAND" => &mut d.stop,
                        _ => &mut d.stop6,
                    };
                    *slot = Some((ln, rule));
                }
                "TARGET" => {
                    return Err(err(ln, P::Target));
                }
                "ONE_TIME_SEQUENCES" => {
                    return Err(err(ln, P::OneTimeSequences));
                }
                other => {
                    return Err(err(
                        ln,
                        P::UnsupportedDoorKey {
                            key: other.to_owned(),
                        },
                    ));
                }
            },
        }
    }
    finish(section, file, &mut doors)?;
    Ok(KnockdImport { doors, warnings })
}

fn secs(v: &str) -> Result<u32, SecsError> {
    match v.parse::<u32>() {
        Ok(0) => Err(SecsError::Zero),
        Ok(n) => Ok(n),
        Err(_) => Err(SecsError::NotANumber {
            value: v.to_owned(),
        }),
    }
}

/// Turns a finished section into a door, checking the command combination.
fn finish(s: Section, file: &Path, doors: &mut Vec<Door>) -> Result<(), KnockdConfError> {
    let Section::Door(d) = s else {
        return Ok(());
    };
    let err = |line, problem| KnockdConfError {
        file: file.to_path_buf(),
        line,
        problem,
    };
    let name = &d.name;
    let door = || name.clone();
    let sequence = d
        .sequence
        .ok_or_else(|| err(d.line, P::NoSequence { door: door() }))?;
    let Some((start_ln, start)) = d.start else {
        return Err(err(d.line, P::NoStartCommand { door: door() }));
    };
    // The _6 variants must say the same as the IPv4 line: one grant covers
    // both address families here.
    for (v6, v4, key) in [
        (d.start6, Some((start_ln, start)), "start_command_6"),
        (d.stop6, d.stop, "stop_command_6"),
    ] {
        if let Some((ln6, r6)) = v6 {
            if v4.map(|(_, r)| r) != Some(r6) {
                return Err(err(ln6, P::V6Differs { key }));
            }
        }
    }
    let action = match (start.op, d.stop) {
        (RuleOp::Add, None) => {
            if let Some((ln, _)) = d.cmd_timeout {
                return Err(err(ln, P::CmdTimeoutWithoutStop { closes: false }));
            }
            DoorAction::Open {
                grant: start.grant,
                duration_secs: None,
            }
        }
        (RuleOp::Delete, None) => {
            if let Some((ln, _)) = d.cmd_timeout {
                return Err(err(ln, P::CmdTimeoutWithoutStop { closes: true }));
            }
            DoorAction::Close { grant: start.grant }
        }
        (RuleOp::Add, Some((stop_ln, stop))) => {
            if stop.op != RuleOp::Delete || stop.grant != start.grant {
                return Err(err(stop_ln, P::StopNotInverse { grant: start.grant }));
            }
            let t = d
                .cmd_timeout
                .map_or(KNOCKD_DEFAULT_CMD_TIMEOUT_SECS, |(_, t)| t);
            DoorAction::Open {
                grant: start.grant,
                duration_secs: Some(t),
            }
        }
        (RuleOp::Delete, Some((stop_ln, _))) => {
            return Err(err(stop_ln, P::StopAfterDelete));
        }
    };
    let built = Door {
        name: Arc::from(name.as_str()),
        sequence,
        seq_timeout_ms: u64::from(d.seq_timeout.unwrap_or(KNOCKD_DEFAULT_SEQ_TIMEOUT_SECS)) * 1000,
        tcpflags: d.tcpflags.unwrap_or(TcpFlags::ANY),
        action,
    };
    built.check().map_err(|error| {
        err(
            d.line,
            P::Door {
                door: door(),
                error,
            },
        )
    })?;
    if let Some(other) = doors.iter().find(|o| o.sequence == built.sequence) {
        return Err(err(
            d.line,
            P::SameSequence {
                door: door(),
                other: other.name.to_string(),
            },
        ));
    }
    doors.push(built);
    Ok(())
}

const SHELL_CHARS: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '\'', '"', '\\', '*', '?', '{', '}', '\n',
];

fn basename(prog: &str) -> &str {
    prog.rsplit('/').next().unwrap_or(prog)
}

/// Parses one knockd command into an add or delete of a source-scoped grant.
fn parse_command(cmd: &str) -> Result<Rule, CommandError> {
    if let Some(c) = cmd.chars().find(|c| SHELL_CHARS.contains(c)) {
        return Err(CommandError::ShellSyntax { c });
    }
    let mut words = cmd.split_whitespace();
    let prog = words.next().ok_or(CommandError::Empty)?;
    let args: Vec<&str> = words.collect();
    match basename(prog) {
        "iptables" | "ip6tables" | "iptables-nft" | "ip6tables-nft" | "iptables-legacy"
        | "ip6tables-legacy" => parse_iptables(&args),
        "knock_add" => parse_knock_add(&args),
        other => Err(CommandError::Program {
            prog: other.to_owned(),
        }),
    }
}

fn proto_of(v: &str) -> Result<Proto, CommandError> {
    match v.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(CommandError::Protocol {
            value: v.to_owned(),
        }),
    }
}

fn port_of(v: &str) -> Result<u16, CommandError> {
    v.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| CommandError::Port {
            value: v.to_owned(),
        })
}

fn set_once<T>(slot: &mut Option<T>, v: T, what: &'static str) -> Result<(), CommandError> {
    if slot.is_some() {
        return Err(CommandError::Twice { what });
    }
    *slot = Some(v);
    Ok(())
}

fn parse_iptables(args: &[&str]) -> Result<Rule, CommandError> {
    let mut op = None;
    let mut src: Option<()> = None;
    let mut proto = None;
    let mut matched = None;
    let mut dport = None;
    let mut jump = false;
    let mut it = args.iter().copied().peekable();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next().ok_or_else(|| CommandError::NeedsValue {
                option: name.to_owned(),
            })
        };
        match a {
            "-I" | "--insert" | "-A" | "--append" | "-D" | "--delete" => {
                let chain = val(a)?;
                if chain != "INPUT" {
                    return Err(CommandError::Chain {
                        chain: chain.to_owned(),
                    });
                }
                let o = if matches!(a, "-D" | "--delete") {
                    RuleOp::Delete
                } else {
                    RuleOp::Add
                };
                set_once(&mut op, o, "the rule operation (-I/-A/-D)")?;
                // -I INPUT 1: an optional rule position; order is ours to choose.
                if matches!(a, "-I" | "--insert") {
                    if let Some(n) = it.peek() {
                        if n.parse::<u32>().is_ok() {
                            it.next();
                        }
                    }
                }
            }
            "-s" | "--source" | "--src" => {
                let v = val(a)?;
                if v != "%IP%" && v != "%IP%/32" && v != "%IP%/128" {
                    return Err(CommandError::Source {
                        value: v.to_owned(),
                    });
                }
                set_once(&mut src, (), "-s")?;
            }
            "-p" | "--protocol" => set_once(&mut proto, proto_of(val(a)?)?, "-p")?,
            "-m" | "--match" => {
                let m = val(a)?;
                let p = proto_of(m).map_err(|_| CommandError::MatchModule {
                    module: m.to_owned(),
                })?;
                set_once(&mut matched, p, "-m")?;
            }
            "--dport" | "--destination-port" => set_once(&mut dport, port_of(val(a)?)?, "--dport")?,
            "-j" | "--jump" => {
                let t = val(a)?;
                if t != "ACCEPT" {
                    return Err(CommandError::Target {
                        target: t.to_owned(),
                    });
                }
                jump = true;
            }
            "-t" | "--table" => {
                let t = val(a)?;
                if t != "filter" {
                    return Err(CommandError::Table {
                        table: t.to_owned(),
                    });
                }
            }
            "-w" | "--wait" => {
                if it.peek().is_some_and(|n| n.parse::<u32>().is_ok()) {
                    it.next();
                }
            }
            other => {
                return Err(CommandError::IptablesArg {
                    arg: other.to_owned(),
                })
            }
        }
    }
    let op = op.ok_or(CommandError::NoOperation)?;
    if src.is_none() {
        return Err(CommandError::NoSource);
    }
    let proto = proto.ok_or(CommandError::NoProtocol)?;
    if matched.is_some_and(|m| m != proto) {
        return Err(CommandError::MatchMismatch);
    }
    let port = dport.ok_or(CommandError::NoDport)?;
    if !jump {
        return Err(CommandError::NoJump);
    }
    let grant = Grant::new(proto, port).map_err(CommandError::Grant)?;
    Ok(Rule { op, grant })
}

/// knock_add from knockd's contrib (getopt "aixf:d:p:c:m::thv").
fn parse_knock_add(args: &[&str]) -> Result<Rule, CommandError> {
    let mut op = None;
    let mut src = false;
    let mut proto = None;
    let mut dport = None;
    let mut it = args.iter().copied();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next().ok_or_else(|| CommandError::NeedsValue {
                option: name.to_owned(),
            })
        };
        match a {
            "-a" | "--append" | "-i" | "--insert" => {
                set_once(&mut op, RuleOp::Add, "the operation (-a/-i/-x)")?
            }
            "-x" | "--delete" => set_once(&mut op, RuleOp::Delete, "the operation (-a/-i/-x)")?,
            "-f" | "--srcaddr" => {
                let v = val(a)?;
                if v != "%IP%" {
                    return Err(CommandError::Source {
                        value: v.to_owned(),
                    });
                }
                src = true;
            }
            "-d" | "--dstport" => set_once(&mut dport, port_of(val(a)?)?, "-d")?,
            "-p" | "--proto" => set_once(&mut proto, proto_of(val(a)?)?, "-p")?,
            "-c" | "--chain" => {
                let c = val(a)?;
                if c != "INPUT" {
                    return Err(CommandError::Chain {
                        chain: c.to_owned(),
                    });
                }
            }
            "-v" | "--verbose" => {}
            "-t" | "--test" => return Err(CommandError::KnockAddDryRun),
            // -m/--comment takes an optional argument attached to it.
            a if a == "-m"
                || a.starts_with("-m")
                || a == "--comment"
                || a.starts_with("--comment=") => {}
            other => {
                return Err(CommandError::KnockAddArg {
                    arg: other.to_owned(),
                })
            }
        }
    }
    let op = op.ok_or(CommandError::KnockAddNoOperation)?;
    if !src {
        return Err(CommandError::KnockAddNoSource);
    }
    let port = dport.ok_or(CommandError::KnockAddNoPort)?;
    let grant = Grant::new(proto.unwrap_or(Proto::Tcp), port).map_err(CommandError::Grant)?;
    Ok(Rule { op, grant })
}

#[cfg(test)]
mod tests;
