//! Our objects in the admin's table: the grant sets, the rules at the top of
//! the admin's chain, the silent ports' drops and (when forwarding) the
//! forward chain's sets and nat maps. Installed at setup (after removing
//! what an earlier run left), checked after a reload by someone else, the
//! drops replaced, all removed at teardown. Found by our comment, never by
//! position.

use super::listing::parse_listing;
use super::text::{drop_script, setup_script};
use super::Nftables;
use crate::firewall::silence::{self, Silence};
use crate::firewall::{FwError, Ran};
use tracing::{debug, info, warn};

impl Nftables {
    /// Checks the admin's chain (and forward chain) exist, removes what an
    /// earlier run left, installs our sets and rules, probes refresh in place.
    pub(super) fn install(&mut self) -> Result<(), FwError> {
        self.opts.validate()?;
        self.session = None;
        let chain = self.list(&[], "chain", Some(&self.opts.nft_chain))?;
        if !chain.ok() {
            return Err(FwError::MissingChain {
                what: format!("nftables chain `{} {}`", self.table(), self.opts.nft_chain),
                detail: chain.stderr,
            });
        }
        if let Some(stale) = self.leftovers()? {
            if !stale.is_empty() {
                self.transaction(&(stale.join("\n") + "\n"))?;
                info!(
                    removed = stale.len(),
                    "removed nftables rules/sets a previous run left"
                );
            }
        }
        let (v4, v6) = self.families();
        let mut script = setup_script(&self.opts, v4, v6) + &drop_script(&self.opts, &self.silence);
        if self.forwarding {
            let fwd = &self.opts.nft_forward_chain;
            let ran = self.list(&[], "chain", Some(fwd))?;
            if !ran.ok() {
                return Err(FwError::MissingChain {
                    what: format!(
                        "nftables forward chain `{} {fwd}` ([key.forward])",
                        self.table()
                    ),
                    detail: ran.stderr,
                });
            }
            script.push_str(&crate::firewall::forward::nft_setup_script(
                &self.opts, fwd, v4, v6,
            ));
        }
        self.transaction(&script)?;
        self.installed = true;
        self.timeout_update = self.probe_timeout_update();
        info!(
            table = %self.table(),
            chain = %self.opts.nft_chain,
            refresh_in_place = self.timeout_update,
            "nftables sets installed, rules at the top of the admin's chain"
        );
        Ok(())
    }

    /// Adds an element to a scratch set twice with different timeouts and
    /// reads back which one the kernel kept. Any failure means "no".
    fn probe_timeout_update(&self) -> bool {
        let t = self.table();
        let set = format!("{}probe", self.opts.nft_set4);
        let elem = "127.0.0.1 . tcp . 1";
        let create = format!(
            "add set {t} {set} {{ type ipv4_addr . inet_proto . inet_service; flags timeout; }}\n\
             add element {t} {set} {{ {elem} timeout 60s }}\n"
        );
        let result = self.transaction(&create).and_then(|()| {
            self.transaction(&format!(
                "add element {t} {set} {{ {elem} timeout 7200s }}\n"
            ))?;
            let ran = self.list(&["-s"], "set", Some(&set))?;
            Ok(ran.ok() && ran.stdout.contains("timeout 2h"))
        });
        if let Err(e) = self.transaction(&format!("delete set {t} {set}\n")) {
            warn!(error = %e, "could not delete the probe set {set}");
        }
        result.unwrap_or(false)
    }

    /// `nft <flags> list <what> <family> <table> [name]` in the admin's
    /// table: every listing this backend reads, one argument order.
    fn list(&self, flags: &[&str], what: &str, name: Option<&str>) -> Result<Ran, FwError> {
        let mut argv: Vec<&str> = vec![&self.opts.nft];
        argv.extend_from_slice(flags);
        argv.extend(["list", what, &self.opts.nft_family, &self.opts.nft_table]);
        argv.extend(name);
        self.run.run(&argv, None)
    }

    /// `nft -a -t list table` of the admin's table (with handles, without
    /// set elements: `-t`, so its cost does not grow with the live grants,
    /// issue 14); None when the table is missing.
    fn list_table(&self) -> Result<Option<String>, FwError> {
        let ran = self.list(&["-a", "-t"], "table", None)?;
        Ok(ran.ok().then_some(ran.stdout))
    }

