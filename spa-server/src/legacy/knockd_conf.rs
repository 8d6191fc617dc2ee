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
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A knockd.conf larger than this is not a knockd.conf.
pub const MAX_FILE_LEN: usize = 1 << 20;

/// Why a knockd.conf could not be imported. `line` is 1-based; 0 means the
/// whole file (I/O, size, or a door that is incomplete at its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnockdConfError {
    pub file: PathBuf,
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for KnockdConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.msg)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.msg)
        }
    }
}

impl std::error::Error for KnockdConfError {}

/// The doors of a knockd.conf plus what was accepted but has no effect here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnockdImport {
    pub doors: Vec<Door>,
    /// "file:line: ..." lines for the daemon to log at start.
    pub warnings: Vec<String>,
}

/// Reads and imports `path`.
pub fn read_knockd_conf(path: &Path) -> Result<KnockdImport, KnockdConfError> {
    let err = |line, msg: String| KnockdConfError {
        file: path.to_path_buf(),
        line,
        msg,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(0, format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_LEN as u64 {
        return Err(err(0, format!("larger than {MAX_FILE_LEN} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| err(0, format!("cannot read: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        err(line, "not valid UTF-8".into())
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
    let err = |line, msg: String| KnockdConfError {
        file: file.to_path_buf(),
        line,
        msg,
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
                return Err(err(ln, "empty section name".into()));
            }
            // Door names reach every knock log line.
            spa_keys::check_label(name).map_err(|m| err(ln, format!("section name {m}")))?;
            finish(
                std::mem::replace(&mut section, Section::None),
                file,
                &mut doors,
            )?;
            if name == "options" {
                section = Section::Options;
            } else {
                if doors.iter().any(|d| d.name.as_ref() == name) {
                    return Err(err(ln, format!("door [{name}] is defined twice")));
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
                return Err(err(ln, "directive outside any [section]".into()));
            }
            (_, "USESYSLOG", None) => {
                warnings.push(format!(
                    "{}:{ln}: UseSyslog ignored: spa logs through its own tracing output (journald)",
                    file.display()
                ));
            }
            (_, k, None) => {
                return Err(err(
                    ln,
                    format!("{k:?} without a value: expected key = value"),
                ));
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
                return Err(err(ln, format!("unsupported [options] key {k:?} (supported: UseSyslog, LogFile, PidFile, Interface)")));
            }
            (Section::Door(d), k, Some(v)) => match k {
                "SEQUENCE" => {
                    let seq = parse_sequence(v).map_err(|m| err(ln, format!("sequence: {m}")))?;
                    d.sequence = Some(seq);
                }
                "SEQ_TIMEOUT" | "TIMEOUT" => {
                    d.seq_timeout =
                        Some(secs(v).map_err(|m| err(ln, format!("seq_timeout: {m}")))?);
                }
                "CMD_TIMEOUT" => {
                    d.cmd_timeout = Some((
                        ln,
                        secs(v).map_err(|m| err(ln, format!("cmd_timeout: {m}")))?,
                    ));
                }
                "TCPFLAGS" => {
                    d.tcpflags = Some(
                        TcpFlags::parse_door(v).map_err(|m| err(ln, format!("tcpflags: {m}")))?,
                    );
                }
                "COMMAND" | "START_COMMAND" => {
                    d.start = Some((
                        ln,
                        parse_command(v)
                            .map_err(|m| err(ln, format!("{}: {m}", k.to_ascii_lowercase())))?,
                    ));
                }
                "COMMAND_6" | "START_COMMAND_6" => {
                    d.start6 = Some((
                        ln,
                        parse_command(v)
                            .map_err(|m| err(ln, format!("{}: {m}", k.to_ascii_lowercase())))?,
                    ));
                }
                "STOP_COMMAND" => {
                    d.stop = Some((
                        ln,
                        parse_command(v).map_err(|m| err(ln, format!("stop_command: {m}")))?,
                    ));
                }
                "STOP_COMMAND_6" => {
                    d.stop6 = Some((
                        ln,
                        parse_command(v).map_err(|m| err(ln, format!("stop_command_6: {m}")))?,
                    ));
                }
                "TARGET" => {
                    return Err(err(ln, "target is not supported: spa accepts knocks to the addresses its capture sees; remove the line or run knockd for this door".into()));
                }
                "ONE_TIME_SEQUENCES" => {
                    return Err(err(ln, "one_time_sequences is not supported: use HMAC knocks ([legacy.hmac]), which change every time step and need no sequence file".into()));
                }
                other => {
                    return Err(err(ln, format!("unsupported door key {other:?}")));
                }
            },
        }
    }
    finish(section, file, &mut doors)?;
    Ok(KnockdImport { doors, warnings })
}

fn secs(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(0) => Err("must be at least 1 second".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{v:?} is not a whole number of seconds")),
    }
}

/// Turns a finished section into a door, checking the command combination.
fn finish(s: Section, file: &Path, doors: &mut Vec<Door>) -> Result<(), KnockdConfError> {
    let Section::Door(d) = s else {
        return Ok(());
    };
    let err = |line, msg: String| KnockdConfError {
        file: file.to_path_buf(),
        line,
        msg,
    };
    let name = &d.name;
    let sequence = d
        .sequence
        .ok_or_else(|| err(d.line, format!("door [{name}] has no sequence")))?;
    let Some((start_ln, start)) = d.start else {
        return Err(err(
            d.line,
            format!("door [{name}] has no command or start_command"),
        ));
    };
    // The _6 variants must say the same as the IPv4 line: one grant covers
    // both address families here.
    for (v6, v4, what) in [
        (d.start6, Some((start_ln, start)), "start_command_6"),
        (d.stop6, d.stop, "stop_command_6"),
    ] {
        if let Some((ln6, r6)) = v6 {
            if v4.map(|(_, r)| r) != Some(r6) {
                return Err(err(ln6, format!("{what} differs from its IPv4 command; spa applies one grant to both address families")));
            }
        }
    }
    let action = match (start.op, d.stop) {
        (RuleOp::Add, None) => {
            if let Some((ln, _)) = d.cmd_timeout {
                return Err(err(ln, "cmd_timeout without stop_command has no effect; remove it or add the matching stop_command".into()));
            }
            DoorAction::Open {
                grant: start.grant,
                duration_secs: None,
            }
        }
        (RuleOp::Delete, None) => {
            if let Some((ln, _)) = d.cmd_timeout {
                return Err(err(
                    ln,
                    "cmd_timeout without stop_command has no effect; remove it".into(),
                ));
            }
            DoorAction::Close { grant: start.grant }
        }
        (RuleOp::Add, Some((stop_ln, stop))) => {
            if stop.op != RuleOp::Delete || stop.grant != start.grant {
                return Err(err(stop_ln, format!("stop_command must delete the rule start_command added ({}); anything else is not supported", start.grant)));
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
            return Err(err(
                stop_ln,
                "stop_command after a start_command that deletes a rule is not supported".into(),
            ));
        }
    };
    let door = Door {
        name: Arc::from(name.as_str()),
        sequence,
        seq_timeout_ms: u64::from(d.seq_timeout.unwrap_or(KNOCKD_DEFAULT_SEQ_TIMEOUT_SECS)) * 1000,
        tcpflags: d.tcpflags.unwrap_or(TcpFlags::ANY),
        action,
    };
    door.check()
        .map_err(|m| err(d.line, format!("door [{name}]: {m}")))?;
    if let Some(other) = doors.iter().find(|o| o.sequence == door.sequence) {
        return Err(err(
            d.line,
            format!("door [{name}] has the same sequence as [{}]", other.name),
        ));
    }
    doors.push(door);
    Ok(())
}

const SHELL_CHARS: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '\'', '"', '\\', '*', '?', '{', '}', '\n',
];

fn basename(prog: &str) -> &str {
    prog.rsplit('/').next().unwrap_or(prog)
}

/// Parses one knockd command into an add or delete of a source-scoped grant.
fn parse_command(cmd: &str) -> Result<Rule, String> {
    if let Some(c) = cmd.chars().find(|c| SHELL_CHARS.contains(c)) {
        return Err(format!(
            "shell syntax ({c:?}) is not supported: only a single iptables or knock_add command"
        ));
    }
    let mut words = cmd.split_whitespace();
    let prog = words.next().ok_or("empty command")?;
    let args: Vec<&str> = words.collect();
    match basename(prog) {
        "iptables" | "ip6tables" | "iptables-nft" | "ip6tables-nft" | "iptables-legacy" | "ip6tables-legacy" => parse_iptables(&args),
        "knock_add" => parse_knock_add(&args),
        other => Err(format!("command {other:?} is not supported: only iptables/ip6tables -I/-A/-D INPUT -s %IP% -p tcp|udp --dport N -j ACCEPT, or knock_add")),
    }
}

fn proto_of(v: &str) -> Result<Proto, String> {
    match v.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(format!("protocol {v:?} is not supported (tcp or udp)")),
    }
}

fn port_of(v: &str) -> Result<u16, String> {
    v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
        format!("{v:?} is not a single port 1..=65535 (ranges and service names are not supported)")
    })
}

fn set_once<T>(slot: &mut Option<T>, v: T, what: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{what} given twice"));
    }
    *slot = Some(v);
    Ok(())
}

fn parse_iptables(args: &[&str]) -> Result<Rule, String> {
    let mut op = None;
    let mut src: Option<()> = None;
    let mut proto = None;
    let mut matched = None;
    let mut dport = None;
    let mut jump = false;
    let mut it = args.iter().copied().peekable();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a {
            "-I" | "--insert" | "-A" | "--append" | "-D" | "--delete" => {
                let chain = val(a)?;
                if chain != "INPUT" {
                    return Err(format!("chain {chain:?} is not supported: spa manages its own rules hooked into INPUT"));
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
                    return Err(format!("source must be %IP% (the knocker), not {v:?}"));
                }
                set_once(&mut src, (), "-s")?;
            }
            "-p" | "--protocol" => set_once(&mut proto, proto_of(val(a)?)?, "-p")?,
            "-m" | "--match" => {
                let m = val(a)?;
                let p = proto_of(m).map_err(|_| {
                    format!("match module {m:?} is not supported (only -m tcp/-m udp)")
                })?;
                set_once(&mut matched, p, "-m")?;
            }
            "--dport" | "--destination-port" => set_once(&mut dport, port_of(val(a)?)?, "--dport")?,
            "-j" | "--jump" => {
                let t = val(a)?;
                if t != "ACCEPT" {
                    return Err(format!("target {t:?} is not supported (only -j ACCEPT)"));
                }
                jump = true;
            }
            "-t" | "--table" => {
                let t = val(a)?;
                if t != "filter" {
                    return Err(format!("table {t:?} is not supported (only filter)"));
                }
            }
            "-w" | "--wait" => {
                if it.peek().is_some_and(|n| n.parse::<u32>().is_ok()) {
                    it.next();
                }
            }
            other => return Err(format!("iptables argument {other:?} is not supported")),
        }
    }
    let op = op.ok_or("no -I, -A or -D INPUT")?;
    if src.is_none() {
        return Err("no -s %IP%: spa only grants to the knocking source".into());
    }
    let proto = proto.ok_or("no -p tcp|udp")?;
    if matched.is_some_and(|m| m != proto) {
        return Err("-m does not match -p".into());
    }
    let port = dport.ok_or("no --dport")?;
    if !jump {
        return Err("no -j ACCEPT".into());
    }
    let grant = Grant::new(proto, port).map_err(|e| format!("{e:?}"))?;
    Ok(Rule { op, grant })
}

