//! The event loop: one thread, one poll(2) over the capture sockets and a
//! signalfd, with a timeout only when something is due (a grant expiry, the
//! systemd watchdog). Idle means asleep in the kernel: no polling loop.
//!
//! What happens to a packet, a tick or a reload is the engine's business
//! (engine/): this file is the I/O around it (sockets, signals, the
//! watchdog, the clock read once per wake-up).

use crate::capture::local::LocalAddrs;
use crate::capture::{Capture, Class};
pub use crate::config::ConfigSource;
use crate::config::{Config, ConfigError};
use crate::engine::{restore_hmac_record, Engine, Event, Now};
use crate::firewall::{self, FwError};
use crate::grants::Grants;
use crate::knocks;
use crate::notify::Notifier;
use crate::privsep;
use crate::state::{DurableReplay, Loaded, ReplayLog, StateError};
use spa_proto::replay::share_of;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

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

/// Whether the event loop goes on or stops (a SIGTERM/SIGINT was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Blocks SIGTERM, SIGINT and SIGHUP and returns a signalfd for them, so
/// signals arrive as readable events in the poll loop instead of
/// interrupting it. Children (iptables) start with an empty mask: std resets
/// it in `Command::spawn`.
fn signal_fd() -> std::io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it,
    // sigprocmask and signalfd only read it. The returned fd is owned here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads one pending signal number from the signalfd, if any.
fn read_signal(fd: RawFd) -> Option<i32> {
    let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::uninit();
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reads at most `size` bytes into a buffer of that size; the
    // value is used only when the kernel wrote a whole record.
    let n = unsafe { libc::read(fd, info.as_mut_ptr().cast(), size) };
    if n as usize != size {
        return None;
    }
    // SAFETY: a full record was written above.
    Some(unsafe { info.assume_init() }.ssi_signo as i32)
}

/// poll(2) over `fds` (descriptor, events), up to `timeout` (None =
/// forever); `true` where the descriptor is ready (or in error).
fn poll_fds(fds: &[(RawFd, i16)], timeout: Option<Duration>) -> std::io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
    };
    // SAFETY: pfds is a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0)
        .collect())
}

