//! The systemd unit `spa-server/dist/spa-server.service`, tested piece by
//! piece without systemd (systemd.rs starts it under a real one):
//!
//! * `systemd-analyze verify` passes with no warning (on a temporary copy
//!   whose paths point at the built binary: verify wants the executables to
//!   exist), and the exposure score of `systemd-analyze security --offline`
//!   is below 2.0;
//! * the directives the design relies on are there;
//! * the unit's `ExecStopPost=` command line, run in a namespace after
//!   `kill -9`, removes our chain, jump, sets and grants and leaves the
//!   admin's baseline, also with a custom chain name and with a broken
//!   configuration;
//! * the daemon works under the unit's capability bounding set with
//!   no_new_privs (`setpriv`), both backends;
//! * every system call the daemon and the tools it runs make is inside the
//!   unit's `SystemCallFilter=` (traced with strace, both backends).
//!
//! Namespace ids: 59-66.

mod lifecycle_env;

use lifecycle_env::{kill_9, signal, wait_exit, Env, KEY_A as A};
use spa_e2e::{bin, keygen, run_ok, wait_for, Scratch};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const INSTALLED_BIN: &str = "/usr/local/sbin/spa-server";
const INSTALLED_CONFIG: &str = "/etc/spa/server.toml";

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spa-server/dist/spa-server.service")
}

fn unit_text() -> String {
    std::fs::read_to_string(unit_path()).expect("read spa-server.service")
}

/// Every `Key=Value` of section `[section]`, in order (keys may repeat).
fn directives(section: &str) -> Vec<(String, String)> {
    let mut cur = String::new();
    let mut out = Vec::new();
    for l in unit_text().lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') && l.ends_with(']') {
            cur = l[1..l.len() - 1].to_owned();
            continue;
        }
        if cur == section {
            if let Some((k, v)) = l.split_once('=') {
                out.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    out
}

fn service(key: &str) -> Vec<String> {
    directives("Service")
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

fn one(key: &str) -> String {
    let v = service(key);
    assert_eq!(v.len(), 1, "{key}= should appear once: {v:?}");
    v[0].clone()
}

/// A private copy of the unit whose paths point at the built binary.
fn unit_copy(dir: &std::path::Path) -> PathBuf {
    let text = unit_text().replace(
        INSTALLED_BIN,
        bin("spa-server").to_str().expect("utf-8 path"),
    );
    let p = dir.join("spa-server.service");
    std::fs::write(&p, text).expect("write unit copy");
    p
}

#[test]
fn the_unit_has_the_directives_the_design_relies_on() {
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("Restart"), "on-failure");
    assert!(one("WatchdogSec").ends_with('s'));
    assert_eq!(
        one("ExecStart"),
        format!("{INSTALLED_BIN} --config {INSTALLED_CONFIG}")
    );
    assert_eq!(one("ExecReload"), "+/bin/kill -HUP $MAINPID");
    assert_eq!(
        one("ExecStopPost"),
        format!("{INSTALLED_BIN} --config {INSTALLED_CONFIG} flush")
    );
    assert_eq!(one("StateDirectory"), "spa-server");
    // The two the privileged side keeps, and the three the start needs to
    // hand the state directories over and become the network side's user.
    assert_eq!(
        one("CapabilityBoundingSet"),
        "CAP_NET_ADMIN CAP_NET_RAW CAP_SETUID CAP_SETGID CAP_CHOWN"
    );
    assert_eq!(
        one("RestrictAddressFamilies"),
        "AF_UNIX AF_NETLINK AF_PACKET AF_INET AF_INET6"
    );
    for yes in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "MemoryDenyWriteExecute",
        "LockPersonality",
        "RestrictRealtime",
        "RestrictNamespaces",
        "ProtectKernelModules",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
    ] {
        assert_eq!(one(yes), "yes", "{yes}=");
    }
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("SystemCallArchitectures"), "native");
    assert_eq!(one("UMask"), "0077");
    assert!(service("SystemCallFilter").contains(&"@system-service".to_owned()));
    // The default state_dir (config/schema.rs) is what StateDirectory= creates.
    assert_eq!(spa_server::config::DEFAULT_STATE_DIR, "/var/lib/spa-server");
    assert_eq!(spa_server::config::DEFAULT_CONFIG, INSTALLED_CONFIG);
}

#[test]
fn systemd_analyze_verify_passes_without_warnings() {
    let dir = Scratch::new("unit-verify");
    let unit = unit_copy(&dir.path);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .current_dir(&dir.path)
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze (systemd 252+) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "verify failed: {text}");
    assert!(text.trim().is_empty(), "verify warned: {text}");
}

