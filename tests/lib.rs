//! Test hosts for the end-to-end tests: two network namespaces joined by a
//! veth pair, with addresses from the benchmarking ranges (198.18.0.0/15,
//! 2001:2::/48), torn down on drop, also when a test panics.
//!
//! Each test passes its own `id` (1..=250), which picks the namespace names
//! (`spa<id>s`, `spa<id>c`) and the subnet (198.18.<id>.0/24,
//! 2001:2:0:<id>::/64), so tests run in parallel without sharing anything.
//! Ids in use: 1-9 and 70 daemon tests, 10-19 firewall, 20-24 capture, 30-49 legacy,
//! 50-69 lifecycle (69: re-created interface), 100-103 replay_record, 120-126 owners, jump and addresses (B:
//! 120-139), 140 tools_env and 141 knock_flood (C: 140-159), 160-162 and 164 client, 163 ssh, 170-171 flood (h5: 170-179),
//! 200-213 issue 10 (instance, silent, journal in systemd.rs, rejections, fw_reload,
//! revocation, check_config; F: 200-219), 220-222 privsep (G: 220-239), 240 key_rules and 241-243 forward (H: 240-250), 60 protocol_v2 (J: 60-66, 73-79). Nothing here
//! touches the root namespace's firewall: every command runs through `ip netns exec`.

pub mod sshd;

use spa_proto::{Grant, Proto};
use spa_server::firewall::{backend, Access, BackendKind, FirewallOptions};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Path of a workspace binary (`spa-server`, `spa-client`, `spa-keygen`),
/// found next to the test executable (`target/<profile>/deps/..`), so it works
/// for debug and release builds alike. `SPA_BIN_DIR` overrides.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("SPA_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps layout");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Fails the test early with a clear message when not run as root.
pub fn require_root() {
    // SAFETY-free check: /proc/self/status Uid line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        uid, "0",
        "end-to-end tests need root (network namespaces, firewall)"
    );
}

/// Two namespaces joined by a veth pair.
pub struct NetPair {
    pub id: u8,
    pub srv_ns: String,
    pub cli_ns: String,
    /// Interface name inside the server namespace.
    pub srv_if: String,
    pub cli_if: String,
    pub srv_ip4: Ipv4Addr,
    pub cli_ip4: Ipv4Addr,
    /// A second client address, for "from nowhere else" checks.
    pub cli_ip4_b: Ipv4Addr,
    pub srv_ip6: Ipv6Addr,
    pub cli_ip6: Ipv6Addr,
    pub cli_ip6_b: Ipv6Addr,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    out
}

