//! The iptables backend's grants: one ipset `hash:ip,port` per family
//! (`<chain>4`, `<chain>6`), matched by ONE rule in our chain
//! (`-m set --match-set SPA4 src,dst -j ACCEPT`), so a new connection costs
//! one hash lookup whatever the number of grants (issue 14: with a rule per
//! grant, 6,000 grants took connect→RST from 17 µs to 260-365 µs, and a
//! close was a rule deletion at 14-26 ms). Every entry carries its own
//! `timeout`: the kernel stops matching it and removes it at the grant's
//! end, with no rule, timer or process of ours (also after SIGKILL).
//!
//! All of one call's set changes, both families, go to ONE `ipset -exist
//! restore` process (warm: [`Spare`]). `-exist` makes a refresh a single
//! `add` (it replaces the entry's timeout and comment in place: never a
//! moment with zero or two entries) and a remove of an entry the kernel
//! already expired a no-op. ipset has no transactions: a batch that fails
//! part way is undone with its inverse (also under `-exist`), and the batch
//! ends with `list -t` of the touched sets, whose `References:` says whether
//! our rule still points at them: an iptables reload (iptables-legacy
//! announces none) removes the rule but not the set, so an add would
//! "succeed" and match nothing; a set with no reference fails the call
//! (undone), which makes the daemon re-install the chain and retry.

use super::spare::Spare;
use super::{Access, FirewallOptions, FwError, Ran, Runner};
use spa_proto::IpFamily;
use std::collections::HashSet;
use std::net::IpAddr;
use tracing::{debug, warn};

/// The longest timeout ipset takes (seconds; `UINT_MAX / 1000`).
pub const MAX_TIMEOUT: u64 = 2_147_483;

/// The set holding `fam`'s grants: the chain's name and the family's digit
/// (at most 29 characters; ipset allows 31).
pub fn set_name(opts: &FirewallOptions, fam: IpFamily) -> String {
    let d = match fam {
        IpFamily::V4 => '4',
        IpFamily::V6 => '6',
    };
    format!("{}{d}", opts.chain)
}

fn fam_of(a: &Access) -> IpFamily {
    if a.canonical_addr().is_ipv4() {
        IpFamily::V4
    } else {
        IpFamily::V6
    }
}

fn family_word(fam: IpFamily) -> &'static str {
    match fam {
        IpFamily::V4 => "inet",
        IpFamily::V6 => "inet6",
    }
}

/// The set's `create` line: per-entry timeouts and comments (the comment
/// says `<comment> exp=<secs>`, as the rules did, so `ipset list` tells
/// the admin whose and until when), room for every grant the daemon may
/// hold (`max_grants_total` is capped at 65,536).
pub fn create_line(opts: &FirewallOptions, fam: IpFamily) -> String {
    format!(
        "create {} hash:ip,port family {} hashsize 1024 maxelem {} timeout 30 comment",
        set_name(opts, fam),
        family_word(fam),
        crate::limits::MAX_GRANTS_CEILING
    )
}

/// Whether `ipset list -t` output describes a set we can use as ours.
fn fits(list: &str, fam: IpFamily) -> bool {
    let header = list
        .lines()
        .find_map(|l| l.strip_prefix("Header: "))
        .unwrap_or("");
    list.lines().any(|l| l.trim() == "Type: hash:ip,port")
        && header.starts_with(&format!("family {} ", family_word(fam)))
        && header.contains(" timeout ")
        && header.contains(" comment")
}

/// The one rule that matches the set, as `iptables` arguments (after `-A CHAIN`).
pub fn match_spec(opts: &FirewallOptions, fam: IpFamily) -> Vec<String> {
    vec![
        "-m".into(),
        "set".into(),
        "--match-set".into(),
        set_name(opts, fam),
        "src,dst".into(),
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        opts.comment.clone(),
        "-j".into(),
        "ACCEPT".into(),
    ]
}

/// `198.18.0.2,tcp:22`
pub fn entry(a: &Access) -> String {
    format!(
        "{},{}:{}",
        a.canonical_addr(),
        a.grant.proto.name(),
        a.grant.port
    )
}

/// Whole seconds until `expires_at`, rounded up (the entry ends in
/// `[expires_at, expires_at + 1)`, never before), capped at what ipset
/// takes; `None` once it has passed (`timeout 0` would mean "forever").
pub fn timeout_secs(expires_at: u64, now_ms: u64) -> Option<u64> {
    let end = expires_at.saturating_mul(1000);
    (end > now_ms).then(|| (end - now_ms).div_ceil(1000).min(MAX_TIMEOUT))
}