pub struct Daemon {
    source: ConfigSource,
    engine: Engine,
    capture: Capture,
    notifier: Notifier,
    sigfd: OwnedFd,
    last_watchdog: Instant,
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
    /// Loads everything, installs the firewall chain, opens the capture, and
    /// only then tells systemd it is ready. Any failure leaves the firewall
    /// as it was found (minus stale rules of a previous instance).
    pub fn start(source: ConfigSource) -> Result<Daemon, DaemonError> {
        let sigfd = signal_fd().map_err(DaemonError::Signals)?;
        let cfg = source.load().map_err(DaemonError::Config)?;
        let user = privsep::network_user(&cfg).map_err(DaemonError::Privsep)?;
        // The state directories become the network side's (checked as
        // `ensure_private_dir` does, from their metadata alone).
        privsep::sandbox::give_dir(&cfg.state_dir, &user).map_err(DaemonError::Privsep)?;
        if let Some(r) = &cfg.runtime_dir {
            privsep::sandbox::give_dir(r, &user).map_err(DaemonError::Privsep)?;
        }
        // Tools by absolute path, resolved once, never from $PATH.
        let fw_opts = firewall::tools::resolve(cfg.firewall, &cfg.firewall_options)
            .map_err(DaemonError::Firewall)?;
        // Every new socket the network side needs is opened now, before the
        // split: the nf_tables watch, the notify socket. The capture sockets
        // come from the privileged side (below).
        let (watch, unwatched) = crate::fwwatch::FwWatch::open();
        let notifier = Notifier::from_env();
        let mut close = vec![sigfd.as_raw_fd()];
        close.extend(watch.raw_fd());
        let (remote, cfg) =
            privsep::split(cfg, &source, &fw_opts, &close).map_err(DaemonError::Privsep)?;
        privsep::drop_network_side(&user).map_err(DaemonError::Privsep)?;
        // One daemon per state directory, before any state is read or the
        // firewall is touched: a second instance changes nothing (it stops
        // here, and its privileged side with it).
        crate::safefile::ensure_private_dir(&cfg.state_dir).map_err(DaemonError::State)?;
        let lock = crate::lock::acquire(&cfg.state_dir).map_err(DaemonError::Lock)?;
        // The capture sockets, made by the privileged side (CAP_NET_RAW)
        // for the interfaces of its configuration, filter locked, handed
        // over with SCM_RIGHTS: this side never opens a packet socket.
        let capture = Capture::open_with(
            &cfg.interfaces,
            &knocks::filter_spec(&cfg),
            &mut |i, f, c| remote.open_capture(i, f, c),
        )
        .map_err(DaemonError::Capture)?;
        let now = Now::read();
        let opened = ReplayLog::open(
            &cfg.state_dir,
            cfg.runtime_dir.as_deref(),
            cfg.window,
            share_of(cfg.replay_capacity, cfg.keys.len()),
            now.secs(),
        )
        .map_err(DaemonError::State)?;
        log_replay_start(&opened, now.secs());
        // After the replay state is read (a new state directory must still
        // look empty to it): the server uid, created at the first start.
        let mut cfg = cfg;
        let (uid, new) =
            crate::v2::load_or_create_uid(&cfg.v2.uid_file).map_err(DaemonError::V2)?;
        cfg.attach_uid(uid).map_err(DaemonError::V2)?;
        if new {
            info!(%uid, file = %cfg.v2.uid_file.display(), "server uid created (protocol v2)");
        }
        let replay = DurableReplay::new(opened.record, opened.log);
        let mut grants = Grants::new(Box::new(remote.clone()));
        // Forwards (issue 15): the kernel must forward, or a refusal now
        // beats grants that are accepted and lead nowhere.
        let forwards = crate::policy::forwards(&cfg.keys);
        firewall::forward::check_ip_forwarding(&forwards, |p| std::fs::read_to_string(p))
            .map_err(DaemonError::Firewall)?;
        grants.set_forwards(forwards);
        grants.setup().map_err(DaemonError::Firewall)?;
        info!(
            backend = grants.backend(),
            user = %user.name,
            uid = user.uid,
            "firewall chain installed (stale grants removed); network side unprivileged"
        );
        let mut legacy = knocks::Runtime::new(&cfg);
        if cfg.legacy.hmac.enabled {
            restore_hmac_record(&mut legacy, &cfg, opened.first_start, now.secs())
                .map_err(DaemonError::State)?;
        }
        for (level, note) in knocks::start_notes(&cfg) {
            match level {
                knocks::NoteLevel::Warn => warn!("{note}"),
                knocks::NoteLevel::Info => info!("{note}"),
            }
        }
        warn_source_address_keys(&cfg);
        if let Some(why) = unwatched {
            warn!(
                "no nf_tables notifications ({why}): a firewall reload is noticed only at the \
                 next request, which re-installs our chain (iptables-legacy works this way)"
            );
        }
        let ifaces = if cfg.interfaces.is_empty() {
            "all".to_owned()
        } else {
            cfg.interfaces.join(",")
        };
        let r = remote.clone();
        let local = LocalAddrs::with_reader(Box::new(move || r.local_addrs()));
        // The control socket, bound by the network side's user after its
        // state is open (an empty state directory means first start) and
        // before its seccomp filter (which forbids socket, and bind but on
        // the capture sockets); before
        // READY, so a status right after `systemctl start` finds it.
        let control = crate::control::Control::open(&crate::control::socket_path(&cfg))
            .map_err(DaemonError::Control)?;
        // Before the first packet: from here on no socket, bind, exec or
        // fork. New capture sockets (a re-created interface, a reload) come
        // from the privileged side.
        privsep::sandbox::install_seccomp().map_err(DaemonError::Privsep)?;
        info!(
            server_id = %cfg.server_name,
            port = cfg.spa_port,
            interfaces = %ifaces,
            keys = cfg.keys.len(),
            backend = grants.backend(),
            control = %control.path().display(),
            "ready"
        );
        let publisher = crate::control::publish::Publisher::new(cfg.metrics_file.as_deref());
        let mut engine = Engine::new(cfg, replay, grants, legacy, local);
        engine.warn_expiring_keys(&Now::read());
        notifier.ready("listening");
        Ok(Daemon {
            source,
            engine,
            capture,
            notifier,
            sigfd,
            last_watchdog: Instant::now(),
            _lock: lock,
            watch,
            control,
            started_at: now.secs(),
            remote,
            publisher,
        })
    }

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
            let ready = poll_fds(&fds, timeout).map_err(DaemonError::Poll)?;
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
        let start = Instant::now();
        let mut handled = 0;
        loop {
            let spa = self.drain_class(Class::Spa, now);
            let knocks = self.drain_class(Class::Knock, now);
            handled += spa + knocks;
            self.feed_watchdog();
            if self.take_signals(now) == Flow::Stop {
                return Flow::Stop;
            }
            if spa + knocks == 0 || handled >= DRAIN_MAX || start.elapsed() >= DRAIN_TIME {
                return Flow::Continue;
            }
        }
    }

    /// One turn of `class`: up to [`SLICE_MAX`] packets or [`SLICE_TIME`].
    /// Returns how many packets were handled.
    fn drain_class(&mut self, class: Class, now: &Now) -> usize {
        let until = Instant::now() + SLICE_TIME;
        let mut n = 0;
        while n < SLICE_MAX && Instant::now() < until {
            let pkt = match self.capture.recv_class(class) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    warn!("capture: {e}");
                    break;
                }
            };
            n += 1;
            self.engine.handle(Event::Packet(pkt), now);
        }
        n
    }

    /// SIGHUP: re-read configuration and keys; keep current grants. A bad
    /// configuration is refused and the old one stays in force.
    fn reload(&mut self, now: &Now) {
        self.notifier.reloading();
        match self.reload_capture() {
            Ok(new) => {
                // Everything that can fail is done: the privileged side
                // takes the new configuration too, before the engine's
                // batches (judged by it) go out.
                if let Err(e) = self.remote.settle(true) {
                    error!("reload: the privileged side did not take the new configuration: {e}");
                }
                self.engine.handle(Event::Reload(Box::new(new)), now);
            }
            Err(e) => {
                // Both sides keep the old configuration.
                if let Err(e) = self.remote.settle(false) {
                    error!("reload: the privileged side did not answer: {e}");
                }
                self.engine.reload_refused();
                error!("reload refused, old configuration stays in force: {e}");
                self.notifier
                    .status("reload refused; old configuration in force");
                return;
            }
        }
        self.notifier.status("listening");
        self.publisher
            .reconfigure(self.engine.config().metrics_file.as_deref());
    }

    /// Loads the new configuration and moves the capture to it: the parts
    /// of a reload that can fail, done before the engine sees anything.
    fn reload_capture(&mut self) -> Result<Config, DaemonError> {
        // The keys are not ours to read: the privileged side reads them.
        let mut new = self
            .remote
            .load_config(&self.source)
            .map_err(DaemonError::Config)?;
        // The server uid is state, read once at start: the same for every
        // configuration this process serves.
        if let Some(uid) = self.engine.config().v2.uid {
            new.attach_uid(uid).map_err(DaemonError::V2)?;
        }
        // A forward added by this reload needs IP forwarding as at start.
        firewall::forward::check_ip_forwarding(&crate::policy::forwards(&new.keys), |p| {
            std::fs::read_to_string(p)
        })
        .map_err(DaemonError::Firewall)?;
        let cur = self.engine.config();
        if new.firewall != cur.firewall || new.state_dir != cur.state_dir {
            warn!("reload: firewall backend and state_dir changes take effect at the next restart");
        }
        // New interfaces or ports: new sockets from the privileged side,
        // which has taken the new configuration (Reload, above) and makes
        // their filters from it. Their filters are locked, so the old
        // sockets cannot be given a new one; they close when replaced.
        let spec = knocks::filter_spec(&new);
        if new.interfaces != cur.interfaces || spec != *self.capture.spec() {
            let remote = &self.remote;
            let fresh = Capture::open_with(&new.interfaces, &spec, &mut |i, f, c| {
                remote.open_capture(i, f, c)
            })
            .map_err(DaemonError::Capture)?;
            self.capture.replace_with(fresh);
        }
        Ok(new)
    }
}

