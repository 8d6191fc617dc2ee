//! Log output (issue 10, item 6): one line per event on stderr.
//!
//! Under systemd (`JOURNAL_STREAM` names our stderr) each line starts with
//! its syslog priority, `<3>` for errors, `<4>` warnings, `<6>` info, `<7>`
//! debug: journald strips the prefix and files the line under that
//! priority, so `journalctl -u spa-server -p warning` shows warnings and
//! errors. journald stamps the time itself, so those lines carry none.
//! Why prefixes and not `tracing-journald`: the stream is already there
//! (no socket to connect, nothing more for the sandbox to allow), and a
//! line is the same text in both modes.
//!
//! A message or field with a newline (a firewall tool's stderr) becomes one
//! line: newlines are written as ` | `, so a line is always one event.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// `--log-level` values: a level, or directives `target=level` separated by
/// commas. Anything else is an error naming the value, so a typo never
/// silently means "log nothing" (`warning` used to).
pub fn parse_filter(value: &str) -> Result<tracing_subscriber::EnvFilter, LogLevelError> {
    const LEVELS: [&str; 6] = ["error", "warn", "warning", "info", "debug", "trace"];
    let bad = |part: &str| LogLevelError {
        value: value.to_owned(),
        part: part.to_owned(),
    };
    let mut norm = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let (target, level) = match part.split_once('=') {
            Some((t, l)) if !t.trim().is_empty() => (Some(t.trim()), l.trim()),
            Some(_) => return Err(bad(part)),
            None => (None, part),
        };
        let level = level.to_ascii_lowercase();
        if !LEVELS.contains(&level.as_str()) && level != "off" {
            return Err(bad(part));
        }
        let level = if level == "warning" { "warn" } else { &level };
        norm.push(match target {
            Some(t) => format!("{t}={level}"),
            None => level.to_owned(),
        });
    }
    tracing_subscriber::EnvFilter::try_new(norm.join(",")).map_err(|_| bad(value))
}

/// A `--log-level` value that is not a level or directives: `value` as
/// given, `part` the comma-separated piece refused (the whole value when
/// tracing refused the directives it became). A usage error: main exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevelError {
    pub value: String,
    pub part: String,
}

impl fmt::Display for LogLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--log-level {:?}: expected error, warn, info, debug or trace, or directives \
             such as spa_server=debug",
            self.value
        )
    }
}

impl std::error::Error for LogLevelError {}

/// True when stderr is the stream journald gave us (`JOURNAL_STREAM` is
/// `device:inode` of it): only then are the prefixes understood.
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole stat into the buffer on success.
    if unsafe { libc::fstat(2, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat returned 0, so the buffer is initialised.
    let st = unsafe { st.assume_init() };
    st.st_dev == dev && st.st_ino == ino
}

/// The syslog priority of a level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Collapses newlines (and a trailing one) so an event stays one line.
pub fn one_line(s: &str) -> String {
    s.trim_end()
        .split('\n')
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Formats one event: `<N>LEVEL message fields` for the journal, or
/// `time LEVEL message fields` elsewhere.
struct Line {
    journal: bool,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = event.metadata().level();
        let mut body = String::new();
        ctx.field_format()
            .format_fields(format::Writer::new(&mut body), event)?;
        if self.journal {
            write!(writer, "<{}>", priority(level))?;
        } else {
            write!(writer, "{} ", timestamp())?;
        }
        writeln!(writer, "{:>5} {}", level.as_str(), one_line(&body))
    }
}

/// RFC 3339 UTC with microseconds, as the default formatter wrote it.
fn timestamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let date = crate::firewall::iptables::datestop(days * 86_400 + 1);
    let day = date.split('T').next().unwrap_or("1970-01-01");
    format!(
        "{day}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Installs the subscriber: stderr, one line per event.
pub fn init(filter: tracing_subscriber::EnvFilter) {
    let journal = stderr_is_journal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Line { journal })
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        for ok in [
            "info",
            "warning",
            "WARN",
            "error",
            "debug,spa_server=trace",
            "off",
        ] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
        for (bad, part) in [
            ("warnings", "warnings"),
            ("verbose", "verbose"),
            ("", ""),
            ("=debug", "=debug"),
            ("info, spa_server=loud", "spa_server=loud"),
            ("3", "3"),
        ] {
            let e = parse_filter(bad).unwrap_err();
            assert_eq!((e.value.as_str(), e.part.as_str()), (bad, part));
        }
    }

    /// `--log-level`'s refusal, byte for byte (main prints it after
    /// `spa-server: error: `), the value quoted as given.
    #[test]
    fn log_level_message_is_pinned() {
        let tail = ": expected error, warn, info, debug or trace, or directives such as \
                    spa_server=debug";
        for (bad, quoted) in [
            ("warnings", "\"warnings\""),
            ("", "\"\""),
            ("=debug", "\"=debug\""),
            ("info,spa_server=loud", "\"info,spa_server=loud\""),
            ("a\nb", "\"a\\nb\""),
        ] {
            assert_eq!(
                parse_filter(bad).unwrap_err().to_string(),
                format!("--log-level {quoted}{tail}")
            );
        }
    }

    #[test]
    fn lines_and_priorities() {
        assert_eq!(one_line("a\nb\n\nc\n"), "a | b |  | c");
        assert_eq!(one_line("plain"), "plain");
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        let t = timestamp();
        assert_eq!(t.len(), "2026-11-30T05:27:12.123456Z".len(), "{t}");
    }
}
