//! The event loop: one thread, one poll(2) over the capture sockets and a
//! signalfd, with a timeout only when something is due (a grant expiry, the
//! systemd watchdog). Idle means asleep in the kernel: no polling loop.
//!
//! What happens to a packet, a tick or a reload is the engine's business
//! (engine/): this file is the I/O around it (sockets, signals, the
//! watchdog, the clock read once per wake-up).
//!
//! Start-up (the split into two processes, the drop, the first state) is
//! start.rs, the two steps of a SIGHUP reload reload.rs, the raw syscalls of
//! the loop (signalfd, poll) sys.rs, the error type error.rs.

mod error;
mod reload;
mod start;
mod sys;

pub use crate::config::ConfigSource;
pub use error::DaemonError;

use crate::capture::{Capture, Class};
use crate::engine::{Engine, Event, Now};
use crate::firewall::{self, FwError};
use crate::notify::Notifier;
use crate::privsep;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};
use sys::{poll_fds, read_signal};
use tracing::{debug, error, info, warn};

/// One drain of the capture runs at most this long, then the loop expires
/// grants and polls again. Signals and the watchdog are served inside it.
const DRAIN_TIME: Duration = Duration::from_millis(100);
/// Packets one drain handles at most.
const DRAIN_MAX: usize = 4096;
/// One turn of one class (datagrams, then knocks) ends after this long or
/// [`SLICE_MAX`] packets; then datagrams, signals and the watchdog get their
/// look. Why time and not only a count: one completed door sequence may
/// cost a firewall batch (2-17 ms), so 64 knocks could take a second
/// (issue 16, finding 4: a knock flood held a datagram back 29.8 s).
const SLICE_TIME: Duration = Duration::from_millis(10);
const SLICE_MAX: usize = 64;
/// A turn reads the clock for [`SLICE_TIME`] at least every this many
/// packets.
const CLOCK_EVERY: usize = 8;
/// A drain serves signals and the watchdog this often.
const LOOK_EVERY: Duration = Duration::from_millis(1);
/// Under a flood, a capture wake-up that follows the previous one within
/// [`BUSY_WITHIN`] first sleeps this long, so that the drain finds a batch.
/// Why (issue 14): with the datagram sockets' receive ring the daemon
/// empties the queue faster than a flood fills it, and the kernel wakes the
/// reader for every frame; one wake-up per frame (a context switch, the
/// loop's per-wake-up work, the sender's wake-up of us) cost more than the
/// ring saved. This is the kernel's interrupt moderation, done once per
/// wake-up: a lone datagram (no capture wake-up in the last
/// [`BUSY_WITHIN`]) is read at once, and at rest nothing sleeps or wakes.
/// It delays a datagram by at most this long; the ring (408 frames) holds
/// that long at up to ~4 M frames per second.
const COALESCE: Duration = Duration::from_micros(100);
/// Two capture wake-ups closer than this mean a flood (see [`COALESCE`]).
const BUSY_WITHIN: Duration = Duration::from_millis(1);

/// Whether the event loop goes on or stops (a SIGTERM/SIGINT was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

pub struct Daemon {
    source: ConfigSource,
    engine: Engine,
    capture: Capture,
    notifier: Notifier,
    sigfd: OwnedFd,
    last_watchdog: Instant,
    /// The last wake-up that drained the capture ([`COALESCE`]).
    last_capture: Option<Instant>,
    /// Held until the process exits: one daemon per state directory.
    _lock: crate::lock::InstanceLock,
    /// nf_tables change notifications: a firewall reload is noticed and
    /// repaired without polling.
    watch: crate::fwwatch::FwWatch,
    /// `spa-server status` and `revoke` (control/).
    control: crate::control::Control,
    /// Unix seconds at start, for status.
    started_at: u64,
    /// The privileged side: firewall changes, local addresses, reloads.
    remote: privsep::Remote,
    /// systemd's STATUS= line and the metrics file (control/publish.rs).
    publisher: crate::control::publish::Publisher,
}

impl Daemon {
    /// Runs until SIGTERM/SIGINT, then removes every grant and our chain.
    pub fn run(mut self) -> Result<(), DaemonError> {
        let result = self.event_loop();
        self.notifier.stopping();
        match self.engine.teardown() {
            Ok(()) => info!("stopped: every grant removed, firewall chain removed"),
            Err(e) => error!("stopping: could not remove our firewall chain: {e}"),
        }
        let st = self.capture.stats();
        let s = self.engine.stats();
        info!(
            frames = st.frames,
            bytes = st.bytes,
            unparsed = st.unparsed,
            kernel_drops = st.kernel_drops,
            datagrams_accepted = s.datagrams_accepted,
            datagrams_rejected = s.datagrams_rejected,
            datagrams_rate_limited = s.datagrams_rate_limited,
            datagrams_failed = s.datagrams_failed,
            knocks_accepted = s.knocks_accepted,
            knocks_rejected = s.knocks_rejected,
            datagrams_denied = s.datagrams_denied,
            grants_expired = s.grants_expired,
            grants_revoked = s.grants_revoked,
            firewall_failures = s.firewall_failures,
            firewall_repairs = s.firewall_repairs,
            reloads = s.reloads,
            "totals since start"
        );
        result
    }

