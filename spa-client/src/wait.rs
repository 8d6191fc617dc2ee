//! `send --wait`: the server never answers, so the client finds out itself.
//! After sending it tries plain TCP connects (closed at once) to each
//! requested TCP port until all are in the wanted state or the time is up,
//! resending once, with a fresh datagram, if nothing changed by half time
//! (a lost UDP datagram is the common failure on bad networks). When it
//! fails, [`diagnosis`] says what was sent and where to look, in the order
//! the causes are most likely.

use crate::sock::{tcp_probe, Probe};
use spa_proto::{Action, Grant, KeyId, Proto};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Default `--wait` time, in seconds.
pub const DEFAULT_WAIT_SECS: u64 = 5;

/// Longest single connect attempt: a DROP rule must not eat the whole wait.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between rounds of probes.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// What one port did during the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortResult {
    pub port: u16,
    /// When the port reached the wanted state, since the first send.
    pub reached: Option<Duration>,
    /// The last probe's result (the reason, when `reached` is `None`).
    pub last: Probe,
}

/// The wait for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitReport {
    pub ports: Vec<PortResult>,
    /// When the second datagram went out, if it did.
    pub resent_at: Option<Duration>,
    /// Why the resend failed, if it did (the first send had worked).
    pub resend_error: Option<String>,
}

impl WaitReport {
    pub fn all_reached(&self) -> bool {
        self.ports.iter().all(|p| p.reached.is_some())
    }
}

/// The TCP ports of `grants` (UDP has no handshake to probe).
pub fn tcp_ports(grants: &[Grant]) -> Vec<u16> {
    grants
        .iter()
        .filter(|g| g.proto == Proto::Tcp)
        .map(|g| g.port.get())
        .collect()
}

