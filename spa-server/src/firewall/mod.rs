//! The firewall interface and its backends.
//!
//! The daemon decides *what* is open; a backend only turns a list of changes
//! into one atomic batch for the kernel. Both real backends give every grant a
//! kernel-side expiry (iptables `-m time --datestop`, nftables set-element
//! timeouts), so a grant closes on time even when the daemon is killed with
//! SIGKILL and nothing is left to remove it. See docs/firewall.md.
//!
//! Backends run the stock command-line tools (`iptables-restore`, `nft -f -`)
//! rather than speaking netlink: the tools own the ruleset encoding, are what
//! the admin debugs with, and one process per batch measured ≈2 ms.

pub mod contract;
/// Tests only: a release build has no firewall that pretends.
#[cfg(test)]
pub mod fake;
pub mod forward;
pub mod ipset;
pub mod iptables;
mod nft_session;
pub mod nftables;
mod run;
pub mod silence;
mod spare;
pub mod tools;

#[cfg(test)]
pub use fake::{FakeCall, FakeFirewall};
pub(crate) use run::{Ran, Runner};
pub use silence::Silence;

use serde::Deserialize;
use spa_proto::Grant;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One source-scoped grant as the firewall sees it.
///
/// The whole value (including `expires_at`) identifies one rule or set
/// element: a refresh is "remove the old Access, add the new one".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access {
    pub addr: IpAddr,
    pub grant: Grant,
    /// Unix seconds (UTC). The grant is open while `now < expires_at`.
    pub expires_at: u64,
    /// A forward through this gateway (issue 15): the grant's port, for
    /// `addr` only, is DNATed to this host and port behind the gateway and
    /// ACCEPTed in the forward path, instead of an ACCEPT in the input path.
    pub forward: Option<std::net::SocketAddr>,
}

impl Access {
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) arrive as IPv4 packets
    /// on the wire, so a rule must be written for the IPv4 form.
    pub fn canonical_addr(&self) -> IpAddr {
        self.addr.to_canonical()
    }
}

/// Test shorthand for the backends' unit tests: `access("198.18.0.2", Tcp, 22, exp)`.
#[cfg(test)]
pub(crate) fn access(addr: &str, proto: spa_proto::Proto, port: u16, exp: u64) -> Access {
    Access {
        addr: addr.parse().expect("test address"),
        grant: Grant::new(proto, port).expect("test port"),
        expires_at: exp,
        forward: None,
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.canonical_addr(), self.grant)?;
        if let Some(to) = self.forward {
            write!(f, " -> {to}")?;
        }
        write!(f, " until {}", self.expires_at)
    }
}

/// Why a firewall call failed. Every variant names what was run or what is
/// missing, so the single log line the daemon writes is enough to act on.
#[derive(Debug)]
pub enum FwError {
    /// The tool could not be started or fed its batch.
    Spawn { cmd: String, error: std::io::Error },
    /// The tool ran and refused.
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// The admin's nftables table or chain we hook into does not exist.
    MissingChain { what: String, detail: String },
    /// A grant for an address family this backend cannot serve (no
    /// ip6tables, or an nftables table of family `ip`).
    FamilyUnavailable {
        backend: &'static str,
        addr: IpAddr,
        why: String,
    },
    /// A name from the configuration that would not survive being pasted
    /// into a rule (chain, set, table, comment).
    BadOption { field: &'static str, value: String },
    /// A tool the backend runs is not where [`tools::resolve`] looks.
    ToolMissing {
        field: &'static str,
        tool: String,
        searched: String,
        package: &'static str,
    },
    /// A key forwards to a family whose IP forwarding is off (issue 15).
    ForwardingOff {
        sysctl: &'static str,
        example: String,
    },
    /// The iptables backend's grant set is no longer referred to by our
    /// rule: the ruleset was reloaded under us (the set survives that).
    Unreferenced { set: String },
    /// `FakeFirewall` was told to fail.
    Injected { call: &'static str },
    /// `apply` before `setup` (only the fake checks this; the real tools
    /// fail on the missing chain or set).
    NotSetUp,
}

impl fmt::Display for FwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FwError::Spawn { cmd, error } => write!(f, "`{cmd}` could not run: {error}"),
            FwError::Failed {
                cmd,
                status,
                stderr,
            } => {
                let stderr = stderr.trim();
                if stderr.is_empty() {
                    write!(f, "`{cmd}` failed ({status}) with no message")
                } else {
                    write!(f, "`{cmd}` failed ({status}): {stderr}")
                }
            }
            FwError::MissingChain { what, detail } => write!(
                f,
                "{what} does not exist ({}); spa-server inserts its rules into the \
                 admin's chain: create it (Debian: /etc/nftables.conf) or name yours \
                 with nft_family / nft_table / nft_chain in [firewall_options]",
                detail.trim()
            ),
            FwError::FamilyUnavailable { backend, addr, why } => {
                write!(f, "{backend} cannot open {addr}: {why}")
            }
            FwError::BadOption { field, value } => write!(
                f,
                "firewall.{field} = {value:?}: only letters, digits, '_', '-' and '.' \
                 (at most 28 characters) are allowed"
            ),
            FwError::ToolMissing {
                field,
                tool,
                searched,
                package,
            } => write!(
                f,
                "firewall tool `{tool}` not found (searched {searched}); install it \
                 (Debian: apt-get install {package}) or set firewall_options.{field} to its absolute path"
            ),
            FwError::ForwardingOff { sysctl, example } => write!(
                f,
                "IP forwarding is off ({sysctl} = 0) but [key.forward] forwards {example}: \
                 set `sysctl -w {sysctl}=1` (and persist it in /etc/sysctl.d/) or remove the forward"
            ),
            FwError::Unreferenced { set } => write!(
                f,
                "ipset {set} is no longer matched by our rule (References: 0): the iptables \
                 ruleset was reloaded under us; the batch was undone and our chain is re-installed"
            ),
            FwError::Injected { call } => write!(f, "fake firewall: injected failure in {call}"),
            FwError::NotSetUp => write!(f, "fake firewall: apply before setup"),
        }
    }
}

