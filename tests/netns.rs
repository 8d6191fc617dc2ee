//! Two network namespaces joined by a veth pair (`NetPair`): created with
//! their addresses, run commands in, torn down on drop (every process left
//! inside them killed first).

use crate::{must, require_root, run};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        self.srv_until_listening(&["python3", "-c", &script])
    }

    /// Spawns `argv` in the server namespace and returns once it printed
    /// its first 10 bytes of stdout, `listening\n` (or closed its stdout:
    /// it died), so a connect right after finds the listener.
    pub fn srv_until_listening(&self, argv: &[&str]) -> Child {
        let mut child = self
            .srv(argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn listener");
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

    /// Packets the server's interface has received (its `rx_packets`
    /// counter; 0 when unreadable): how much of a flood arrived.
    pub fn srv_rx_packets(&self) -> u64 {
        self.srv_sh(&format!(
            "cat /sys/class/net/{}/statistics/rx_packets",
            self.srv_if
        ))
        .trim()
        .parse()
        .unwrap_or(0)
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
