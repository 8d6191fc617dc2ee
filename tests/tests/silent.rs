//! Silent by default (issue 10, item 4): with only the README's baseline
//! (no DROP line of the admin's), the server host sends nothing back for
//! garbage, a valid datagram, a replay or a knock sequence, seen by a packet
//! capture in the client namespace; the real `nmap` reports the SPA port
//! `open|filtered` and the knock ports `filtered`. `silent = false` gives the
//! kernel's answers back. The real daemon, both backends.
//!
//! Namespace ids 202..=204 (engineer F's range is 200..=219).

use spa_e2e::{Server, Testbed};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

const SID: &str = "e2e-silent";
const KNOCK: &str = "/usr/bin/knock";
const NMAP: &str = "/usr/bin/nmap";

/// Counts, for `secs` seconds, the IP packets arriving on `iface` in the
/// client namespace from `srv4`/`srv6` (neighbour discovery aside), and
/// prints one line per packet and the count.
const SNIFF: &str = r#"
import socket, struct, sys, time
iface, srv4, srv6, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((iface, 0))
s.settimeout(0.2)
print('sniffing', flush=True)
end = time.monotonic() + secs
n = 0
while time.monotonic() < end:
    try:
        frame, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if addr[2] == 4:  # PACKET_OUTGOING
        continue
    et = struct.unpack('!H', frame[12:14])[0]
    ip = frame[14:]
    if et == 0x0800 and socket.inet_ntop(socket.AF_INET, ip[12:16]) == srv4:
        n += 1
        print('from server: ipv4 proto', ip[9], ip[:40].hex(), flush=True)
    elif et == 0x86dd and socket.inet_ntop(socket.AF_INET6, ip[8:24]) == srv6:
        if ip[6] == 58 and ip[40] in (133, 134, 135, 136, 137):
            continue
        n += 1
        print('from server: ipv6 next', ip[6], ip[:48].hex(), flush=True)
print('count', n, flush=True)
"#;

fn require(tool: &str, package: &str) {
    assert!(
        Path::new(tool).exists(),
        "{tool} missing: apt-get install {package} (scripts/prereqs.sh test)"
    );
}

struct Bed {
    r: Testbed,
    s: Server,
}

fn bed(id: u8, backend: &'static str, extra_config: &str) -> Bed {
    require(KNOCK, "knockd");
    require(NMAP, "nmap");
    let r = Testbed::new(id, "silent", backend, SID, &["alice"]);
    let cfg = r.dir.join("server.toml");
    std::fs::write(&cfg, extra_config).expect("write server.toml");
    let cfg = cfg.display().to_string();
    let s = r.server("server.log", &["--legacy-knock", "--config", &cfg]);
    Bed { r, s }
}

fn sniffer(r: &Testbed, secs: u32) -> Child {
    let (srv4, srv6) = (r.pair.srv_ip4.to_string(), r.pair.srv_ip6.to_string());
    let mut c = r
        .pair
        .cli(&[
            "python3",
            "-c",
            SNIFF,
            &r.pair.cli_if,
            &srv4,
            &srv6,
            &secs.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the sniffer");
    // Wait for its first line, so nothing is sent before it listens.
    let mut out = c.stdout.take().expect("sniffer stdout");
    let mut first = [0u8; 9];
    std::io::Read::read_exact(&mut out, &mut first).expect("sniffer started");
    assert_eq!(&first, b"sniffing\n");
    c.stdout = Some(out);
    c
}

/// Garbage (two sizes), a valid datagram, its replay and a knock
/// sequence, over IPv4 and IPv6.
fn provoke(b: &Bed) {
    let r = &b.r;
    for f in [r.pair.v4(), r.pair.v6()] {
        let junk = r.dir.join("junk.bin");
        std::fs::write(&junk, [0x5au8; 140]).unwrap();
        r.raw_send(&junk, f.cli, f.srv);
        std::fs::write(&junk, [0xa5u8; 17]).unwrap();
        r.raw_send(&junk, f.cli, f.srv);
        let dg = r.dir.join("open.bin");
        r.seal(&dg, &["--server-id", SID, "--open", "22"]);
        r.raw_send(&dg, f.cli, f.srv);
        r.raw_send(&dg, f.cli, f.srv);
        let srv = f.srv.to_string();
        spa_e2e::run_ok(
            &mut r
                .pair
                .cli(&["timeout", "20", KNOCK, &srv, "7000", "8000", "9000"]),
        );
    }
}

fn nmap(r: &Testbed, args: &[&str]) -> String {
    let srv = r.pair.srv_ip4.to_string();
    let mut argv = vec![
        "timeout",
        "60",
        NMAP,
        "-Pn",
        "-n",
        "--max-retries",
        "1",
        "--host-timeout",
        "40s",
    ];
    argv.extend_from_slice(args);
    argv.push(&srv);
    let out = r
        .pair
        .cli(&argv)
        .stdin(Stdio::null())
        .output()
        .expect("run nmap");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn port_state<'a>(scan: &'a str, port: &str) -> &'a str {
    scan.lines()
        .find(|l| l.starts_with(port))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
}

fn silent_host(id: u8, backend: &'static str) {
    let b = bed(id, backend, "");
    let mut sniff = sniffer(&b.r, 4);
    provoke(&b);
    let out = sniff_output(&mut sniff);
    // The daemon saw all of it.
    b.s.expect_lines(&["accepted open"], 2);
    b.s.expect_lines(&["rejected", "replayed"], 2);
    b.s.expect_lines(&["knock accepted"], 2);
    assert!(
        out.trim_end().ends_with("count 0"),
        "the server host answered ({backend}):\n{out}\nserver log:\n{}",
        b.s.log_text()
    );

    let udp = nmap(&b.r, &["-sU", "-p", "62201"]);
    assert_eq!(port_state(&udp, "62201/udp"), "open|filtered", "{udp}");
    let tcp = nmap(&b.r, &["-sS", "-p", "7000,8000,9000"]);
    for p in ["7000/tcp", "8000/tcp", "9000/tcp"] {
        assert_eq!(port_state(&tcp, p), "filtered", "{tcp}");
    }
    b.r.done(&format!("silent_host {backend}"));
}

fn sniff_output(c: &mut Child) -> String {
    let st = spa_e2e::wait_exit(c, Duration::from_secs(15));
    let mut out = String::new();
    if let Some(mut o) = c.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut o, &mut out);
    }
    assert!(st.is_some(), "the sniffer did not end: {out}");
    out
}

#[test]
fn nothing_comes_back_and_nmap_sees_filtered_iptables() {
    silent_host(202, "iptables");
}

#[test]
fn nothing_comes_back_and_nmap_sees_filtered_nftables() {
    silent_host(203, "nftables");
}

/// `silent = false`: the kernel answers again (the option really turns the
/// drop rules off).
#[test]
fn silent_false_lets_the_kernel_answer() {
    let b = bed(204, "iptables", "silent = false\n");
    let udp = nmap(&b.r, &["-sU", "-p", "62201"]);
    assert_eq!(port_state(&udp, "62201/udp"), "closed", "{udp}");
    let tcp = nmap(&b.r, &["-sS", "-p", "7000"]);
    assert_eq!(port_state(&tcp, "7000/tcp"), "closed", "{tcp}");
    b.r.done("silent_false_lets_the_kernel_answer");
}
