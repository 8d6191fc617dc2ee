//! spa-flood: a datagram flood for benchmarks in network namespaces (issue 14).
//!
//! Why in the project: the floods of the shared harness never reach the
//! expensive path (the kernel filter drops their lengths), and one Python
//! sender offers ~150 k/s, far below what the daemon can judge. This sends
//! right-length datagrams with `sendmmsg`, as fast as one core allows:
//! forgeries (a real v1 header: magic, version, a configured key-id, then
//! random bytes, so each costs the server one AEAD open) or copies of one
//! captured datagram (a replay flood).
//!
//! Why so fenced: it is a load generator. It runs only inside a namespace
//! made by `ip netns` (never the host's) and refuses any destination outside the
//! benchmarking and documentation ranges the test namespaces use, and it
//! stops at `--count` datagrams or `--seconds`, whichever comes first.
//! Not shipped: it lives in the test crate, never in a package.

use clap::{ArgGroup, Parser};
use rand::RngCore;
use spa_proto::{KeyId, DATAGRAM_LEN, MAGIC, VERSION};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The most `--count` accepts: a bound a typo cannot turn into an endless run.
const MAX_COUNT: u64 = 1_000_000_000;
/// The most `--seconds` accepts.
const MAX_SECONDS: u64 = 600;
/// Distinct forgeries sent round-robin: enough that no cache or replay
/// record sees the same bytes twice in a row, small enough to stay in L2.
const POOL: usize = 4096;

#[derive(Parser, Debug)]
#[command(
    name = "spa-flood",
    about = "Flood an SPA server with forged or replayed datagrams, for benchmarks in network namespaces",
    long_about = "Sends right-length SPA datagrams with sendmmsg, as fast as one core allows, and \
                  prints what it sent. NAMESPACES ONLY: it runs only inside a namespace made by `ip netns` \
                  (`ip netns exec NS spa-flood ...`), never in the host's and refuses any \
                  destination outside 198.18.0.0/15 (RFC 2544), 2001:2::/48 (RFC 5180, the test \
                  namespaces' IPv6 range) and 2001:db8::/32 (RFC 3849). It stops after --count \
                  datagrams or --seconds, whichever comes first.",
    group(ArgGroup::new("what").required(true).args(["key_id", "header_of", "replay"]))
)]
struct Args {
    /// Destination address (198.18.0.0/15, 2001:2::/48 or 2001:db8::/32).
    to: IpAddr,
    /// Destination UDP port (the server's spa_port).
    #[arg(long, default_value_t = 62201)]
    port: u16,
    /// Forgeries: v1 magic and version, this key-id (16 hex digits, as the
    /// server logs it), then random bytes; each costs the server an AEAD open.
    #[arg(long, value_name = "HEX")]
    key_id: Option<KeyId>,
    /// Forgeries with the magic, version and key-id of this captured v1
    /// datagram (e.g. `spa-client seal`'s output), then random bytes.
    #[arg(long, value_name = "FILE")]
    header_of: Option<PathBuf>,
    /// A replay flood: copies of this captured datagram, unchanged.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Source address to bind (the client namespace's own).
    #[arg(long)]
    from: Option<IpAddr>,
    /// Datagrams to send at most (1..=1000000000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    count: u64,
    /// Seconds to send at most (1..=600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    seconds: u64,
    /// Datagrams per sendmmsg call (1..=1024).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch: u16,
    /// Pin this process to one CPU (sched_setaffinity), e.g. the core the
    /// server is not pinned to.
    #[arg(long, value_name = "N")]
    cpu: Option<usize>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Why the flood did not start.
#[derive(Debug)]
enum FloodError {
    Destination(IpAddr),
    HostNamespace,
    NamespaceUnknown(io::Error),
    Read(PathBuf, io::Error),
    NotV1(PathBuf),
    Socket(&'static str, io::Error),
}

impl std::fmt::Display for FloodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FloodError::Destination(a) => write!(
                f,
                "refusing destination {a}: only 198.18.0.0/15, 2001:2::/48 and 2001:db8::/32 \
                 (test namespaces) may be flooded"
            ),
            FloodError::HostNamespace => f.write_str(
                "refusing to run outside a test namespace: this network namespace is none of \
                 /run/netns/*; run it as `ip netns exec NS spa-flood ...`",
            ),
            FloodError::NamespaceUnknown(e) => write!(
                f,
                "cannot tell which network namespace this is (/proc/self/ns/net, /run/netns: \
                 {e}); run it as `ip netns exec NS spa-flood ...`"
            ),
            FloodError::Read(p, e) => write!(f, "{}: cannot read: {e}", p.display()),
            FloodError::NotV1(p) => write!(
                f,
                "{}: not a v1 datagram ({DATAGRAM_LEN} bytes starting with the v1 magic and \
                 version); give --key-id instead",
                p.display()
            ),
            FloodError::Socket(call, e) => write!(f, "{call} failed: {e}"),
        }
    }
}