    fn timeout(&self, now: &Now) -> Option<Duration> {
        let mut t = self.engine.next_deadline(now);
        if let Some(w) = self.notifier.watchdog_interval() {
            let left = w.saturating_sub(now.mono.saturating_duration_since(self.last_watchdog));
            t = Some(t.map_or(left, |t| t.min(left)));
        }
        if self.capture.needs_rebind() {
            let r = Duration::from_secs(2);
            t = Some(t.map_or(r, |t| t.min(r)));
        }
        if let Some(w) = self.watch.timeout() {
            t = Some(t.map_or(w, |t| t.min(w)));
        }
        if let Some(c) = self.control.timeout(now.mono) {
            t = Some(t.map_or(c, |t| t.min(c)));
        }
        if let Some(p) = self.publisher.timeout(now.mono) {
            t = Some(t.map_or(p, |t| t.min(p)));
        }
        t
    }

    /// Someone changed the ruleset (fwwatch): if our chain/jump/sets went
    /// with it, install them again with every live grant, one line.
    fn repair_firewall(&mut self, now: &Now) {
        match self.engine.ensure_installed(now) {
            Ok(None) => {
                self.watch.broken = false;
                debug!("ruleset changed; our chain/sets are intact");
            }
            Ok(Some(n)) => {
                self.watch.broken = false;
                warn!(
                    grants = n,
                    "firewall reloaded by someone else: our chain/sets were gone; re-installed, \
                     {n} live grant(s) re-added with their remaining time"
                );
            }
            Err(e) => {
                self.watch.broken = true;
                error!(
                    "firewall reloaded by someone else and our chain/sets could not be re-installed \
                     (retried when the ruleset changes again, and at the next request): {}",
                    crate::logging::one_line(&e.to_string())
                );
            }
        }
    }

    fn event_loop(&mut self) -> Result<(), DaemonError> {
        let mut now = Now::read();
        // The first STATUS= line and metrics file, before the first sleep.
        self.publish(&now);
        loop {
            let mut fds = vec![(self.sigfd.as_raw_fd(), libc::POLLIN)];
            fds.extend(
                self.capture
                    .raw_fds()
                    .into_iter()
                    .map(|f| (f, libc::POLLIN)),
            );
            let captures = fds.len() - 1;
            fds.extend(self.watch.raw_fd().map(|f| (f, libc::POLLIN)));
            // For hang-up only (events 0): the privileged side is gone. Its
            // replies are read where they are asked for.
            let remote_at = fds.len();
            fds.push((self.remote.raw_fd(), 0));
            let control_at = fds.len();
            fds.extend(self.control.poll_set());
            // Frames read in a batch and not yet handled are invisible to
            // poll: look again at once, without sleeping.
            let pending = self.capture.pending();
            let timeout = if pending {
                Some(Duration::ZERO)
            } else {
                self.timeout(&now)
            };
            let revents = poll_fds(&fds, timeout).map_err(DaemonError::Poll)?;
            self.capture
                .mark_ready(revents.get(1..1 + captures).unwrap_or(&[]));
            let ready: Vec<bool> = revents.iter().map(|&r| r != 0).collect();
            // The clock, once per wake-up: every decision of this wake-up
            // uses the same time.
            now = Now::read();
            if ready.get(remote_at).copied().unwrap_or(false) {
                return Err(DaemonError::PrivilegedGone);
            }
            if ready.first().copied().unwrap_or(false) && self.take_signals(&now) == Flow::Stop {
                return Ok(());
            }
            if (pending || ready.iter().skip(1).take(captures).any(|&r| r))
                && self.drain_capture(&now) == Flow::Stop
            {
                return Ok(());
            }
            if remote_at > 1 + captures && ready.get(1 + captures).copied().unwrap_or(false) {
                self.watch.on_readable();
            }
            self.serve_control(ready.get(control_at..).unwrap_or(&[]), &now);
            if self.watch.take_due() {
                self.repair_firewall(&now);
            }
            if self.capture.needs_rebind() {
                let remote = &self.remote;
                let mut open = |i: Option<&str>, f, c| remote.open_capture(i, f, c);
                if let Err(e) = self.capture.reopen_moved(&mut open) {
                    tracing::debug!("interface still missing: {e}");
                }
            }
            self.engine.handle(Event::Tick, &now);
            self.publish(&now);
            self.feed_watchdog();
        }
    }

    /// Answers what the control socket has ready (control/): status is
    /// rendered from one snapshot, revoke goes through the engine (one
    /// firewall batch, one log line per grant).
    fn serve_control(&mut self, ready: &[bool], now: &Now) {
        use crate::control::{status, Request};
        for p in self.control.serve(ready) {
            let reply = match p.request {
                Request::Status(format) => {
                    let config = self.source.path.as_ref();
                    let config = config.map(|p| p.display().to_string());
                    let snap = status::Snapshot::read(
                        &self.engine,
                        self.capture.stats(),
                        config.unwrap_or_default(),
                        self.started_at,
                        now.secs(),
                    );
                    Ok(status::render(format, &snap))
                }
                Request::Revoke(sel) => self
                    .engine
                    .revoke_by_hand(&sel, now)
                    .map(|list| status::revoked(&list))
                    .map_err(|e| format!("the firewall change failed, nothing revoked: {e}")),
            };
            self.control.reply(p.token, reply);
        }
    }

