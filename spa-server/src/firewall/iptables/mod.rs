//! iptables backend: our own chain, entered for new connections only, with
//! the silent ports' drops and ONE rule matching the grant sets (an ipset
//! `hash:ip,port` per family, entries with kernel-side timeouts: ipset.rs).
//! A forward (issue 15) stays two rules, a DNAT and a forward ACCEPT, with
//! `-m time --datestop` as their kernel-side expiry (forward.rs); rule
//! batches go through `iptables-restore --noflush` (one process, one atomic
//! commit per family).
//!
//! Rules are always named by their full specification, never by position, so
//! an admin inserting rules of their own cannot make us delete the wrong one.
//!
//! Here: the backend's state, running the tools and applying batches (all or
//! nothing across both families and the sets). chain.rs installs, checks and
//! removes our chain; text.rs writes every rule and batch (pure).

use super::ipset::Sets;
use super::silence::Silence;
use super::spare::Spare;
use super::{split_family, Access, Firewall, FirewallOptions, FwError, Runner};
use tracing::{debug, warn};

use spa_proto::IpFamily;

mod chain;
mod text;
pub(crate) use text::civil_from_days;
pub use text::{batch, datestop, drop_specs, grant_comment, jump_spec, rule_lines};
use text::{restore_argv, restore_tool};

pub struct Iptables {
    opts: FirewallOptions,
    run: Runner,
    /// Whether ip6tables worked at setup; without it v6 grants fail cleanly.
    v6: bool,
    /// A warm `iptables-restore --noflush` per family (spare.rs). Only with
    /// the nf_tables variant, which takes no lock until it commits.
    spares: [Spare; 2],
    /// The grant sets and their warm `ipset restore`.
    sets: Sets,
    /// Ports our chain drops (installed by setup, replaced by set_silence).
    silence: Silence,
    /// Whether setup ran (then set_silence changes the chain at once).
    installed: bool,
    /// Whether setup installs the forward chain and the nat chain (forward.rs).
    forwarding: bool,
}

impl Iptables {
    pub fn new(opts: FirewallOptions) -> Self {
        let run = Runner::new(&opts.exec_prefix);
        let spare = |fam| Spare::new(restore_argv(&opts, fam));
        Iptables {
            spares: [spare(IpFamily::V4), spare(IpFamily::V6)],
            sets: Sets::new(&opts),
            opts,
            run,
            v6: true,
            silence: Silence::default(),
            installed: false,
            forwarding: false,
        }
    }

    /// Stops the warm tools (they exit without doing anything).
    fn drop_spares(&mut self) {
        for sp in &mut self.spares {
            sp.on = false;
            sp.stop();
        }
        self.sets.warm(false);
    }

    fn tool(&self, fam: IpFamily) -> &str {
        match fam {
            IpFamily::V4 => &self.opts.iptables,
            IpFamily::V6 => &self.opts.ip6tables,
        }
    }

    fn wait(&self) -> String {
        self.opts.lock_wait_secs.to_string()
    }

    /// `iptables -w N <args>`.
    fn iptables(&self, fam: IpFamily, args: &[String]) -> Result<super::Ran, FwError> {
        let wait = self.wait();
        let mut argv: Vec<&str> = vec![self.tool(fam), "-w", &wait];
        argv.extend(args.iter().map(String::as_str));
        self.run.run(&argv, None)
    }

    /// One atomic `iptables-restore --noflush` transaction (through the
    /// warm spare when there is one), then a new spare for the next one.
    fn restore(&self, fam: IpFamily, batch: &str) -> Result<(), FwError> {
        debug!(family = fam.name(), batch, "iptables-restore batch");
        let spare = &self.spares[fam as usize];
        let ran = match spare.run(batch) {
            Some(r) => r,
            None => {
                let wait = self.wait();
                let argv = [restore_tool(&self.opts, fam), "-w", &wait, "--noflush"];
                self.run.run(&argv, Some(batch))?
            }
        };
        let res = ran.into_result().map(|_| ());
        spare.refill();
        res
    }

    /// Applies one family's batch; on failure, retries once without the
    /// removes that are no longer there. Returns the removes actually done.
    fn apply_family(
        &self,
        fam: IpFamily,
        add: &[Access],
        remove: &[Access],
    ) -> Result<Vec<Access>, FwError> {
        let first = self.restore(fam, &batch(&self.opts, add, remove));
        let err = match first {
            Ok(()) => return Ok(remove.to_vec()),
            Err(e) if remove.is_empty() => return Err(e),
            Err(e) => e,
        };
        let mut present = Vec::with_capacity(remove.len());
        for r in remove {
            let Some((table, chain, spec)) = rule_lines(&self.opts, r).into_iter().next() else {
                continue;
            };
            let mut args = vec!["-t".to_string(), table.into(), "-C".into(), chain];
            args.extend(spec);
            let ran = self.iptables(fam, &args)?;
            match ran.code {
                Some(0) => present.push(*r),
                Some(1) => {}
                _ => return Err(ran.into_error()),
            }
        }
        if present.len() == remove.len() {
            return Err(err);
        }
        warn!(
            family = fam.name(),
            gone = remove.len() - present.len(),
            first_error = %err,
            "grants to remove were already gone (chain flushed by hand?); retrying without them"
        );
        self.restore(fam, &batch(&self.opts, add, &present))?;
        Ok(present)
    }
}

