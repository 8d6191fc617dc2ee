//! Why a knockd.conf could not be imported: the file, the line and what is
//! wrong there, as values (the key, the value as written, the door), so a
//! caller can match on them; the text is made here only.

use super::super::tracker::{DoorError, FlagsError, SequenceError};
use super::MAX_FILE_LEN;
use spa_proto::Grant;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a knockd.conf could not be imported. `line` is 1-based; 0 means the
/// whole file (I/O, size, or a door that is incomplete at its end).
#[derive(Debug)]
pub struct KnockdConfError {
    pub file: PathBuf,
    pub line: usize,
    pub problem: KnockdProblem,
}

impl fmt::Display for KnockdConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.problem)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.problem)
        }
    }
}

impl std::error::Error for KnockdConfError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            KnockdProblem::CannotRead(e) => Some(e),
            KnockdProblem::Sequence(e) => Some(e),
            KnockdProblem::Flags(e) => Some(e),
            KnockdProblem::Command { error, .. } => Some(error),
            KnockdProblem::Door { error, .. } => Some(error),
            KnockdProblem::BadSectionName { why } => Some(why),
            _ => None,
        }
    }
}

/// What is wrong at a knockd.conf line (or with the whole file).
#[derive(Debug)]
pub enum KnockdProblem {
    CannotRead(io::Error),
    TooLarge,
    NotUtf8,
    EmptySectionName,
    /// The section name cannot be a door name in logs (`spa_keys::check_label`'s reason).
    BadSectionName {
        why: spa_keys::LabelError,
    },
    DoorTwice {
        door: String,
    },
    OutsideSection,
    /// A bare word that is not `UseSyslog` (`key` upper-cased, as matched).
    NoValue {
        key: String,
    },
    UnsupportedOption {
        key: String,
    },
    UnsupportedDoorKey {
        key: String,
    },
    Target,
    OneTimeSequences,
    Sequence(SequenceError),
    /// `seq_timeout` (or `timeout`) or `cmd_timeout`.
    Timeout {
        key: &'static str,
        error: SecsError,
    },
    Flags(FlagsError),
    /// `key`: the command key as knockd.conf spells it, lower-cased.
    Command {
        key: String,
        error: CommandError,
    },
    NoSequence {
        door: String,
    },
    NoStartCommand {
        door: String,
    },
    /// `start_command_6` or `stop_command_6` is not its IPv4 command.
    V6Differs {
        key: &'static str,
    },
    /// `cmd_timeout` without `stop_command`; `closes`: the door deletes a rule.
    CmdTimeoutWithoutStop {
        closes: bool,
    },
    /// `stop_command` that is not the delete of `grant`, the rule opened.
    StopNotInverse {
        grant: Grant,
    },
    StopAfterDelete,
    Door {
        door: String,
        error: DoorError,
    },
    SameSequence {
        door: String,
        other: String,
    },
}

impl fmt::Display for KnockdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use KnockdProblem as P;
        match self {
            P::CannotRead(e) => write!(f, "cannot read: {e}"),
            P::TooLarge => write!(f, "larger than {MAX_FILE_LEN} bytes"),
            P::NotUtf8 => write!(f, "not valid UTF-8"),
            P::EmptySectionName => write!(f, "empty section name"),
            P::BadSectionName { why } => write!(f, "section name {why}"),
            P::DoorTwice { door } => write!(f, "door [{door}] is defined twice"),
            P::OutsideSection => write!(f, "directive outside any [section]"),
            P::NoValue { key } => write!(f, "{key:?} without a value: expected key = value"),
            P::UnsupportedOption { key } => write!(
                f,
                "unsupported [options] key {key:?} (supported: UseSyslog, LogFile, PidFile, Interface)"
            ),
            P::UnsupportedDoorKey { key } => write!(f, "unsupported door key {key:?}"),
            P::Target => write!(
                f,
                "target is not supported: spa accepts knocks to the addresses its capture sees; \
                 remove the line or run knockd for this door"
            ),
            P::OneTimeSequences => write!(
                f,
                "one_time_sequences is not supported: use HMAC knocks ([legacy.hmac]), which \
                 change every time step and need no sequence file"
            ),
            P::Sequence(e) => write!(f, "sequence: {e}"),
            P::Timeout { key, error } => write!(f, "{key}: {error}"),
            P::Flags(e) => write!(f, "tcpflags: {e}"),
            P::Command { key, error } => write!(f, "{key}: {error}"),
            P::NoSequence { door } => write!(f, "door [{door}] has no sequence"),
            P::NoStartCommand { door } => {
                write!(f, "door [{door}] has no command or start_command")
            }
            P::V6Differs { key } => write!(
                f,
                "{key} differs from its IPv4 command; spa applies one grant to both address families"
            ),
            P::CmdTimeoutWithoutStop { closes: false } => write!(
                f,
                "cmd_timeout without stop_command has no effect; remove it or add the matching \
                 stop_command"
            ),
            P::CmdTimeoutWithoutStop { closes: true } => {
                write!(f, "cmd_timeout without stop_command has no effect; remove it")
            }
            P::StopNotInverse { grant } => write!(
                f,
                "stop_command must delete the rule start_command added ({grant}); anything else \
                 is not supported"
            ),
            P::StopAfterDelete => write!(
                f,
                "stop_command after a start_command that deletes a rule is not supported"
            ),
            P::Door { door, error } => write!(f, "door [{door}]: {error}"),
            P::SameSequence { door, other } => {
                write!(f, "door [{door}] has the same sequence as [{other}]")
            }
        }
    }
}

