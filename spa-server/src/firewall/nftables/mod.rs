//! nftables backend: grants are elements of two sets with per-element
//! timeouts (kernel-side expiry), matched by two rules at the top of the
//! admin's own chain.
//!
//! Why the admin's chain and not a table of our own: in nftables an `accept`
//! only ends the current base chain; every other base chain on the same hook
//! still sees the packet, so the admin's `reject` would win. Living inside
//! their chain is the only way our accept is final.
//!
//! Here: the backend's state, its transactions (the persistent `nft -i`
//! session or one `nft -f -`) and applying batches. objects.rs installs,
//! checks and removes our sets and rules; text.rs writes every script (pure);
//! listing.rs reads `nft list` output.

use super::nft_session::NftSession;
use super::silence::Silence;
use super::{now_unix_ms, Access, Firewall, FirewallOptions, FwError, Runner};
use std::time::Duration;
use tracing::{debug, warn};

mod listing;
mod objects;
mod text;
pub use listing::{parse_listing, Listing};
use text::set_for;
pub use text::{
    apply_script, drop_script, element, plan, setup_script, timeout_ms, timeout_text,
    MAX_TIMEOUT_MS,
};

pub struct Nftables {
    opts: FirewallOptions,
    run: Runner,
    /// Whether re-adding an existing element replaces its timeout (Linux
    /// 6.10+). Then a refresh is one `add element`, with no delete: deletes
    /// cost a kernel grace period (~5-10 ms measured) and fail on an element
    /// that vanished. Probed at setup; older kernels keep the old timeout
    /// silently, so without the probe we must delete and re-add.
    timeout_update: bool,
    /// The persistent `nft -i` for apply, started on first use.
    session: Option<NftSession>,
    /// Consecutive session breakdowns; at [`MAX_SESSION_FAILURES`] we stop
    /// trying (an nft that behaves differently would otherwise cost a
    /// timeout on every batch).
    session_failures: u32,
    /// Ports our drop rules cover (installed by setup, replaced by set_silence).
    silence: Silence,
    /// Whether setup ran (then set_silence changes the ruleset at once).
    installed: bool,
    /// Whether setup installs the forwarding chain, maps and rules (forward.rs).
    forwarding: bool,
}

const MAX_SESSION_FAILURES: u32 = 3;

/// How long one persistent-session transaction may take before we give up
/// on the session (the spawn path has no limit of its own: nft does not
/// block on anything but the kernel).
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

impl Nftables {
    pub fn new(opts: FirewallOptions) -> Self {
        let run = Runner::new(&opts.exec_prefix);
        Nftables {
            opts,
            run,
            timeout_update: false,
            session: None,
            session_failures: 0,
            silence: Silence::default(),
            installed: false,
            forwarding: false,
        }
    }

    /// Whether setup found that the kernel refreshes timeouts in place.
    pub fn refresh_in_place(&self) -> bool {
        self.timeout_update
    }

    /// Overrides the probe (after `setup`): lets tests cover the
    /// delete-then-add refresh that older kernels need on a newer one.
    pub fn set_refresh_in_place(&mut self, on: bool) {
        self.timeout_update = on;
    }

    /// One `nft -f -` transaction: the kernel commits all of it or none.
    pub(super) fn transaction(&self, script: &str) -> Result<(), FwError> {
        debug!(script, "nft transaction");
        self.run
            .run(&[&self.opts.nft, "-f", "-"], Some(script))?
            .into_result()
            .map(|_| ())
    }

