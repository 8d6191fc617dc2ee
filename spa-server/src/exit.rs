//! Why a `spa-server` command failed, typed all the way up to `main`.
//!
//! Each command (run, flush, check-config, status, revoke, completions)
//! returns an [`ExitError`] that keeps the error it came from (a
//! [`ConfigError`] with its file:line:field, a [`DaemonError`], a
//! [`FwError`] per backend...), so `main` decides what to print and which
//! exit status to use from the type, not from a string, and a test can
//! match on the cause. The messages are the ones `main` printed when these
//! were strings, byte for byte.

use crate::config::{ConfigError, GrantError, DEFAULT_CONFIG};
use crate::control::client::ClientError;
use crate::daemon::DaemonError;
use crate::firewall::{BackendKind, FwError};
use crate::lock::LockError;
use crate::logging::LogLevelError;
use std::fmt;

/// One failed command. `main` prints `spa-server: error: <Display>` on one
/// line and exits with [`ExitError::exit_code`].
#[derive(Debug)]
pub enum ExitError {
    /// `--log-level` names no level: a usage error, like clap's.
    LogLevel(LogLevelError),
    /// An `--allow` value is not a grant (the grammar's own message).
    Allow(GrantError),
    /// No `--config`, no default configuration file, and no `--key` or
    /// knock option to run from the command line alone.
    NoConfiguration,
    /// The configuration (or a key file it names) does not load.
    Config(ConfigError),
    /// The daemon did not start, or stopped on an error.
    Daemon(DaemonError),
    /// `flush` while a running daemon holds the instance lock, without
    /// `--force`: its chain is not ours to take away.
    FlushRefused(LockError),
    /// `flush`: these backends could not be flushed (the others were).
    Flush(Vec<(BackendKind, FwError)>),
    /// `check-config` found this many errors (each already printed).
    CheckConfig { errors: usize },
    /// `status`/`revoke` without `--socket`, and the configuration that
    /// says where the socket is does not load.
    NoSocket(Box<ExitError>),
    /// `status`/`revoke`: the daemon could not be asked, or refused.
    Control(ClientError),
    /// `completions`: standard output could not be written.
    Completions(std::io::Error),
}

impl ExitError {
    /// The process's exit status: 2 for a usage error (as clap's own), 1
    /// for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExitError::LogLevel(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitError::LogLevel(e) => write!(f, "{e}"),
            ExitError::Allow(e) => write!(f, "--allow: {e}"),
            ExitError::NoConfiguration => write!(
                f,
                "no configuration: {DEFAULT_CONFIG} does not exist; pass --config FILE, or --key FILE to run from the command line"
            ),
            ExitError::Config(e) => write!(f, "{e}"),
            ExitError::Daemon(e) => write!(f, "{e}"),
            ExitError::FlushRefused(e) => write!(f, "flush refused: {e}; or pass --force"),
            ExitError::Flush(failed) => {
                f.write_str("flush: ")?;
                for (i, (b, e)) in failed.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{b}: {e}")?;
                }
                Ok(())
            }
            ExitError::CheckConfig { errors } => write!(
                f,
                "check-config: {errors} error(s); spa-server would not start"
            ),
            ExitError::NoSocket(e) => write!(
                f,
                "cannot tell where the daemon's control socket is: the configuration does not \
                 load ({e}); pass --socket PATH (control.sock in its runtime_dir or state_dir)"
            ),
            ExitError::Control(e) => write!(f, "{e}"),
            ExitError::Completions(e) => {
                write!(f, "cannot write completions to standard output: {e}")
            }
        }
    }
}

impl std::error::Error for ExitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExitError::Config(e) => Some(e),
            ExitError::Daemon(e) => Some(e),
            ExitError::FlushRefused(e) => Some(e),
            ExitError::Flush(failed) => failed
                .first()
                .map(|(_, e)| e as &(dyn std::error::Error + 'static)),
            ExitError::NoSocket(e) => Some(e.as_ref()),
            ExitError::Control(e) => Some(e),
            ExitError::Completions(e) => Some(e),
            ExitError::LogLevel(e) => Some(e),
            ExitError::Allow(e) => Some(e),
            ExitError::NoConfiguration | ExitError::CheckConfig { .. } => None,
        }
    }
}

impl From<ConfigError> for ExitError {
    fn from(e: ConfigError) -> Self {
        ExitError::Config(e)
    }
}

impl From<DaemonError> for ExitError {
    fn from(e: DaemonError) -> Self {
        ExitError::Daemon(e)
    }
}