/// Probes `ports` on `server` from `source` until each accepts (open) or
/// does not (close), or `limit` passes; calls `resend` once at half time
/// if no port has changed yet. Bounded: at most `limit` plus one probe.
pub fn wait_ports(
    server: IpAddr,
    ports: &[u16],
    action: Action,
    source: Option<IpAddr>,
    limit: Duration,
    mut resend: impl FnMut() -> Result<(), String>,
) -> WaitReport {
    let start = Instant::now();
    let deadline = start + limit;
    let mut report = WaitReport {
        ports: ports
            .iter()
            .map(|&port| PortResult {
                port,
                reached: None,
                last: Probe::NoAnswer,
            })
            .collect(),
        resent_at: None,
        resend_error: None,
    };
    loop {
        for p in report.ports.iter_mut().filter(|p| p.reached.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let probe = tcp_probe(
                SocketAddr::new(server, p.port),
                source,
                left.clamp(Duration::from_millis(50), PROBE_TIMEOUT),
            );
            p.last = probe;
            let done = match action {
                Action::Open => probe == Probe::Accepted,
                Action::Close => probe != Probe::Accepted,
            };
            if done {
                p.reached = Some(start.elapsed());
            }
        }
        if report.all_reached() || Instant::now() >= deadline {
            return report;
        }
        let nothing_yet = report.ports.iter().all(|p| p.reached.is_none());
        if nothing_yet && report.resent_at.is_none() && start.elapsed() >= limit / 2 {
            report.resent_at = Some(start.elapsed());
            report.resend_error = resend().err();
        }
        std::thread::sleep(ROUND_PAUSE.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// What was sent to one server, for the diagnosis.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The profile name, or the host as given.
    pub label: String,
    pub dest: SocketAddr,
    pub key_id: KeyId,
    pub key_path: String,
    pub server_id: String,
    pub action: Action,
    /// Unix time in the datagram (the client's clock, plus any offset).
    pub timestamp: u64,
    /// `--time-offset`, so the clock line does not pass a shifted time off
    /// as this host's.
    pub time_offset: i64,
    /// `--allow-ip`, when the grant is for another address than this host.
    pub allow_ip: Option<IpAddr>,
}

/// `YYYY-MM-DD HH:MM:SS UTC` without a date library (Howard Hinnant's
/// days-to-civil algorithm).
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The text printed (on stderr) when the ports did not reach the wanted
/// state: what happened, what was sent, then the causes in the order they
/// are most likely, each with the command or setting that settles it.
pub fn diagnosis(sent: &Sent, report: &WaitReport, limit: Duration) -> String {
    let want = match sent.action {
        Action::Open => "did not open",
        Action::Close => "still accepts new connections",
    };
    let mut s = String::new();
    for p in report.ports.iter().filter(|p| p.reached.is_none()) {
        s.push_str(&format!(
            "{}: tcp/{} on {} {want} within {} s (last probe: {})\n",
            sent.label,
            p.port,
            sent.dest.ip(),
            limit.as_secs(),
            p.last.describe()
        ));
    }
    match (&report.resent_at, &report.resend_error) {
        (Some(t), None) => s.push_str(&format!(
            "  sent twice: a fresh datagram again after {:.1} s\n",
            t.as_secs_f64()
        )),
        (Some(_), Some(e)) => s.push_str(&format!("  the second send failed: {e}\n")),
        _ => {}
    }
    s.push_str(&format!(
        "  what was sent:\n\
         \x20   key-id     {} (key file {})\n\
         \x20   server id  \"{}\" (must equal the server's server_id; its default is the server's host name)\n\
         \x20   clock      {} ({}; the server accepts {} s either way by default)\n\
         \x20   SPA port   udp/{} on {}\n",
        sent.key_id,
        sent.key_path,
        sent.server_id,
        utc(sent.timestamp),
        match sent.time_offset {
            0 => "this host's".to_owned(),
            o => format!("this host's shifted by --time-offset {o} s"),
        },
        spa_proto::replay::DEFAULT_WINDOW_SECS,
        sent.dest.port(),
        sent.dest.ip(),
    ));
    s.push_str(&format!(
        "  likely causes, most likely first:\n\
         \x20   1. the server refused the request; on the server, its log line says why:\n\
         \x20        journalctl -u spa-server | grep {}\n\
         \x20      wrong_server: the server id above is not the server's server_id (fix --server-id or the profile's server_id)\n\
         \x20      unknown key-id: the server has no [[key]] for this key file (add the snippet spa-keygen printed)\n\
         \x20      too old / in the future: this clock or the server's is off (compare `date -u` on both)\n\
         \x20      may not open: the key's `allow` list on the server lacks a port asked for\n\
         \x20   2. no log line at all: the datagram did not arrive; is udp/{} the server's spa_port, and does a\n\
         \x20      firewall on the way drop it? (the server stays silent either way)\n\
         \x20   3. an `accepted open` line: the grant is there but nothing listens on the port, or the\n\
         \x20      probe came from another address than the one the server saw (NAT, several addresses)\n",
        sent.key_id,
        sent.dest.port(),
    ));
    if let Some(ip) = sent.allow_ip {
        s.push_str(&format!(
            "  note: the grant is for --allow-ip {ip}; the probes come from this host, so they only \
             succeed if this host is {ip}\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_987_805), "2026-11-29 21:30:05 UTC");
    }

    #[test]
    fn open_port_is_reached_without_resend() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let r = wait_ports(
            "127.0.0.1".parse().unwrap(),
            &[port],
            Action::Open,
            None,
            Duration::from_secs(2),
            || panic!("no resend when the port is open"),
        );
        assert!(r.all_reached(), "{r:?}");
        assert_eq!(r.resent_at, None);
    }

    #[test]
    fn closed_port_times_out_with_one_resend() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut resends = 0;
        let t = Instant::now();
        let r = wait_ports(
            "127.0.0.1".parse().unwrap(),
            &[port],
            Action::Open,
            None,
            Duration::from_millis(800),
            || {
                resends += 1;
                Ok(())
            },
        );
        assert!(!r.all_reached());
        assert_eq!(resends, 1);
        assert!(r.resent_at.unwrap() >= Duration::from_millis(400));
        assert_eq!(r.ports[0].last, Probe::Refused);
        assert!(t.elapsed() < Duration::from_secs(3));
        // Close: a refusing port is closed at once.
        let r = wait_ports(
            "127.0.0.1".parse().unwrap(),
            &[port],
            Action::Close,
            None,
            Duration::from_secs(2),
            || Ok(()),
        );
        assert!(r.all_reached());
    }
}
