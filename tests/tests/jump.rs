//! Issue 16, finding 1: only new connections enter our chain or rules, so
//! established traffic never walks the grant rules. Checked on the real
//! tools in a pair of network namespaces (ids 123 and 124, engineer B's
//! range 120..=139): a granted connection carries data, and its packets after
//! the handshake are counted by the admin's ESTABLISHED accept, not by ours.

use spa_e2e::{tcp_access, unix_now, Guard, NetPair};
use spa_server::firewall::{backend, BackendKind};
use std::process::Child;

const PORT: u16 = 22;
/// Data segments the client sends on the granted connection.
const CHUNKS: usize = 5;

/// A listener on `PORT` that reads each connection to its end, then closes:
/// the client's data arrives on an open connection (no RST midway).
fn reading_listener(p: &NetPair) -> Child {
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_STREAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',{PORT})); s.listen(8)\n\
         s.settimeout(30)\n\
         print('listening',flush=True)\n\
         c,_=s.accept(); c.settimeout(10)\n\
         while c.recv(4096): pass\n\
         c.close()\n"
    );
    p.srv_until_listening(&["timeout", "40", "python3", "-c", &script])
}

/// Connects from the client, sends `CHUNKS` segments 20 ms apart, closes
/// its side and waits for the server's close. True when all of it worked.
fn talk(p: &NetPair) -> bool {
    let script = format!(
        "import socket,time,sys\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_STREAM)\n\
         s.settimeout(3)\n\
         s.bind(('{cli}',0))\n\
         s.connect(('{srv}',{PORT}))\n\
         for i in range({CHUNKS}):\n\
         \x20   s.sendall(b'x'*100); time.sleep(0.02)\n\
         s.shutdown(socket.SHUT_WR)\n\
         while s.recv(4096): pass\n\
         sys.exit(0)\n",
        cli = p.cli_ip4,
        srv = p.srv_ip4
    );
    p.cli(&["timeout", "10", "python3", "-c", &script])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The first number after `key` in `line` (`-c 7 700`, `packets 7`).
fn number_after(line: &str, key: &str) -> u64 {
    line.split(key)
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
}

#[test]
fn iptables_jump_takes_only_new_connections() {
    let p = NetPair::new(123);
    // The admin's baseline, with a counted ESTABLISHED accept for tcp/22
    // first.
    p.srv_sh(&format!(
        "iptables -w -A INPUT -p tcp --dport {PORT} -m conntrack --ctstate ESTABLISHED -j ACCEPT"
    ));
    p.iptables_baseline(PORT);
    let mut f = backend(BackendKind::Iptables, &p.fw_options());
    f.setup().unwrap();
    let input = p.srv_sh("iptables -w -S INPUT");
    let jump = input.lines().find(|l| l.contains("-j SPA")).unwrap_or("");
    assert!(jump.contains("--ctstate NEW"), "{input}");
    f.apply(&[tcp_access(p.cli_ip4, PORT, unix_now() + 600)], &[])
        .unwrap();

    let _l = Guard(reading_listener(&p));
    assert!(talk(&p), "the granted connection must carry its data");

    let grant = p.srv_sh("iptables -w -v -S SPA");
    let grant = grant
        .lines()
        .find(|l| l.starts_with("-A SPA"))
        .unwrap_or("");
    assert_eq!(
        number_after(grant, "-c "),
        1,
        "only the SYN may walk the grant rule: {grant}"
    );
    let input = p.srv_sh("iptables -w -v -S INPUT");
    let est = input
        .lines()
        .find(|l| l.contains("--ctstate ESTABLISHED") && l.contains("--dport 22"))
        .unwrap_or("");
    assert!(
        number_after(est, "-c ") >= CHUNKS as u64,
        "the established packets go to the admin's accept: {input}"
    );
    f.teardown().unwrap();
}

#[test]
fn nftables_rules_take_only_new_connections() {
    let p = NetPair::new(124);
    p.srv_sh(&format!(
        "nft -f - <<'EOF'\n\
         table inet filter {{\n\
           chain input {{\n\
             type filter hook input priority 0; policy accept;\n\
             tcp dport {PORT} ct state established counter accept\n\
             ct state established,related accept\n\
             tcp dport {PORT} reject with tcp reset\n\
           }}\n\
         }}\n\
         EOF"
    ));
    let mut f = backend(BackendKind::Nftables, &p.fw_options());
    f.setup().unwrap();
    let chain = p.srv_sh("nft list chain inet filter input");
    let ours: Vec<&str> = chain.lines().filter(|l| l.contains("@spa")).collect();
    assert_eq!(ours.len(), 2, "{chain}");
    assert!(ours.iter().all(|l| l.contains("ct state new")), "{chain}");
    f.apply(&[tcp_access(p.cli_ip4, PORT, unix_now() + 600)], &[])
        .unwrap();

    let _l = Guard(reading_listener(&p));
    assert!(talk(&p), "the granted connection must carry its data");

    let chain = p.srv_sh("nft list chain inet filter input");
    let est = chain
        .lines()
        .find(|l| l.contains("ct state established counter"))
        .unwrap_or("");
    assert!(
        number_after(est, "packets ") >= CHUNKS as u64,
        "the established packets go to the admin's accept, past our rules: {chain}"
    );
    f.teardown().unwrap();
}