impl From<ClientError> for ExitError {
    fn from(e: ClientError) -> Self {
        ExitError::Control(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::path::PathBuf;

    /// The messages `main` printed when these were strings.
    #[test]
    fn messages_are_unchanged() {
        assert_eq!(
            ExitError::NoConfiguration.to_string(),
            format!(
                "no configuration: {DEFAULT_CONFIG} does not exist; pass --config FILE, or --key FILE to run from the command line"
            )
        );
        assert_eq!(
            ExitError::Allow(crate::config::parse_grant("x").unwrap_err()).to_string(),
            "--allow: invalid port `x`: a port is a number from 1 to 65535"
        );
        assert_eq!(
            ExitError::Allow(crate::config::parse_grant("sctp/9").unwrap_err()).to_string(),
            "--allow: unknown protocol 'sctp' (use tcp or udp) in `sctp/9`"
        );
        assert_eq!(
            ExitError::LogLevel(crate::logging::parse_filter("loud").unwrap_err()).to_string(),
            "--log-level \"loud\": expected error, warn, info, debug or trace, or directives \
             such as spa_server=debug"
        );
        assert_eq!(
            ExitError::CheckConfig { errors: 3 }.to_string(),
            "check-config: 3 error(s); spa-server would not start"
        );
        let held = LockError::Held {
            dir: PathBuf::from("/var/lib/spa"),
            pid: Some(42),
        };
        let held_text = held.to_string();
        assert_eq!(
            ExitError::FlushRefused(held).to_string(),
            format!("flush refused: {held_text}; or pass --force")
        );
        let io = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(
            ExitError::Completions(io()).to_string(),
            format!("cannot write completions to standard output: {}", io())
        );
        assert_eq!(
            ExitError::NoSocket(Box::new(ExitError::NoConfiguration)).to_string(),
            format!(
                "cannot tell where the daemon's control socket is: the configuration does not \
                 load ({}); pass --socket PATH (control.sock in its runtime_dir or state_dir)",
                ExitError::NoConfiguration
            )
        );
    }

    #[test]
    fn flush_names_each_failed_backend() {
        let e = ExitError::Flush(vec![
            (BackendKind::Iptables, FwError::Injected { call: "flush" }),
            (BackendKind::Nftables, FwError::NotSetUp),
        ]);
        let (a, b) = (FwError::Injected { call: "flush" }, FwError::NotSetUp);
        assert_eq!(
            e.to_string(),
            format!(
                "flush: {}: {a}; {}: {b}",
                BackendKind::Iptables,
                BackendKind::Nftables
            )
        );
        assert!(e.source().is_some());
    }

    /// The cause stays reachable, and the exit status comes from the type.
    #[test]
    fn causes_are_kept_and_map_to_the_exit_status() {
        let e = ExitError::Control(ClientError::NotRunning("nobody".into()));
        assert_eq!(e.to_string(), "nobody");
        assert!(e
            .source()
            .is_some_and(|s| s.downcast_ref::<ClientError>().is_some()));
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            ExitError::LogLevel(crate::logging::parse_filter("bad").unwrap_err()).exit_code(),
            2
        );
        assert_eq!(ExitError::NoConfiguration.exit_code(), 1);
        // `--allow`: the grammar's reason stays reachable under the text.
        let e = ExitError::Allow(crate::config::parse_grant("tcp/0").unwrap_err());
        assert!(e
            .source()
            .and_then(|s| s.source())
            .is_some_and(|s| s.downcast_ref() == Some(&spa_proto::GrantSyntax::Zero)));
        assert!(ExitError::NoConfiguration.source().is_none());
    }

    /// A daemon that cannot create its server uid: `main` gets the whole
    /// chain (command → daemon → uid file → the OS error), not a string, and
    /// the message is the daemon's, unchanged.
    #[test]
    fn a_daemon_error_keeps_its_chain_up_to_main() {
        let uid = crate::v2::UidError::Create {
            path: PathBuf::from("/var/lib/spa/server_uid"),
            error: std::io::Error::from_raw_os_error(libc::EROFS),
        };
        let text = format!("protocol v2: {uid}");
        let e = ExitError::from(DaemonError::V2(uid));
        assert_eq!(e.to_string(), text);
        let mut chain = Vec::new();
        let mut at: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = at {
            chain.push(c);
            at = c.source();
        }
        assert_eq!(chain.len(), 4, "{chain:?}");
        assert!(chain[1].downcast_ref::<DaemonError>().is_some());
        assert!(matches!(
            chain[2].downcast_ref::<crate::v2::UidError>(),
            Some(crate::v2::UidError::Create { .. })
        ));
        assert_eq!(
            chain[3]
                .downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error()),
            Some(libc::EROFS)
        );
    }
}