impl std::error::Error for FwError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FwError::Spawn { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What the daemon needs from a firewall. One call = one kernel transaction
/// where the backend can make it so; see each method for the contract.
pub trait Firewall: Send {
    fn name(&self) -> &'static str;
    /// Remove whatever a previous instance left (our chain/sets/jump, stale
    /// grants), then create ours. Idempotent.
    fn setup(&mut self) -> Result<(), FwError>;
    /// ONE atomic batch: remove `remove`, add `add`; all or nothing. A remove
    /// of something no longer there (someone flushed our chain by hand, or the
    /// kernel already expired the element) does not make the add fail: the
    /// backend retries without the vanished removes and logs it.
    fn apply(&mut self, add: &[Access], remove: &[Access]) -> Result<(), FwError>;
    /// Remove every grant, our chain/sets and the jump. Idempotent (nothing to
    /// remove = Ok). Used on SIGTERM and by `spa-server flush`, also when no
    /// daemon runs.
    fn teardown(&mut self) -> Result<(), FwError>;
    /// The ports to keep silent ([`Silence`]): before `setup`, remembered
    /// for it; after, the drop rules are replaced in one transaction. The
    /// default (the fake) only accepts it.
    fn set_silence(&mut self, silence: &Silence) -> Result<(), FwError> {
        let _ = silence;
        Ok(())
    }
    /// Whether our chain, jump and sets are all in place (false after the
    /// admin reloaded the firewall). Read-only. The default always says
    /// yes; every registered backend and the fake override it.
    fn intact(&mut self) -> Result<bool, FwError> {
        Ok(true)
    }
    /// Whether some grant may be a forward (issue 15): before `setup`, so
    /// setup also installs the NAT and forward-path hooks. The default (the
    /// fake) only accepts it.
    fn set_forwarding(&mut self, on: bool) {
        let _ = on;
    }
    /// Whether the kernel removes what `a` is by itself at its end (set
    /// elements with a timeout), so the daemon's expiry needs no call for
    /// it (issue 14: 10,000 grants ending cost no batch, no privsep frame).
    /// The default (the fake) says no: its expiry is a remove.
    fn expires_itself(&self, a: &Access) -> bool {
        let _ = a;
        false
    }
}

/// Which backend the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Iptables,
    Nftables,
}

/// One backend: its kind, the names the configuration and `--firewall`
/// accept (the first is its name), and how to build it.
pub struct Registration {
    pub kind: BackendKind,
    pub names: &'static [&'static str],
    pub build: fn(FirewallOptions) -> Box<dyn Firewall>,
}

/// Every backend, in one place: parsing a name, building one, and
/// `spa-server flush` without a configuration (which must clear them all,
/// or a crashed daemon's rules of a forgotten backend stay) read this table.
/// The fake firewall is not here: it is for tests only.
pub const BACKENDS: &[Registration] = &[
    Registration {
        kind: BackendKind::Iptables,
        names: &["iptables"],
        build: |o| Box::new(iptables::Iptables::new(o)),
    },
    Registration {
        kind: BackendKind::Nftables,
        names: &["nftables", "nft"],
        build: |o| Box::new(nftables::Nftables::new(o)),
    },
];

impl BackendKind {
    fn registration(self) -> &'static Registration {
        // Every kind has its entry (the test below checks).
        BACKENDS
            .iter()
            .find(|r| r.kind == self)
            .unwrap_or(&BACKENDS[0])
    }

    pub fn as_str(self) -> &'static str {
        self.registration().names.first().copied().unwrap_or("?")
    }

    /// Every registered backend.
    pub fn all() -> impl Iterator<Item = BackendKind> {
        BACKENDS.iter().map(|r| r.kind)
    }

    /// [`Firewall::expires_itself`] for this backend: iptables grants are
    /// ipset entries with a timeout, but a forward is rules (`--datestop`
    /// stops matching; the rules stay until removed); nftables grants and
    /// forwards are all set and map elements with a timeout.
    pub fn expires_itself(self, a: &Access) -> bool {
        match self {
            BackendKind::Iptables => a.forward.is_none(),
            BackendKind::Nftables => true,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown backend name; Display lists the accepted ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown firewall backend {:?} (expected \"iptables\" or \"nftables\")",
            self.0
        )
    }
}