#[test]
/// The offline score rates the unit's start: since issue 9 it allows
/// CAP_CHOWN, CAP_SETUID, CAP_SETGID and the syscalls that use them (0.7
/// of the score: 1.8 before, 2.5 now), which both processes drop before the
/// first packet; systemd-analyze cannot see that, so systemd.rs reads the
/// live processes' status (network side: no capability, Uid not 0, seccomp).
fn systemd_analyze_security_exposure_is_below_2_6() {
    let dir = Scratch::new("unit-security");
    let unit = unit_copy(&dir.path);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .current_dir(&dir.path)
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall score: {text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    eprintln!("systemd-analyze security --offline: {}", line.trim());
    assert!(score < 2.6, "exposure {score} (want < 2.6):\n{text}");
}

/// The unit's ExecStopPost= command, pointed at the built binary and the
/// test's configuration, run in the server namespace.
fn exec_stop_post(env: &Env) -> std::process::Output {
    let server = bin("spa-server");
    let config = env.config_path();
    let line = one("ExecStopPost")
        .replace(INSTALLED_BIN, server.to_str().expect("utf-8 path"))
        .replace(INSTALLED_CONFIG, config.to_str().expect("utf-8 path"));
    let argv: Vec<&str> = line.split_whitespace().collect();
    env.pair
        .srv(&argv)
        .stdin(Stdio::null())
        .output()
        .expect("spawn ExecStopPost command")
}

fn flush_after_kill_9(id: u8, backend: &'static str, extra_config: &str, break_config: bool) {
    let env = Env::new(id, backend, &["a"]);
    let text = format!("{}{extra_config}", env.config_text(&[A]));
    env.write_config_text(&text);
    let baseline = env.firewall_snapshot();
    let mut server = env.start();
    let cli: IpAddr = env.pair.cli_ip4.into();
    env.open("a", cli, 120);
    env.assert_opens(cli, 2, "grant did not open");
    kill_9(&mut server);
    // The privileged side exits when it reads the end of its socket, a few
    // ms later (measured 4-17 ms): waited for, bounded.
    assert!(wait_for(Duration::from_secs(5), || env
        .server_pids()
        .is_empty()));
    assert_ne!(env.firewall_snapshot(), baseline, "kill -9 left nothing?");
    if break_config {
        // What ExecStopPost meets after an admin's bad edit.
        env.write_config_text(&format!("{text}\nthis is not toml\n"));
    }
    let out = exec_stop_post(&env);
    assert!(
        out.status.success(),
        "ExecStopPost failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.firewall_snapshot(),
        baseline,
        "ExecStopPost left something of ours ({backend}); flush said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.can_connect(cli), "port open after the flush");
    // Idempotent: a second run (systemd may run it after a clean stop too).
    let again = exec_stop_post(&env);
    assert!(again.status.success());
    assert_eq!(env.firewall_snapshot(), baseline);
}

#[test]
fn exec_stop_post_after_kill_9_restores_the_baseline_iptables() {
    flush_after_kill_9(59, "iptables", "", false);
}

#[test]
fn exec_stop_post_after_kill_9_restores_the_baseline_nftables() {
    flush_after_kill_9(60, "nftables", "", false);
}

#[test]
fn exec_stop_post_honours_custom_firewall_names() {
    flush_after_kill_9(
        61,
        "iptables",
        "\n[firewall_options]\nchain = \"SPAX\"\ncomment = \"spa-x\"\n",
        false,
    );
}

#[test]
fn exec_stop_post_with_a_broken_configuration_still_flushes() {
    flush_after_kill_9(62, "iptables", "", true);
}

/// `setpriv` arguments for the unit's CapabilityBoundingSet= and
/// NoNewPrivileges=: root whose capabilities are only those listed.
fn unit_caps_prefix() -> Vec<String> {
    let caps: Vec<String> = one("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert_eq!(one("NoNewPrivileges"), "yes");
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all,{}", caps.join(",")),
        format!("--inh-caps=-all,{}", caps.join(",")),
        "--no-new-privs".into(),
    ]
}

/// A rough stand-in for the unit's file-system sandbox, in a private mount
/// namespace: ProtectSystem=strict (every mount read-only except /proc, /sys,
/// /dev and, like StateDirectory=, the test's directory), ProtectHome=yes
/// (/root, /home, /run/user inaccessible), then `unit_caps_prefix`.
fn sandbox_prefix(env: &Env) -> Vec<String> {
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ProtectHome"), "yes");
    let dir = env.dir.path.to_str().expect("utf-8 path");
    let script = format!(
        "set -e\n\
         for m in $(awk '{{print $2}}' /proc/self/mounts | sort -u); do\n\
         \x20 case \"$m\" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac\n\
         \x20 mount -o remount,bind,ro \"$m\" 2>/dev/null || true\n\
         done\n\
         mount --bind '{dir}' '{dir}'\n\
         mount -o remount,bind,rw '{dir}'\n\
         for h in /root /home /run/user; do\n\
         \x20 if [ -d \"$h\" ]; then mount -t tmpfs -o ro,mode=000 tmpfs \"$h\"; fi\n\
         done\n\
         touch /usr/.spa-sandbox-probe 2>/dev/null && {{ echo 'sandbox: / still writable' >&2; exit 9; }}\n\
         exec \"$@\"\n"
    );
    let mut p: Vec<String> = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    p.push(script);
    p.push("sandbox".into());
    p.extend(unit_caps_prefix());
    p
}

/// Key a opens tcp/22 for the client (60 s) and closes it again, each
/// within `secs`; `what` names the open for the failure message.
fn open_then_close(env: &Env, secs: u64, what: &str) {
    let cli: IpAddr = env.pair.cli_ip4.into();
    env.open("a", cli, 60);
    env.assert_opens(cli, secs, what);
    env.close("a", cli);
    assert!(env.wait_connect(cli, false, Duration::from_secs(secs)));
}

fn works_under_the_units_capabilities(id: u8, backend: &'static str) {
    let env = Env::with_key_a(id, backend);
    let baseline = env.firewall_snapshot();
    let prefix = sandbox_prefix(&env);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let mut server = env.start_with(&prefix);
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap_or_default();
    let capbnd = status
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap_or_default()
        .to_owned();
    // CAP_NET_ADMIN = 12, CAP_NET_RAW = 13; for the start only (issue 9:
    // the privilege drop) CAP_CHOWN = 0, CAP_SETGID = 6, CAP_SETUID = 7.
    assert!(
        capbnd.ends_with("00000000000030c1"),
        "bounding set not applied: {capbnd}"
    );
    open_then_close(
        &env,
        3,
        &format!("{backend}: no grant with only CAP_NET_ADMIN+CAP_NET_RAW"),
    );
    signal(server.pid(), libc::SIGHUP);
    signal(server.pid(), libc::SIGTERM);
    let st = wait_exit(&mut server, Duration::from_secs(10)).expect("no exit");
    assert!(st.success(), "log:\n{}", env.log());
    assert_eq!(env.firewall_snapshot(), baseline);
}

#[test]
fn works_with_only_the_units_capabilities_iptables() {
    works_under_the_units_capabilities(63, "iptables");
}

#[test]
fn works_with_only_the_units_capabilities_nftables() {
    works_under_the_units_capabilities(64, "nftables");
}

/// Expands a systemd syscall group (`@name`) into syscall names.
fn syscall_group(name: &str, depth: u32) -> BTreeSet<String> {
    assert!(depth < 8, "syscall groups nest too deep at {name}");
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", name])
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze syscall-filter");
    let mut set = BTreeSet::new();
    for l in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('@') {
            set.extend(syscall_group(l, depth + 1));
        } else {
            set.insert(l.to_owned());
        }
    }
    set
}

/// The set the unit's SystemCallFilter= lines allow: the first (allow)
/// line's groups, minus every `~` line's groups.
fn unit_syscall_allowlist() -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    for v in service("SystemCallFilter") {
        let (deny, list) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v.as_str()),
        };
        for item in list.split_whitespace() {
            let names = if item.starts_with('@') {
                syscall_group(item, 0)
            } else {
                BTreeSet::from([item.to_owned()])
            };
            if deny {
                allowed.retain(|s| !names.contains(s));
            } else {
                allowed.extend(names);
            }
        }
    }
    allowed
}

