//! The unit under a real systemd: `systemctl start spa-server`, a crash
//! (`SIGKILL`), the restart, a reload, a hung daemon (`SIGSTOP`) that the
//! watchdog ends, and a stop, each judged by the firewall and by real
//! connections.
//!
//! This machine has no systemd as PID 1, so the test boots one: systemd
//! (Debian's, from the `systemd` package CI installs) as PID 1 of its own
//! pid, mount, UTS, IPC and cgroup namespaces, inside the test's server
//! network namespace, in a cgroup of its own. What it could write outside
//! is fenced off: `/etc` and `/usr` are overlays whose upper layers live on
//! a tmpfs of the namespace, `/run` and `/var` are fresh tmpfs, `/proc/sys`
//! and `/sys` are read-only; it starts one empty target, nothing from the
//! host's boot. The unit is the repository's file, installed by
//! `scripts/install.sh` as users install it. One drop-in changes what only
//! concerns a booted machine: `DefaultDependencies=no` (no sysinit.target
//! and its host-wide jobs) and the log to a file (no journald); and two
//! timings, so the watchdog case takes seconds: `WatchdogSec=2s`,
//! `TimeoutAbortSec=1s`.
//!
//! The second test installs the Debian packages (target/debian, built by
//! scripts/package.sh) with `dpkg -i` into the same fenced-off root, whose
//! dpkg database is an overlay as well, and removes and purges them.
//!
//! The third runs the daemon under journald (started in the booted systemd)
//! and reads its lines back by priority with `journalctl -p`.
//!
//! The booted systemd (`Systemd`) lives in systemd_env/. Namespace ids: 71,
//! 180, 205.

mod systemd_env;

use spa_e2e::{bin, run_ok, wait_for, Testbed, PORT};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use systemd_env::{Systemd, WAIT};

const SERVER_ID: &str = "sd-e2e";

/// Are there grant rules of ours, or our chain, in the server namespace?
fn leftovers(tb: &Testbed) -> (Vec<String>, bool) {
    let rules = tb.grant_rules("iptables");
    let chain = tb
        .pair
        .srv_sh("iptables -w -S 2>/dev/null || true")
        .lines()
        .any(|l| l == "-N SPA");
    (rules, chain)
}