    /// Our rules (by comment, in any chain of the table) and our sets that
    /// exist now, as delete commands. None: the table itself is missing.
    fn leftovers(&self) -> Result<Option<Vec<String>>, FwError> {
        let Some(stdout) = self.list_table()? else {
            return Ok(None);
        };
        let found = parse_listing(&stdout, &self.opts.comment);
        let drops = parse_listing(&stdout, &silence::comment(&self.opts.comment));
        let mut cmds: Vec<String> = found
            .rules
            .iter()
            .chain(&drops.rules)
            .map(|(chain, handle)| format!("delete rule {} {chain} handle {handle}", self.table()))
            .collect();
        let probe = format!("{}probe", self.opts.nft_set4);
        let n = crate::firewall::forward::nft_names(&self.opts);
        if stdout.contains(&format!("chain {} {{", n.nat_chain)) {
            cmds.push(format!("delete chain {} {}", self.table(), n.nat_chain));
        }
        for map in [&n.dnat4, &n.dnat6] {
            if stdout.contains(&format!("map {map} {{")) {
                cmds.push(format!("delete map {} {map}", self.table()));
            }
        }
        for set in [
            &self.opts.nft_set4,
            &self.opts.nft_set6,
            &probe,
            &n.fwd4,
            &n.fwd6,
        ] {
            if found.sets.iter().any(|s| s == set) {
                cmds.push(format!("delete set {} {set}", self.table()));
            }
        }
        Ok(Some(cmds))
    }

    /// Whether our sets and rules (and the forward ones when forwarding)
    /// are all in place.
    pub(super) fn objects_intact(&mut self) -> Result<bool, FwError> {
        let Some(stdout) = self.list_table()? else {
            return Ok(false);
        };
        let found = parse_listing(&stdout, &self.opts.comment);
        let (v4, v6) = self.families();
        let mut want = Vec::new();
        if v4 {
            want.push(&self.opts.nft_set4);
        }
        if v6 {
            want.push(&self.opts.nft_set6);
        }
        let rules_in_chain = found
            .rules
            .iter()
            .filter(|(c, _)| *c == self.opts.nft_chain)
            .count();
        if self.forwarding {
            let n = crate::firewall::forward::nft_names(&self.opts);
            let fwd_rules = found
                .rules
                .iter()
                .filter(|(c, _)| *c == self.opts.nft_forward_chain)
                .count();
            let sets = [(v4, &n.fwd4), (v6, &n.fwd6)];
            if fwd_rules < want.len()
                || !stdout.contains(&format!("chain {} {{", n.nat_chain))
                || sets.iter().any(|(on, s)| *on && !found.sets.contains(s))
            {
                return Ok(false);
            }
        }
        Ok(rules_in_chain >= want.len() && want.iter().all(|s| found.sets.contains(s)))
    }

    /// Replaces the silent ports' drops (at once if installed, else at the
    /// next setup).
    pub(super) fn replace_silence(&mut self, new: &Silence) -> Result<(), FwError> {
        if !self.installed || *new == self.silence {
            self.silence = new.clone();
            return Ok(());
        }
        let ran = self
            .list(&["-a"], "chain", Some(&self.opts.nft_chain))?
            .into_result()?;
        let old = parse_listing(
            &format!("chain {} {{\n{}", self.opts.nft_chain, ran.stdout),
            &silence::comment(&self.opts.comment),
        );
        let mut script: String = old
            .rules
            .iter()
            .map(|(c, h)| format!("delete rule {} {c} handle {h}\n", self.table()))
            .collect();
        script.push_str(&drop_script(&self.opts, new));
        self.transaction(&script)?;
        self.silence = new.clone();
        Ok(())
    }

    /// Removes every rule, set, map and chain of ours (teardown, flush).
    pub(super) fn remove_ours(&mut self) -> Result<(), FwError> {
        self.opts.validate()?;
        self.session = None;
        self.installed = false;
        match self.leftovers()? {
            None => {
                debug!(table = %self.table(), "no nftables table, nothing to remove");
                Ok(())
            }
            Some(cmds) if cmds.is_empty() => Ok(()),
            Some(cmds) => {
                self.transaction(&(cmds.join("\n") + "\n"))?;
                info!(removed = cmds.len(), "removed our nftables rules and sets");
                Ok(())
            }
        }
    }
}