fn syscalls_inside_the_filter(id: u8, backend: &'static str) {
    if Command::new("strace").arg("-V").output().is_err() {
        // .ci/run does not install strace (yet): say so loudly, do not fail.
        eprintln!("SKIPPED: strace is not installed (apt-get install strace)");
        return;
    }
    let env = Env::with_key_a(id, backend);
    let allowed = unit_syscall_allowlist();
    assert!(allowed.contains("read") && !allowed.contains("setrlimit"));
    let trace = env.dir.join("strace.out");
    let trace_s = trace.to_str().expect("utf-8 path").to_owned();
    let mut server = env.start_with(&["strace", "-f", "-qq", "-o", &trace_s]);
    open_then_close(&env, 5, &format!("{backend}: no grant under strace"));
    let main = env.network_side_pid();
    signal(main, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    signal(main, libc::SIGTERM);
    assert!(wait_exit(&mut server, Duration::from_secs(15)).is_some());
    let text = std::fs::read_to_string(&trace).expect("strace output");
    let mut used = BTreeSet::new();
    for l in text.lines() {
        // "1234  openat(AT_FDCWD, ..." ; resumed calls and signals skipped.
        let rest = l.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or("");
        if let Some((name, _)) = rest.split_once('(') {
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                used.insert(name.to_owned());
            }
        }
    }
    // The first execve is strace starting the daemon: outside the unit.
    let outside: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    eprintln!(
        "{backend}: {} distinct syscalls used, outside the filter: {outside:?}",
        used.len()
    );
    assert!(used.len() > 20, "trace looks empty: {used:?}");
    assert!(
        outside.is_empty(),
        "{backend}: syscalls outside SystemCallFilter=: {outside:?}"
    );
}

