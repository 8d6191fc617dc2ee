//! Privilege separation: the process that reads the network holds no
//! privilege. The network side (capture, parsing, the engine) runs as an
//! unprivileged user with no capabilities, `NoNewPrivs` and a seccomp
//! allow-list; the privileged side never reads a packet and answers only
//! the closed set of requests in [`proto`], each checked by [`check`]
//! against the configuration it read itself. See docs/design.md.
//!
//! The network side is the main process (systemd's MAINPID: it gets the
//! signals, talks to the notify socket and is what the watchdog watches);
//! the privileged side is forked from it before it drops anything, and
//! exits when the network side's end of the socketpair closes. When the
//! privileged side dies, the network side's poll sees the end of stream
//! and stops.

pub mod check;
pub mod fdpass;
pub mod helper;
pub mod proto;
pub mod remote;
pub mod sandbox;

pub use remote::Remote;
pub use sandbox::SandboxError;

use crate::config::Config;
use crate::config::ConfigSource;
use crate::firewall::{self, FirewallOptions};
use sandbox::{User, CAP_NET_ADMIN, CAP_NET_RAW};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use tracing::{error, warn};

/// The capabilities the privileged side keeps.
pub const PRIVILEGED_CAPS: [u32; 2] = [CAP_NET_ADMIN, CAP_NET_RAW];

/// The network side's user: `user` from the configuration. When that is the
/// default (`spa`) and no such user exists, `nobody`, with a warning: a
/// shared identity is weaker than a dedicated one, but still no root.
pub fn network_user(cfg: &Config) -> Result<User, SandboxError> {
    match sandbox::lookup_user(&cfg.user) {
        Ok(u) if u.uid == 0 => Err(SandboxError::NoUser {
            name: cfg.user.clone(),
            why: sandbox::NoUserWhy::Root,
        }),
        Ok(u) => Ok(u),
        Err(e) if cfg.user == crate::config::DEFAULT_USER => {
            let u = sandbox::lookup_user("nobody").map_err(|_| e)?;
            warn!(
                "user `{}` does not exist; the network side runs as `nobody` (create `{}`: \
                 adduser --system --group --no-create-home {}; the Debian package does)",
                cfg.user, cfg.user, cfg.user
            );
            Ok(u)
        }
        Err(e) => Err(e),
    }
}

/// Forks the privileged side. It closes `close_in_child` (the signal and
/// watch descriptors: it never reads a packet), keeps only
/// CAP_NET_ADMIN and CAP_NET_RAW, builds the firewall backend and serves
/// requests until the returned [`Remote`]'s socket closes.
///
/// Call before any thread is started: after fork(2) only the calling
/// thread exists in the child.
pub fn split(
    cfg: Config,
    source: &ConfigSource,
    fw_opts: &FirewallOptions,
    close_in_child: &[RawFd],
) -> Result<(Remote, Config), SandboxError> {
    let (net, privileged) = UnixStream::pair().map_err(|error| SandboxError::Sys {
        what: "socketpair".into(),
        error,
    })?;
    // SAFETY: the daemon is single-threaded (no thread was ever started),
    // so the child is a complete copy and may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SandboxError::Sys {
            what: "fork".into(),
            error: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        drop(net);
        for &fd in close_in_child {
            // SAFETY: these descriptors belong to objects this process
            // never uses (it only serves requests, then exits).
            unsafe { libc::close(fd) };
        }
        sandbox::limit_bounding(&PRIVILEGED_CAPS);
        if let Err(e) = sandbox::limit_caps(&PRIVILEGED_CAPS) {
            error!("privileged side: {e}");
            std::process::exit(1);
        }
        let fw = firewall::backend(cfg.firewall, fw_opts);
        let code = helper::serve(privileged, cfg, source.clone(), fw);
        std::process::exit(code);
    }
    drop(privileged);
    Ok((Remote::new(net, cfg.firewall), cfg))
}

/// The network side gives up everything: it becomes its user with no
/// capability at all, for good. The state directories were handed over
/// before ([`sandbox::give_dir`]); the seccomp filter comes later
/// ([`sandbox::install_seccomp`]), once the state is open, before the first
/// packet.
pub fn drop_network_side(user: &User) -> Result<(), SandboxError> {
    sandbox::become_user(user)?;
    sandbox::limit_caps(&[])?;
    sandbox::no_new_privs()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// uid 0 is refused as the network side's user with this message, byte
    /// for byte: it says why (uid 0) and what to set, not that the user
    /// does not exist (the old text did).
    #[test]
    fn root_is_refused_with_a_pinned_message() {
        let mut cfg = Config::for_tests(Vec::new(), 30);
        cfg.user = "root".into();
        let e = network_user(&cfg).unwrap_err();
        assert_eq!(
            e.to_string(),
            "user `root` is uid 0: the network side must run unprivileged; set `user` in \
             server.toml to an unprivileged user (the Debian package creates `spa`: adduser \
             --system --group --no-create-home spa)"
        );
    }
}