    /// STATUS= and the metrics file, when what they show changed (and their
    /// interval allows): nothing changes while idle, so no wake-up.
    fn publish(&mut self, now: &Now) {
        let capture = self.capture.stats();
        let config = self.source.path.as_ref();
        let config = config.map(|p| p.display().to_string()).unwrap_or_default();
        let engine = &self.engine;
        let started_at = self.started_at;
        self.publisher
            .publish(engine, capture, &self.notifier, now, || {
                crate::control::status::Snapshot::read(
                    engine,
                    capture,
                    config,
                    started_at,
                    now.secs(),
                )
            });
    }

    /// Reads every pending signal: SIGHUP reloads, SIGTERM/SIGINT stop.
    /// One non-blocking read when none is pending, so a drain calls it
    /// between slices.
    fn take_signals(&mut self, now: &Now) -> Flow {
        while let Some(sig) = read_signal(self.sigfd.as_raw_fd()) {
            match sig {
                libc::SIGHUP => self.reload(now),
                // fwknopd and others' habit; it used to kill the daemon
                // (exit 138) and leave its chain behind.
                libc::SIGUSR1 => info!(
                    "status: {} (spa-server status lists the grants)",
                    crate::control::publish::status_line(
                        self.engine.grants().count(now.secs()),
                        self.engine.stats_ref()
                    )
                ),
                _ => {
                    info!(signal = sig, "stopping on signal");
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    /// Watchdog pings use the monotonic clock as it is: a drain can take
    /// up to [`DRAIN_TIME`], longer than a stale wake-up time would show.
    fn feed_watchdog(&mut self) {
        if let Some(w) = self.notifier.watchdog_interval() {
            if self.last_watchdog.elapsed() >= w {
                self.notifier.watchdog();
                self.last_watchdog = Instant::now();
            }
        }
    }

    /// Serves the capture for at most [`DRAIN_TIME`] / [`DRAIN_MAX`]
    /// packets: in turns of datagrams first, then a slice of knocks, then
    /// signals and the watchdog, so a knock flood neither delays a datagram
    /// by more than a slice nor holds back SIGTERM or the watchdog.
    fn drain_capture(&mut self, now: &Now) -> Flow {
        if self
            .last_capture
            .is_some_and(|t| now.mono.saturating_duration_since(t) < BUSY_WITHIN)
        {
            std::thread::sleep(COALESCE);
        }
        self.last_capture = Some(now.mono);
        let start = Instant::now();
        let mut looked = start;
        let mut handled = 0;
        loop {
            let spa = self.drain_class(Class::Spa, now);
            let knocks = self.drain_class(Class::Knock, now);
            handled += spa + knocks;
            let t = Instant::now();
            // Signals and the watchdog every millisecond of a drain, not
            // at every turn: a read of the signalfd per turn was a system
            // call per few dozen datagrams under a flood (issue 14).
            if t.duration_since(looked) >= LOOK_EVERY {
                looked = t;
                self.feed_watchdog();
                if self.take_signals(now) == Flow::Stop {
                    return Flow::Stop;
                }
            }
            if spa + knocks == 0 || handled >= DRAIN_MAX || t.duration_since(start) >= DRAIN_TIME {
                return Flow::Continue;
            }
        }
    }

    /// One turn of `class`: up to [`SLICE_MAX`] packets or [`SLICE_TIME`].
    /// Returns how many packets were handled. The clock is read after a
    /// packet that may have cost time (anything but a rejected datagram:
    /// an accepted one or a completed door costs a firewall batch), and
    /// every [`CLOCK_EVERY`] rejected datagrams: once per packet was 4 %
    /// of the daemon under a forgery flood (issue 14).
    fn drain_class(&mut self, class: Class, now: &Now) -> usize {
        let until = Instant::now() + SLICE_TIME;
        let mut n = 0;
        while n < SLICE_MAX {
            let pkt = match self.capture.recv_class(class) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    warn!("capture: {e}");
                    break;
                }
            };
            n += 1;
            let rejected = self.engine.stats_ref().datagrams_rejected;
            self.engine.handle(Event::Packet(pkt), now);
            let cheap = self.engine.stats_ref().datagrams_rejected != rejected;
            if (!cheap || n % CLOCK_EVERY == 0) && Instant::now() >= until {
                break;
            }
        }
        n
    }
}

/// `spa-server flush`: remove every grant and our chain/sets without a
/// running daemon (systemd's ExecStopPost, also after a crash).
pub fn flush(
    backend: firewall::BackendKind,
    opts: &firewall::FirewallOptions,
) -> Result<(), FwError> {
    let opts = firewall::tools::resolve(backend, opts)?;
    let mut fw = firewall::backend(backend, &opts);
    fw.teardown()
}
