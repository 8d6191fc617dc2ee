//! Where the firewall tools are found, and the environment they run in.
//!
//! Why not `$PATH`: the daemon runs as root, and whoever set its environment
//! (a unit drop-in, a wrapper script, `sudo -E`) would choose which
//! `iptables-restore` root runs, with which `LD_PRELOAD`. So the tools are
//! resolved once at start, in a fixed list of root-owned directories (not
//! `/usr/local`, which is group-writable on some Debian installs), to
//! absolute paths, and every child starts with an empty environment plus a
//! fixed `PATH` and `LC_ALL=C` (the tools' messages are parsed untranslated).
//! An absolute path set in `[firewall_options]` is used as given.

use super::{BackendKind, FirewallOptions, FwError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Searched in this order for a tool named without a `/`.
pub const SEARCH_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];
/// The only `PATH` a child sees (iptables-nft and nft exec nothing by name,
/// but a tool that does must not find it through ours).
pub const CHILD_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The shell the persistent nft session runs through (to merge stderr into
/// stdout; see nft_session.rs). POSIX guarantees it.
pub const SH: &str = "/bin/sh";

/// A command for `prog` with the minimal environment: nothing inherited,
/// `PATH` = [`CHILD_PATH`], `LC_ALL=C`.
pub fn command(prog: &str) -> Command {
    let mut c = Command::new(prog);
    c.env_clear().env("PATH", CHILD_PATH).env("LC_ALL", "C");
    c
}

/// The Debian package that ships `tool`, for the error message.
fn package(tool: &str) -> &'static str {
    let base = tool.rsplit('/').next().unwrap_or(tool);
    if base.starts_with("iptables") || base.starts_with("ip6tables") {
        "iptables"
    } else if base == "nft" {
        "nftables"
    } else if base == "ipset" {
        "ipset"
    } else if base == "ip" {
        "iproute2"
    } else if base == "nsenter" {
        "util-linux"
    } else {
        "that provides it"
    }
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` as an absolute path: as given when it contains a `/` (it must be
/// absolute and executable), else the first executable `dirs/name`.
pub fn find_in(field: &'static str, name: &str, dirs: &[&str]) -> Result<PathBuf, FwError> {
    let missing = |searched: String| FwError::ToolMissing {
        field,
        tool: name.to_owned(),
        searched,
        package: package(name),
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        if p.is_absolute() && is_executable_file(&p) {
            return Ok(p);
        }
        return Err(missing(if p.is_absolute() {
            "that path (not an executable file)".into()
        } else {
            "nothing: a path must be absolute".into()
        }));
    }
    dirs.iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable_file(p))
        .ok_or_else(|| missing(dirs.join(":")))
}

/// `opts` with every tool the `kind` backend runs (and the first word of
/// `exec_prefix`) replaced by its absolute path. Called once at start (and
/// by `spa-server flush`), so a missing tool stops the daemon before it
/// touches the firewall, with the tool and its package named.
pub fn resolve(kind: BackendKind, opts: &FirewallOptions) -> Result<FirewallOptions, FwError> {
    let mut o = opts.clone();
    let abs = |field, name: &str| -> Result<String, FwError> {
        Ok(find_in(field, name, &SEARCH_DIRS)?.display().to_string())
    };
    if let Some(first) = o.exec_prefix.first_mut() {
        *first = abs("exec_prefix", first)?;
    }
    match kind {
        BackendKind::Iptables => {
            o.iptables = abs("iptables", &o.iptables)?;
            o.ip6tables = abs("ip6tables", &o.ip6tables)?;
            o.iptables_restore = abs("iptables_restore", &o.iptables_restore)?;
            o.ip6tables_restore = abs("ip6tables_restore", &o.ip6tables_restore)?;
            o.ipset = abs("ipset", &o.ipset)?;
        }
        BackendKind::Nftables => o.nft = abs("nft", &o.nft)?,
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn finds_in_the_fixed_dirs_in_order_never_elsewhere() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (da, db) = (a.path().to_str().unwrap(), b.path().to_str().unwrap());
        exe(a.path(), "nft", 0o644); // not executable: skipped
        let want = exe(b.path(), "nft", 0o755);
        assert_eq!(find_in("nft", "nft", &[da, db]).unwrap(), want);
        // Not in the list: not found, whatever else exists.
        let e = find_in("nft", "nft", &[da]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`nft`") && msg.contains(da), "{msg}");
        assert!(msg.contains("apt-get install nftables"), "{msg}");
        assert!(msg.contains("firewall_options.nft"), "{msg}");
    }

    #[test]
    fn a_path_is_used_as_given_only_if_absolute_and_executable() {
        let d = tempfile::tempdir().unwrap();
        let p = exe(d.path(), "my-iptables-restore", 0o700);
        let s = p.to_str().unwrap();
        assert_eq!(find_in("iptables_restore", s, &[]).unwrap(), p);
        let e = find_in("iptables_restore", "./bin/iptables-restore", &SEARCH_DIRS).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = find_in("ip6tables", "/nonexistent/ip6tables", &SEARCH_DIRS).unwrap_err();
        assert!(e.to_string().contains("apt-get install iptables"), "{e}");
    }

    #[test]
    fn resolve_makes_every_tool_of_the_backend_absolute() {
        let o = FirewallOptions {
            nft: "no-such-nft-tool".into(),
            ..FirewallOptions::default()
        };
        let e = resolve(BackendKind::Nftables, &o).unwrap_err();
        assert!(
            matches!(e, FwError::ToolMissing { field: "nft", .. }),
            "{e:?}"
        );
        // The iptables backend does not need nft.
        if let Ok(r) = resolve(BackendKind::Iptables, &o) {
            for t in [
                &r.iptables,
                &r.ip6tables,
                &r.iptables_restore,
                &r.ip6tables_restore,
                &r.ipset,
            ] {
                assert!(t.starts_with('/'), "{t}");
            }
            assert_eq!(r.nft, "no-such-nft-tool");
        }
    }

    #[test]
    fn children_get_only_path_and_lc_all() {
        let out = command("env").env_remove("X").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut vars: Vec<&str> = text.lines().collect();
        vars.sort_unstable();
        assert_eq!(vars, vec!["LC_ALL=C", &format!("PATH={CHILD_PATH}")[..]]);
    }
}