/// The `ipset restore` lines for one call (input grants only; forwards are
/// rules): removes first, except those an add of the same entry replaces
/// in place and those already over (the kernel removes them itself: the
/// daemon's expiry costs no tool); adds of grants already over are left out.
pub fn batch(opts: &FirewallOptions, add: &[Access], remove: &[Access], now_ms: u64) -> String {
    let mut out = String::new();
    let key = |a: &Access| (a.canonical_addr(), a.grant);
    let written: HashSet<(IpAddr, spa_proto::Grant)> = add
        .iter()
        .filter(|a| a.forward.is_none() && timeout_secs(a.expires_at, now_ms).is_some())
        .map(key)
        .collect();
    for r in remove.iter().filter(|r| r.forward.is_none()) {
        if !written.contains(&key(r)) && timeout_secs(r.expires_at, now_ms).is_some() {
            out.push_str(&format!("del {} {}\n", set_name(opts, fam_of(r)), entry(r)));
        }
    }
    for a in add.iter().filter(|a| a.forward.is_none()) {
        if let Some(t) = timeout_secs(a.expires_at, now_ms) {
            out.push_str(&format!(
                "add {} {} timeout {t} comment \"{}\"\n",
                set_name(opts, fam_of(a)),
                entry(a),
                super::iptables::grant_comment(opts, a)
            ));
        }
    }
    out
}

/// `(set, references)` of every set in `ipset list -t` output.
fn references(list: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut name = None;
    for l in list.lines() {
        if let Some(n) = l.strip_prefix("Name: ") {
            name = Some(n.trim().to_owned());
        } else if let Some(r) = l.strip_prefix("References: ") {
            if let (Some(n), Ok(r)) = (name.take(), r.trim().parse()) {
                out.push((n, r));
            }
        }
    }
    out
}

/// Runs ipset for the iptables backend.
pub(crate) struct Sets {
    opts: FirewallOptions,
    run: Runner,
    spare: Spare,
}

impl Sets {
    pub fn new(opts: &FirewallOptions) -> Self {
        let mut argv = opts.exec_prefix.clone();
        argv.extend([opts.ipset.clone(), "-exist".into(), "restore".into()]);
        Sets {
            opts: opts.clone(),
            run: Runner::new(&opts.exec_prefix),
            spare: Spare::new(argv),
        }
    }

    /// Keep an `ipset restore` warm between batches (after setup), or not.
    pub fn warm(&mut self, on: bool) {
        self.spare.on = on;
        if on {
            self.spare.refill();
        } else {
            self.spare.stop();
        }
    }

    fn ipset(&self, args: &[&str]) -> Result<Ran, FwError> {
        let mut argv = vec![self.opts.ipset.as_str()];
        argv.extend(args);
        self.run.run(&argv, None)
    }

    /// One `ipset -exist restore` of `text` (warm when there is a spare).
    fn restore(&self, text: &str) -> Result<Ran, FwError> {
        debug!(batch = text, "ipset restore batch");
        let ran = match self.spare.run(text) {
            Some(r) => r,
            None => {
                let argv = [self.opts.ipset.as_str(), "-exist", "restore"];
                self.run.run(&argv, Some(text))?
            }
        };
        self.spare.refill();
        ran.into_result()
    }

    /// `fam`'s set exists with our type; emptied when `fresh` (a start:
    /// what an earlier run left goes). A set of that name with another
    /// type or options (an older version's, or made by hand) is destroyed
    /// and created again, after `unref` has emptied our chain so that no
    /// rule of ours refers to it.
    pub fn ensure(
        &self,
        fam: IpFamily,
        fresh: bool,
        unref: impl FnOnce() -> Result<(), FwError>,
    ) -> Result<(), FwError> {
        let name = set_name(&self.opts, fam);
        let listed = self.ipset(&["list", "-t", &name])?;
        let mut text = String::new();
        if listed.ok() && !fits(&listed.stdout, fam) {
            warn!(set = %name, "an ipset of our name but not ours (type or options): replacing it");
            unref()?;
            self.ipset(&["destroy", &name])?.into_result()?;
            text.push_str(&create_line(&self.opts, fam));
            text.push('\n');
        } else if !listed.ok() {
            text.push_str(&create_line(&self.opts, fam));
            text.push('\n');
        } else if fresh {
            text.push_str(&format!("flush {name}\n"));
        }
        if !text.is_empty() {
            self.restore(&text)?;
        }
        Ok(())
    }

    /// One call's set changes (see the module doc): all applied and our
    /// rule still referring to every set touched, or none applied.
    pub fn apply(&self, add: &[Access], remove: &[Access]) -> Result<(), FwError> {
        let now_ms = super::now_unix_ms();
        let mut text = batch(&self.opts, add, remove, now_ms);
        if text.is_empty() {
            return Ok(());
        }
        let touched: Vec<String> = [IpFamily::V4, IpFamily::V6]
            .into_iter()
            .filter(|f| add.iter().chain(remove).any(|a| fam_of(a) == *f))
            .map(|f| set_name(&self.opts, f))
            .collect();
        for s in &touched {
            text.push_str(&format!("list -t {s}\n"));
        }
        let err = match self.restore(&text) {
            Ok(ran) => match references(&ran.stdout)
                .into_iter()
                .find(|(s, r)| *r == 0 && touched.contains(s))
            {
                None => return Ok(()),
                Some((set, _)) => FwError::Unreferenced { set },
            },
            Err(e) => e,
        };
        // Undo whatever part went in: the inverse call (a refresh's inverse
        // re-adds the old entry in place).
        let undo = batch(&self.opts, remove, add, now_ms);
        if !undo.is_empty() {
            if let Err(u) = self.restore(&undo) {
                warn!(error = %u, "could not undo a failed ipset batch");
            }
        }
        Err(err)
    }

