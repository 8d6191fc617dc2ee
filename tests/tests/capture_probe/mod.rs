//! The capture tests' world: a [`Probe`] (a capture running in a thread
//! that joined the server namespace, reporting what it sees), the packets
//! sent from the client namespace with `python3`, and the filter spec.
#![allow(dead_code)]

use spa_e2e::NetPair;
use spa_proto::{Proto, DATAGRAM_LEN};
use spa_server::capture::{Capture, CaptureStats, FilterSpec, Packet};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const SPA: u16 = 62201;
pub const KNOCK_TCP: u16 = 7000;
pub const KNOCK_UDP: u16 = 8001;
/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(5);
/// Upper bound for a whole probe thread.
pub const PROBE_LIFETIME: Duration = Duration::from_secs(90);

pub fn spec() -> FilterSpec {
    FilterSpec {
        spa_port: SPA,
        spa_len: DATAGRAM_LEN,
        knock_tcp: vec![KNOCK_TCP, 7002],
        knock_udp: vec![KNOCK_UDP],
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Spa {
        src: IpAddr,
        dst: IpAddr,
        len: usize,
        first: u8,
    },
    Knock {
        src: IpAddr,
        proto: Proto,
        dport: u16,
        flags: u8,
    },
    Error(String),
}

pub type Reply<T> = Sender<T>;

pub enum Cmd {
    Rebind(Reply<Rebound>),
    SetFilter(FilterSpec, Reply<Result<(), String>>),
    Stop,
}

/// What one `Capture::rebind` saw: the flag before, its result, the flag after.
#[derive(Debug)]
pub struct Rebound {
    pub before: bool,
    pub missing: Result<Vec<String>, String>,
    pub after: bool,
}

/// A capture running in the server namespace, reporting what it sees.
pub struct Probe {
    /// Datagram sockets reading through a receive ring.
    pub rings: usize,
    pub events: Receiver<Ev>,
    pub cmds: Sender<Cmd>,
    pub handle: Option<JoinHandle<CaptureStats>>,
    pub seen: Vec<Ev>,
}

pub fn enter_netns(ns: &str) -> Result<(), String> {
    let f =
        std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("open {ns}: {e}"))?;
    // SAFETY: `f` is an open namespace fd; setns only changes this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Probe {
    pub fn start(ns: &str, interfaces: Vec<String>, spec: FilterSpec) -> Probe {
        let (ev_tx, events) = channel();
        let (cmds, cmd_rx) = channel::<Cmd>();
        let (ready_tx, ready_rx) = channel::<Result<usize, String>>();
        let ns = ns.to_string();
        let handle = std::thread::spawn(move || {
            let opened = enter_netns(&ns)
                .and_then(|()| Capture::open(&interfaces, &spec).map_err(|e| e.to_string()));
            let mut cap = match opened {
                Ok(c) => {
                    let _ = ready_tx.send(Ok(c.rings()));
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return CaptureStats::default();
                }
            };
            let deadline = Instant::now() + PROBE_LIFETIME;
            while Instant::now() < deadline {
                match cmd_rx.try_recv() {
                    Ok(Cmd::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                    Ok(Cmd::Rebind(reply)) => {
                        let before = cap.needs_rebind();
                        let missing = cap.rebind().map_err(|e| e.to_string());
                        let _ = reply.send(Rebound {
                            before,
                            missing,
                            after: cap.needs_rebind(),
                        });
                    }
                    Ok(Cmd::SetFilter(s, reply)) => {
                        let _ = reply.send(cap.set_filter(&s).map_err(|e| e.to_string()));
                    }
                    Err(_) => {}
                }
                poll_and_mark(&mut cap, 50);
                for _ in 0..1000 {
                    let ev = match cap.recv() {
                        Ok(None) => break,
                        Ok(Some(Packet::Spa { src, dst, payload })) => Ev::Spa {
                            src,
                            dst,
                            len: payload.len(),
                            first: payload.first().copied().unwrap_or(0),
                        },
                        Ok(Some(Packet::Knock {
                            src,
                            proto,
                            dport,
                            tcp_flags,
                            ..
                        })) => Ev::Knock {
                            src,
                            proto,
                            dport,
                            flags: tcp_flags,
                        },
                        Err(e) => Ev::Error(e.to_string()),
                    };
                    let _ = ev_tx.send(ev);
                }
            }
            cap.stats()
        });
        let rings = match ready_rx.recv_timeout(WAIT) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("capture did not open: {e}"),
            Err(e) => panic!("capture thread did not start: {e}"),
        };
        Probe {
            rings,
            events,
            cmds,
            handle: Some(handle),
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for an event matching `want`; keeps everything seen.
    pub fn expect(&mut self, what: &str, want: impl Fn(&Ev) -> bool) -> Ev {
        let deadline = Instant::now() + WAIT;
        if let Some(e) = self.seen.iter().find(|e| want(e)) {
            return e.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    assert!(!matches!(e, Ev::Error(_)), "capture error: {e:?}");
                    self.seen.push(e.clone());
                    if want(&e) {
                        return e;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{what}: not seen within {WAIT:?}; seen: {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => panic!("{what}: capture thread ended"),
            }
        }
    }

    /// Everything that arrives within `d`.
    pub fn settle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(e) = self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(e);
        }
    }

    pub fn rebind(&self) -> Rebound {
        let (tx, rx) = channel();
        self.cmds.send(Cmd::Rebind(tx)).expect("probe alive");
        rx.recv_timeout(WAIT).expect("rebind answered")
    }

    pub fn set_filter(&self, s: FilterSpec) {
        let (tx, rx) = channel();
        self.cmds.send(Cmd::SetFilter(s, tx)).expect("probe alive");
        rx.recv_timeout(WAIT)
            .expect("set_filter answered")
            .expect("set_filter");
    }

    pub fn stop(mut self) -> (Vec<Ev>, CaptureStats) {
        let _ = self.cmds.send(Cmd::Stop);
        let stats = self
            .handle
            .take()
            .map(|h| h.join().expect("probe thread"))
            .unwrap_or_default();
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        (std::mem::take(&mut self.seen), stats)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub const PY_UDP: &str = "import socket,sys
src,dst,port,size,count=sys.argv[1],sys.argv[2],int(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5])
head=bytes.fromhex(sys.argv[6]) if len(sys.argv)>6 else b'\\x8aSPA\\x01'
s=socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src,0))
b=(head+bytes([0x8a])*size)[:size]
for i in range(count):
    s.sendto(b,(dst,port))