/// A shell script that writes the conffile as the README's admin does
/// (`server_id`, `iface`, alice's key for tcp/`PORT`, `state_dir_line` if
/// any) and the tests' drop-in (no default dependencies, so no sysinit and
/// no tmpfiles on the shared /tmp; output appended to /run/spa-e2e.log;
/// then `service_extra`, printf-escaped), runs `before_reload`, then
/// `systemctl daemon-reload`.
fn configure(
    server_id: &str,
    iface: &str,
    state_dir_line: &str,
    service_extra: &str,
    before_reload: &str,
) -> String {
    format!(
        "cat >/etc/spa/server.toml <<'EOF'
server_id = \"{server_id}\"
interfaces = [\"{iface}\"]
{state_dir_line}runtime_dir = \"/run/spa-server\"
firewall = \"iptables\"

[[key]]
name = \"alice\"
file = \"/etc/spa/keys/alice.key\"
allow = [\"tcp/{PORT}\"]
EOF
mkdir -p /etc/systemd/system/spa-server.service.d
printf '[Unit]\\nDefaultDependencies=no\\n[Service]\\nStandardOutput=append:/run/spa-e2e.log\\nStandardError=inherit\\n{service_extra}' \
    >/etc/systemd/system/spa-server.service.d/e2e.conf
{before_reload}systemctl daemon-reload"
    )
}

#[test]
fn systemctl_start_crash_restart_reload_watchdog_stop() {
    let tb = Testbed::new(71, "systemd", "iptables", SERVER_ID, &["alice"]);
    let sd = Systemd::boot(&tb);
    let (cli, srv): (IpAddr, IpAddr) = (tb.pair.cli_ip4.into(), tb.pair.srv_ip4.into());
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_dir = bin("spa-server")
        .parent()
        .expect("binary directory")
        .to_path_buf();

    // Installed as users install it; the key and configuration as the
    // README says, with this testbed's interface and server id.
    sd.sh_ok(&format!(
        "cd {repo} && SPA_BIN_DIR={bins} scripts/install.sh --no-build >/dev/null",
        repo = repo.display(),
        bins = bin_dir.display()
    ));
    sd.sh_ok(&format!(
        "install -m 0600 {key} /etc/spa/keys/alice.key && {}",
        configure(
            SERVER_ID,
            &tb.pair.srv_if,
            "state_dir = \"/var/lib/spa-server\"\n",
            "WatchdogSec=2s\\nTimeoutAbortSec=1s\\n",
            "/usr/local/sbin/spa-server --config /etc/spa/server.toml check-config\n",
        ),
        key = tb.key,
    ));

    // Start: Type=notify, so `systemctl start` returns once READY=1 came,
    // which the daemon sends only with the chain in place.
    assert!(!tb.connects(cli, srv), "closed before anything");
    sd.sh_ok("systemctl start spa-server");
    assert_eq!(sd.prop("ActiveState"), "active", "{}", sd.diag());
    let (rules, chain) = leftovers(&tb);
    assert!(chain && rules.is_empty(), "chain, no grant: {rules:?}");
    let pid1 = sd.prop("MainPID");

    // Privilege separation in force (issue 9): the network side (MainPID)
    // is an unprivileged user with no capability in any set, no_new_privs
    // and its seccomp filter; the privileged side (its one child) is root
    // with CAP_NET_ADMIN + CAP_NET_RAW effective and nothing else.
    let status_of = |pid: &str| {
        let status = sd.sh_ok(&format!("cat /proc/{pid}/status"));
        move |name: &str| {
            let v = status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default();
            (v, status.clone())
        }
    };
    let net = status_of(&pid1);
    let (uid, status) = net("Uid");
    assert!(
        uid.split_whitespace().all(|u| u != "0") && !uid.is_empty(),
        "network side runs as root: {status}"
    );
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(net(set).0, "0000000000000000", "{set}: {status}");
    }
    assert_eq!(net("NoNewPrivs").0, "1", "{status}");
    assert_eq!(net("Seccomp").0, "2", "{status}");
    let children = sd.sh_ok(&format!("cat /proc/{pid1}/task/{pid1}/children"));
    let helper = children
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no privileged side under {pid1}: {}", sd.diag()))
        .to_owned();
    let privileged = status_of(&helper);
    let (uid, status) = privileged("Uid");
    assert!(uid.split_whitespace().all(|u| u == "0"), "{status}");
    assert_eq!(privileged("CapEff").0, "0000000000003000", "{status}");
    assert_eq!(privileged("CapPrm").0, "0000000000003000", "{status}");
    assert_eq!(privileged("CapAmb").0, "0000000000000000", "{status}");

    tb.send(cli, srv, &["--open", "22", "--duration", "300"]);
    assert!(
        wait_for(Duration::from_secs(5), || tb.connects(cli, srv)),
        "open under systemd: {}",
        sd.diag()
    );
    // Issue 11: systemd's status line (STATUS=, on change, at most once a
    // second) and `spa-server status` over the control socket in
    // RuntimeDirectory, under the unit's sandbox.
    let want = "1 grant; 1 accepted, 0 rejected since start";
    assert!(
        wait_for(Duration::from_secs(3), || sd
            .sh("systemctl status --no-pager spa-server")
            .stdout
            .windows(want.len())
            .any(|w| w == want.as_bytes())),
        "systemctl status lacks {want:?}: {}",
        String::from_utf8_lossy(&sd.sh("systemctl status --no-pager spa-server").stdout)
    );
    let status = sd.sh_ok("/usr/local/sbin/spa-server --config /etc/spa/server.toml status");
    assert!(
        status.contains("key alice") && status.contains(&cli.to_string()),
        "{status}"
    );

    // Crash: SIGKILL. ExecStopPost (`spa-server flush`) removes the grant,
    // Restart=on-failure brings the daemon back, which starts with no grant.
    sd.sh_ok("systemctl kill -s SIGKILL spa-server");
    assert!(
        wait_for(WAIT, || sd.prop("NRestarts") == "1"
            && sd.prop("ActiveState") == "active"),
        "restarted after SIGKILL: {}",
        sd.diag()
    );
    assert_ne!(sd.prop("MainPID"), pid1, "a new process");
    let (rules, chain) = leftovers(&tb);
    assert!(
        chain && rules.is_empty(),
        "restart inherits no grant: {rules:?}"
    );
    assert!(!tb.connects(cli, srv), "closed after the crash");

    // Reload (SIGHUP) keeps grants.
    tb.send(cli, srv, &["--open", "22", "--duration", "300"]);
    assert!(
        wait_for(Duration::from_secs(5), || tb.connects(cli, srv)),
        "open after the restart: {}",
        sd.diag()
    );
    sd.sh_ok("systemctl reload spa-server");
    assert!(
        wait_for(Duration::from_secs(5), || sd
            .diag()
            .contains("reloaded: grants that still fit")),
        "reload logged: {}",
        sd.diag()
    );
    assert_eq!(sd.prop("ActiveState"), "active", "{}", sd.diag());
    assert!(tb.connects(cli, srv), "a reload keeps the grant");

    // Hung: SIGSTOP freezes the event loop, so WATCHDOG=1 stops coming.
    // Nothing else can end a stopped process: a second restart proves the
    // watchdog fired (SIGABRT, then SIGKILL after TimeoutAbortSec), and
    // ExecStopPost removed the grant.
    let pid2 = sd.prop("MainPID");
    sd.sh_ok(&format!("kill -STOP {pid2}"));
    assert!(
        wait_for(WAIT, || sd.prop("NRestarts") == "2"
            && sd.prop("ActiveState") == "active"),
        "restarted by the watchdog: {}",
        sd.diag()
    );
    assert_ne!(sd.prop("MainPID"), pid2, "a new process");
    let (rules, chain) = leftovers(&tb);
    assert!(chain && rules.is_empty(), "after the watchdog: {rules:?}");
    assert!(!tb.connects(cli, srv), "closed after the watchdog kill");

    // Stop: nothing of ours is left, the baseline still refuses.
    sd.sh_ok("systemctl stop spa-server");
    assert_eq!(sd.prop("ActiveState"), "inactive", "{}", sd.diag());
    let (rules, chain) = leftovers(&tb);
    assert!(!chain && rules.is_empty(), "stop leaves nothing: {rules:?}");
    assert!(!tb.connects(cli, srv), "closed after stop");
    assert!(
        tb.pair.srv_pids("spa-server").is_empty(),
        "no process of ours"
    );
    tb.done("systemctl_start_crash_restart_reload_watchdog_stop");
}

/// The Debian packages, installed as an admin installs them: `dpkg -i` into
/// the fenced-off root (overlay /usr, /etc and dpkg database), then the
/// packaged spa-keygen, check-config, `systemctl start`, a real open from the
/// client namespace with the packaged spa-client, `dpkg -r` (no unit
/// running, no rule, configuration kept) and `dpkg -P` (no file left).
/// Prints a transcript (docs/packaging.md shows one).
#[test]
fn debian_packages_install_start_open_remove_purge() {
    const ID: &str = "sd-pkg";
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let debs = repo.join("target/debian");
    let find = |name: &str| {
        let prefix = format!("{name}_");
        std::fs::read_dir(&debs)
            .ok()
            .and_then(|d| {
                d.flatten().map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(&prefix))
                })
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {name}_*.deb in {}: run scripts/package.sh first (scripts/test.sh does)",
                    debs.display()
                )
            })
    };
    let (server_deb, client_deb) = (find("spa-server"), find("spa-client"));
    let tb = Testbed::new(180, "pkg", "iptables", ID, &[]);
    let sd = Systemd::boot(&tb);
    let (cli, srv): (IpAddr, IpAddr) = (tb.pair.cli_ip4.into(), tb.pair.srv_ip4.into());
    let step = |what: &str, script: &str| {
        println!("$ {what}");
        let out = sd.sh_ok(script);
        for l in out.lines() {
            println!("  {l}");
        }
        out
    };

    // A container image's policy-rc.d (exit 101: no service actions) is not
    // part of a host; with it, deb-systemd-invoke would not stop the unit.
    sd.sh_ok("rm -f /usr/sbin/policy-rc.d");
    step(
        "dpkg -i spa-client_*.deb spa-server_*.deb",
        &format!(
            "dpkg -i {} {} 2>&1",
            client_deb.display(),
            server_deb.display()
        ),
    );
    assert_eq!(sd.prop("LoadState"), "loaded", "the unit is installed");
    assert_eq!(sd.prop("ActiveState"), "inactive", "install starts nothing");
    assert_eq!(
        sd.prop("UnitFileState"),
        "disabled",
        "install enables nothing"
    );
    let listing = "ls -ld /etc/spa/keys; getent passwd spa; \
         ls /usr/share/man/man*/spa* /usr/share/bash-completion/completions/spa*";
    let setup = step(listing, listing);
    assert!(
        setup.contains("drwx------"),
        "/etc/spa/keys is 0700: {setup}"
    );
    assert!(setup.contains("spa:x:"), "the system user spa: {setup}");
    for f in [
        "spa-server.8.gz",
        "spa-server.toml.5.gz",
        "spa-client.1.gz",
        "spa-keygen.1.gz",
        "completions/spa-client",
    ] {
        assert!(setup.contains(f), "{f} installed: {setup}");
    }

    let keygen = format!("spa-keygen --out /etc/spa/keys/alice.key --name alice --server-id {ID}");
    step(&keygen, &format!("{keygen} | head -n 1"));
    // The admin's edit of the conffile (this testbed's server id, interface
    // and key), and the other test's drop-in (no sysinit, log to a file).
    sd.sh_ok(&configure(ID, &tb.pair.srv_if, "", "", ""));
    step("spa-server check-config", "spa-server check-config");
    assert_eq!(
        sd.sh_ok("command -v spa-server").trim(),
        "/usr/sbin/spa-server",
        "the packaged daemon"
    );

    assert!(!tb.connects(cli, srv), "closed before anything");
    step("systemctl start spa-server", "systemctl start spa-server");
    assert_eq!(sd.prop("ActiveState"), "active", "{}", sd.diag());

    // The packaged client, from the client namespace: systemd's mounts
    // (where /usr/bin/spa-client and the key are), the client's network.
    println!(
        "$ (client namespace) spa-client send --key /etc/spa/keys/alice.key --open {PORT} {srv}"
    );
    let sent = run_ok(
        Command::new("nsenter")
            .args(["-t", &sd.pid.to_string(), "-m"])
            .arg(format!("--net=/run/netns/{}", tb.pair.cli_ns))
            .args(["spa-client", "send", "--key", "/etc/spa/keys/alice.key"])
            .args(["--open", &PORT.to_string(), "--duration", "300"])
            .arg(srv.to_string())
            .stdin(Stdio::null()),
    );
    println!("  {}", String::from_utf8_lossy(&sent.stdout).trim());
    assert!(
        wait_for(Duration::from_secs(5), || tb.connects(cli, srv)),
        "open with the packaged client: {}",
        sd.diag()
    );
    println!("  connect {cli} -> {srv}:{PORT}: OK");
    let (rules, _) = leftovers(&tb);
    assert_eq!(rules.len(), 1, "one grant: {rules:?}");

    let files = sd.sh_ok("dpkg -L spa-server spa-client");
    step(
        "dpkg -r spa-server spa-client",
        "dpkg -r spa-server spa-client 2>&1",
    );
    assert_ne!(sd.prop("ActiveState"), "active", "removed: {}", sd.diag());
    assert!(
        tb.pair.srv_pids("spa-server").is_empty(),
        "removed: no process of ours"
    );
    let (rules, chain) = leftovers(&tb);
    assert!(
        !chain && rules.is_empty(),
        "removed: no rule, no chain: {rules:?}"
    );
    assert!(!tb.connects(cli, srv), "removed: closed again");
    println!("  no spa-server process, no SPA chain, no grant; connect: refused");
    let kept = step("ls /etc/spa /etc/spa/keys", "ls /etc/spa /etc/spa/keys");
    assert!(
        kept.contains("server.toml") && kept.contains("alice.key"),
        "remove keeps configuration and keys: {kept}"
    );

    step(
        "dpkg -P spa-server spa-client",
        "dpkg -P spa-server spa-client 2>&1",
    );
    // Every file the packages had and every directory of ours (shared ones
    // like /usr/bin stay), and what the scripts and the daemon made.
    let paths: Vec<&str> = files.lines().filter(|l| l.starts_with('/')).collect();
    let left = sd.sh_ok(&format!(
        "for f in {} /etc/spa /var/lib/spa-server /run/spa-server; do
            if [ -d \"$f\" ]; then case \"$f\" in *spa*) echo \"$f\";; esac
            elif [ -e \"$f\" ]; then echo \"$f\"; fi
        done",
        paths.join(" ")
    ));
    println!("$ ls every path of dpkg -L, /etc/spa, /var/lib/spa-server, /run/spa-server");
    println!(
        "  {}",
        if left.trim().is_empty() {
            "(nothing left)"
        } else {
            left.trim()
        }
    );
    assert!(left.trim().is_empty(), "purge leaves no file: {left}");
    tb.done("debian_packages_install_start_open_remove_purge");
}

/// Issue 10, item 6: journald files each line under its priority. The
/// daemon runs as a transient unit whose stderr is the journal; a warning
/// (the start note of a key without require_explicit_address) is shown by
/// `journalctl -p warning`, an info line (`ready`) is not; a daemon that
/// cannot start leaves its error under `-p err`; no line carries a second
/// timestamp.
#[test]
fn journal_reads_each_line_at_its_priority() {
    let tb = Testbed::new(205, "journal", "iptables", SERVER_ID, &["alice"]);
    let sd = Systemd::boot(&tb);
    // Nothing here may pull in sysinit.target: its systemd-tmpfiles-setup
    // empties /tmp, which this systemd shares with the host. So the units
    // are masked (in the overlay /etc) and every unit has no default
    // dependencies.
    sd.sh_ok(
        "systemctl mask -q systemd-tmpfiles-setup.service systemd-tmpfiles-clean.service \
         systemd-tmpfiles-setup-dev.service sysinit.target && \
         systemctl start systemd-journald.socket systemd-journald.service",
    );
    let server = bin("spa-server").display().to_string();
    let state = tb.state_dir().display().to_string();
    sd.sh_ok(&format!(
        "systemd-run -q -u spa-log -p DefaultDependencies=no -p StandardError=journal {server} --interface {iface} \
         --server-id {SERVER_ID} --state-dir {state} --firewall iptables --key {key} --allow tcp/22",
        iface = tb.pair.srv_if,
        key = tb.key,
    ));
    sd.sh_ok(&format!(
        "systemd-run -q -u spa-bad -p DefaultDependencies=no -p StandardError=journal {server} --key /nonexistent.key"
    ));
    let journal = |args: &str| sd.sh_ok(&format!("journalctl --no-pager -o cat {args}"));
    let ready = wait_for(WAIT, || journal("-u spa-log").contains("ready"));
    assert!(ready, "no ready line in the journal: {}", journal(""));
    let warn = journal("-u spa-log -p warning");
    assert!(
        warn.contains("key accepts datagrams without an address") && !warn.contains("ready"),
        "-p warning must show the warning and not the info lines:\n{warn}\nall:\n{}",
        journal("-u spa-log")
    );
    let failed = wait_for(WAIT, || {
        journal("-u spa-bad -p err").contains("/nonexistent.key")
    });
    assert!(
        failed,
        "-p err must show why spa-bad did not start:\n{}",
        journal("-u spa-bad")
    );
    for l in journal("-u spa-log").lines() {
        assert!(
            !l.starts_with("20") && !l.starts_with('<'),
            "a second timestamp or an unread prefix: {l}"
        );
    }
    tb.done("journal_reads_each_line_at_its_priority");
}
