//! The privileged side: a loop over the closed request set, nothing else.
//! It never reads a packet; it holds CAP_NET_ADMIN and CAP_NET_RAW, the
//! firewall backend, and a configuration it read itself, against which it
//! checks every grant it is asked to add ([`super::check`]). When the
//! network side goes (end of stream), it exits: the kernel-side expiry and
//! `ExecStopPost=spa-server flush` are the fail-closed guarantees, as when
//! one process did everything.

use super::check;
use super::fdpass::send_with_fd;
use super::proto::{read_frame, Reply, Request};
use crate::capture::local::read_local_addrs;
use crate::config::Config;
use crate::config::ConfigSource;
use crate::firewall::Firewall;
use crate::knocks;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves requests until the network side closes its end; returns the
/// process's exit status.
pub fn serve(
    mut sock: UnixStream,
    mut cfg: Config,
    source: ConfigSource,
    mut fw: Box<dyn Firewall>,
) -> i32 {
    let mut local: Vec<IpAddr> = Vec::new();
    // A reload's configuration, read but not yet ours (Request::Settle).
    let mut pending: Option<Config> = None;
    loop {
        let msg = match read_frame(&mut sock) {
            Ok(Some(m)) => m,
            Ok(None) => {
                info!("privileged side: the network side is gone; exiting");
                return 0;
            }
            Err(e) => {
                error!("privileged side: cannot read a request, exiting: {e}");
                return 1;
            }
        };
        let (reply, fd) = match Request::decode(&msg) {
            Err(e) => {
                warn!(
                    reason = "malformed",
                    "privileged side refused a request: {e}"
                );
                (Reply::Refused(format!("malformed request: {e}")), None)
            }
            Ok(Request::OpenCapture {
                interface,
                family,
                class,
            }) => match open_capture(
                // During a reload, the sockets are for the new configuration.
                pending.as_ref().unwrap_or(&cfg),
                interface.as_deref(),
                family,
                class,
            ) {
                Ok((reply, fd)) => (reply, Some(fd)),
                Err(reply) => (reply, None),
            },
            Ok(Request::Reload) => (reload(&source, &mut pending), None),
            Ok(Request::Settle { commit }) => {
                (settle(commit, &mut cfg, &mut pending, fw.as_mut()), None)
            }
            Ok(req) => (handle(req, &mut cfg, fw.as_mut(), &mut local), None),
        };
        let sent = match &fd {
            // Our copy of the descriptor is closed once it is sent.
            Some(fd) => send_with_fd(&mut sock, &reply.encode(), fd.as_fd()),
            None => sock.write_all(&reply.encode()),
        };
        if let Err(e) = sent {
            error!("privileged side: cannot answer, exiting: {e}");
            return 1;
        }
    }
}

/// One capture socket for the network side: only for an interface our
/// configuration names, with the kernel filter for our configuration's
/// ports, attached and locked before the descriptor leaves this process.
fn open_capture(
    cfg: &Config,
    interface: Option<&str>,
    family: spa_proto::IpFamily,
    class: crate::capture::Class,
) -> Result<(Reply, OwnedFd), Reply> {
    let on = interface.unwrap_or("every interface");
    if let Err(r) = check::open_capture(cfg, interface) {
        warn!(
            reason = "outside_configuration",
            "privileged side refused a request: {r}"
        );
        return Err(Reply::Refused(r.to_string()));
    }
    match crate::capture::open_locked(interface, family, class, &knocks::filter_spec(cfg)) {
        Ok(h) => {
            info!(
                interface = on,
                family = family.name(),
                class = class.name(),
                ifindex = h.ifindex,
                "privileged side: capture socket handed over (filter locked)"
            );
            Ok((Reply::Capture { ifindex: h.ifindex }, h.fd))
        }
        Err(e) => {
            warn!(interface = on, "privileged side: no capture socket: {e}");
            Err(Reply::Refused(e.to_string()))
        }
    }
}

fn fw_reply(r: Result<(), crate::firewall::FwError>) -> Reply {
    match r {
        Ok(()) => Reply::Done,
        Err(e) => Reply::Refused(e.to_string()),
    }
}

/// SIGHUP's first half: the configuration and key files read again and
/// held aside, their bytes sent to the network side.
fn reload(source: &ConfigSource, pending: &mut Option<Config>) -> Reply {
    match Config::load_recording(source.path.as_deref(), &source.overrides) {
        Ok((new, files)) => {
            *pending = Some(new);
            Reply::Files(files)
        }
        Err(e) => {
            *pending = None;
            Reply::Refused(e.to_string())
        }
    }
}

/// SIGHUP's second half: the network side has everything it needs for the
/// new configuration (capture sockets included) and takes it; so do we.
/// Or it refused the reload, and we keep judging by the old one.
fn settle(
    commit: bool,
    cfg: &mut Config,
    pending: &mut Option<Config>,
    fw: &mut dyn Firewall,
) -> Reply {
    let Some(new) = pending.take() else {
        return if commit {
            Reply::Refused("no reload to take".into())
        } else {
            Reply::Done
        };
    };
    if !commit {
        info!("privileged side: reload refused by the network side; old configuration kept");
        return Reply::Done;
    }
    fw.set_forwarding(!crate::policy::forwards(&new.keys).is_empty());
    if let Err(e) = fw.set_silence(&knocks::silence(&new)) {
        warn!(
            "reload: the silent ports' drop rules could not be replaced (the old ones stay): {e}"
        );
    }
    *cfg = new;
    Reply::Done
}

fn handle(req: Request, cfg: &mut Config, fw: &mut dyn Firewall, local: &mut Vec<IpAddr>) -> Reply {
    match req {
        Request::Apply { add, remove } => {
            // The host's addresses, read again only when an add names one
            // we do not know as ours (cheap in the common case).
            if add.iter().any(|a| !local.contains(&a.addr)) {
                if let Ok(set) = read_local_addrs() {
                    *local = set.into_iter().collect();
                }
            }
            if let Err(r) = check::apply(cfg, &add, unix_secs(), |a| local.contains(&a)) {
                warn!(
                    reason = "outside_configuration",
                    "privileged side refused a batch: {r}"
                );
                return Reply::Refused(r.to_string());
            }
            if remove.len() > super::proto::MAX_BATCH {
                return Reply::Refused("too many removes".into());
            }
            fw_reply(fw.apply(&add, &remove))
        }
        Request::Intact => match fw.intact() {
            Ok(b) => Reply::Intact(b),
            Err(e) => Reply::Refused(e.to_string()),
        },
        Request::Setup => {
            // What to keep silent, and whether to forward, come from our
            // own configuration.
            fw.set_forwarding(!crate::policy::forwards(&cfg.keys).is_empty());
            if let Err(e) = fw.set_silence(&knocks::silence(cfg)) {
                return Reply::Refused(e.to_string());
            }
            fw_reply(fw.setup())
        }
        Request::Teardown => fw_reply(fw.teardown()),
        // Answered in `serve` (with a descriptor, or with the reload state).
        Request::OpenCapture { .. } | Request::Reload | Request::Settle { .. } => {
            Reply::Refused("answered elsewhere".into())
        }
        Request::LocalAddrs => match read_local_addrs() {
            Ok(set) => {
                *local = set.iter().copied().collect();
                Reply::Addrs(local.clone())
            }
            Err(e) => Reply::Refused(format!("cannot list local addresses: {e}")),
        },
    }
}