/// The start-up line saying how the replay record was found.
fn log_replay_start(opened: &crate::state::Opened, now: u64) {
    let path = opened.log.path().display();
    let floor = opened.record.floor();
    match opened.loaded {
        Loaded::Fresh => {
            info!(path = %path, "replay record: new (first start: empty state directory)")
        }
        Loaded::Restored { live, torn_tail } => {
            info!(path = %path, live, torn_tail, "replay record: restored")
        }
        Loaded::Lost(why) => error!(
            path = %path,
            floor,
            "replay record LOST: {why}; refusing every datagram stamped before the floor \
             (clients are refused for up to one window, then work again)"
        ),
    }
    if let Some(was) = opened.capped_floor {
        error!(
            path = %path,
            was,
            floor,
            now,
            "replay floor on disk was beyond now + window (the clock was ahead when it was \
             written, or the file was altered): capped to one window; check the clock (NTP)"
        );
    }
}

/// One line per key that opens for the datagram's source address when the
/// datagram does not name one: an on-path attacker who drops the datagram and
/// resends it from its own address gets that grant (issue 16, finding 14;
/// fwknopd warns the same way about REQUIRE_SOURCE_ADDRESS).
fn warn_source_address_keys(cfg: &Config) {
    for k in cfg.keys.iter().filter(|k| !k.require_explicit_address) {
        warn!(
            key = %k.name,
            "key accepts datagrams without an address: whoever delivers one first gets its grant; \
             set require_explicit_address = true (clients then send --allow-ip <public address>)"
        );
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
