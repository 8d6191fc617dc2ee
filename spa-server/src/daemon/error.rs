//! Why the daemon could not start or stopped: typed up to `main`
//! (`ExitError::Daemon`), the cause reachable through `source()`.

use crate::config::ConfigError;
use crate::firewall::FwError;
use crate::privsep;
use crate::state::StateError;
use std::fmt;

#[derive(Debug)]
pub enum DaemonError {
    Config(ConfigError),
    State(StateError),
    Firewall(FwError),
    Capture(crate::capture::CaptureError),
    Signals(std::io::Error),
    Poll(std::io::Error),
    Lock(crate::lock::LockError),
    Control(crate::control::ControlError),
    Privsep(privsep::SandboxError),
    /// The server uid could not be read or created, or a v2 server key
    /// file was made for another uid (v2.rs).
    V2(crate::v2::UidError),
    /// The privileged side closed its end: it died.
    PrivilegedGone,
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(e) => write!(f, "configuration: {e}"),
            DaemonError::State(e) => write!(f, "state: {e}"),
            DaemonError::Firewall(e) => write!(f, "firewall: {e}"),
            DaemonError::Capture(e) => write!(f, "capture: {e}"),
            DaemonError::Signals(e) => write!(f, "signal setup: {e}"),
            DaemonError::Poll(e) => write!(f, "poll: {e}"),
            DaemonError::Lock(e) => write!(f, "{e}"),
            DaemonError::Control(e) => write!(f, "{e}"),
            DaemonError::Privsep(e) => write!(f, "privilege separation: {e}"),
            DaemonError::V2(e) => write!(f, "protocol v2: {e}"),
            DaemonError::PrivilegedGone => f.write_str(
                "the privileged side exited; stopping (systemd restarts the service, ExecStopPost flushes)",
            ),
        }
    }
}

/// The cause stays reachable (`main` gets it inside `ExitError::Daemon`).
impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Config(e) => Some(e),
            DaemonError::State(e) => Some(e),
            DaemonError::Firewall(e) => Some(e),
            DaemonError::Capture(e) => Some(e),
            DaemonError::Signals(e) | DaemonError::Poll(e) => Some(e),
            DaemonError::Lock(e) => Some(e),
            DaemonError::Control(e) => Some(e),
            DaemonError::Privsep(e) => Some(e),
            DaemonError::V2(e) => Some(e),
            DaemonError::PrivilegedGone => None,
        }
    }
}