";

pub const PY_TCP: &str = "import socket,sys
src,dst,port=sys.argv[1],sys.argv[2],int(sys.argv[3])
s=socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(2)
s.bind((src,0))
s.connect_ex((dst,port))
";

/// `count` UDP datagrams of `size` bytes that start like a v1 datagram
/// (magic, version 1).
pub fn udp(pair: &NetPair, src: IpAddr, dst: IpAddr, port: u16, size: usize, count: usize) {
    udp_head(pair, src, dst, port, size, count, "8a53504101");
}

/// As [`udp`], the payload starting with the bytes `head` (hex) instead.
pub fn udp_head(
    pair: &NetPair,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    size: usize,
    count: usize,
    head: &str,
) {
    let st = pair
        .cli(&[
            "python3",
            "-c",
            PY_UDP,
            &src.to_string(),
            &dst.to_string(),
            &port.to_string(),
            &size.to_string(),
            &count.to_string(),
            head,
        ])
        .status()
        .expect("python3");
    assert!(st.success(), "udp send {src} -> {dst}:{port} size {size}");
}

pub fn tcp_connect(pair: &NetPair, src: IpAddr, dst: IpAddr, port: u16) {
    let st = pair
        .cli(&[
            "python3",
            "-c",
            PY_TCP,
            &src.to_string(),
            &dst.to_string(),
            &port.to_string(),
        ])
        .status()
        .expect("python3");
    assert!(st.success(), "tcp connect {src} -> {dst}:{port}");
}

pub fn is_spa_from(src: IpAddr) -> impl Fn(&Ev) -> bool {
    move |e| matches!(e, Ev::Spa { src: s, len, first: 0x8a, .. } if *s == src && *len == DATAGRAM_LEN)
}

pub fn is_knock(src: IpAddr, proto: Proto, dport: u16) -> impl Fn(&Ev) -> bool {
    move |e| matches!(e, Ev::Knock { src: s, proto: p, dport: d, .. } if *s == src && *p == proto && *d == dport)
}

/// poll(2) on the capture's sockets for up to `ms` (none while frames are
/// pending in user space), then tells the capture which ones poll flagged,
/// as the daemon's loop does.
pub fn poll_and_mark(cap: &mut Capture, ms: i32) {
    let mut fds: Vec<libc::pollfd> = cap
        .raw_fds()
        .into_iter()
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout = if cap.pending() { 0 } else { ms };
    // SAFETY: `fds` is a valid array of fds.len() pollfd structs.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    let revents: Vec<i16> = fds.iter().map(|p| p.revents).collect();
    cap.mark_ready(&revents);
}
