//! Forwarding through the gateway end to end (issue 15, item 3): three
//! namespaces, the client, the gateway running spa-server, and an internal
//! host running the real `sshd`, reachable only through the gateway (the
//! client has no route to the internal network). `spa-client send --open
//! 2222 gw` then `ssh -p 2222 gw` reaches the internal host, IPv4 and IPv6;
//! another client address cannot; `--close` ends it; after `kill -9` of the
//! daemon the path ends at the grant's end, in the kernel. IP forwarding off
//! is a start error naming the sysctl. Both backends.
//!
//! Namespace ids 241 (iptables), 242 (nftables) and 243 (reload), engineer H's range.
//! The internal namespace is `<prefix>spa<id>i`, deleted on drop with
//! everything in it; sshd runs only there, in a mount namespace of its own.

use spa_e2e::sshd::{start_sshd, SSH};
use spa_e2e::{bin, keygen, run_ok, wait_for, NetPair, Scratch, Server};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SID: &str = "gw";

/// The internal host: a namespace joined to the gateway by a veth pair,
/// default routes via the gateway. Deleted (with its processes) on drop.
struct Inner {
    ns: String,
    ip4: IpAddr,
    ip6: IpAddr,
}

impl Inner {
    fn new(pair: &NetPair) -> Inner {
        let id = pair.id;
        let prefix = std::env::var("SPA_E2E_NS_PREFIX").unwrap_or_default();
        let ns = format!("{prefix}spa{id}i");
        let inner = Inner {
            ns: ns.clone(),
            ip4: format!("198.19.{id}.5").parse().unwrap(),
            ip6: format!("2001:2:0:{:x}::5", 0x1000 + u32::from(id))
                .parse()
                .unwrap(),
        };
        inner.remove();
        run_ok(Command::new("ip").args(["netns", "add", &ns]));
        let (gif, iif) = (format!("spa{id}g0"), format!("spa{id}i0"));
        let net6 = format!("2001:2:0:{:x}::", 0x1000 + u32::from(id));
        pair.srv_sh(&format!(
            "ip link add {gif} type veth peer name {iif} netns {ns} && \
             ip addr add 198.19.{id}.1/24 dev {gif} && ip addr add {net6}1/64 dev {gif} nodad && \
             ip link set {gif} up"
        ));
        inner.sh(&format!(
            "ip link set lo up && ip addr add {}/24 dev {iif} && ip addr add {}/64 dev {iif} nodad && \
             ip link set {iif} up && ip route add default via 198.19.{id}.1 && \
             ip -6 route add default via {net6}1",
            inner.ip4, inner.ip6
        ));
        inner
    }

    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(argv);
        c
    }

    fn sh(&self, script: &str) {
        run_ok(&mut self.cmd(&["bash", "-c", script]));
    }

    fn remove(&self) {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .ok();
        if let Some(o) = out {
            let pids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !pids.is_empty() {
                let _ = Command::new("kill").arg("-9").args(&pids).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.remove();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `ssh -b SRC -p PORT root@GW ip -br addr` from the client namespace
/// (bounded).
fn ssh_via(pair: &NetPair, dir: &Scratch, src: IpAddr, gw: IpAddr, port: u16) -> Output {
    let d = dir.path.display();
    let port = port.to_string();
    let src = src.to_string();
    let target = format!("root@{gw}");
    pair.cli(&[
        "timeout",
        "20",
        SSH,
        "-F",
        "/dev/null",
        "-b",
        &src,
        "-p",
        &port,
        "-i",
        &format!("{d}/id_ed25519"),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        &format!("UserKnownHostsFile={d}/known_hosts"),
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        &target,
        "ip -br addr",
    ])
    .env("HOME", &dir.path)
    .stdin(Stdio::null())
    .output()
    .expect("spawn ssh")
}

/// The forward path for `backend`: baselines that drop forwarded traffic
/// unless established (or granted), then the whole story.
fn forwards_to_the_internal_sshd(id: u8, backend: &'static str) {
    let pair = NetPair::new(id);
    pair.baseline(backend, 22);
    match backend {
        "iptables" => {
            for t in ["iptables", "ip6tables"] {
                pair.srv_sh(&format!(
                    "{t} -w -P FORWARD DROP && \
                     {t} -w -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
                ));
            }
        }
        _ => {
            pair.srv_sh(
                "nft add chain inet filter forward '{ type filter hook forward priority 0; policy drop; }' && \
                 nft add rule inet filter forward ct state established,related accept",
            );
        }
    }
    let inner = Inner::new(&pair);
    let dir = Scratch::new(&format!("fwd{id}"));
    let _sshd = start_sshd(&dir, &["0.0.0.0:22", "[::]:22"], |a| inner.cmd(a));
    // The admin's own ruleset, to reload while a forward is live (as
    // netfilter-persistent or `nft -f /etc/nftables.conf` would).
    let d = dir.path.display();
    let reload = match backend {
        "iptables" => {
            pair.srv_sh(&format!(
                "iptables-save > {d}/rules.v4 && ip6tables-save > {d}/rules.v6"
            ));
            format!("iptables-restore < {d}/rules.v4 && ip6tables-restore < {d}/rules.v6")
        }
        _ => {
            write(
                &dir.join("nftables.conf"),
                "flush ruleset\ntable inet filter {\n  chain input {\n    type filter hook input priority 0; policy accept;\n\
                 \x20   ct state established,related accept\n    tcp dport 22 reject with tcp reset\n  }\n\
                 \x20 chain forward {\n    type filter hook forward priority 0; policy drop;\n\
                 \x20   ct state established,related accept\n  }\n}\n",
            );
            format!("nft -f {d}/nftables.conf")
        }
    };
    let (cli4, cli4_b, gw4) = (
        IpAddr::from(pair.cli_ip4),
        IpAddr::from(pair.cli_ip4_b),
        IpAddr::from(pair.srv_ip4),
    );
    let (cli6, gw6) = (IpAddr::from(pair.cli_ip6), IpAddr::from(pair.srv_ip6));

    // Closed before; and the internal host is not routed to the client.
    assert!(!pair.can_connect(cli4, gw4, 2222), "2222 open before");
    assert!(
        !pair.can_connect(cli4, inner.ip4, 22),
        "internal host routed"
    );

    let key = keygen(&dir.join("alice.key"), "alice", SID);
    let conf = dir.join("server.toml");
    write(
        &conf,
        &format!(
            "[[key]]\nname = \"alice\"\nfile = \"{key}\"\nallow = [\"tcp/2222\"]\n\
             [key.forward]\n\"tcp/2222\" = \"{}:22\"\n\"tcp/2223\" = \"[{}]:22\"\n",
            inner.ip4, inner.ip6
        ),
    );
    let conf = conf.display().to_string();
    let state = dir.join("state").display().to_string();
    let args = [
        "--config",
        &conf,
        "--interface",
        &pair.srv_if,
        "--server-id",
        SID,
        "--state-dir",
        &state,
        "--firewall",
        backend,
    ];

    // IP forwarding off: a start error naming the sysctl, nothing installed.
    pair.srv_sh("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0");
    let mut off = Server::spawn(&pair, &dir.join("off.log"), &args);
    assert!(
        wait_for(Duration::from_secs(10), || !off.is_running()),
        "spa-server must refuse to start with forwarding off: {}",
        off.log_text()
    );
    assert!(
        off.log_text().contains("net.ipv4.ip_forward = 0")
            || off.log_text().contains("net.ipv6.conf.all.forwarding = 0"),
        "{}",
        off.log_text()
    );
    pair.srv_sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");

    let s = Server::start(&pair, &dir.join("server.log"), &args);
    let send = |src: IpAddr, dst: IpAddr, a: &[&str]| {
        let (src, dst) = (src.to_string(), dst.to_string());
        let client = bin("spa-client");
        let mut argv = vec![client.to_str().unwrap(), "send", "--quiet", "--key", &key];
        argv.extend_from_slice(a);
        argv.extend_from_slice(&["--source", &src, &dst]);
        run_ok(&mut pair.cli(&argv));
    };

    // IPv4: open, then the real ssh lands on the internal host.
    send(cli4, gw4, &["--open", "2222", "--duration", "60"]);
    s.expect_lines(&["accepted open", "tcp/2222"], 1);
    assert!(
        pair.wait_connect(cli4, gw4, 2222, true, Duration::from_secs(5)),
        "2222 did not open: {}",
        s.log_text()
    );
    let o = ssh_via(&pair, &dir, cli4, gw4, 2222);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains(&inner.ip4.to_string()),
        "ssh -p 2222 gw must reach the internal host: {out}{}\nserver log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        s.log_text()
    );
    // Another client address cannot.
    assert!(
        !pair.can_connect(cli4_b, gw4, 2222),
        "opened for another address"
    );

    // status names the forward's target and the key's policy.
    let server = bin("spa-server").display().to_string();
    let out = run_ok(&mut pair.srv(&[&server, "--config", &conf, "--state-dir", &state, "status"]));
    let st = String::from_utf8_lossy(&out.stdout);
    assert!(
        st.contains(&format!("tcp/2222 -> {}:22", inner.ip4))
            && st.contains(&format!("tcp/2223 forwarded to [{}]:22", inner.ip6))
            && st.contains("from anywhere; expires never"),
        "{st}"
    );

    // The admin reloads the firewall: the live forward is back within 2 s.
    pair.srv_sh(&reload);
    assert!(
        pair.wait_connect(cli4, gw4, 2222, true, Duration::from_secs(2)),
        "the forward did not survive a firewall reload: {}\n{}",
        s.log_text(),
        pair.firewall_snapshot(backend)
    );

    // IPv6: the same through 2223.
    send(cli6, gw6, &["--open", "2223", "--duration", "60"]);
    s.expect_lines(&["accepted open", "tcp/2223"], 1);
    let o = ssh_via(&pair, &dir, cli6, gw6, 2223);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains(&inner.ip6.to_string()),
        "ssh -p 2223 [gw6] must reach the internal host: {out}{}\nrules:\n{}",
        String::from_utf8_lossy(&o.stderr),
        pair.firewall_snapshot(backend)
    );

    // --close ends it.
    send(cli4, gw4, &["--close", "2222"]);
    s.expect_lines(&["accepted close", "tcp/2222"], 1);
    assert!(
        pair.wait_connect(cli4, gw4, 2222, false, Duration::from_secs(5)),
        "2222 still open after --close"
    );

    // kill -9: the path ends at the grant's end, in the kernel.
    send(cli4, gw4, &["--open", "2222", "--duration", "4"]);
    s.expect_lines(&["accepted open", "tcp/2222"], 2);
    assert!(pair.wait_connect(cli4, gw4, 2222, true, Duration::from_secs(5)));
    drop(s);
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !pair.can_connect(cli4, gw4, 2222),
        "the forward outlived its grant after kill -9"
    );
    eprintln!("forward {backend}: ok");
}

