//! SIGHUP: the parts of a reload that can fail (the new configuration read
//! by the privileged side, the forwarding check, new capture sockets) before
//! the engine sees anything, then `Settle` on both sides.

use super::{Daemon, DaemonError};
use crate::capture::Capture;
use crate::config::Config;
use crate::engine::{Event, Now};
use crate::firewall;
use crate::knocks;
use tracing::{error, warn};

impl Daemon {
    /// SIGHUP: re-read configuration and keys; keep current grants. A bad
    /// configuration is refused and the old one stays in force.
    pub(super) fn reload(&mut self, now: &Now) {
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
