//! Start-up: the configuration, the split into the network and the
//! privileged side, the drop, the capture sockets, the replay state, the
//! firewall chain, the seccomp filter, READY. Its order is the security
//! argument (docs/design.md, "Two processes"), so it reads top to bottom in
//! one function.

use super::sys::signal_fd;
use super::{Daemon, DaemonError};
use crate::capture::local::LocalAddrs;
use crate::capture::Capture;
use crate::config::{Config, ConfigSource};
use crate::engine::{restore_hmac_record, Engine, Now};
use crate::firewall;
use crate::grants::GrantTable;
use crate::knocks;
use crate::notify::Notifier;
use crate::privsep;
use crate::state::{DurableReplay, Loaded, ReplayLog};
use spa_proto::replay::share_of;
use std::os::fd::AsRawFd;
use std::time::Instant;
use tracing::{error, info, warn};

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
        // From here on, a wait for the privileged side keeps the capture's
        // receive rings drained (capture/spill.rs).
        remote.spill_while_waiting(capture.spiller());
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
        let mut grants = GrantTable::new(Box::new(remote.clone()));
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
            last_capture: None,
            _lock: lock,
            watch,
            control,
            started_at: now.secs(),
            remote,
            publisher,
        })
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