impl Firewall for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn setup(&mut self) -> Result<(), FwError> {
        self.opts.validate()?;
        self.drop_spares();
        let nft_variant = self
            .iptables(IpFamily::V4, &["-V".into()])
            .map(|r| r.stdout.contains("nf_tables"))
            .unwrap_or(false);
        let fresh = !self.installed;
        self.setup_family(IpFamily::V4, fresh)?;
        match self.setup_family(IpFamily::V6, fresh) {
            Ok(()) => self.v6 = true,
            Err(e) => {
                self.v6 = false;
                warn!(error = %e, "ip6tables unusable: IPv4 grants only, IPv6 grants will fail");
            }
        }
        self.installed = true;
        self.spares[IpFamily::V4 as usize].on = nft_variant;
        self.spares[IpFamily::V6 as usize].on = nft_variant && self.v6;
        // ipset takes no lock: always warm.
        self.sets.warm(true);
        Ok(())
    }

    fn intact(&mut self) -> Result<bool, FwError> {
        self.chain_intact()
    }

    fn set_silence(&mut self, new: &Silence) -> Result<(), FwError> {
        self.replace_silence(new)
    }

    fn apply(&mut self, add: &[Access], remove: &[Access]) -> Result<(), FwError> {
        let (add4, add6) = split_family(add);
        let (rm4, rm6) = split_family(remove);
        if !self.v6 {
            if let Some(a) = add6.first().or(rm6.first()) {
                return Err(FwError::FamilyUnavailable {
                    backend: "iptables",
                    addr: a.addr,
                    why: "ip6tables did not work at setup".into(),
                });
            }
        }
        let started = std::time::Instant::now();
        // Forwards are rules (both families' tools), the rest set entries
        // (one ipset call): the rules first, undone if the sets then fail.
        let fwd = |l: Vec<Access>| -> Vec<Access> {
            l.into_iter().filter(|a| a.forward.is_some()).collect()
        };
        let (fadd4, frm4, fadd6, frm6) = (fwd(add4), fwd(rm4), fwd(add6), fwd(rm6));
        let done4 = if fadd4.is_empty() && frm4.is_empty() {
            Vec::new()
        } else {
            self.apply_family(IpFamily::V4, &fadd4, &frm4)?
        };
        let undo4 = |me: &Self, why: &str| {
            if !(fadd4.is_empty() && done4.is_empty()) {
                let undo = batch(&me.opts, &done4, &fadd4);
                if let Err(u) = me.restore(IpFamily::V4, &undo) {
                    warn!(error = %u, "could not undo the IPv4 rules of a failed batch");
                } else {
                    warn!("{why}; IPv4 rules undone");
                }
            }
        };
        let mut done6 = Vec::new();
        if !(fadd6.is_empty() && frm6.is_empty()) {
            match self.apply_family(IpFamily::V6, &fadd6, &frm6) {
                Ok(d) => done6 = d,
                Err(e) => {
                    // Two tools, two transactions: undo the IPv4 half so the
                    // call stays all or nothing.
                    undo4(self, "IPv6 half failed");
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.sets.apply(add, remove) {
            undo4(self, "the grant sets failed");
            if !(fadd6.is_empty() && done6.is_empty()) {
                let undo = batch(&self.opts, &done6, &fadd6);
                if let Err(u) = self.restore(IpFamily::V6, &undo) {
                    warn!(error = %u, "could not undo the IPv6 rules of a failed batch");
                }
            }
            return Err(e);
        }
        debug!(
            added = add.len(),
            removed = remove.len(),
            micros = started.elapsed().as_micros() as u64,
            "iptables batch applied"
        );
        Ok(())
    }

    fn set_forwarding(&mut self, on: bool) {
        self.forwarding = on;
    }

    fn expires_itself(&self, a: &Access) -> bool {
        super::BackendKind::Iptables.expires_itself(a)
    }

    fn teardown(&mut self) -> Result<(), FwError> {
        self.opts.validate()?;
        self.drop_spares();
        self.installed = false;
        self.teardown_family(IpFamily::V4)?;
        self.teardown_family(IpFamily::V6)
    }
}

impl Drop for Iptables {
    fn drop(&mut self) {
        self.drop_spares();
    }
}

#[cfg(test)]
mod tests;