fn must(mut cmd: Command) {
    let cmd = &mut cmd;
    let dbg = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{dbg} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` to completion (stdin from /dev/null) and panics with its
/// command line, stdout and stderr unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One address family of a `NetPair`: the server's address, the client's,
/// and the client's second address (for "from nowhere else" checks).
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub srv: IpAddr,
    pub cli: IpAddr,
    pub cli_b: IpAddr,
}

impl NetPair {
    pub fn new(id: u8) -> NetPair {
        require_root();
        assert!((1..=250).contains(&id), "namespace id {id} out of range");
        // Namespace names are global to the host; the prefix lets two
        // checkouts run the same tests side by side without sharing names.
        let prefix = std::env::var("SPA_E2E_NS_PREFIX").unwrap_or_default();
        let p = NetPair {
            id,
            srv_ns: format!("{prefix}spa{id}s"),
            cli_ns: format!("{prefix}spa{id}c"),
            srv_if: format!("spa{id}s0"),
            cli_if: format!("spa{id}c0"),
            srv_ip4: Ipv4Addr::new(198, 18, id, 1),
            cli_ip4: Ipv4Addr::new(198, 18, id, 2),
            cli_ip4_b: Ipv4Addr::new(198, 18, id, 3),
            srv_ip6: Ipv6Addr::new(0x2001, 2, 0, id as u16, 0, 0, 0, 1),
            cli_ip6: Ipv6Addr::new(0x2001, 2, 0, id as u16, 0, 0, 0, 2),
            cli_ip6_b: Ipv6Addr::new(0x2001, 2, 0, id as u16, 0, 0, 0, 3),
        };
        // A previous run that was killed may have left these names behind.
        p.remove();
        must(ip(&["netns", "add", &p.srv_ns]));
        must(ip(&["netns", "add", &p.cli_ns]));
        // Create the veth inside the server namespace, move the peer straight
        // into the client namespace: the root namespace never sees either.
        must(p.srv(&[
            "ip", "link", "add", &p.srv_if, "type", "veth", "peer", "name", &p.cli_if, "netns",
            &p.cli_ns,
        ]));
        let s4 = format!("{}/24", p.srv_ip4);
        let c4 = format!("{}/24", p.cli_ip4);
        let c4b = format!("{}/24", p.cli_ip4_b);
        let s6 = format!("{}/64", p.srv_ip6);
        let c6 = format!("{}/64", p.cli_ip6);
        let c6b = format!("{}/64", p.cli_ip6_b);
        must(p.srv(&["ip", "addr", "add", &s4, "dev", &p.srv_if]));
        must(p.srv(&["ip", "addr", "add", &s6, "dev", &p.srv_if, "nodad"]));
        must(p.cli(&["ip", "addr", "add", &c4, "dev", &p.cli_if]));
        must(p.cli(&["ip", "addr", "add", &c4b, "dev", &p.cli_if]));
        must(p.cli(&["ip", "addr", "add", &c6, "dev", &p.cli_if, "nodad"]));
        must(p.cli(&["ip", "addr", "add", &c6b, "dev", &p.cli_if, "nodad"]));
        for ns in [&p.srv_ns, &p.cli_ns] {
            must(ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"]));
        }
        must(p.srv(&["ip", "link", "set", &p.srv_if, "up"]));
        must(p.cli(&["ip", "link", "set", &p.cli_if, "up"]));
        // REJECT answers with ICMP; the default rate limit would turn quick
        // refused probes into slow timeouts.
        must(p.srv(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]));
        must(p.srv(&["sysctl", "-qw", "net.ipv6.icmp.ratelimit=0"]));
        p
    }

    /// Re-creates the veth pair after `ip link del` of the server's end
    /// (which takes the client's end with it), with the same names and
    /// addresses but a new ifindex: what a re-created VLAN or veth looks like.
    pub fn recreate_veth(&self) {
        self.srv_sh(&format!(
            "ip link add {s} type veth peer name {c} netns {cns} && ip addr add {a4}/24 dev {s} && ip addr add {a6}/64 dev {s} nodad && ip link set {s} up",
            s = self.srv_if, c = self.cli_if, cns = self.cli_ns, a4 = self.srv_ip4, a6 = self.srv_ip6
        ));
        self.cli_sh(&format!(
            "ip addr add {a}/24 dev {c} && ip addr add {b}/24 dev {c} && ip addr add {a6}/64 dev {c} nodad && ip link set {c} up",
            c = self.cli_if, a = self.cli_ip4, b = self.cli_ip4_b, a6 = self.cli_ip6
        ));
    }

    /// A command that runs inside the server namespace.
    pub fn srv(&self, argv: &[&str]) -> Command {
        ns_cmd(&self.srv_ns, argv)
    }

    /// A command that runs inside the client namespace.
    pub fn cli(&self, argv: &[&str]) -> Command {
        ns_cmd(&self.cli_ns, argv)
    }

    /// Runs a shell snippet in the server namespace; panics with its stderr on failure.
    pub fn srv_sh(&self, script: &str) -> String {
        sh_in(&self.srv_ns, script)
    }

    pub fn cli_sh(&self, script: &str) -> String {
        sh_in(&self.cli_ns, script)
    }

    /// The admin's baseline: established traffic passes, new tcp/22 is
    /// refused (REJECT, so a probe fails fast instead of timing out), for
    /// IPv4 and IPv6, with iptables.
    pub fn iptables_baseline(&self, port: u16) {
        for t in ["iptables", "ip6tables"] {
            self.srv_sh(&format!(
                "{t} -w -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT && \
                 {t} -w -A INPUT -p tcp --dport {port} -j REJECT --reject-with tcp-reset"
            ));
        }
    }

    /// The baseline for a backend by its name (`--firewall` / `firewall =`):
    /// "iptables" or "nftables".
    pub fn baseline(&self, backend: &str, port: u16) {
        match backend {
            "iptables" => self.iptables_baseline(port),
            "nftables" => self.nft_baseline(port),
            other => panic!("unknown backend {other}"),
        }
    }

    /// The same baseline written as an nftables ruleset (`inet filter input`).
    pub fn nft_baseline(&self, port: u16) {
        self.srv_sh(&format!(
            "nft -f - <<'EOF'\n\
             table inet filter {{\n\
               chain input {{\n\
                 type filter hook input priority 0; policy accept;\n\
                 ct state established,related accept\n\
                 tcp dport {port} reject with tcp reset\n\
               }}\n\
             }}\n\
             EOF"
        ));
    }

    /// Starts a TCP listener on `port` (IPv4 and IPv6) inside the server
    /// namespace that accepts and closes connections; killed with the pair.
    pub fn listen(&self, port: u16) -> Child {
        let script = format!(
            "import socket,select\n\
             ss=[]\n\
             for fam,addr in ((socket.AF_INET,'0.0.0.0'),(socket.AF_INET6,'::')):\n\
             \x20   s=socket.socket(fam,socket.SOCK_STREAM)\n\
             \x20   s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             \x20   if fam==socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,1)\n\
             \x20   s.bind((addr,{port})); s.listen(64); ss.append(s)\n\
             print('listening',flush=True)\n\
             while True:\n\
             \x20   r,_,_=select.select(ss,[],[],600)\n\
             \x20   if not r: break\n\
             \x20   for s in r:\n\
             \x20       c,_=s.accept(); c.close()\n"
        );
        let mut child = self
            .srv(&["python3", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn listener");
        // Wait (bounded) for the "listening" line.
        let mut buf = [0u8; 10];
        if let Some(out) = child.stdout.as_mut() {
            let _ = out.read_exact(&mut buf);
        }
        child
    }

    /// Tries one TCP connect from the client namespace to `dst:port` from
    /// source address `src`; true when the handshake completes (within 1 s).
    pub fn can_connect(&self, src: IpAddr, dst: IpAddr, port: u16) -> bool {
        let fam = if dst.is_ipv4() { "AF_INET" } else { "AF_INET6" };
        let script = format!(
            "import socket,sys\n\
             s=socket.socket(socket.{fam},socket.SOCK_STREAM)\n\
             s.settimeout(1.0)\n\
             s.bind(('{src}',0))\n\
             try:\n\
             \x20   s.connect(('{dst}',{port})); sys.exit(0)\n\
             except Exception as e:\n\
             \x20   sys.exit(1)\n"
        );
        run(&mut self.cli(&["timeout", "5", "python3", "-c", &script]))
            .status
            .success()
    }

    /// The IPv4 addresses of the pair.
    pub fn v4(&self) -> Family {
        Family {
            srv: self.srv_ip4.into(),
            cli: self.cli_ip4.into(),
            cli_b: self.cli_ip4_b.into(),
        }
    }

    /// The IPv6 addresses of the pair.
    pub fn v6(&self) -> Family {
        Family {
            srv: self.srv_ip6.into(),
            cli: self.cli_ip6.into(),
            cli_b: self.cli_ip6_b.into(),
        }
    }

    /// Asserts that a connect to tcp/`port` from the client address `pick`
    /// chooses succeeds (`want`) or is refused right now, over IPv4 (message
    /// `what`) and then IPv6 (`what (v6)`): a grant and the baseline must
    /// mean the same for both families.
    pub fn assert_connect_v4_v6(
        &self,
        port: u16,
        pick: fn(&Family) -> IpAddr,
        want: bool,
        what: &str,
    ) {
        for (f, tag) in [(self.v4(), ""), (self.v6(), " (v6)")] {
            assert_eq!(self.can_connect(pick(&f), f.srv, port), want, "{what}{tag}");
        }
    }

    /// Pids of the processes in the server namespace whose name
    /// (`/proc/<pid>/comm`) is `comm`: only processes a test started there.
    pub fn srv_pids(&self, comm: &str) -> Vec<u32> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.srv_ns]));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
            })
            .collect()
    }

    /// Polls `can_connect` until it equals `want` or `within` passes.
    pub fn wait_connect(
        &self,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        want: bool,
        within: Duration,
    ) -> bool {
        let deadline = Instant::now() + within;
        for _ in 0..1000 {
            if self.can_connect(src, dst, port) == want {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn remove(&self) {
        for ns in [&self.srv_ns, &self.cli_ns] {
            kill_ns_pids(ns);
            let _ = run(Command::new("ip").args(["netns", "del", ns]));
        }
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        self.remove();
    }
}

fn ip(args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(args);
    c
}

fn ns_cmd(ns: &str, argv: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(argv);
    c
}

fn sh_in(ns: &str, script: &str) -> String {
    let out = run(&mut ns_cmd(ns, &["bash", "-c", script]));
    assert!(
        out.status.success(),
        "in {ns}: `{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills (SIGKILL) every process still inside namespace `ns`: only processes
/// the test started there, never anything outside it.
fn kill_ns_pids(ns: &str) {
    for _ in 0..3 {
        let out = run(Command::new("ip").args(["netns", "pids", ns]));
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if pids.is_empty() {
            return;
        }
        let _ = run(Command::new("kill").arg("-9").args(&pids));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed when dropped (SIGKILL), so a failing test
/// never leaves a daemon behind.
pub struct Guard(pub Child);

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most `within`) for `child` to exit; its status if it did.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let mut st = None;
    wait_for(within, || match child.try_wait() {
        Ok(Some(s)) => {
            st = Some(s);
            true
        }
        _ => false,
    });
    st
}

/// Polls `f` every 20 ms until it returns true or `within` passes.
pub fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Daemon helpers (through `Testbed` below, and lifecycle_env): a scratch
// directory, key generation with the real spa-keygen, and a running
// spa-server with its log in a file.

/// A directory of our own under /tmp (keys, state, logs), removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    /// `/tmp/spa-e2e.<tag>.<pid>`, emptied first if a killed run left it.
    pub fn new(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("spa-e2e.{tag}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Scratch { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes a new key file (mode 0600) with the real `spa-keygen`, for
/// `server_id`, and returns its path as a string for argv use.
pub fn keygen(path: &std::path::Path, name: &str, server_id: &str) -> String {
    let out = run(Command::new(bin("spa-keygen"))
        .arg("--out")
        .arg(path)
        .args(["--name", name, "--server-id", server_id]));
    assert!(
        out.status.success(),
        "spa-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.display().to_string()
}

/// Spawns `cmd` with stdin from /dev/null and stdout and stderr going to
/// `log`: appended (a restart keeps the earlier lines) or truncated first.
pub fn spawn_logged(mut cmd: Command, log: &Path, append: bool) -> Child {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let f2 = f.try_clone().expect("dup log fd");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// A `spa-server` running in the server namespace, its stdout and stderr in
/// a log file the test can grep. Started and waited for (bounded) until it
/// logs `ready`; SIGKILLed on drop, so a failing test never leaves it behind
/// (the namespace and its firewall go with the `NetPair`).
pub struct Server {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Server {
    /// Starts `spa-server <args>` in `pair`'s server namespace, logging to
    /// `log` (truncated), and waits up to 10 s for `ready`. Panics with the
    /// log when it exits or does not get ready.
    pub fn start(pair: &NetPair, log: &std::path::Path, args: &[&str]) -> Server {
        let mut s = Server::spawn(pair, log, args);
        let ok = wait_for(Duration::from_secs(10), || s.is_ready() || !s.is_running());
        assert!(
            ok && s.is_running() && s.is_ready(),
            "spa-server did not get ready: {}",
            s.log_text()
        );
        s
    }

    /// True once the daemon logged its `ready` line (message exactly
    /// `ready`: other lines such as "iptables chain ready" come earlier,
    /// before the capture is open).
    pub fn is_ready(&self) -> bool {
        self.log_text()
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("ready"))
    }

    /// Starts `spa-server <args>` without waiting for anything (for start-up
    /// failure tests).
    pub fn spawn(pair: &NetPair, log: &std::path::Path, args: &[&str]) -> Server {
        let server = bin("spa-server");
        let mut argv: Vec<&str> = vec![server.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        let mut cmd = pair.srv(&argv);
        cmd.env("NO_COLOR", "1");
        let child = spawn_logged(cmd, log, false);
        Server {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines containing every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits (bounded) until at least `n` log lines contain all `needles`.
    pub fn wait_lines(&self, needles: &[&str], n: usize, within: Duration) -> bool {
        wait_for(within, || self.lines_with(needles).len() >= n)
    }

    /// Like `wait_lines`, but panics with the log when it times out.
    pub fn expect_lines(&self, needles: &[&str], n: usize) {
        assert!(
            self.wait_lines(needles, n, Duration::from_secs(5)),
            "expected {n} log line(s) with {needles:?} within 5 s; log:\n{}",
            self.log_text()
        );
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, then waits up to 10 s for the exit (SIGKILL after that).
    /// Returns the exit status; None if it had to be killed.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = run(Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null()));
        let st = wait_exit(&mut child, Duration::from_secs(10));
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        st
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl NetPair {
    /// `iptables-save`, `ip6tables-save` and `ipset save` of the server
    /// namespace, without the date comments, packet counters and the set
    /// entries' remaining seconds, so two snapshots compare equal exactly
    /// when the rules and set entries are the same.
    /// Every line ends in a newline, so a caller may filter lines and
    /// compare again.
    pub fn iptables_snapshot(&self) -> String {
        let raw = self.srv_sh("iptables-save; ip6tables-save; ipset save 2>/dev/null || true");
        raw.lines()
            .filter(|l| !l.starts_with('#'))
            // ":INPUT ACCEPT [12:345]" -> ":INPUT ACCEPT"
            .map(|l| match l.find(" [") {
                Some(i) if l.starts_with(':') => format!("{}\n", &l[..i]),
                _ if l.starts_with("add ") => format!("{}\n", without_timeout(l)),
                _ => format!("{l}\n"),
            })
            .collect()
    }

    /// The grant set entries of the iptables backend (`ipset save` lines,
    /// `add SPA4 198.18.0.2,tcp:22 timeout 29 comment "spa-server exp=..."`)
    /// of `tool`'s family (iptables: SPA4, ip6tables: SPA6); none when the
    /// set is missing. The kernel hides an entry once its timeout passed.
    pub fn set_entries(&self, tool: &str) -> Vec<String> {
        let set = if tool == "ip6tables" { "SPA6" } else { "SPA4" };
        self.srv_sh(&format!("ipset save {set} 2>/dev/null || true"))
            .lines()
            .filter(|l| l.starts_with("add ") && l.contains("exp="))
            .map(str::to_owned)
            .collect()
    }

    /// `nft list ruleset` of the server namespace (stateless: no counters,
    /// no set element timeouts drifting).
    pub fn nft_snapshot(&self) -> String {
        self.srv_sh("nft -s list ruleset")
    }

    /// The whole firewall of the server namespace for a backend by name:
    /// `iptables_snapshot`, plus `nft_snapshot` for "nftables" (with
    /// iptables-nft, the ruleset is a second view of the same tables, so it
    /// is read only where nftables is the backend).
    pub fn firewall_snapshot(&self, backend: &str) -> String {
        let mut s = self.iptables_snapshot();
        if backend == "nftables" {
            s.push_str(&self.nft_snapshot());
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Firewall backend helpers (used by tests/tests/firewall_*.rs): the backends
// driven directly, their tools run inside the server namespace.

/// Unix seconds now: the clock of `Access::expires_at`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A tcp/`port` grant for `addr` until `expires_at`, as the daemon hands it
/// to a backend.
pub fn tcp_access(addr: impl Into<IpAddr>, port: u16, expires_at: u64) -> Access {
    Access {
        addr: addr.into(),
        grant: Grant::new(Proto::Tcp, port).expect("port > 0"),
        expires_at,
        forward: None,
    }
}

impl NetPair {
    /// Backend options whose every tool runs in the server namespace.
    pub fn fw_options(&self) -> FirewallOptions {
        FirewallOptions {
            exec_prefix: vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                self.srv_ns.clone(),
            ],
            ..Default::default()
        }
    }
}

/// What `kernel_closes_at_expiry` saw, for the backend's own checks.
pub struct Expiry {
    /// The first grant's `expires_at`.
    pub exp: u64,
    /// The re-opened grant's `expires_at`.
    pub again: u64,
    /// When the expiry wait began (after the "open before expiry" checks).
    pub waited_from: Instant,
}

/// The fail-closed property both backends must have: a grant for the
/// client (both families) ending `lifetime` s from now opens; the backend
/// is dropped, so no process of ours touches the firewall; the kernel
/// refuses the client again (within `within`) at `expires_at`, to the
/// second; `while_closed` runs then; a new backend re-opens by removing the
/// lapsed grant and adding a fresh one (600 s).
pub fn kernel_closes_at_expiry(
    p: &NetPair,
    kind: BackendKind,
    port: u16,
    lifetime: u64,
    within: Duration,
    while_closed: impl FnOnce(),
) -> Expiry {
    let (v4, v6) = (p.v4(), p.v6());
    let (c4, c6) = (v4.cli, v6.cli);
    let mut f = backend(kind, &p.fw_options());
    f.setup().unwrap();
    let exp = unix_now() + lifetime;
    f.apply(&[tcp_access(c4, port, exp), tcp_access(c6, port, exp)], &[])
        .unwrap();
    drop(f);
    p.assert_connect_v4_v6(port, |f| f.cli, true, "open before expiry");
    let waited_from = Instant::now();
    assert!(
        p.wait_connect(c4, v4.srv, port, false, within),
        "kernel never closed the grant"
    );
    let closed_at = unix_now();
    assert!(!p.can_connect(c6, v6.srv, port), "v6 closed too");
    while_closed();
    // The daemon comes back and re-opens: remove the lapsed grant, add anew.
    let mut f = backend(kind, &p.fw_options());
    let again = unix_now() + 600;
    f.apply(
        &[tcp_access(c4, port, again), tcp_access(c6, port, again)],
        &[tcp_access(c4, port, exp), tcp_access(c6, port, exp)],
    )
    .unwrap();
    p.assert_connect_v4_v6(port, |f| f.cli, true, "re-opened after expiry");
    // Closed at expires_at (second resolution), not before.
    assert!(closed_at >= exp, "closed early: {closed_at} < {exp}");
    assert!(closed_at <= exp + 1, "closed late: {closed_at} > {exp}+1");
    Expiry {
        exp,
        again,
        waited_from,
    }
}

// ---------------------------------------------------------------------------
// A daemon test's world (daemon*.rs, legacy.rs, and through lifecycle_env
// lifecycle.rs, notify.rs, unit_file.rs).

/// The port the baseline keeps closed, a listener serves, and grants open.
pub const PORT: u16 = 22;

/// Namespaces with the admin's baseline for a backend and a listener on
/// tcp/`PORT`, a scratch directory, and key files made by the real
/// `spa-keygen`. Everything goes on drop, also when a test fails.
pub struct Testbed {
    pub pair: NetPair,
    pub dir: Scratch,
    /// "iptables" or "nftables": the baseline, and `--firewall`.
    pub backend: &'static str,
    pub server_id: String,
    /// Path of the first key made (argv form).
    pub key: String,
    started: Instant,
    _listener: Guard,
}

impl Testbed {
    /// Namespaces `id`, the `backend` baseline, the listener, the scratch
    /// directory `<tag><id>`, and `<name>.key` for each of `keys`.
    pub fn new(
        id: u8,
        tag: &str,
        backend: &'static str,
        server_id: &str,
        keys: &[&str],
    ) -> Testbed {
        let started = Instant::now();
        let pair = NetPair::new(id);
        pair.baseline(backend, PORT);
        let listener = Guard(pair.listen(PORT));
        let dir = Scratch::new(&format!("{tag}{id}"));
        let paths: Vec<String> = keys
            .iter()
            .map(|k| keygen(&dir.join(&format!("{k}.key")), k, server_id))
            .collect();
        Testbed {
            pair,
            dir,
            backend,
            server_id: server_id.to_owned(),
            key: paths.first().cloned().unwrap_or_default(),
            started,
            _listener: listener,
        }
    }

    /// Where `new` wrote key `name`.
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join(&format!("{name}.key"))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `spa-server` with the testbed's interface, server id, state directory
    /// and backend, its first key allowed tcp/22, then `extra`; started as
    /// `Server::start` does (ready, or the test fails), logging to `log` in
    /// the scratch directory.
    pub fn server(&self, log: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--key", &self.key, "--allow", "tcp/22"];
        args.extend_from_slice(extra);
        self.server_without_key(log, &args)
    }

    /// `server` without the key (for a configuration file that lists it:
    /// it must not be given twice).
    pub fn server_without_key(&self, log: &str, extra: &[&str]) -> Server {
        self.server_in(&self.state_dir(), log, extra)
    }

    /// `server_without_key` with the state directory `state` (a second
    /// server, or a state directory a test prepares).
    pub fn server_in(&self, state: &Path, log: &str, extra: &[&str]) -> Server {
        let base = self.server_args(state);
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        Server::start(&self.pair, &self.dir.join(log), &args)
    }

    /// The arguments `server_in` gives spa-server (interface, server id,
    /// `--state-dir state`, backend), for a test that runs it another way
    /// (`Server::spawn`, under `env`).
    pub fn server_args(&self, state: &Path) -> Vec<String> {
        let state = state.display().to_string();
        [
            "--interface",
            &self.pair.srv_if,
            "--server-id",
            &self.server_id,
            "--state-dir",
            &state,
            "--firewall",
            self.backend,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `server_args` with the first key allowed tcp/22, as `server` gives.
    pub fn server_args_with_key(&self) -> Vec<String> {
        let mut args = ["--key", &self.key, "--allow", "tcp/22"]
            .map(str::to_owned)
            .to_vec();
        args.extend(self.server_args(&self.state_dir()));
        args
    }

    /// `spa-client <args>` in the client namespace; must exit 0.
    pub fn client(&self, args: &[&str]) -> Output {
        let client = bin("spa-client");
        let mut argv = vec![client.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        run_ok(&mut self.pair.cli(&argv))
    }

    /// `spa-client send --quiet --key KEY <args> --source SRC DST`.
    pub fn send_with_key(&self, key: &str, src: IpAddr, dst: IpAddr, args: &[&str]) {
        let (src, dst) = (src.to_string(), dst.to_string());
        let mut argv = vec!["send", "--quiet", "--key", key];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--source", &src, &dst]);
        self.client(&argv);
    }

    /// `send_with_key` with the first key.
    pub fn send(&self, src: IpAddr, dst: IpAddr, args: &[&str]) {
        self.send_with_key(&self.key, src, dst, args);
    }

    /// `spa-client send --quiet --key KEY <args> --output FILE`: a sealed
    /// datagram on disk, not sent, for `raw_send` or tampering.
    pub fn seal_with_key(&self, key: &str, file: &Path, args: &[&str]) {
        let file = file.display().to_string();
        let mut argv = vec!["send", "--quiet", "--key", key];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--output", &file]);
        self.client(&argv);
    }

    /// `seal_with_key` with the first key.
    pub fn seal(&self, file: &Path, args: &[&str]) {
        self.seal_with_key(&self.key, file, args);
    }

    /// `spa-client raw-send --quiet --source SRC FILE DST`: the file's bytes
    /// again, unchanged.
    pub fn raw_send(&self, file: &Path, src: IpAddr, dst: IpAddr) {
        let (f, src, dst) = (file.display().to_string(), src.to_string(), dst.to_string());
        self.client(&["raw-send", "--quiet", "--source", &src, &f, &dst]);
    }

    /// Can `src` connect to `dst`'s tcp/`PORT` right now?
    pub fn connects(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.pair.can_connect(src, dst, PORT)
    }

    /// Waits (bounded, 5 s) until a connect from `src` to `dst`'s
    /// tcp/`PORT` succeeds or is refused, as wanted; fails the test with
    /// `what` and the server's log otherwise.
    pub fn expect_connect(&self, src: IpAddr, dst: IpAddr, want: bool, what: &str, s: &Server) {
        assert!(
            self.pair
                .wait_connect(src, dst, PORT, want, Duration::from_secs(5)),
            "{what}: connect {src} -> {dst}:{PORT} should {}; server log:\n{}",
            if want { "succeed" } else { "be refused" },
            s.log_text()
        );
    }

    /// The iptables backend's grants of `tool`'s family (iptables or
    /// ip6tables) in the server namespace: the entries of its grant set
    /// (issue 14; `add SPA4 198.18.0.2,tcp:22 timeout 29 comment
    /// "spa-server exp=..."`), see [`NetPair::set_entries`].
    pub fn grant_rules(&self, tool: &str) -> Vec<String> {
        self.pair.set_entries(tool)
    }

    /// Asserts the iptables backend holds exactly one grant: for `src` on
    /// tcp/22.
    pub fn assert_one_grant(&self, src: IpAddr) {
        let rules = self.grant_rules("iptables");
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert!(rules[0].contains(&format!(" {src},tcp:22 ")), "{rules:?}");
    }

    /// Prints how long the test took since `new`.
    pub fn done(&self, name: &str) {
        eprintln!("{name}: {:.2} s", self.started.elapsed().as_secs_f64());
    }
}

/// An `ipset save` add line without its `timeout N` (it counts down).
fn without_timeout(line: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut words = line.split(' ');
    while let Some(w) = words.next() {
        if w == "timeout" {
            words.next();
        } else {
            out.push(w);
        }
    }
    out.join(" ")
}