/// The ranges a flood may go to: benchmarking and documentation space,
/// never routed on the internet, used by the test namespaces.
fn allowed(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Runs only inside a namespace made by `ip netns` (a positive check: the
/// host's own namespace is never one of /run/netns/*). PID 1's namespace
/// cannot be compared directly: in a container even root may not read it.
fn check_namespace() -> Result<(), FloodError> {
    use std::os::unix::fs::MetadataExt;
    let unknown = FloodError::NamespaceUnknown;
    let me = std::fs::metadata("/proc/self/ns/net").map_err(unknown)?;
    let named = std::fs::read_dir("/run/netns").map_err(unknown)?;
    for entry in named.flatten() {
        if let Ok(m) = std::fs::metadata(entry.path()) {
            if (m.dev(), m.ino()) == (me.dev(), me.ino()) {
                return Ok(());
            }
        }
    }
    Err(FloodError::HostNamespace)
}

/// The datagrams to send round-robin.
fn pool(args: &Args) -> Result<Vec<Vec<u8>>, FloodError> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| FloodError::Read(p.clone(), e));
    if let Some(p) = &args.replay {
        return Ok(vec![read(p)?]);
    }
    let mut header = [0u8; 13];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = VERSION;
    if let Some(id) = args.key_id {
        header[5..].copy_from_slice(&id.0);
    } else if let Some(p) = &args.header_of {
        let d = read(p)?;
        if d.len() != DATAGRAM_LEN || d[..5] != header[..5] {
            return Err(FloodError::NotV1(p.clone()));
        }
        header.copy_from_slice(&d[..13]);
    }
    let mut rng = rand::thread_rng();
    Ok((0..POOL)
        .map(|_| {
            let mut d = vec![0u8; DATAGRAM_LEN];
            d[..13].copy_from_slice(&header);
            rng.fill_bytes(&mut d[13..]);
            d
        })
        .collect())
}

fn pin(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu` is inside the set's bounds (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is this thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What was sent.
struct Sent {
    datagrams: u64,
    /// sendmmsg calls that failed (ENOBUFS, EAGAIN, ECONNREFUSED from an
    /// earlier ICMP error): counted and retried, never fatal.
    errors: u64,
    elapsed: Duration,
}

/// Sends `pool` round-robin, `batch` per sendmmsg, until `count` or `limit`.
fn flood(
    sock: &UdpSocket,
    pool: &mut [Vec<u8>],
    batch: usize,
    count: u64,
    limit: Duration,
) -> Sent {
    // One iovec and one header per pool entry, built once: a batch is a
    // window into them, so the loop does nothing per datagram. The pool is
    // repeated up to a multiple of the batch so a window never wraps.
    let reps = batch.div_ceil(pool.len()).max(1);
    let mut iov: Vec<libc::iovec> = Vec::new();
    for _ in 0..reps {
        for d in pool.iter_mut() {
            iov.push(libc::iovec {
                iov_base: d.as_mut_ptr().cast(),
                iov_len: d.len(),
            });
        }
    }
    let slots = iov.len() - iov.len() % batch;
    let mut hdrs: Vec<libc::mmsghdr> = iov[..slots]
        .iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid value (no
            // name: the socket is connected).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let fd = sock.as_raw_fd();
    let start = Instant::now();
    let (mut sent, mut errors, mut at) = (0u64, 0u64, 0usize);
    while sent < count && start.elapsed() < limit {
        let want = batch.min(usize::try_from(count - sent).unwrap_or(batch));
        let win = &mut hdrs[at..at + want];
        // SAFETY: `win` is `want` valid mmsghdrs whose iovecs point into
        // `pool`, alive and unmoved for the whole call.
        let n = unsafe { libc::sendmmsg(fd, win.as_mut_ptr(), want as libc::c_uint, 0) };
        if n < 0 {
            errors += 1;
            std::thread::yield_now();
            continue;
        }
        sent += n as u64;
        at = (at + batch) % slots;
    }
    Sent {
        datagrams: sent,
        errors,
        elapsed: start.elapsed(),
    }
}

fn run(args: &Args) -> Result<Sent, FloodError> {
    if !allowed(args.to) {
        return Err(FloodError::Destination(args.to));
    }
    check_namespace()?;
    let mut pool = pool(args)?;
    if let Some(cpu) = args.cpu {
        pin(cpu).map_err(|e| FloodError::Socket("sched_setaffinity", e))?;
    }
    let from = args.from.unwrap_or(match args.to {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    });
    let sock =
        UdpSocket::bind(SocketAddr::new(from, 0)).map_err(|e| FloodError::Socket("bind", e))?;
    sock.connect(SocketAddr::new(args.to, args.port))
        .map_err(|e| FloodError::Socket("connect", e))?;
    Ok(flood(
        &sock,
        &mut pool,
        usize::from(args.batch),
        args.count,
        Duration::from_secs(args.seconds),
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(s) => {
            let secs = s.elapsed.as_secs_f64();
            let rate = s.datagrams as f64 / secs.max(1e-9);
            if args.json {
                println!(
                    "{{\"sent\":{},\"seconds\":{secs:.3},\"rate\":{rate:.0},\"errors\":{}}}",
                    s.datagrams, s.errors
                );
            } else {
                println!(
                    "sent {} datagrams in {secs:.2} s ({rate:.0}/s), {} failed sendmmsg calls",
                    s.datagrams, s.errors
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spa-flood: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn only_test_ranges_are_allowed() {
        for ok in [
            "198.18.0.1",
            "198.19.255.254",
            "2001:2::1",
            "2001:2:0:170::2",
            "2001:db8::1",
        ] {
            assert!(allowed(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "198.17.255.255",
            "198.20.0.1",
            "8.8.8.8",
            "127.0.0.1",
            "2001:2:1::1",
            "2001:db9::1",
            "::1",
            "2606:4700::1111",
        ] {
            assert!(!allowed(no.parse().unwrap()), "{no}");
        }
    }
}
