//! The event loop: one thread, one poll(2) over the capture sockets and a
//! signalfd, with a timeout only when something is due (a grant expiry, the
//! systemd watchdog). Idle means asleep in the kernel: no polling loop.
//!
//! Order of one datagram: capture → verdict::judge (pure) → replay entry
//! appended and fsync'd → one firewall batch → one log line.

use crate::capture::local::LocalAddrs;
use crate::capture::{Capture, Class, FilterSpec, Packet};
use crate::config::{Config, ConfigError, Overrides};
use crate::firewall::{self, FwError};
use crate::grants::{Grants, Owner};
use crate::notify::Notifier;
use crate::state::{Loaded, ReplayLog, StateError};
use crate::verdict::{self, JudgeState, Verdict};
use spa_proto::{replay::share_of, Action, Reject};
use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, error, info, warn};

#[derive(Debug)]
pub enum DaemonError {
    Config(ConfigError),
    State(StateError),
    Firewall(FwError),
    Capture(String),
    Signals(std::io::Error),
    Poll(std::io::Error),
    Lock(crate::lock::LockError),
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
        }
    }
}

impl std::error::Error for DaemonError {}

/// Unix time in seconds; a clock before 1970 reads as 0 rather than panic.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix time rounded up to the next whole second: grants end at
/// `ceil(now) + duration`, so an N-second grant lasts at least N seconds
/// (expiry, and the kernel's `--datestop`, have one-second resolution).
fn unix_now_ceil() -> u64 {
    unix_now_ms().div_ceil(1000)
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// Where the daemon reads its configuration from, kept for SIGHUP.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.path.as_deref(), &self.overrides)
    }
}