/// knock_add from knockd's contrib (getopt "aixf:d:p:c:m::thv").
fn parse_knock_add(args: &[&str]) -> Result<Rule, String> {
    let mut op = None;
    let mut src = false;
    let mut proto = None;
    let mut dport = None;
    let mut it = args.iter().copied();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a {
            "-a" | "--append" | "-i" | "--insert" => {
                set_once(&mut op, RuleOp::Add, "the operation (-a/-i/-x)")?
            }
            "-x" | "--delete" => set_once(&mut op, RuleOp::Delete, "the operation (-a/-i/-x)")?,
            "-f" | "--srcaddr" => {
                let v = val(a)?;
                if v != "%IP%" {
                    return Err(format!("source must be %IP% (the knocker), not {v:?}"));
                }
                src = true;
            }
            "-d" | "--dstport" => set_once(&mut dport, port_of(val(a)?)?, "-d")?,
            "-p" | "--proto" => set_once(&mut proto, proto_of(val(a)?)?, "-p")?,
            "-c" | "--chain" => {
                let c = val(a)?;
                if c != "INPUT" {
                    return Err(format!(
                        "chain {c:?} is not supported: spa manages its own rules hooked into INPUT"
                    ));
                }
            }
            "-v" | "--verbose" => {}
            "-t" | "--test" => {
                return Err(
                    "knock_add -t (dry run) changes nothing; remove the door or the flag".into(),
                )
            }
            // -m/--comment takes an optional argument attached to it.
            a if a == "-m"
                || a.starts_with("-m")
                || a == "--comment"
                || a.starts_with("--comment=") => {}
            other => return Err(format!("knock_add argument {other:?} is not supported")),
        }
    }
    let op = op.ok_or("knock_add needs -a, -i or -x")?;
    if !src {
        return Err("knock_add needs -f %IP%".into());
    }
    let port = dport.ok_or("knock_add needs -d PORT")?;
    let grant = Grant::new(proto.unwrap_or(Proto::Tcp), port).map_err(|e| format!("{e:?}"))?;
    Ok(Rule { op, grant })
}

#[cfg(test)]
mod tests;