    /// The hot-path transaction: through the persistent session when
    /// enabled, else (or if the session breaks) one `nft -f -` process.
    fn apply_tx(&mut self, script: &str) -> Result<(), FwError> {
        if script.trim().is_empty() {
            return Ok(());
        }
        if self.opts.nft_session && self.session_failures < MAX_SESSION_FAILURES {
            if self.session.is_none() {
                match NftSession::spawn(&self.opts.exec_prefix, &self.opts.nft) {
                    Ok(s) => self.session = Some(s),
                    Err(e) => {
                        self.session_failures += 1;
                        warn!(error = %e, "no persistent nft session; this batch via nft -f")
                    }
                }
            }
            if let Some(session) = self.session.as_mut() {
                let cmds: Vec<String> = script
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect();
                debug!(script, "nft session transaction");
                match session.transaction(&cmds, SESSION_TIMEOUT) {
                    Ok(()) => {
                        self.session_failures = 0;
                        return Ok(());
                    }
                    Err(e @ FwError::Failed { .. }) => {
                        self.session_failures = 0;
                        return Err(e);
                    }
                    Err(e) => {
                        self.session = None;
                        self.session_failures += 1;
                        if self.session_failures >= MAX_SESSION_FAILURES {
                            warn!(error = %e, "persistent nft session broke {MAX_SESSION_FAILURES} times in a row; spawning nft per batch from now on");
                        } else {
                            warn!(error = %e, "persistent nft session broke; restarting it next time, this batch via nft -f");
                        }
                    }
                }
            }
        }
        self.transaction(script)
    }

    pub(super) fn table(&self) -> String {
        format!("{} {}", self.opts.nft_family, self.opts.nft_table)
    }

    pub(super) fn families(&self) -> (bool, bool) {
        match self.opts.nft_family.as_str() {
            "ip" => (true, false),
            "ip6" => (false, true),
            _ => (true, true),
        }
    }

    /// `nft get element`: whether a grant is still in its set.
    fn element_present(&self, a: &Access) -> Result<bool, FwError> {
        let (set, elem) = match a.forward {
            None => (set_for(&self.opts, a).to_owned(), element(a)),
            Some(to) => super::forward::nft_elements(&self.opts, a, to)[0].clone(),
        };
        let set = set.as_str();
        let elem = format!("{{ {elem} }}");
        let ran = self.run.run(
            &[
                &self.opts.nft,
                "get",
                "element",
                &self.opts.nft_family,
                &self.opts.nft_table,
                set,
                &elem,
            ],
            None,
        )?;
        Ok(ran.ok())
    }
}

impl Firewall for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn setup(&mut self) -> Result<(), FwError> {
        self.install()
    }

    fn apply(&mut self, add: &[Access], remove: &[Access]) -> Result<(), FwError> {
        let (v4ok, v6ok) = self.families();
        for a in add.iter().chain(remove) {
            let v4 = a.canonical_addr().is_ipv4();
            if (v4 && !v4ok) || (!v4 && !v6ok) {
                return Err(FwError::FamilyUnavailable {
                    backend: "nftables",
                    addr: a.addr,
                    why: format!("table family is {}", self.opts.nft_family),
                });
            }
        }
        let started = std::time::Instant::now();
        let now_ms = now_unix_ms();
        let (adds, removes) = plan(add, remove, now_ms, self.timeout_update);
        if adds.is_empty() && removes.is_empty() {
            return Ok(());
        }
        let first = self.apply_tx(&apply_script(&self.opts, &adds, &removes, now_ms));
        let err = match first {
            Ok(()) => {
                debug!(
                    added = adds.len(),
                    removed = removes.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "nftables batch applied"
                );
                return Ok(());
            }
            Err(e) if removes.is_empty() => return Err(e),
            Err(e) => e,
        };
        let mut present = Vec::with_capacity(removes.len());
        for r in &removes {
            if self.element_present(r)? {
                present.push(*r);
            }
        }
        if present.len() == removes.len() {
            return Err(err);
        }
        warn!(
            gone = removes.len() - present.len(),
            first_error = %err,
            "grants to remove were already gone (expired or deleted by hand); retrying without them"
        );
        self.apply_tx(&apply_script(&self.opts, &adds, &present, now_unix_ms()))
    }

    fn intact(&mut self) -> Result<bool, FwError> {
        self.objects_intact()
    }

    fn set_silence(&mut self, new: &Silence) -> Result<(), FwError> {
        self.replace_silence(new)
    }

    fn set_forwarding(&mut self, on: bool) {
        self.forwarding = on;
    }

    fn expires_itself(&self, a: &Access) -> bool {
        super::BackendKind::Nftables.expires_itself(a)
    }

    fn teardown(&mut self) -> Result<(), FwError> {
        self.remove_ours()
    }
}

#[cfg(test)]
mod tests;
