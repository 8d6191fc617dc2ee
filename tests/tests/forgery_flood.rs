//! A measurement, not a test (ignored by default; no speed is asserted): a
//! flood of forged datagrams that pass every cheap check, so each costs the
//! daemon a key-id lookup and a full AEAD open. They have the right length
//! (the kernel filter lets them through), magic, version and a real key-id,
//! then random bytes, so authentication fails. The shared harness's floods
//! are dropped by the kernel filter; this one reaches the expensive path.
//!
//! ```text
//! cargo build --release --workspace --bins
//! SPA_FLOOD_N=400000 \
//!   cargo test --release -p spa-e2e --test forgery_flood -- --ignored --nocapture
//! ```
//!
//! Reports the send rate, what the daemon judged, what the kernel dropped,
//! the daemon's CPU time per datagram, and whether a valid datagram sent
//! right after the flood opens the port. Results: docs/benchmarks.md.
//!
//! Namespace id: 72.

use spa_e2e::{run_ok, Testbed};
use std::net::IpAddr;
use std::time::Duration;

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // rest starts at field 3; utime is field 14, stime field 15.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100).max(1)
}

/// The last value of `key=` in the log's "totals since start" line.
fn total(log: &str, key: &str) -> u64 {
    log.lines()
        .rev()
        .find(|l| l.contains("totals since start"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
#[ignore]
fn forged_datagram_flood() {
    let n: u64 = std::env::var("SPA_FLOOD_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let r = Testbed::new(72, "flood", "iptables", "flood-e2e", &["alice"]);
    let (cli, srv): (IpAddr, IpAddr) = (r.pair.cli_ip4.into(), r.pair.srv_ip4.into());
    let mut s = r.server("server.log", &[]);
    let pid = s.pid().expect("server pid");

    // magic, version, key-id: the first 13 bytes of a real datagram.
    let dg = r.dir.join("probe.bin");
    r.seal(&dg, &["--open", "22"]);
    let hdr: String = std::fs::read(&dg).expect("read probe")[..13]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    // 4096 distinct forgeries, sent round-robin, so the sender's loop is
    // one sendto per datagram.
    let script = format!(
        "import socket,os,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('{cli}',0))\n\
         dst=('{srv}',62201)\n\
         hdr=bytes.fromhex('{hdr}')\n\
         pool=[hdr+os.urandom(127) for _ in range(4096)]\n\
         t=time.monotonic()\n\
         for i in range({n}):\n\
         \x20   s.sendto(pool[i&4095],dst)\n\
         print(time.monotonic()-t)\n"
    );
    let cpu0 = cpu_ticks(pid);
    let out = run_ok(&mut r.pair.cli(&["timeout", "120", "python3", "-c", &script]));
    let send_secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    // A valid datagram right behind the flood.
    r.send(cli, srv, &["--open", "22"]);
    let opened = r
        .pair
        .wait_connect(cli, srv, 22, true, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_ticks(pid).saturating_sub(cpu0);
    s.stop();
    let log = s.log_text();
    let (rejected, drops) = (
        total(&log, "datagrams_rejected"),
        total(&log, "kernel_drops"),
    );
    let cpu_ms = cpu as f64 * 1e3 / ticks_per_sec() as f64;
    eprintln!(
        "forgery flood: {n} sent in {send_secs:.2} s ({:.0}/s); daemon judged {rejected} \
         (rejected), kernel dropped {drops}; daemon CPU {cpu_ms:.0} ms = {:.2} us per judged \
         datagram; a valid datagram right after the flood: {}",
        n as f64 / send_secs,
        cpu_ms * 1e3 / rejected.max(1) as f64,
        if opened { "opened" } else { "NOT opened" },
    );
    assert!(opened, "the valid datagram must open: {log}");
}
