//! Our chain's life in the kernel: installed at setup (with the grant set,
//! the silent ports' drops and the jump on top), checked after a reload by
//! someone else, its drops replaced, and removed at teardown with every jump
//! of ours, today's form and the older ones.

use super::text::{drop_specs, jump_spec, old_jump_spec, restore_args};
use super::Iptables;
use crate::firewall::ipset;
use crate::firewall::silence::Silence;
use crate::firewall::FwError;
use spa_proto::IpFamily;
use tracing::{debug, info, warn};

/// How many stale jumps setup/teardown remove at most; more than a handful
/// means something else keeps adding them, and looping forever would hide it.
const MAX_STALE_JUMPS: usize = 64;

impl Iptables {
    pub(super) fn jump_spec(&self) -> Vec<String> {
        jump_spec(&self.opts)
    }

    /// Deletes every jump of ours from the parent chain (bounded), in
    /// today's form and in the form earlier versions wrote (every state),
    /// so an upgrade leaves no jump of the old kind behind.
    pub(super) fn remove_jumps(&self, fam: IpFamily) -> Result<usize, FwError> {
        let mut removed = 0;
        for spec in [self.jump_spec(), old_jump_spec(&self.opts)] {
            let mut args = vec!["-D".to_string(), self.opts.parent_chain.clone()];
            args.extend(spec);
            for _ in 0..MAX_STALE_JUMPS {
                let ran = self.iptables(fam, &args)?;
                if !ran.ok() {
                    break;
                }
                removed += 1;
            }
        }
        // The forward path's jumps (issue 15), whether or not this run
        // forwards: a flush must leave nothing behind.
        for (table, parent, spec) in forward_jumps(&self.opts) {
            let mut args = vec!["-t".to_string(), table.into(), "-D".into(), parent.into()];
            args.extend(spec);
            for _ in 0..MAX_STALE_JUMPS {
                match self.iptables(fam, &args) {
                    Ok(ran) if ran.ok() => removed += 1,
                    _ => break,
                }
            }
        }
        if removed >= MAX_STALE_JUMPS {
            warn!(
                family = fam.name(),
                removed, "removed many jumps to our chain; more may remain"
            );
        }
        Ok(removed)
    }

    /// `fresh`: a start, whose set is emptied of what an earlier run left;
    /// otherwise a repair after a reload, which keeps the set's entries
    /// (an iptables reload leaves them, and they are the live grants; the
    /// daemon re-adds those anyway, in place).
    pub(super) fn setup_family(&self, fam: IpFamily, fresh: bool) -> Result<(), FwError> {
        let stale = self.remove_jumps(fam)?;
        let chain = &self.opts.chain;
        self.sets.ensure(fam, fresh, || {
            self.restore(fam, &format!("*filter\n:{chain} - [0:0]\nCOMMIT\n"))
        })?;
        // Declaring an existing chain in a --noflush restore flushes it, so
        // this one transaction both clears what was in it and (re)creates
        // the chain with its set rule and the jump on top. The set exists
        // by now (a rule cannot name a missing set).
        let mut drops = String::new();
        for spec in drop_specs(&self.opts, &self.silence) {
            drops.push_str(&format!("-A {} {}\n", self.opts.chain, restore_args(&spec)));
        }
        drops.push_str(&format!(
            "-A {} {}\n",
            self.opts.chain,
            restore_args(&ipset::match_spec(&self.opts, fam))
        ));
        let mut batch = format!(
            "*filter\n:{chain} - [0:0]\n{drops}-I {parent} 1 {jump}\n",
            chain = self.opts.chain,
            parent = self.opts.parent_chain,
            jump = restore_args(&self.jump_spec()),
        );
        if self.forwarding {
            let fwd = crate::firewall::forward::ipt_fwd_chain(&self.opts);
            batch.push_str(&format!(
                ":{fwd} - [0:0]\n-I FORWARD 1 {}\nCOMMIT\n*nat\n:{} - [0:0]\n-I PREROUTING 1 {}\n",
                restore_args(&crate::firewall::forward::ipt_fwd_jump(&self.opts)),
                self.opts.chain,
                restore_args(&crate::firewall::forward::ipt_nat_jump(&self.opts)),
            ));
        }
        batch.push_str("COMMIT\n");
        self.restore(fam, &batch)?;
        info!(
            family = fam.name(),
            chain = %self.opts.chain,
            stale_jumps = stale,
            "iptables chain and grant set installed, jump at the top of {}",
            self.opts.parent_chain
        );
        Ok(())
    }