#[test]
fn forward_to_internal_sshd_iptables() {
    forwards_to_the_internal_sshd(241, "iptables");
}

#[test]
fn forward_to_internal_sshd_nftables() {
    forwards_to_the_internal_sshd(242, "nftables");
}

/// A reload that adds a forward while IP forwarding is off is refused (the
/// old configuration stays), as a start would be.
#[test]
fn a_reload_adding_a_forward_needs_ip_forwarding() {
    let r = spa_e2e::Testbed::new(243, "fwdreload", "iptables", SID, &["alice"]);
    let conf = r.dir.join("server.toml");
    let plain = format!(
        "[[key]]\nname = \"alice\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\n",
        r.key
    );
    write(&conf, &plain);
    r.pair.srv_sh("sysctl -qw net.ipv4.ip_forward=0");
    let conf_s = conf.display().to_string();
    let s = r.server_without_key("server.log", &["--config", &conf_s]);
    write(
        &conf,
        &format!("{plain}[key.forward]\n\"tcp/2222\" = \"198.19.243.5:22\"\n"),
    );
    let pid = s.pid().expect("pid").to_string();
    run_ok(Command::new("kill").args(["-HUP", &pid]));
    s.expect_lines(&["reload refused", "net.ipv4.ip_forward = 0"], 1);
    // The old configuration still serves.
    let v4 = r.pair.v4();
    r.send(v4.cli, v4.srv, &["--open", "22"]);
    r.expect_connect(v4.cli, v4.srv, true, "after the refused reload", &s);
    r.done("a_reload_adding_a_forward_needs_ip_forwarding");
}
