//! nftables backend: grants are elements of two sets with per-element
//! timeouts (kernel-side expiry), matched by two rules at the top of the
//! admin's own chain.
//!
//! Why the admin's chain and not a table of our own: in nftables an `accept`
//! only ends the current base chain; every other base chain on the same hook
//! still sees the packet, so the admin's `reject` would win. Living inside
//! their chain is the only way our accept is final.

use super::nft_session::NftSession;
use super::silence::{self, Silence};
use super::{now_unix_ms, split_family, Access, Firewall, FirewallOptions, FwError, Runner};
use std::time::Duration;
use tracing::{debug, info, warn};

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
            let ran = self.run.run(
                &[
                    &self.opts.nft,
                    "-s",
                    "list",
                    "set",
                    &self.opts.nft_family,
                    &self.opts.nft_table,
                    &set,
                ],
                None,
            )?;
            Ok(ran.ok() && ran.stdout.contains("timeout 2h"))
        });
        if let Err(e) = self.transaction(&format!("delete set {t} {set}\n")) {
            warn!(error = %e, "could not delete the probe set {set}");
        }
        result.unwrap_or(false)
    }

    /// One `nft -f -` transaction: the kernel commits all of it or none.
    fn transaction(&self, script: &str) -> Result<(), FwError> {
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

    fn table(&self) -> String {
        format!("{} {}", self.opts.nft_family, self.opts.nft_table)
    }

    /// `nft -a -t list table` of the admin's table (with handles, without
    /// set elements: `-t`, so its cost does not grow with the live grants,
    /// issue 14); None when the table is missing.
    fn list_table(&self) -> Result<Option<String>, FwError> {
        let ran = self.run.run(
            &[
                &self.opts.nft,
                "-a",
                "-t",
                "list",
                "table",
                &self.opts.nft_family,
                &self.opts.nft_table,
            ],
            None,
        )?;
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
        let n = super::forward::nft_names(&self.opts);
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

    fn families(&self) -> (bool, bool) {
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
        self.opts.validate()?;
        self.session = None;
        let chain = self.run.run(
            &[
                &self.opts.nft,
                "list",
                "chain",
                &self.opts.nft_family,
                &self.opts.nft_table,
                &self.opts.nft_chain,
            ],
            None,
        )?;
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
            let ran = self.run.run(
                &[
                    &self.opts.nft,
                    "list",
                    "chain",
                    &self.opts.nft_family,
                    &self.opts.nft_table,
                    fwd,
                ],
                None,
            )?;
            if !ran.ok() {
                return Err(FwError::MissingChain {
                    what: format!(
                        "nftables forward chain `{} {fwd}` ([key.forward])",
                        self.table()
                    ),
                    detail: ran.stderr,
                });
            }
            script.push_str(&super::forward::nft_setup_script(&self.opts, fwd, v4, v6));
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
            let n = super::forward::nft_names(&self.opts);
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

    fn set_silence(&mut self, new: &Silence) -> Result<(), FwError> {
        if !self.installed || *new == self.silence {
            self.silence = new.clone();
            return Ok(());
        }
        let ran = self
            .run
            .run(
                &[
                    &self.opts.nft,
                    "-a",
                    "list",
                    "chain",
                    &self.opts.nft_family,
                    &self.opts.nft_table,
                    &self.opts.nft_chain,
                ],
                None,
            )?
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

    fn set_forwarding(&mut self, on: bool) {
        self.forwarding = on;
    }

    fn expires_itself(&self, a: &Access) -> bool {
        super::BackendKind::Nftables.expires_itself(a)
    }

    fn teardown(&mut self) -> Result<(), FwError> {
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

/// Which removes need a `delete element`: not those already expired (the
/// kernel no longer matches them and garbage-collects them itself; deleting
/// one races that and fails with ENOENT), and, when the kernel refreshes
/// timeouts in place, not those an add of the same key replaces.
pub fn plan(
    add: &[Access],
    remove: &[Access],
    now_ms: u64,
    timeout_update: bool,
) -> (Vec<Access>, Vec<Access>) {
    let (a4, a6) = split_family(add);
    let (r4, r6) = split_family(remove);
    let adds: Vec<Access> = a4.into_iter().chain(a6).collect();
    let add_keys: std::collections::HashSet<_> =
        adds.iter().map(|a| (a.canonical_addr(), a.grant)).collect();
    let removes: Vec<Access> = r4
        .into_iter()
        .chain(r6)
        .filter(|r| {
            if timeout_ms(r.expires_at, now_ms).is_none() {
                debug!(grant = %r, "already expired; the kernel removes it");
                return false;
            }
            !(timeout_update && add_keys.contains(&(r.canonical_addr(), r.grant)))
        })
        .collect();
    (adds, removes)
}

fn set_for<'a>(opts: &'a FirewallOptions, a: &Access) -> &'a str {
    if a.canonical_addr().is_ipv4() {
        &opts.nft_set4
    } else {
        &opts.nft_set6
    }
}

/// `198.18.10.2 . tcp . 22`: a set element key.
pub fn element(a: &Access) -> String {
    format!(
        "{} . {} . {}",
        a.canonical_addr(),
        a.grant.proto.name(),
        a.grant.port
    )
}

/// Sets and the two rules. Rules go to the top of the admin's chain
/// (`insert` without a position) so nothing of theirs drops first. They
/// match only new connections (`ct state new`): established traffic goes
/// on to the admin's `ct state established,related accept` without a set
/// lookup (issue 16, finding 1).
pub fn setup_script(opts: &FirewallOptions, v4: bool, v6: bool) -> String {
    let t = format!("{} {}", opts.nft_family, opts.nft_table);
    let mut s = String::new();
    for (on, addr_type, family, set) in [
        (v4, "ipv4_addr", "ip", &opts.nft_set4),
        (v6, "ipv6_addr", "ip6", &opts.nft_set6),
    ] {
        if !on {
            continue;
        }
        s.push_str(&format!(
            "add set {t} {set} {{ type {addr_type} . inet_proto . inet_service; flags timeout; }}\n"
        ));
        s.push_str(&format!(
            "insert rule {t} {} ct state new {family} saddr . meta l4proto . th dport @{set} accept comment \"{}\"\n",
            opts.nft_chain, opts.comment
        ));
    }
    s
}

/// The drop rules for the silent ports, inserted at the top of the admin's
/// chain. Any connection state: a stray non-SYN to a knock port gets no RST
/// either.
pub fn drop_script(opts: &FirewallOptions, s: &Silence) -> String {
    let t = format!("{} {}", opts.nft_family, opts.nft_table);
    s.ranges
        .iter()
        .map(|&(proto, lo, hi)| {
            format!(
                "insert rule {t} {} meta l4proto {} th dport {} drop comment \"{}\"\n",
                opts.nft_chain,
                proto.name(),
                silence::range_text(lo, hi, '-'),
                silence::comment(&opts.comment)
            )
        })
        .collect()
}

/// The longest element timeout we write: nft 1.0.6 rejects a seconds
/// component above about 2^32 / 1000 ("value too large"), so ~49.7 days.
/// Grants are capped far below this by policy.
pub const MAX_TIMEOUT_MS: u64 = 4_294_967_000;

/// Milliseconds left for a grant at `now_ms`, capped at [`MAX_TIMEOUT_MS`];
/// None when already expired (an element with `timeout 0` would never
/// expire, so it must not be added).
pub fn timeout_ms(expires_at: u64, now_ms: u64) -> Option<u64> {
    let end = expires_at.saturating_mul(1000);
    (end > now_ms).then(|| (end - now_ms).min(MAX_TIMEOUT_MS))
}

/// `30s500ms`: nft 1.0.6 refuses a bare millisecond count above 2^32/1000,
/// so seconds and milliseconds go in separate components.
pub fn timeout_text(ms: u64) -> String {
    match (ms / 1000, ms % 1000) {
        (0, m) => format!("{m}ms"),
        (s, 0) => format!("{s}s"),
        (s, m) => format!("{s}s{m}ms"),
    }
}

/// One transaction: deletes first, then adds, so a refresh (same key, later
/// expiry) replaces the element and its timeout.
pub fn apply_script(
    opts: &FirewallOptions,
    add: &[Access],
    remove: &[Access],
    now_ms: u64,
) -> String {
    let t = format!("{} {}", opts.nft_family, opts.nft_table);
    let mut s = String::new();
    // (collection, key, map value) of every element one grant is.
    let elements = |a: &Access| -> Vec<(String, String, String)> {
        match a.forward {
            None => vec![(set_for(opts, a).to_owned(), element(a), String::new())],
            Some(to) => {
                let [(m, k), (f, e)] = super::forward::nft_elements(opts, a, to);
                vec![
                    (m, k, super::forward::nft_map_value(to)),
                    (f, e, String::new()),
                ]
            }
        }
    };
    for r in remove {
        for (set, key, _) in elements(r) {
            s.push_str(&format!("delete element {t} {set} {{ {key} }}\n"));
        }
    }
    for a in add {
        match timeout_ms(a.expires_at, now_ms) {
            Some(ms) => {
                for (set, key, value) in elements(a) {
                    s.push_str(&format!(
                        "add element {t} {set} {{ {key} timeout {}{value} }}\n",
                        timeout_text(ms)
                    ));
                }
            }
            None => warn!(grant = %a, "grant already expired; not adding it"),
        }
    }
    s
}

/// What `nft -a list table` shows of ours.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// (chain, handle) of every rule carrying exactly our comment.
    pub rules: Vec<(String, u64)>,
    /// Every set name in the table.
    pub sets: Vec<String>,
}

/// Parses `nft -a list table` text. Only two shapes matter: `chain NAME {`
/// / `set NAME {` headers, and rule lines ending in
/// `comment "<ours>" # handle N`.
pub fn parse_listing(text: &str, comment: &str) -> Listing {
    let mut out = Listing::default();
    let mut chain: Option<String> = None;
    let tail = format!("comment \"{comment}\" # handle ");
    for line in text.lines() {
        let l = line.trim();
        let mut words = l.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("chain"), Some(name), Some("{")) => {
                chain = Some(name.to_owned());
                continue;
            }
            (Some("set"), Some(name), Some("{")) => {
                out.sets.push(name.to_owned());
                continue;
            }
            _ => {}
        }
        if let (Some(c), Some(pos)) = (&chain, l.rfind(&tail)) {
            if let Ok(h) = l[pos + tail.len()..].trim().parse::<u64>() {
                out.rules.push((c.clone(), h));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::access;
    use spa_proto::Proto;

    /// Issue 15: a forward is a map element (DNAT) and a set element
    /// (forward accept), both with the grant's timeout, in one transaction.
    #[test]
    fn a_forward_is_a_map_and_a_set_element() {
        let o = FirewallOptions::default();
        let mut a = access("198.18.0.2", Proto::Tcp, 2222, 100);
        a.forward = Some("10.20.0.5:22".parse().unwrap());
        assert_eq!(
            apply_script(&o, &[a], &[a], 70_000),
            "delete element inet filter spa4_dnat { 198.18.0.2 . tcp . 2222 }\n\
             delete element inet filter spa4_fwd { 198.18.0.2 . 10.20.0.5 . tcp . 22 }\n\
             add element inet filter spa4_dnat { 198.18.0.2 . tcp . 2222 timeout 30s : 10.20.0.5 . 22 }\n\
             add element inet filter spa4_fwd { 198.18.0.2 . 10.20.0.5 . tcp . 22 timeout 30s }\n"
        );
        let setup = crate::firewall::forward::nft_setup_script(&o, "forward", true, false);
        assert!(
            setup.contains("type nat hook prerouting priority dstnat"),
            "{setup}"
        );
        assert!(
            setup.contains("insert rule inet filter forward ct state new ip saddr . ip daddr . meta l4proto . th dport @spa4_fwd accept"),
            "{setup}"
        );
    }

    #[test]
    fn setup_text() {
        let o = FirewallOptions::default();
        assert_eq!(
            setup_script(&o, true, true),
            "add set inet filter spa4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }\n\
             insert rule inet filter input ct state new ip saddr . meta l4proto . th dport @spa4 accept comment \"spa-server\"\n\
             add set inet filter spa6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }\n\
             insert rule inet filter input ct state new ip6 saddr . meta l4proto . th dport @spa6 accept comment \"spa-server\"\n"
        );
        let o = FirewallOptions {
            nft_family: "ip".into(),
            ..Default::default()
        };
        assert!(!setup_script(&o, true, false).contains("spa6"));
    }

    #[test]
    fn apply_text() {
        let o = FirewallOptions::default();
        let old = access("198.18.11.2", Proto::Tcp, 22, 1000);
        let new = access("198.18.11.2", Proto::Tcp, 22, 1030);
        let v6 = access("2001:2:0:11::2", Proto::Udp, 53, 1010);
        assert_eq!(
            apply_script(&o, &[new, v6], &[old], 999_500),
            "delete element inet filter spa4 { 198.18.11.2 . tcp . 22 }\n\
             add element inet filter spa4 { 198.18.11.2 . tcp . 22 timeout 30s500ms }\n\
             add element inet filter spa6 { 2001:2:0:11::2 . udp . 53 timeout 10s500ms }\n"
        );
        // Expired: never `timeout 0` (which would mean "forever").
        assert_eq!(apply_script(&o, &[old], &[], 1_000_000), "");
        assert_eq!(timeout_ms(1000, 999_999), Some(1));
        assert_eq!(timeout_ms(1000, 1_000_000), None);
        assert_eq!(timeout_ms(u64::MAX, 0), Some(MAX_TIMEOUT_MS));
        assert_eq!(timeout_text(1), "1ms");
        assert_eq!(timeout_text(30_000), "30s");
        assert_eq!(timeout_text(MAX_TIMEOUT_MS), "4294967s");
    }

    #[test]
    fn plan_skips_expired_and_in_place_refreshes() {
        let old = access("198.18.11.2", Proto::Tcp, 22, 1000);
        let new = access("198.18.11.2", Proto::Tcp, 22, 1030);
        let other = access("198.18.11.3", Proto::Tcp, 22, 1000);
        let gone = access("198.18.11.4", Proto::Tcp, 22, 990);
        let now = 995_000;
        assert_eq!(
            plan(&[new], &[old, other, gone], now, false),
            (vec![new], vec![old, other])
        );
        assert_eq!(
            plan(&[new], &[old, other, gone], now, true),
            (vec![new], vec![other])
        );
        // Same key through an IPv4-mapped address is still the same element.
        let mapped = access("::ffff:198.18.11.2", Proto::Tcp, 22, 1000);
        assert_eq!(plan(&[new], &[mapped], now, true), (vec![new], vec![]));
        // Another port is another element.
        let udp = access("198.18.11.2", Proto::Udp, 22, 1000);
        assert_eq!(plan(&[new], &[udp], now, true), (vec![new], vec![udp]));
    }

    #[test]
    fn listing_parse() {
        let text = r#"table inet filter { # handle 1
	set spa4 { # handle 4
		type ipv4_addr . inet_proto . inet_service
		flags timeout
		elements = { 198.18.98.2 . tcp . 22 timeout 3m20s expires 2m27s112ms,
			     198.18.98.3 . tcp . 22 timeout 40d expires 39d23h59m59s976ms }
	}

	set spa6 { # handle 5
		type ipv6_addr . inet_proto . inet_service
		flags timeout
	}

	chain input { # handle 1
		type filter hook input priority filter; policy accept;
		ip6 saddr . meta l4proto . th dport @spa6 accept comment "spa-server" # handle 7
		ip saddr . meta l4proto . th dport @spa4 accept comment "spa-server" # handle 6
		ct state established,related accept # handle 2
		tcp dport 22 accept comment "spa-server-not" # handle 9
		tcp dport 22 reject # handle 3
	}
	chain other { # handle 10
		ip saddr @spa4 accept comment "spa-server" # handle 11
	}
}
"#;
        let l = parse_listing(text, "spa-server");
        assert_eq!(
            l.rules,
            vec![
                ("input".to_string(), 7),
                ("input".to_string(), 6),
                ("other".to_string(), 11)
            ]
        );
        assert_eq!(l.sets, vec!["spa4".to_string(), "spa6".to_string()]);
        assert_eq!(parse_listing("", "spa-server"), Listing::default());
    }
}
