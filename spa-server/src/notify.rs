//! systemd's readiness and watchdog protocol (sd_notify), without libsystemd:
//! one datagram to the socket named by `NOTIFY_SOCKET`.
//!
//! Why by hand: the protocol is a single `sendto` of `KEY=VALUE` lines, and
//! linking libsystemd would add a C dependency for it. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` once.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            let addr = if let Some(abs) = p.strip_prefix('@') {
                SocketAddr::from_abstract_name(abs.as_bytes()).ok()?
            } else {
                SocketAddr::from_pathname(&p).ok()?
            };
            let sock = UnixDatagram::unbound().ok()?;
            // Connected now, while the process may still reach the socket
            // file: the network side later runs as a user that may not
            // (permission is checked at connect for a pathname socket).
            let _ = sock.connect_addr(&addr);
            Some((sock, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Notifier { target, watchdog }
    }

    /// How often to send WATCHDOG=1 (half of systemd's timeout), if at all.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target {
            let sent = match sock.send(msg.as_bytes()) {
                Ok(n) => Ok(n),
                Err(_) => sock.send_to_addr(msg.as_bytes(), addr),
            };
            if let Err(e) = sent {
                tracing::warn!("sd_notify failed: {e}");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}