/// Logs at most `per_sec` rejections and denials a second, then one summary
/// line: a garbage flood, or a key holder's flood of denied requests, must
/// not turn into a log flood (and a CPU flood).
struct LogLimiter {
    per_sec: u32,
    window_start: Instant,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    fn new(per_sec: u32) -> Self {
        LogLimiter {
            per_sec,
            window_start: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }
    fn allow(&mut self) -> bool {
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            if self.suppressed > 0 {
                warn!(
                    suppressed = self.suppressed,
                    "rejections and denials not logged in the last second (rate limit)"
                );
            }
            self.window_start = Instant::now();
            self.used = 0;
            self.suppressed = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
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
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
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

/// poll(2) over `fds` for readability, up to `timeout` (None = forever).
fn poll_fds(fds: &[RawFd], timeout: Option<Duration>) -> std::io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
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
        .map(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
        .collect())
}

pub fn filter_spec(cfg: &Config) -> FilterSpec {
    let (knock_tcp, knock_udp) = crate::knocks::knock_ports(cfg);
    FilterSpec {
        spa_port: cfg.spa_port,
        spa_len: spa_proto::DATAGRAM_LEN,
        knock_tcp,
        knock_udp,
    }
}

/// What our chain/sets drop so the host answers nothing: the SPA port and
/// the enabled knock ports, unless `silent = false`.
pub fn silence(cfg: &Config) -> firewall::Silence {
    if !cfg.silent {
        return firewall::Silence::default();
    }
    let (tcp, mut udp) = crate::knocks::knock_ports(cfg);
    udp.push(cfg.spa_port);
    firewall::Silence::new(&udp, &tcp)
}

pub struct Daemon {
    source: ConfigSource,
    cfg: Config,
    /// The replay record and the per-key token buckets.
    judge: JudgeState,
    log: ReplayLog,
    grants: Grants,
    capture: Capture,
    notifier: Notifier,
    sigfd: OwnedFd,
    limiter: LogLimiter,
    legacy: crate::knocks::Runtime,
    /// Knocks count only when addressed to this host (not forwarded); the
    /// list is read at the first knock, so a server without knocks never
    /// reads it.
    local: LocalAddrs,
    /// Datagrams that reached a verdict, for the totals logged at stop.
    judged: Judged,
    last_watchdog: Instant,
    /// Held until the process exits: one daemon per state directory.
    _lock: crate::lock::InstanceLock,
    /// nf_tables change notifications: a firewall reload is noticed and
    /// repaired without polling.
    watch: crate::fwwatch::FwWatch,
}

/// Verdict counts since start (the per-datagram log lines are rate
/// limited; these are not).
#[derive(Debug, Default, Clone, Copy)]
struct Judged {
    accepted: u64,
    rejected: u64,
    /// Of `rejected`: over their key's token bucket.
    rate_limited: u64,
    /// Accepted, but the firewall change failed: not counted as accepted.
    failed: u64,
}

impl Daemon {
    /// Loads everything, installs the firewall chain, opens the capture, and
    /// only then tells systemd it is ready. Any failure leaves the firewall
    /// as it was found (minus stale rules of a previous instance).
    pub fn start(source: ConfigSource) -> Result<Daemon, DaemonError> {
        let sigfd = signal_fd().map_err(DaemonError::Signals)?;
        let cfg = source.load().map_err(DaemonError::Config)?;
        // One daemon per state directory, before any state is read or the
        // firewall is touched: a second instance changes nothing.
        crate::safefile::ensure_private_dir(&cfg.state_dir).map_err(DaemonError::State)?;
        let lock = crate::lock::acquire(&cfg.state_dir).map_err(DaemonError::Lock)?;
        let now = unix_now();
        let opened = ReplayLog::open(
            &cfg.state_dir,
            cfg.runtime_dir.as_deref(),
            cfg.window,
            share_of(cfg.replay_capacity, cfg.keys.len()),
            now,
        )
        .map_err(DaemonError::State)?;
        let (log, replay) = (opened.log, opened.record);
        match opened.loaded {
            Loaded::Fresh => {
                info!(path = %log.path().display(), "replay record: new (first start: empty state directory)")
            }
            Loaded::Restored { live, torn_tail } => info!(
                path = %log.path().display(),
                live,
                torn_tail,
                "replay record: restored"
            ),
            Loaded::Lost(why) => error!(
                path = %log.path().display(),
                floor = replay.floor(),
                "replay record LOST: {why}; refusing every datagram stamped before the floor \
                 (clients are refused for up to one window, then work again)"
            ),
        }
        if let Some(was) = opened.capped_floor {
            error!(
                path = %log.path().display(),
                was,
                floor = replay.floor(),
                now,
                "replay floor on disk was beyond now + window (the clock was ahead when it was \
                 written, or the file was altered): capped to one window; check the clock (NTP)"
            );
        }
        // Tools by absolute path, resolved once, never from $PATH.
        let fw_opts = firewall::tools::resolve(cfg.firewall, &cfg.firewall_options)
            .map_err(DaemonError::Firewall)?;
        let fw = firewall::backend(cfg.firewall, &fw_opts);
        let mut grants = Grants::new(fw);
        grants
            .set_silence(&silence(&cfg))
            .map_err(DaemonError::Firewall)?;
        grants.setup().map_err(DaemonError::Firewall)?;
        info!(
            backend = grants.backend(),
            "firewall chain installed (stale grants removed)"
        );
        let capture = match Capture::open(&cfg.interfaces, &filter_spec(&cfg)) {
            Ok(c) => c,
            Err(e) => {
                let _ = grants.teardown();
                return Err(DaemonError::Capture(e.to_string()));
            }
        };
        let mut legacy = crate::knocks::Runtime::new(&cfg);
        if cfg.legacy.hmac.enabled {
            restore_hmac_record(&mut legacy, &cfg, opened.first_start, now)?;
        }
        for (level, note) in crate::knocks::start_notes(&cfg) {
            match level {
                crate::knocks::NoteLevel::Warn => warn!("{note}"),
                crate::knocks::NoteLevel::Info => info!("{note}"),
            }
        }
        warn_source_address_keys(&cfg);
        let (watch, unwatched) = crate::fwwatch::FwWatch::open();
        if let Some(why) = unwatched {
            warn!(
                "no nf_tables notifications ({why}): a firewall reload is noticed only at the \
                 next request, which re-installs our chain (iptables-legacy works this way)"
            );
        }
        let notifier = Notifier::from_env();
        let d = Daemon {
            source,
            cfg,
            judge: JudgeState::new(replay),
            log,
            grants,
            capture,
            notifier,
            sigfd,
            limiter: LogLimiter::new(20),
            legacy,
            local: LocalAddrs::default(),
            judged: Judged::default(),
            last_watchdog: Instant::now(),
            _lock: lock,
            watch,
        };
        let ifaces = if d.cfg.interfaces.is_empty() {
            "all".to_owned()
        } else {
            d.cfg.interfaces.join(",")
        };
        info!(
            server_id = %d.cfg.server_name,
            port = d.cfg.spa_port,
            interfaces = %ifaces,
            keys = d.cfg.keys.len(),
            backend = d.grants.backend(),
            "ready"
        );
        d.notifier.ready("listening");
        Ok(d)
    }

    /// Runs until SIGTERM/SIGINT, then removes every grant and our chain.
    pub fn run(mut self) -> Result<(), DaemonError> {
        let result = self.event_loop();
        self.notifier.stopping();
        match self.grants.teardown() {
            Ok(()) => info!("stopped: every grant removed, firewall chain removed"),
            Err(e) => error!("stopping: could not remove our firewall chain: {e}"),
        }
        let st = self.capture.stats();
        info!(
            frames = st.frames,
            bytes = st.bytes,
            unparsed = st.unparsed,
            kernel_drops = st.kernel_drops,
            datagrams_accepted = self.judged.accepted,
            datagrams_rejected = self.judged.rejected,
            datagrams_rate_limited = self.judged.rate_limited,
            datagrams_failed = self.judged.failed,
            "totals since start"
        );
        result
    }

    fn timeout(&self) -> Option<Duration> {
        let now_ms = unix_now_ms();
        let mut t: Option<Duration> = self
            .grants
            .next_expiry()
            .map(|s| Duration::from_millis((s * 1000).saturating_sub(now_ms)));
        if let Some(w) = self.notifier.watchdog_interval() {
            let left = w.saturating_sub(self.last_watchdog.elapsed());
            t = Some(t.map_or(left, |t| t.min(left)));
        }
        if let Some(l) = self.legacy.next_deadline() {
            t = Some(t.map_or(l, |t| t.min(l)));
        }
        if self.capture.needs_rebind() {
            let r = Duration::from_secs(2);
            t = Some(t.map_or(r, |t| t.min(r)));
        }
        if let Some(w) = self.watch.timeout() {
            t = Some(t.map_or(w, |t| t.min(w)));
        }
        t
    }

    /// Someone changed the ruleset (fwwatch): if our chain/jump/sets went
    /// with it, install them again with every live grant, one line.
    fn repair_firewall(&mut self) {
        match self.grants.ensure_installed(unix_now()) {
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
        loop {
            let mut fds = vec![self.sigfd.as_raw_fd()];
            fds.extend(self.capture.raw_fds());
            let captures = fds.len() - 1;
            fds.extend(self.watch.raw_fd());
            let ready = poll_fds(&fds, self.timeout()).map_err(DaemonError::Poll)?;
            if ready.first().copied().unwrap_or(false) && self.take_signals() == Flow::Stop {
                return Ok(());
            }
            if ready.iter().skip(1).take(captures).any(|&r| r) && self.drain_capture() == Flow::Stop
            {
                return Ok(());
            }
            if ready.get(1 + captures).copied().unwrap_or(false) {
                self.watch.on_readable();
            }
            if self.watch.take_due() {
                self.repair_firewall();
            }
            if self.capture.needs_rebind() {
                if let Err(e) = self.capture.rebind() {
                    tracing::debug!("interface still missing: {e}");
                }
            }
            self.expire();
            self.feed_watchdog();
        }
    }

    /// Reads every pending signal: SIGHUP reloads, SIGTERM/SIGINT stop.
    /// One non-blocking read when none is pending, so a drain calls it
    /// between slices.
    fn take_signals(&mut self) -> Flow {
        while let Some(sig) = read_signal(self.sigfd.as_raw_fd()) {
            match sig {
                libc::SIGHUP => self.reload(),
                _ => {
                    info!(signal = sig, "stopping on signal");
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

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
    fn drain_capture(&mut self) -> Flow {
        let start = Instant::now();
        let mut handled = 0;
        loop {
            let spa = self.drain_class(Class::Spa);
            let knocks = self.drain_class(Class::Knock);
            handled += spa + knocks;
            self.feed_watchdog();
            if self.take_signals() == Flow::Stop {
                return Flow::Stop;
            }
            if spa + knocks == 0 || handled >= DRAIN_MAX || start.elapsed() >= DRAIN_TIME {
                return Flow::Continue;
            }
        }
    }

    /// One turn of `class`: up to [`SLICE_MAX`] packets or [`SLICE_TIME`].
    /// Returns how many packets were handled.
    fn drain_class(&mut self, class: Class) -> usize {
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
            match pkt {
                Packet::Spa { src, payload, .. } => {
                    let now = unix_now();
                    let local = &mut self.local;
                    let v = verdict::judge(payload, src, now, &self.cfg, &mut self.judge, |a| {
                        local.contains(a, Instant::now())
                    });
                    // The cleartext key-id goes on every line, so a client's
                    // `--wait` diagnosis can name the one grep that finds it.
                    let key_id = spa_proto::parse_header(payload)
                        .map(|h| h.key_id().to_string())
                        .unwrap_or_else(|_| "-".into());
                    self.act_spa(src, &key_id, v);
                }
                Packet::Knock {
                    src,
                    dst,
                    proto,
                    dport,
                    tcp_flags,
                } => {
                    if !self.local.contains(dst, Instant::now()) {
                        debug!(%src, %dst, dport, "knock ignored: not addressed to this host");
                        continue;
                    }
                    // The same address check as for datagrams, before the
                    // knock counts at all: a spoofed sequence from this
                    // host's own (or a loopback, broadcast...) address
                    // opens nothing.
                    let src = match crate::address::usable(src, |a| {
                        self.local.contains(a, Instant::now())
                    }) {
                        Ok(a) => a,
                        Err(why) => {
                            if self.limiter.allow() {
                                info!(%src, dport, reason = why.code(), "knock rejected: {src} is {why}");
                            }
                            continue;
                        }
                    };
                    let now = unix_now();
                    let events = self
                        .legacy
                        .observe(&self.cfg, src, proto, dport, tcp_flags, now);
                    for ev in events {
                        self.act_knock(ev);
                    }
                }
            }
        }
        n
    }

    fn act_spa(&mut self, src: IpAddr, key_id: &str, v: Verdict) {
        // Durable before effective: whatever the record took (an accepted
        // or a denied datagram) is on disk before anything else happens, so
        // neither can come back after a restart (finding 9).
        let persisted = match self.judge.take_unpersisted() {
            None => true,
            Some(seen) => match self.log.append(&seen) {
                Ok(()) => {
                    if let Err(e) = self.log.maybe_compact(&self.judge.replay) {
                        warn!("replay log compaction failed: {e}");
                    }
                    true
                }
                Err(e) => {
                    if self.limiter.allow() {
                        error!(%src, key_id, "rejected: cannot persist the replay record, not acting on this datagram: {e}");
                    }
                    false
                }
            },
        };
        if !persisted {
            // The error line above is this datagram's one line.
            self.judged.rejected += 1;
            return;
        }
        match v {
            Verdict::Reject(r) => {
                self.judged.rejected += 1;
                if r == Reject::RateLimited {
                    self.judged.rate_limited += 1;
                }
                if self.limiter.allow() {
                    // After authentication the key-id names a key: say which.
                    let key = match r {
                        Reject::UnknownKeyId | Reject::AuthFailed => None,
                        _ => crate::explain::key_for(&self.cfg, key_id),
                    };
                    let key = key.map_or("-", |k| k.name.as_str());
                    let why = crate::explain::reject(&self.cfg, &r, unix_now());
                    info!(%src, key_id, key, reason = r.code(), "rejected: {r}; {why}");
                }
            }
            Verdict::Deny(p) => {
                self.judged.rejected += 1;
                if self.limiter.allow() {
                    let k = crate::explain::key_for(&self.cfg, key_id);
                    let key = k.map_or("-", |k| k.name.as_str());
                    let why = crate::explain::policy(k, &p);
                    info!(%src, key_id, key, reason = p.code(), "rejected: {p}; {why}");
                }
            }
            Verdict::Accept(d) => {
                let owner = Owner::Key(d.key_name.clone());
                let now = unix_now_ceil();
                if d.action == Action::Open {
                    if let Err(hit) = self.check_caps(&owner, d.addr, &d.grants, now) {
                        self.judged.rejected += 1;
                        if self.limiter.allow() {
                            info!(%src, key = %d.key_name, key_id, addr = %d.addr, reason = "grant_cap",
                                "rejected: key `{}` holds {hit}", d.key_name);
                        }
                        return;
                    }
                }
                let ports = d
                    .grants
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                let res = match d.action {
                    Action::Open => {
                        self.grants
                            .open(&owner, d.addr, &d.grants, d.duration_secs, now)
                    }
                    Action::Close => self.grants.close(&owner, d.addr, &d.grants, now),
                };
                // Counted as accepted only when the firewall took it.
                if res.is_ok() {
                    self.judged.accepted += 1;
                } else {
                    self.judged.failed += 1;
                }
                match (d.action, res) {
                    (Action::Open, Ok(c)) if d.capped => info!(
                        %src, key = %d.key_name, key_id, addr = %d.addr, grants = %ports,
                        duration = d.duration_secs, capped = d.capped,
                        added = c.added, refreshed = c.refreshed,
                        "accepted open: rule added; duration capped to key {}'s max_duration {} s",
                        d.key_name, d.duration_secs
                    ),
                    (Action::Open, Ok(c)) => info!(
                        %src, key = %d.key_name, key_id, addr = %d.addr, grants = %ports,
                        duration = d.duration_secs, capped = d.capped,
                        added = c.added, refreshed = c.refreshed,
                        "accepted open: rule added"
                    ),
                    (Action::Close, Ok(c)) => info!(
                        %src, key = %d.key_name, key_id, addr = %d.addr, grants = %ports,
                        removed = c.removed, "accepted close: rule removed"
                    ),
                    (_, Err(e)) => error!(
                        %src, key = %d.key_name, key_id, addr = %d.addr, grants = %ports,
                        "accepted, but the firewall change failed (firewall unchanged): {e}"
                    ),
                }
            }
        }
    }

    fn act_knock(&mut self, ev: crate::knocks::Outcome) {
        use crate::knocks::Outcome;
        match ev {
            Outcome::Open {
                owner,
                addr,
                grants,
                duration_secs,
                via,
                hmac,
            } => {
                let now = unix_now_ceil();
                if owner == Owner::Doors
                    && crate::knocks::door_grant_fresh(
                        &self.grants,
                        addr,
                        &grants,
                        duration_secs,
                        now,
                    )
                {
                    if self.limiter.allow() {
                        info!(%addr, via = %via, reason = "door_fresh",
                            "knock ignored: the door grant still has more than half its time (not re-added)");
                    }
                    return;
                }
                if let Err(hit) = self.check_caps(&owner, addr, &grants, now) {
                    if self.limiter.allow() {
                        warn!(%addr, via = %via, reason = "grant_cap",
                            "knock rejected: {owner} holds {hit} (a spoofed knock flood?)");
                    }
                    return;
                }
                // Durable before effective, as for datagrams: a restart must
                // not make this HMAC sequence usable again.
                if hmac {
                    let used = self.legacy.hmac_used();
                    if let Err(e) = crate::state::save_hmac_used(&self.cfg.state_dir, &used) {
                        error!(%addr, via = %via, "knock rejected: cannot persist the used sequence: {e}");
                        return;
                    }
                }
                match self.grants.open(&owner, addr, &grants, duration_secs, now) {
                    Ok(c) => info!(%addr, via = %via, added = c.added, refreshed = c.refreshed,
                        duration = duration_secs, "knock accepted: rule added"),
                    Err(e) => {
                        error!(%addr, via = %via, "knock accepted, but the firewall change failed: {e}")
                    }
                }
            }
            Outcome::Close {
                owner,
                addr,
                grants,
                via,
            } => match self.grants.close(&owner, addr, &grants, unix_now_ceil()) {
                Ok(c) => {
                    info!(%addr, via = %via, removed = c.removed, "knock accepted: rule removed")
                }
                Err(e) => {
                    error!(%addr, via = %via, "knock accepted, but the firewall change failed: {e}")
                }
            },
            Outcome::Rejected { addr, via, reason } => {
                if self.limiter.allow() {
                    info!(%addr, via = %via, "knock rejected: {reason}");
                }
            }
        }
    }

    /// The caps an open by `owner` is held to: the key's `max_grants` (an
    /// HMAC knock counts as its key), the doors' shared part of the total,
    /// and `max_grants_total` for everyone.
    fn check_caps(
        &self,
        owner: &Owner,
        addr: IpAddr,
        grants: &[spa_proto::Grant],
        now: u64,
    ) -> Result<(), crate::grants::CapHit> {
        let total = self.cfg.max_grants_total;
        let cap = match owner {
            Owner::Key(name) => self
                .cfg
                .keys
                .iter()
                .find(|k| &k.name == name)
                .map_or(0, |k| k.max_grants),
            Owner::Doors => crate::limits::door_share(total),
        };
        self.grants.check_caps(owner, addr, grants, now, cap, total)
    }

    fn expire(&mut self) {
        let now = unix_now();
        match self.grants.expire(now) {
            Ok(gone) => {
                for a in gone {
                    info!(addr = %a.addr, grant = %a.grant, "grant expired: rule removed");
                }
            }
            Err(e) => warn!("removing expired rules failed (the kernel already ignores them): {e}"),
        }
    }

    /// SIGHUP: re-read configuration and keys; keep current grants. A bad
    /// configuration is refused and the old one stays in force.
    fn reload(&mut self) {
        self.notifier.reloading();
        let new = match self.source.load() {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, old configuration stays in force: {e}");
                self.notifier
                    .status("reload refused; old configuration in force");
                return;
            }
        };
        if new.firewall != self.cfg.firewall || new.state_dir != self.cfg.state_dir {
            warn!("reload: firewall backend and state_dir changes take effect at the next restart");
        }
        let spec = filter_spec(&new);
        let recapture = if new.interfaces != self.cfg.interfaces {
            Capture::open(&new.interfaces, &spec).map(Some)
        } else if spec != *self.capture.spec() {
            // Same sockets, new kernel filter: swapped atomically.
            self.capture.set_filter(&spec).map(|_| None)
        } else {
            Ok(None)
        };
        match recapture {
            Ok(Some(c)) => self.capture = c,
            Ok(None) => {}
            Err(e) => {
                error!("reload refused, old configuration stays in force: capture: {e}");
                self.notifier
                    .status("reload refused; old configuration in force");
                return;
            }
        }
        // A wider window needs no new floor: what the record forgot under
        // the old one is below its floor already (in memory, and on disk at
        // the next compaction; until then the entries themselves are).
        self.judge
            .replay
            .set_limits(new.window, share_of(new.replay_capacity, new.keys.len()));
        self.judge.buckets.retain(|id| new.key(id).is_some());
        if let Err(e) = self.grants.set_silence(&silence(&new)) {
            warn!("reload: the silent ports' drop rules could not be replaced (the old ones stay): {e}");
        }
        let hmac_was_on = self.cfg.legacy.hmac.enabled;
        self.legacy.reload(&self.cfg, &new);
        if new.legacy.hmac.enabled && !hmac_was_on {
            // Turned on by this reload: what an earlier run used is on disk
            // only (lost or missing: the floor, as at start).
            if let Err(e) = restore_hmac_record(&mut self.legacy, &new, false, unix_now()) {
                error!("reload: cannot write the HMAC knock record: {e}");
            }
        }
        info!(
            keys = new.keys.len(),
            grants = self.grants.len(),
            "reloaded: current grants kept"
        );
        self.cfg = new;
        self.notifier.status("listening");
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

/// Reads the HMAC knock record back (lost: the steps that could have been
/// used are refused, finding 10) and writes it at once, so a missing file
/// at a later start always means lost state.
fn restore_hmac_record(
    legacy: &mut crate::knocks::Runtime,
    cfg: &Config,
    first_start: bool,
    now: u64,
) -> Result<(), DaemonError> {
    let rec = crate::state::load_hmac_used(&cfg.state_dir, first_start);
    legacy.restore_hmac_used(&rec.used);
    if let Some(was) = legacy.hmac_cap_floor(now) {
        error!(
            dir = %cfg.state_dir.display(),
            floor_step = was,
            "HMAC knock floor on disk was beyond the current step + 1 (the clock was ahead when \
             it was written, or the file was altered): capped; check the clock (NTP)"
        );
    }
    if let Some(why) = rec.lost {
        legacy.hmac_after_loss(now);
        error!(
            dir = %cfg.state_dir.display(),
            "HMAC knock record LOST ({why}): refusing the sequences of the current and next \
             time step (HMAC knocks work again after that)"
        );
    }
    crate::state::save_hmac_used(&cfg.state_dir, &legacy.hmac_used()).map_err(DaemonError::State)
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
