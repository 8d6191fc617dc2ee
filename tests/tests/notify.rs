//! systemd's notify protocol, spoken by the real daemon to a NOTIFY_SOCKET
//! this test opens (the socket stands in for systemd, so each message and
//! its moment can be checked; systemd.rs runs the unit under a real one): READY=1 only once the firewall chain and the capture
//! are in place, WATCHDOG=1 at half of WATCHDOG_USEC from the event loop,
//! RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 on SIGTERM, and no
//! READY=1 at all when the configuration is bad.
//!
//! Namespace ids: 50, 67.

mod lifecycle_env;

use lifecycle_env::{signal, wait_exit, Env, KEY_A};
use std::net::IpAddr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The test's stand-in for systemd's notification socket.
struct NotifySocket {
    sock: UnixDatagram,
    path: String,
}

impl NotifySocket {
    fn bind(env: &Env) -> NotifySocket {
        let path = env.dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        NotifySocket {
            sock,
            path: path.to_str().expect("utf-8 path").to_owned(),
        }
    }

    /// The next message, waiting at most `within`.
    fn recv(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Messages until one has a line equal to `line`; returns that message
    /// and every message received before it.
    fn recv_until(&self, line: &str, within: Duration) -> (Option<String>, Vec<String>) {
        let deadline = Instant::now() + within;
        let mut before = Vec::new();
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.recv(left) {
                Some(m) if m.lines().any(|l| l == line) => return (Some(m), before),
                Some(m) => before.push(m),
                None => break,
            }
        }
        (None, before)
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

#[test]
fn ready_after_chain_and_capture_then_watchdog_reload_and_stopping() {
    let env = Env::with_key_a(50, "iptables");
    let notify = NotifySocket::bind(&env);
    let mut server = env.spawn(&[
        ("NOTIFY_SOCKET", notify.path.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    let pid = server.pid();

    // READY=1, and at that moment our chain and the jump to it exist.
    let (ready, before) = notify.recv_until("READY=1", Duration::from_secs(10));
    let ready = ready.unwrap_or_else(|| panic!("no READY=1; log:\n{}", env.log()));
    let chain = env.srv_ok(&["iptables", "-w", "-S", "SPA"]);
    let jump = env.srv_out(&["iptables", "-w", "-S", "INPUT"]);
    assert!(chain, "READY=1 arrived before the SPA chain existed");
    assert!(
        jump.lines().any(|l| l.contains("-j SPA")),
        "READY=1 arrived before the jump to SPA: {jump}"
    );
    assert!(
        before.iter().all(|m| !has_line(m, "READY=1")),
        "READY=1 sent twice: {before:?}"
    );
    assert!(
        has_line(&ready, &format!("MAINPID={pid}")),
        "READY=1 should name the main pid {pid}: {ready:?}"
    );
    // The capture is live at READY too: the very first datagram opens.
    let cli: IpAddr = env.pair.cli_ip4.into();
    assert!(
        !env.can_connect(cli),
        "baseline must refuse before any grant"
    );
    env.open("a", cli, 30);
    env.assert_opens(cli, 3, "a datagram sent right after READY=1 did not open");

    // WATCHDOG=1 every 200 ms (half of 400 ms), also while idle. Drop what
    // queued up meanwhile first, so only fresh messages are counted.
    for _ in 0..1000 {
        if notify.recv(Duration::from_millis(1)).is_none() {
            break;
        }
    }
    let t0 = Instant::now();
    let mut watchdogs = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        if let Some(m) = notify.recv(Duration::from_millis(100)) {
            if has_line(&m, "WATCHDOG=1") {
                watchdogs += 1;
            }
        }
    }
    eprintln!("WATCHDOG=1 messages in 2 s (WATCHDOG_USEC=400000): {watchdogs}");
    assert!(watchdogs >= 3, "only {watchdogs} WATCHDOG=1 in 2 s");
    assert!(
        watchdogs <= 25,
        "{watchdogs} WATCHDOG=1 in 2 s: far too often"
    );

    // SIGHUP: RELOADING=1, then READY=1 again.
    signal(pid, libc::SIGHUP);
    let (rel, _) = notify.recv_until("RELOADING=1", Duration::from_secs(3));
    assert!(rel.is_some(), "no RELOADING=1 after SIGHUP");
    let (again, _) = notify.recv_until("READY=1", Duration::from_secs(3));
    assert!(again.is_some(), "no READY=1 after the reload");

    // SIGTERM: STOPPING=1, a clean exit, nothing of ours left.
    signal(pid, libc::SIGTERM);
    let (stopping, _) = notify.recv_until("STOPPING=1", Duration::from_secs(5));
    assert!(stopping.is_some(), "no STOPPING=1 after SIGTERM");
    let st = wait_exit(&mut server, Duration::from_secs(10)).expect("server did not exit");
    assert!(st.success(), "exit status {st}; log:\n{}", env.log());
    assert!(
        !env.srv_ok(&["iptables", "-w", "-S", "SPA"]),
        "SPA chain left after SIGTERM"
    );
}

#[test]
fn no_ready_when_the_configuration_is_bad() {
    let env = Env::new(67, "iptables", &["a"]);
    env.write_config_text(
        &env.config_text(&[KEY_A])
            .replace("window_secs = 30", "window_secs = 0"),
    );
    let before = env.firewall_snapshot();
    let notify = NotifySocket::bind(&env);
    let mut server = env.spawn(&[("NOTIFY_SOCKET", notify.path.as_str())]);
    let st = wait_exit(&mut server, Duration::from_secs(10)).expect("server did not exit");
    assert!(!st.success(), "a bad configuration must fail the start");
    let (ready, _) = notify.recv_until("READY=1", Duration::from_millis(300));
    assert!(ready.is_none(), "READY=1 sent for a failed start");
    let log = env.log();
    assert!(
        log.contains("window_secs"),
        "the error should name the field: {log}"
    );
    assert_eq!(
        env.firewall_snapshot(),
        before,
        "a failed start touched the firewall"
    );
}