    /// Destroys `fam`'s set (our rule must be gone already). A set that is
    /// not there is fine; one that cannot be destroyed (something else
    /// still refers to it) is emptied, so nothing matches it, and named.
    pub fn destroy(&self, fam: IpFamily) -> Result<(), FwError> {
        let name = set_name(&self.opts, fam);
        let ran = match self.ipset(&["list", "-n", &name]) {
            Ok(r) => r,
            // No ipset tool: no set of ours can be there to match.
            Err(FwError::Spawn { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !ran.ok() {
            return Ok(());
        }
        let destroyed = self.ipset(&["destroy", &name])?;
        if destroyed.ok() {
            return Ok(());
        }
        let _ = self.ipset(&["flush", &name]);
        Err(destroyed.into_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::access;
    use spa_proto::Proto;

    const NOW_MS: u64 = 1_000_000_000_500;

    #[test]
    fn timeouts_round_up_and_never_mean_forever() {
        assert_eq!(timeout_secs(1_000_000_030, NOW_MS), Some(30));
        assert_eq!(timeout_secs(1_000_000_001, NOW_MS), Some(1));
        assert_eq!(timeout_secs(1_000_000_000, NOW_MS), None);
        assert_eq!(timeout_secs(999_999_000, NOW_MS), None);
        assert_eq!(timeout_secs(u64::MAX, NOW_MS), Some(MAX_TIMEOUT));
    }

    #[test]
    fn batch_text() {
        let o = FirewallOptions::default();
        let exp = 1_000_000_030;
        let a4 = access("198.18.0.2", Proto::Tcp, 22, exp);
        let a6 = access("::ffff:198.18.0.3", Proto::Udp, 53, exp);
        let b6 = access("2001:db8::2", Proto::Tcp, 22, exp);
        assert_eq!(
            batch(&o, &[a4, a6], &[b6], NOW_MS),
            "del SPA6 2001:db8::2,tcp:22\n\
             add SPA4 198.18.0.2,tcp:22 timeout 30 comment \"spa-server exp=1000000030\"\n\
             add SPA4 198.18.0.3,udp:53 timeout 30 comment \"spa-server exp=1000000030\"\n"
        );
        // A refresh is one add (in place); its inverse re-adds the old one.
        let new = Access {
            expires_at: exp + 30,
            ..a4
        };
        assert_eq!(
            batch(&o, &[new], &[a4], NOW_MS),
            "add SPA4 198.18.0.2,tcp:22 timeout 60 comment \"spa-server exp=1000000060\"\n"
        );
        assert_eq!(
            batch(&o, &[a4], &[new], NOW_MS),
            "add SPA4 198.18.0.2,tcp:22 timeout 30 comment \"spa-server exp=1000000030\"\n"
        );
        // An add already over is left out, and then its remove is not.
        let over = Access {
            expires_at: 1_000_000_000,
            ..a4
        };
        assert_eq!(
            batch(&o, &[over], &[a4], NOW_MS),
            "del SPA4 198.18.0.2,tcp:22\n"
        );
        // Removes of grants already over: the kernel's (no tool at all).
        assert_eq!(batch(&o, &[], &[over], NOW_MS), "");
        // Forwards are rules, not entries.
        let mut fwd = a4;
        fwd.forward = Some("10.0.0.5:22".parse().unwrap());
        assert_eq!(batch(&o, &[fwd], &[fwd], NOW_MS), "");
    }

    #[test]
    fn set_text_and_checks() {
        let o = FirewallOptions::default();
        assert_eq!(
            create_line(&o, IpFamily::V6),
            "create SPA6 hash:ip,port family inet6 hashsize 1024 maxelem 65536 timeout 30 comment"
        );
        assert_eq!(
            match_spec(&o, IpFamily::V4).join(" "),
            "-m set --match-set SPA4 src,dst -m comment --comment spa-server -j ACCEPT"
        );
        let list =
            "Name: SPA4\nType: hash:ip,port\nRevision: 7\nHeader: family inet hashsize 1024 \
                    maxelem 65536 timeout 30 comment bucketsize 12 initval 0x1\nSize in memory: 1\n\
                    References: 1\nNumber of entries: 0\nName: SPA6\nType: hash:ip,port\n\
                    References: 0\n";
        assert!(fits(list, IpFamily::V4));
        assert!(!fits(list, IpFamily::V6));
        assert!(!fits(&list.replace(" comment", ""), IpFamily::V4));
        assert!(!fits(
            &list.replace("hash:ip,port", "hash:ip"),
            IpFamily::V4
        ));
        assert_eq!(
            references(list),
            vec![("SPA4".to_string(), 1), ("SPA6".to_string(), 0)]
        );
    }
}