    pub(super) fn teardown_family(&self, fam: IpFamily) -> Result<(), FwError> {
        let removed = match self.remove_jumps(fam) {
            Ok(n) => n,
            // No ip6tables binary: no rule of ours can exist there.
            Err(FwError::Spawn { .. }) if fam == IpFamily::V6 => return self.sets.destroy(fam),
            Err(e) => return Err(e),
        };
        let mut batch = String::new();
        for (table, chain) in [
            (
                "filter",
                crate::firewall::forward::ipt_fwd_chain(&self.opts),
            ),
            ("nat", self.opts.chain.clone()),
        ] {
            let args = ["-t".to_string(), table.into(), "-S".into(), chain.clone()];
            if self.iptables(fam, &args).is_ok_and(|r| r.ok()) {
                batch.push_str(&format!("*{table}\n-F {chain}\n-X {chain}\nCOMMIT\n"));
            }
        }
        let exists = self.iptables(fam, &["-S".into(), self.opts.chain.clone()])?;
        if exists.ok() {
            batch.push_str(&format!(
                "*filter\n-F {c}\n-X {c}\nCOMMIT\n",
                c = self.opts.chain
            ));
        }
        if batch.is_empty() {
            debug!(family = fam.name(), "no chain of ours to remove");
        } else {
            self.restore(fam, &batch)?;
            info!(
                family = fam.name(),
                jumps = removed,
                "removed our iptables chain"
            );
        }
        // Only now, with no rule of ours naming it (fail closed: a set
        // that stays matches nothing without the rule).
        self.sets.destroy(fam)
    }

    /// Whether our jump, chain, set rule and drops (and the forward
    /// jumps when forwarding) are all in place, in every family we use.
    pub(super) fn chain_intact(&mut self) -> Result<bool, FwError> {
        // The jump names our chain as its target: `-C` fails when either
        // is gone.
        let mut args = vec!["-C".to_string(), self.opts.parent_chain.clone()];
        args.extend(self.jump_spec());
        // A chain flushed by hand (`iptables -F SPA`) keeps the jump: the
        // set rule tells it, and so does our first drop rule (silent).
        let mut drop = None;
        if let Some(spec) = drop_specs(&self.opts, &self.silence).into_iter().next() {
            let mut a = vec!["-C".to_string(), self.opts.chain.clone()];
            a.extend(spec);
            drop = Some(a);
        }
        for fam in [IpFamily::V4, IpFamily::V6] {
            if fam == IpFamily::V6 && !self.v6 {
                continue;
            }
            if !self.iptables(fam, &args)?.ok() {
                return Ok(false);
            }
            let mut set_rule = vec!["-C".to_string(), self.opts.chain.clone()];
            set_rule.extend(ipset::match_spec(&self.opts, fam));
            if !self.iptables(fam, &set_rule)?.ok() {
                return Ok(false);
            }
            if let Some(a) = &drop {
                if !self.iptables(fam, a)?.ok() {
                    return Ok(false);
                }
            }
            if self.forwarding {
                for (table, parent, spec) in forward_jumps(&self.opts) {
                    let mut a = vec!["-t".to_string(), table.into(), "-C".into(), parent.into()];
                    a.extend(spec);
                    if !self.iptables(fam, &a)?.ok() {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Replaces the silent ports' drops in our chain (at once if it is
    /// installed, else at the next setup).
    pub(super) fn replace_silence(&mut self, new: &Silence) -> Result<(), FwError> {
        if !self.installed || *new == self.silence {
            self.silence = new.clone();
            return Ok(());
        }
        let mut batch = String::from("*filter\n");
        for spec in drop_specs(&self.opts, &self.silence) {
            batch.push_str(&format!("-D {} {}\n", self.opts.chain, restore_args(&spec)));
        }
        for spec in drop_specs(&self.opts, new) {
            batch.push_str(&format!(
                "-I {} 1 {}\n",
                self.opts.chain,
                restore_args(&spec)
            ));
        }
        batch.push_str("COMMIT\n");
        self.restore(IpFamily::V4, &batch)?;
        if self.v6 {
            self.restore(IpFamily::V6, &batch)?;
        }
        self.silence = new.clone();
        Ok(())
    }
}

/// The forward path's two jumps (issue 15) as (table, parent chain, rule
/// spec): one list for the flush that removes them and the check that finds
/// them, so the two cannot disagree on what a jump is.
fn forward_jumps(
    opts: &crate::firewall::FirewallOptions,
) -> [(&'static str, &'static str, Vec<String>); 2] {
    [
        (
            "filter",
            "FORWARD",
            crate::firewall::forward::ipt_fwd_jump(opts),
        ),
        (
            "nat",
            "PREROUTING",
            crate::firewall::forward::ipt_nat_jump(opts),
        ),
    ]
}