impl std::error::Error for UnknownBackend {}

impl FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BACKENDS
            .iter()
            .find(|r| r.names.contains(&s))
            .map(|r| r.kind)
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
}

/// Names and tool paths. Defaults fit a stock Debian host; every name ends up
/// inside rule text, so [`FirewallOptions::validate`] restricts the charset.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirewallOptions {
    /// iptables: our chain in the filter table.
    pub chain: String,
    /// iptables: the built-in chain whose first rule jumps to ours.
    pub parent_chain: String,
    /// Comment on our jump (iptables) and our rules (nftables); how teardown
    /// recognises what is ours. Grant rules carry `<comment> exp=<secs>`.
    pub comment: String,
    /// nftables: family of the admin's table (`inet`, `ip` or `ip6`).
    pub nft_family: String,
    /// nftables: the admin's table we add our sets to.
    pub nft_table: String,
    /// nftables: the admin's chain whose top gets our two rules.
    pub nft_chain: String,
    /// nftables: the admin's forward-hook chain whose top gets our forward
    /// rules (only when a key forwards, issue 15).
    pub nft_forward_chain: String,
    pub nft_set4: String,
    pub nft_set6: String,
    /// Seconds iptables waits for the xtables lock (`-w`); bounded so a stuck
    /// lock holder cannot stall the daemon forever.
    pub lock_wait_secs: u32,
    /// Prepended to every command (e.g. `["ip","netns","exec","fw"]`): lets a
    /// daemon (or a test) manage a firewall in another network namespace.
    pub exec_prefix: Vec<String>,
    pub iptables: String,
    pub ip6tables: String,
    pub iptables_restore: String,
    pub ip6tables_restore: String,
    pub nft: String,
    /// iptables: the tool for the grant sets (issue 14: grants are ipset
    /// entries matched by one rule, see firewall/ipset.rs).
    pub ipset: String,
    /// nftables: apply batches through one long-lived `nft -i` process
    /// (≈0.5 ms per batch) instead of spawning `nft -f -` (≈3-6 ms). Falls
    /// back to spawning, per call, whenever the session misbehaves.
    pub nft_session: bool,
}

impl Default for FirewallOptions {
    fn default() -> Self {
        FirewallOptions {
            chain: "SPA".into(),
            parent_chain: "INPUT".into(),
            comment: "spa-server".into(),
            nft_family: "inet".into(),
            nft_table: "filter".into(),
            nft_chain: "input".into(),
            nft_forward_chain: "forward".into(),
            nft_set4: "spa4".into(),
            nft_set6: "spa6".into(),
            lock_wait_secs: 3,
            exec_prefix: Vec::new(),
            iptables: "iptables".into(),
            ip6tables: "ip6tables".into(),
            iptables_restore: "iptables-restore".into(),
            ip6tables_restore: "ip6tables-restore".into(),
            nft: "nft".into(),
            ipset: "ipset".into(),
            nft_session: true,
        }
    }
}

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 28
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl FirewallOptions {
    /// Rejects names that could break out of the rule text they are pasted
    /// into. The config loader calls this; `setup` calls it again.
    pub fn validate(&self) -> Result<(), FwError> {
        let fields: [(&'static str, &str); 9] = [
            ("chain", &self.chain),
            ("parent_chain", &self.parent_chain),
            ("comment", &self.comment),
            ("nft_family", &self.nft_family),
            ("nft_table", &self.nft_table),
            ("nft_chain", &self.nft_chain),
            ("nft_forward_chain", &self.nft_forward_chain),
            ("nft_set4", &self.nft_set4),
            ("nft_set6", &self.nft_set6),
        ];
        for (field, value) in fields {
            if !safe_name(value) {
                return Err(FwError::BadOption {
                    field,
                    value: value.to_owned(),
                });
            }
        }
        if !matches!(self.nft_family.as_str(), "inet" | "ip" | "ip6") {
            return Err(FwError::BadOption {
                field: "nft_family",
                value: self.nft_family.clone(),
            });
        }
        Ok(())
    }
}

/// The backend the configuration names.
pub fn backend(kind: BackendKind, opts: &FirewallOptions) -> Box<dyn Firewall> {
    (kind.registration().build)(opts.clone())
}

/// The split of one apply call by address family, with duplicates dropped
/// (a batch that adds one rule twice would leave a duplicate behind). Linear:
/// a re-install after a reload is one call with every live grant (issue 14).
pub(crate) fn split_family(items: &[Access]) -> (Vec<Access>, Vec<Access>) {
    let mut v4: Vec<Access> = Vec::new();
    let mut v6: Vec<Access> = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for a in items {
        if !seen.insert(*a) {
            continue;
        }
        if a.canonical_addr().is_ipv4() {
            v4.push(*a);
        } else {
            v6.push(*a);
        }
    }
    (v4, v6)
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before
/// 1970, which only makes every grant look long-lived, never expired).
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
