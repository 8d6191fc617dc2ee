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

use super::ipset::{self, Sets};
use super::silence::{self, Silence};
use super::spare::Spare;
use super::{split_family, Access, Firewall, FirewallOptions, FwError, Runner};
use tracing::{debug, info, warn};

/// How many stale jumps setup/teardown remove at most; more than a handful
/// means something else keeps adding them, and looping forever would hide it.
const MAX_STALE_JUMPS: usize = 64;

/// The largest `--datestop` xt_time accepts (its field is 32-bit).
const MAX_DATESTOP: u64 = i32::MAX as u64;

use spa_proto::IpFamily;

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

    fn jump_spec(&self) -> Vec<String> {
        jump_spec(&self.opts)
    }

    /// Deletes every jump of ours from the parent chain (bounded), in
    /// today's form and in the form earlier versions wrote (every state),
    /// so an upgrade leaves no jump of the old kind behind.
    fn remove_jumps(&self, fam: IpFamily) -> Result<usize, FwError> {
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
        for (table, parent, spec) in [
            (
                "filter",
                "FORWARD",
                super::forward::ipt_fwd_jump(&self.opts),
            ),
            (
                "nat",
                "PREROUTING",
                super::forward::ipt_nat_jump(&self.opts),
            ),
        ] {
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
    fn setup_family(&self, fam: IpFamily, fresh: bool) -> Result<(), FwError> {
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
            let fwd = super::forward::ipt_fwd_chain(&self.opts);
            batch.push_str(&format!(
                ":{fwd} - [0:0]\n-I FORWARD 1 {}\nCOMMIT\n*nat\n:{} - [0:0]\n-I PREROUTING 1 {}\n",
                restore_args(&super::forward::ipt_fwd_jump(&self.opts)),
                self.opts.chain,
                restore_args(&super::forward::ipt_nat_jump(&self.opts)),
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

    fn teardown_family(&self, fam: IpFamily) -> Result<(), FwError> {
        let removed = match self.remove_jumps(fam) {
            Ok(n) => n,
            // No ip6tables binary: no rule of ours can exist there.
            Err(FwError::Spawn { .. }) if fam == IpFamily::V6 => return self.sets.destroy(fam),
            Err(e) => return Err(e),
        };
        let mut batch = String::new();
        for (table, chain) in [
            ("filter", super::forward::ipt_fwd_chain(&self.opts)),
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
                for (table, parent, spec) in [
                    (
                        "filter",
                        "FORWARD",
                        super::forward::ipt_fwd_jump(&self.opts),
                    ),
                    (
                        "nat",
                        "PREROUTING",
                        super::forward::ipt_nat_jump(&self.opts),
                    ),
                ] {
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

    fn set_silence(&mut self, new: &Silence) -> Result<(), FwError> {
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

/// Match and target of our jump, as `iptables` arguments. Only new
/// connections (`--ctstate NEW`) enter our chain: a grant admits the first
/// packet, the admin's ESTABLISHED,RELATED accept carries the rest, and
/// established traffic never walks the grant rules (issue 16, finding 1:
/// 6000 rules took every packet's cost from 17 µs to over 260 µs).
pub fn jump_spec(opts: &FirewallOptions) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "-m".into(),
        "conntrack".into(),
        "--ctstate".into(),
        "NEW".into(),
    ];
    v.extend(old_jump_spec(opts));
    v
}

/// The jump earlier versions installed (every state): removed at setup and
/// teardown, never installed.
fn old_jump_spec(opts: &FirewallOptions) -> Vec<String> {
    vec![
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        opts.comment.clone(),
        "-j".into(),
        opts.chain.clone(),
    ]
}

/// The DROP rules that keep the SPA and knock ports silent, as `iptables`
/// arguments (after `-A CHAIN`).
pub fn drop_specs(opts: &FirewallOptions, s: &Silence) -> Vec<Vec<String>> {
    s.ranges
        .iter()
        .map(|&(proto, lo, hi)| {
            let p = proto.name();
            vec![
                "-p".into(),
                p.into(),
                "-m".into(),
                p.into(),
                "--dport".into(),
                silence::range_text(lo, hi, ':'),
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                silence::comment(&opts.comment),
                "-j".into(),
                "DROP".into(),
            ]
        })
        .collect()
}

fn restore_tool(opts: &FirewallOptions, fam: IpFamily) -> &str {
    match fam {
        IpFamily::V4 => &opts.iptables_restore,
        IpFamily::V6 => &opts.ip6tables_restore,
    }
}

/// `[prefix..] iptables-restore -w N --noflush`, for a warm spare.
fn restore_argv(opts: &FirewallOptions, fam: IpFamily) -> Vec<String> {
    let mut argv: Vec<String> = opts.exec_prefix.clone();
    argv.extend([
        restore_tool(opts, fam).to_owned(),
        "-w".into(),
        opts.lock_wait_secs.to_string(),
        "--noflush".into(),
    ]);
    argv
}

/// The kernel-side expiry and our comment, shared by every rule of a grant.
fn expiry_spec(opts: &FirewallOptions, a: &Access) -> Vec<String> {
    vec![
        "-m".into(),
        "time".into(),
        "--datestop".into(),
        datestop(a.expires_at),
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        grant_comment(opts, a),
    ]
}

/// (table, chain, rule) of every rule one grant is: for a forward the DNAT
/// and the forward ACCEPT (forward.rs); none for an input grant, which is
/// an entry of the grant set (ipset.rs).
pub fn rule_lines(opts: &FirewallOptions, a: &Access) -> Vec<(&'static str, String, Vec<String>)> {
    match a.forward {
        None => Vec::new(),
        Some(to) => super::forward::ipt_rules(opts, a, to, &expiry_spec(opts, a)),
    }
}

/// `spa-server exp=<secs>`: marks the rule or set entry as ours and says
/// when it lapses in the unit the daemon thinks in.
pub fn grant_comment(opts: &FirewallOptions, a: &Access) -> String {
    format!("{} exp={}", opts.comment, a.expires_at)
}

/// The last second (UTC) the rule matches. xt_time matches while
/// `now <= datestop` at one-second resolution, and a grant is open while
/// `now < expires_at`, so the last matching second is `expires_at - 1`.
/// iptables reads the value as UTC (only `--kerneltz` would change that).
pub fn datestop(expires_at: u64) -> String {
    let t = expires_at.saturating_sub(1).min(MAX_DATESTOP);
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm), so we need no date crate for one format.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Arguments as one `iptables-restore` line: words with spaces quoted.
fn restore_args(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `iptables-restore --noflush` input for one family's forward rules:
/// removes first, so a refresh (remove old, add new) never has two rules
/// for one grant. Input grants write nothing here (set entries).
pub fn batch(opts: &FirewallOptions, add: &[Access], remove: &[Access]) -> String {
    let mut tables: Vec<(&str, String)> = vec![("filter", String::new())];
    for (op, list) in [("-D", remove), ("-A", add)] {
        for a in list {
            for (table, chain, spec) in rule_lines(opts, a) {
                let line = format!("{op} {chain} {}\n", restore_args(&spec));
                match tables.iter_mut().find(|(t, _)| *t == table) {
                    Some((_, body)) => body.push_str(&line),
                    None => tables.push((table, line)),
                }
            }
        }
    }
    tables
        .into_iter()
        .filter(|(t, body)| *t == "filter" || !body.is_empty())
        .map(|(t, body)| format!("*{t}\n{body}COMMIT\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::access;
    use proptest::prelude::*;
    use spa_proto::Proto;

    /// Issue 15: a forward is a DNAT in the nat table and an ACCEPT in our
    /// forward chain, both with the expiry, in the same restore input; an
    /// input grant is a set entry and writes no rule (issue 14).
    #[test]
    fn a_forward_batch_writes_nat_and_forward_rules() {
        let o = FirewallOptions::default();
        let mut a = access("198.18.0.2", Proto::Tcp, 2222, 1_000_000_000);
        a.forward = Some("10.20.0.5:22".parse().unwrap());
        let local = access("198.18.0.2", Proto::Tcp, 22, 1_000_000_000);
        let b = batch(&o, &[a, local], &[]);
        let stop = datestop(1_000_000_000);
        assert_eq!(
            b,
            format!(
                "*filter\n-A SPA-FWD -s 198.18.0.2/32 -d 10.20.0.5/32 -p tcp -m tcp --dport 22 \
                 -m time --datestop {stop} -m comment --comment \"spa-server exp=1000000000\" -j ACCEPT\nCOMMIT\n\
                 *nat\n-A SPA -s 198.18.0.2/32 -p tcp -m tcp --dport 2222 -m addrtype --dst-type LOCAL \
                 -m time --datestop {stop} -m comment --comment \"spa-server exp=1000000000\" \
                 -j DNAT --to-destination 10.20.0.5:22\nCOMMIT\n"
            )
        );
    }

    #[test]
    fn datestop_is_utc_and_one_second_early() {
        assert_eq!(datestop(1), "1970-01-01T00:00:00");
        assert_eq!(datestop(1_893_456_000), "2029-12-31T23:59:59");
        assert_eq!(datestop(1_893_456_001), "2030-01-01T00:00:00");
        // 2024-02-29 12:34:56 UTC
        assert_eq!(datestop(1_709_210_097), "2024-02-29T12:34:56");
        assert_eq!(datestop(u64::MAX), "2038-01-19T03:14:07");
        assert_eq!(datestop(0), "1970-01-01T00:00:00");
    }

    #[test]
    fn input_grants_write_no_rule() {
        let o = FirewallOptions::default();
        let old = access("198.18.10.2", Proto::Tcp, 22, 1_893_456_001);
        let new = access("2001:2::2", Proto::Udp, 53, 1_893_456_031);
        assert!(rule_lines(&o, &old).is_empty());
        assert_eq!(batch(&o, &[new], &[old]), "*filter\nCOMMIT\n");
    }

    #[test]
    fn jump_text() {
        let o = FirewallOptions::default();
        assert_eq!(
            restore_args(&jump_spec(&o)),
            "-m conntrack --ctstate NEW -m comment --comment spa-server -j SPA"
        );
    }

    proptest! {
        #[test]
        fn datestop_round_trips(t in 1u64..=MAX_DATESTOP) {
            let s = datestop(t + 1);
            let (date, time) = s.split_once('T').unwrap();
            let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
            let h: Vec<u64> = time.split(':').map(|x| x.parse().unwrap()).collect();
            // days_from_civil, the inverse, written independently.
            let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
            let era = y.div_euclid(400);
            let yoe = y - era * 400;
            let doy = (153 * m + 2) / 5 + d[2] - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            let days = era * 146_097 + doe - 719_468;
            prop_assert_eq!(days as u64 * 86_400 + h[0] * 3600 + h[1] * 60 + h[2], t);
        }
    }
}