#[test]
fn every_syscall_is_inside_the_units_filter_iptables() {
    syscalls_inside_the_filter(65, "iptables");
}

#[test]
fn every_syscall_is_inside_the_units_filter_nftables() {
    syscalls_inside_the_filter(66, "nftables");
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_script_stages_every_file_and_keeps_an_existing_config() {
    let scratch = Scratch::new("unit-install");
    let d = &scratch.path;
    let bin_dir = bin("spa-server")
        .parent()
        .expect("bin dir")
        .to_str()
        .expect("utf-8 path")
        .to_owned();
    let run = || {
        let out = run_ok(
            Command::new(repo_root().join("scripts/install.sh"))
                .arg("--no-build")
                .env("DESTDIR", d)
                .env("PREFIX", "/opt/spa-test")
                .env("SPA_BIN_DIR", &bin_dir),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert!(first.contains("Nothing was started"), "{first}");
    for (p, m) in [
        ("opt/spa-test/sbin/spa-server", 0o755),
        ("opt/spa-test/bin/spa-client", 0o755),
        ("opt/spa-test/bin/spa-keygen", 0o755),
        ("etc/systemd/system/spa-server.service", 0o644),
        ("etc/spa/keys", 0o700),
        ("etc/spa/server.toml", 0o600),
        ("opt/spa-test/share/doc/spa/operations.md", 0o644),
    ] {
        assert_eq!(mode(&d.join(p)), m, "{p}");
    }
    // The installed unit names the installed binary, and verifies once the
    // staging root is put in front of its paths.
    let unit = std::fs::read_to_string(d.join("etc/systemd/system/spa-server.service"))
        .expect("installed unit");
    assert!(unit.contains("ExecStart=/opt/spa-test/sbin/spa-server --config /etc/spa/server.toml"));
    assert!(unit.contains(
        "ExecStopPost=/opt/spa-test/sbin/spa-server --config /etc/spa/server.toml flush"
    ));
    let staged = d.join("verify.service");
    std::fs::write(
        &staged,
        unit.replace("/opt/spa-test/", &format!("{}/opt/spa-test/", d.display())),
    )
    .expect("write");
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&staged)
        .current_dir(d)
        .output()
        .expect("systemd-analyze");
    assert!(
        v.status.success() && v.stderr.is_empty(),
        "installed unit: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    // A second run keeps the admin's configuration.
    let cfg = d.join("etc/spa/server.toml");
    std::fs::write(&cfg, "server_id = \"mine\"\n").expect("write");
    let second = run();
    assert!(second.contains("left as it is"), "{second}");
    assert_eq!(
        std::fs::read_to_string(&cfg).expect("read"),
        "server_id = \"mine\"\n"
    );
}

#[test]
fn example_config_is_valid_once_a_key_is_added() {
    let d = Scratch::new("unit-example");
    let example = std::fs::read_to_string(repo_root().join("spa-server/dist/server.toml.example"))
        .expect("read example");
    let key = d.join("alice.key");
    keygen(&key, "alice", "gw");
    let check = |text: &str| {
        let cfg = d.join("server.toml");
        std::fs::write(&cfg, text).expect("write");
        Command::new(bin("spa-server"))
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .expect("check-config")
    };
    // As shipped: refused, and the message says what is missing.
    let bare = check(&example);
    assert!(!bare.status.success());
    let msg = String::from_utf8_lossy(&bare.stderr);
    assert!(msg.contains("no keys configured"), "{msg}");
    // With a key table, as spa-keygen prints it: accepted.
    let with_key = format!(
        "{}\n[[key]]\nname = \"alice\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\nmax_duration = 300\n",
        example.replace("CHANGE-ME", "gw"),
        key.display()
    );
    let ok = check(&with_key);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}