/// A refused `seq_timeout` or `cmd_timeout` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecsError {
    Zero,
    /// `value` as written.
    NotANumber {
        value: String,
    },
}

impl fmt::Display for SecsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecsError::Zero => write!(f, "must be at least 1 second"),
            SecsError::NotANumber { value } => {
                write!(f, "{value:?} is not a whole number of seconds")
            }
        }
    }
}

impl std::error::Error for SecsError {}

/// Why a knockd command is not one we can honour exactly. Values are the
/// words as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    ShellSyntax {
        c: char,
    },
    Empty,
    Program {
        prog: String,
    },
    Protocol {
        value: String,
    },
    Port {
        value: String,
    },
    /// `what` (the operation, `-s`, `-p`, `-m`, `--dport`, `-d`) twice.
    Twice {
        what: &'static str,
    },
    NeedsValue {
        option: String,
    },
    Chain {
        chain: String,
    },
    Source {
        value: String,
    },
    MatchModule {
        module: String,
    },
    Target {
        target: String,
    },
    Table {
        table: String,
    },
    IptablesArg {
        arg: String,
    },
    NoOperation,
    NoSource,
    NoProtocol,
    MatchMismatch,
    NoDport,
    NoJump,
    /// spa-proto refused the grant (shown as its Debug form, as before).
    Grant(spa_proto::RequestError),
    KnockAddDryRun,
    KnockAddArg {
        arg: String,
    },
    KnockAddNoOperation,
    KnockAddNoSource,
    KnockAddNoPort,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CommandError as C;
        match self {
            C::ShellSyntax { c } => write!(
                f,
                "shell syntax ({c:?}) is not supported: only a single iptables or knock_add command"
            ),
            C::Empty => write!(f, "empty command"),
            C::Program { prog } => write!(
                f,
                "command {prog:?} is not supported: only iptables/ip6tables -I/-A/-D INPUT -s %IP% \
                 -p tcp|udp --dport N -j ACCEPT, or knock_add"
            ),
            C::Protocol { value } => {
                write!(f, "protocol {value:?} is not supported (tcp or udp)")
            }
            C::Port { value } => write!(
                f,
                "{value:?} is not a single port 1..=65535 (ranges and service names are not supported)"
            ),
            C::Twice { what } => write!(f, "{what} given twice"),
            C::NeedsValue { option } => write!(f, "{option} needs a value"),
            C::Chain { chain } => write!(
                f,
                "chain {chain:?} is not supported: spa manages its own rules hooked into INPUT"
            ),
            C::Source { value } => {
                write!(f, "source must be %IP% (the knocker), not {value:?}")
            }
            C::MatchModule { module } => write!(
                f,
                "match module {module:?} is not supported (only -m tcp/-m udp)"
            ),
            C::Target { target } => {
                write!(f, "target {target:?} is not supported (only -j ACCEPT)")
            }
            C::Table { table } => write!(f, "table {table:?} is not supported (only filter)"),
            C::IptablesArg { arg } => write!(f, "iptables argument {arg:?} is not supported"),
            C::NoOperation => write!(f, "no -I, -A or -D INPUT"),
            C::NoSource => write!(f, "no -s %IP%: spa only grants to the knocking source"),
            C::NoProtocol => write!(f, "no -p tcp|udp"),
            C::MatchMismatch => write!(f, "-m does not match -p"),
            C::NoDport => write!(f, "no --dport"),
            C::NoJump => write!(f, "no -j ACCEPT"),
            C::Grant(e) => write!(f, "{e:?}"),
            C::KnockAddDryRun => write!(
                f,
                "knock_add -t (dry run) changes nothing; remove the door or the flag"
            ),
            C::KnockAddArg { arg } => write!(f, "knock_add argument {arg:?} is not supported"),
            C::KnockAddNoOperation => write!(f, "knock_add needs -a, -i or -x"),
            C::KnockAddNoSource => write!(f, "knock_add needs -f %IP%"),
            C::KnockAddNoPort => write!(f, "knock_add needs -d PORT"),
        }
    }
}

impl std::error::Error for CommandError {}
