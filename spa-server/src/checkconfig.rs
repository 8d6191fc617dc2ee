//! `spa-server check-config` (issue 10, item 5): checks what a start would
//! check, short of opening the capture and touching the firewall, and
//! reports every problem it finds rather than the first: the interfaces
//! exist, the firewall tools are there, the nftables table and chain exist,
//! the state directory is acceptable. It prints the effective `server_id`
//! with where it came from, every key, and every door (knockd.conf's too),
//! so the admin sees what the daemon will serve.

use crate::config::Config;
use crate::firewall::{self, BackendKind, FwError, Runner};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;

/// What check-config found: lines to print, and the errors.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub errors: Vec<String>,
}

pub fn check(cfg: &mut Config) -> Report {
    let mut r = Report::default();
    // The uid is state (the daemon attaches it at start): read it here as
    // the daemon would, so a key file made for another server is found now.
    match crate::v2::read_uid(&cfg.v2.uid_file) {
        Ok(Some(uid)) => {
            if let Err(e) = cfg.attach_uid(uid) {
                r.errors.push(e.to_string());
            }
        }
        Ok(None) => {}
        Err(e) => r.errors.push(e.to_string()),
    }
    let cfg = &*cfg;
    r.lines.push(format!(
        "server_id {:?} (from {}); clients must seal for it",
        cfg.server_name, cfg.server_id_source
    ));
    r.lines.push(match cfg.v2.uid {
        Some(uid) => format!(
            "server uid {uid} (protocol v2; clients: spa-client server-key --server-uid {uid})"
        ),
        None => format!(
            "server uid: none yet (spa-server creates {} at its first start)",
            cfg.v2.uid_file.display()
        ),
    });
    r.lines.push(format!(
        "port {}, backend {}, {} key(s), silent {}",
        cfg.spa_port,
        cfg.firewall,
        cfg.keys.len(),
        cfg.silent
    ));
    for k in &cfg.keys {
        let allow: Vec<String> = k.allow.iter().map(|g| g.to_string()).collect();
        let mut rules = String::new();
        if !k.rules.from.is_empty() {
            rules += &format!(", from {}", k.rules.from_text());
        }
        if let Some(at) = k.rules.expires {
            rules += &format!(", expires {}", crate::policy::utc_text(at));
        }
        for (g, to) in &k.rules.forward {
            rules += &format!(", {g} forwarded to {to}");
        }
        let protocols = cfg
            .v2
            .keys
            .iter()
            .zip(&cfg.keys)
            .find(|(_, p)| p.name == k.name);
        if let Some((v, _)) = protocols.filter(|(v, _)| v.protocols.v2) {
            rules += &format!(", protocols {}", v.protocols.names());
        }
        r.lines.push(format!(
            "  key {} ({}): {} for up to {} s{rules}",
            k.name,
            k.key_id,
            allow.join(","),
            k.max_duration
        ));
    }
    // Keys that expire within 7 days (or have): a warning, not an error.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (name, at) in crate::policy::expiring_soon(&cfg.keys, now) {
        r.lines.push(format!(
            "  warning: {}",
            crate::policy::expiry_note(name, at, now)
        ));
    }
    for d in &cfg.doors {
        let seq: Vec<String> = d.sequence.iter().map(|s| s.to_string()).collect();
        r.lines.push(format!(
            "  door {}: {} -> {:?}",
            d.name,
            seq.join(","),
            d.action
        ));
    }
    for i in &cfg.interfaces {
        if !interface_exists(i) {
            r.errors.push(format!(
                "interface {i:?} does not exist here (interfaces = [...] or --interface); \
                 `ip link` lists the ones that do"
            ));
        }
    }
    match firewall::tools::resolve(cfg.firewall, &cfg.firewall_options) {
        Err(e) => r.errors.push(e.to_string()),
        Ok(opts) => {
            if cfg.firewall == BackendKind::Nftables {
                if let Some(e) = nft_chain_missing(&opts) {
                    r.errors.push(e.to_string());
                }
            }
        }
    }
    // Root's, or the network side's user's (privsep hands them over).
    let net_uid = crate::privsep::sandbox::lookup_user(&cfg.user)
        .or_else(|_| crate::privsep::sandbox::lookup_user("nobody"))
        .map_or(u32::MAX, |u| u.uid);
    if let Some(e) = state_dir_problem(&cfg.state_dir, net_uid) {
        r.errors.push(e);
    }
    if let Some(d) = &cfg.runtime_dir {
        if let Some(e) = state_dir_problem(d, net_uid) {
            r.errors.push(e);
        }
    }
    r
}

/// `if_nametoindex`: in the daemon's network namespace, as start sees it.
fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; no memory is kept.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// The admin's table and chain the nftables backend inserts into.
fn nft_chain_missing(o: &firewall::FirewallOptions) -> Option<FwError> {
    let run = Runner::new(&o.exec_prefix);
    let argv = [
        o.nft.as_str(),
        "list",
        "chain",
        &o.nft_family,
        &o.nft_table,
        &o.nft_chain,
    ];
    match run.run(&argv, None) {
        Err(e) => Some(e),
        Ok(ran) if ran.ok() => None,
        Ok(ran) => Some(FwError::MissingChain {
            what: format!(
                "nftables chain `{} {} {}`",
                o.nft_family, o.nft_table, o.nft_chain
            ),
            detail: ran.stderr,
        }),
    }
}

/// What start would refuse about a state directory, without creating it.
fn state_dir_problem(dir: &std::path::Path, net_uid: u32) -> Option<String> {
    let md = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("{}: cannot stat: {e}", dir.display())),
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !md.is_dir() {
        return Some(format!("{}: is not a directory", dir.display()));
    }
    if md.uid() != me && md.uid() != net_uid {
        return Some(format!(
            "{}: owned by uid {}, not by uid {me}: `chown {me} {}`",
            dir.display(),
            md.uid(),
            dir.display()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Some(format!(
            "{}: group or others may write it: `chmod go-w {}`",
            dir.display(),
            dir.display()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem() {
        let mut cfg = Config::for_tests(vec![], 30);
        cfg.interfaces = vec!["nope-a0".into(), "nope-b0".into(), "lo".into()];
        cfg.firewall_options.iptables = "/nonexistent/iptables".into();
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        cfg.state_dir = d.path().to_owned();
        let r = check(&mut cfg);
        assert_eq!(r.errors.len(), 4, "{:?}", r.errors);
        assert!(r.errors[0].contains("nope-a0") && r.errors[1].contains("nope-b0"));
        assert!(
            r.errors[2].contains("/nonexistent/iptables"),
            "{}",
            r.errors[2]
        );
        assert!(r.errors[3].contains("chmod go-w"), "{}", r.errors[3]);
        assert!(r.lines[0].contains("\"gw\" (from test)"), "{:?}", r.lines);
    }
}
