//! iptables backend: our own chain, one ACCEPT rule per grant with a
//! kernel-side expiry (`-m time --datestop`), batches through
//! `iptables-restore --noflush` (one process, one atomic commit per family).
//!
//! Rules are always named by their full specification, never by position, so
//! an admin inserting rules of their own cannot make us delete the wrong one.

use super::silence::{self, Silence};
use super::{split_family, Access, Firewall, FirewallOptions, FwError, Ran, Runner};
use std::io::Write;
use std::process::{Child, Stdio};
use std::sync::Mutex;
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
    /// A started `iptables-restore --noflush` per family, blocked reading
    /// its stdin, so an open pays only for the commit and not for exec and
    /// start-up (measured: 2.4 ms cold, 1.1 ms warm). Only with the nf_tables
    /// variant, which takes no lock until it commits; an idle spare that
    /// never gets a batch reads EOF when we close it (or die) and exits
    /// having changed nothing.
    spares: Mutex<[Option<Child>; 2]>,
    prespawn: bool,
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
        Iptables {
            opts,
            run,
            v6: true,
            spares: Mutex::new([None, None]),
            prespawn: false,
            silence: Silence::default(),
            installed: false,
            forwarding: false,
        }
    }

    fn restore_argv(&self, fam: IpFamily) -> Vec<String> {
        let mut argv: Vec<String> = self.opts.exec_prefix.clone();
        argv.extend([
            self.restore_tool(fam).to_owned(),
            "-w".into(),
            self.wait(),
            "--noflush".into(),
        ]);
        argv
    }

    /// Starts the spare for `fam` if there is none.
    fn refill(&self, fam: IpFamily) {
        if !self.prespawn || (fam == IpFamily::V6 && !self.v6) {
            return;
        }
        let Ok(mut spares) = self.spares.lock() else {
            return;
        };
        let slot = &mut spares[fam as usize];
        if slot.is_some() {
            return;
        }
        let argv = self.restore_argv(fam);
        let Some((prog, args)) = argv.split_first() else {
            return;
        };
        match super::tools::command(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => *slot = Some(c),
            Err(e) => debug!(error = %e, "could not start a spare iptables-restore"),
        }
    }

    /// Hands a batch to the spare for `fam`, if one is alive.
    fn restore_with_spare(&self, fam: IpFamily, batch: &str) -> Option<Ran> {
        let mut child = self.spares.lock().ok()?[fam as usize].take()?;
        if !matches!(child.try_wait(), Ok(None)) {
            return None;
        }
        if let Some(mut pipe) = child.stdin.take() {
            let _ = pipe.write_all(batch.as_bytes());
        }
        let out = child.wait_with_output().ok()?;
        Some(Ran {
            cmd: self.restore_argv(fam).join(" "),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Closes the spares' stdin (they exit without doing anything) and reaps them.
    fn drop_spares(&self) {
        let Ok(mut spares) = self.spares.lock() else {
            return;
        };
        for slot in spares.iter_mut() {
            if let Some(mut c) = slot.take() {
                drop(c.stdin.take());
                let _ = c.wait();
            }
        }
    }

    fn tool(&self, fam: IpFamily) -> &str {
        match fam {
            IpFamily::V4 => &self.opts.iptables,
            IpFamily::V6 => &self.opts.ip6tables,
        }
    }

    fn restore_tool(&self, fam: IpFamily) -> &str {
        match fam {
            IpFamily::V4 => &self.opts.iptables_restore,
            IpFamily::V6 => &self.opts.ip6tables_restore,
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
        let ran = match self.restore_with_spare(fam, batch) {
            Some(r) => r,
            None => {
                let wait = self.wait();
                let argv = [self.restore_tool(fam), "-w", &wait, "--noflush"];
                self.run.run(&argv, Some(batch))?
            }
        };
        let res = ran.into_result().map(|_| ());
        self.refill(fam);
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

    fn setup_family(&self, fam: IpFamily) -> Result<(), FwError> {
        let stale = self.remove_jumps(fam)?;
        // Declaring an existing chain in a --noflush restore flushes it, so
        // this one transaction both clears stale grants and (re)creates the
        // chain with the jump on top.
        let mut drops = String::new();
        for spec in drop_specs(&self.opts, &self.silence) {
            drops.push_str(&format!("-A {} {}\n", self.opts.chain, restore_args(&spec)));
        }
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
            "iptables chain installed, jump at the top of {}",
            self.opts.parent_chain
        );
        Ok(())
    }

    fn teardown_family(&self, fam: IpFamily) -> Result<(), FwError> {
        let removed = match self.remove_jumps(fam) {
            Ok(n) => n,
            // No ip6tables binary: nothing of ours can exist there.
            Err(FwError::Spawn { .. }) if fam == IpFamily::V6 => return Ok(()),
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
            return Ok(());
        }
        self.restore(fam, &batch)?;
        info!(
            family = fam.name(),
            jumps = removed,
            "removed our iptables chain and its grants"
        );
        Ok(())
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
        self.prespawn = self
            .iptables(IpFamily::V4, &["-V".into()])
            .map(|r| r.stdout.contains("nf_tables"))
            .unwrap_or(false);
        self.setup_family(IpFamily::V4)?;
        match self.setup_family(IpFamily::V6) {
            Ok(()) => self.v6 = true,
            Err(e) => {
                self.v6 = false;
                warn!(error = %e, "ip6tables unusable: IPv4 grants only, IPv6 grants will fail");
            }
        }
        self.installed = true;
        Ok(())
    }

    fn intact(&mut self) -> Result<bool, FwError> {
        // The jump names our chain as its target: `-C` fails when either
        // is gone.
        let mut args = vec!["-C".to_string(), self.opts.parent_chain.clone()];
        args.extend(self.jump_spec());
        // A chain flushed by hand (`iptables -F SPA`) keeps the jump: our
        // first drop rule tells it (silent, the default).
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
        let done4 = if add4.is_empty() && rm4.is_empty() {
            Vec::new()
        } else {
            self.apply_family(IpFamily::V4, &add4, &rm4)?
        };
        if !(add6.is_empty() && rm6.is_empty()) {
            if let Err(e) = self.apply_family(IpFamily::V6, &add6, &rm6) {
                // Two tools, two transactions: undo the IPv4 half so the
                // call stays all or nothing.
                if !(add4.is_empty() && done4.is_empty()) {
                    let undo = batch(&self.opts, &done4, &add4);
                    if let Err(u) = self.restore(IpFamily::V4, &undo) {
                        warn!(error = %u, "could not undo the IPv4 half of a failed batch");
                    } else {
                        warn!("IPv6 half failed; IPv4 half undone");
                    }
                }
                return Err(e);
            }
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

    fn teardown(&mut self) -> Result<(), FwError> {
        self.opts.validate()?;
        self.drop_spares();
        self.prespawn = false;
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

/// One grant as `iptables` arguments (after `-A CHAIN`), in the order
/// `iptables -S` prints them so what the admin sees is what we wrote.
pub fn rule_spec(opts: &FirewallOptions, a: &Access) -> Vec<String> {
    let addr = a.canonical_addr();
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    let proto = a.grant.proto.name();
    vec![
        "-s".into(),
        format!("{addr}/{prefix}"),
        "-p".into(),
        proto.into(),
        "-m".into(),
        proto.into(),
        "--dport".into(),
        a.grant.port.to_string(),
    ]
    .into_iter()
    .chain(expiry_spec(opts, a))
    .chain(["-j".into(), "ACCEPT".into()])
    .collect()
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

/// (table, chain, rule) of every rule one grant is: an ACCEPT in our input
/// chain, or for a forward the DNAT and the forward ACCEPT (forward.rs).
pub fn rule_lines(opts: &FirewallOptions, a: &Access) -> Vec<(&'static str, String, Vec<String>)> {
    match a.forward {
        None => vec![("filter", opts.chain.clone(), rule_spec(opts, a))],
        Some(to) => super::forward::ipt_rules(opts, a, to, &expiry_spec(opts, a)),
    }
}

/// `spa-server exp=<secs>`: marks the rule as ours and says when it lapses
/// in the unit the daemon thinks in.
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

/// The `iptables-restore --noflush` input for one family: removes first, so
/// a refresh (remove old, add new) never has two rules for one grant.
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
    /// forward chain, both with the expiry, in the same restore input.
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
                 -m time --datestop {stop} -m comment --comment \"spa-server exp=1000000000\" -j ACCEPT\n\
                 -A SPA -s 198.18.0.2/32 -p tcp -m tcp --dport 22 -m time --datestop {stop} \
                 -m comment --comment \"spa-server exp=1000000000\" -j ACCEPT\nCOMMIT\n\
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
    fn rule_text_v4() {
        let o = FirewallOptions::default();
        let a = access("198.18.10.2", Proto::Tcp, 22, 1_893_456_001);
        assert_eq!(
            restore_args(&rule_spec(&o, &a)),
            "-s 198.18.10.2/32 -p tcp -m tcp --dport 22 -m time --datestop 2030-01-01T00:00:00 \
             -m comment --comment \"spa-server exp=1893456001\" -j ACCEPT"
        );
    }

    #[test]
    fn rule_text_v6_udp_and_mapped() {
        let o = FirewallOptions::default();
        let a = access("2001:2:0:10::2", Proto::Udp, 53, 1_893_456_001);
        assert_eq!(
            restore_args(&rule_spec(&o, &a)),
            "-s 2001:2:0:10::2/128 -p udp -m udp --dport 53 -m time --datestop 2030-01-01T00:00:00 \
             -m comment --comment \"spa-server exp=1893456001\" -j ACCEPT"
        );
        let m = access("::ffff:198.18.10.2", Proto::Tcp, 22, 10);
        assert!(restore_args(&rule_spec(&o, &m)).starts_with("-s 198.18.10.2/32 "));
    }

    #[test]
    fn batch_text_removes_before_adds() {
        let o = FirewallOptions::default();
        let old = access("198.18.10.2", Proto::Tcp, 22, 1_893_456_001);
        let new = access("198.18.10.2", Proto::Tcp, 22, 1_893_456_031);
        assert_eq!(
            batch(&o, &[new], &[old]),
            "*filter\n\
             -D SPA -s 198.18.10.2/32 -p tcp -m tcp --dport 22 -m time --datestop 2030-01-01T00:00:00 -m comment --comment \"spa-server exp=1893456001\" -j ACCEPT\n\
             -A SPA -s 198.18.10.2/32 -p tcp -m tcp --dport 22 -m time --datestop 2030-01-01T00:00:30 -m comment --comment \"spa-server exp=1893456031\" -j ACCEPT\n\
             COMMIT\n"
        );
        assert_eq!(batch(&o, &[], &[]), "*filter\nCOMMIT\n");
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
