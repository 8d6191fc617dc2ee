//! Privilege separation on the real daemon (issue 9): the network side is an
//! unprivileged user with no capability, NoNewPrivs and a seccomp filter
//! that makes forbidden calls fail; the privileged side keeps only
//! CAP_NET_ADMIN + CAP_NET_RAW and refuses a grant outside its
//! configuration, even one sent down the real socketpair.
//!
//! Capture sockets come from the privileged side (SCM_RIGHTS), for the
//! configured interfaces only, their kernel filter locked: a reload that
//! adds an interface captures on it.
//!
//! Namespace ids 220..=222 (engineer G's range is 220..=239), 127..=128.
//! Every wait is bounded; the server is killed on drop and the namespaces
//! are deleted.

use spa_e2e::{Server, Testbed, PORT};
use spa_proto::IpFamily;
use spa_server::capture::Class;
use spa_server::firewall::Access;
use spa_server::privsep::proto::{read_frame, DecodeError, Reply, Request};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SID: &str = "e2e-privsep";

/// `Name: value` of /proc/PID/status.
fn status(pid: u32, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{text}"))
}

/// The privileged side: the network side's one spa-server child.
fn privileged_pid(net: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{net}/task/{net}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|p: &u32| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "spa-server")
        })
        .unwrap_or_else(|| panic!("no privileged side under {net}: {children:?}"))
}

#[test]
fn the_network_side_holds_nothing_and_the_privileged_side_two_capabilities() {
    let r = Testbed::new(220, "privsep", "iptables", SID, &["alice"]);
    let s = r.server("server.log", &[]);
    let net = s.pid().expect("server pid");
    let uid = status(net, "Uid");
    assert!(
        uid.split_whitespace().all(|u| u != "0"),
        "network side Uid {uid}; log:\n{}",
        s.log_text()
    );
    let gid = status(net, "Gid");
    assert!(gid.split_whitespace().all(|g| g != "0"), "Gid {gid}");
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(status(net, set), "0000000000000000", "network side {set}");
    }
    assert_eq!(status(net, "NoNewPrivs"), "1");
    assert_eq!(status(net, "Seccomp"), "2", "a seccomp filter is installed");
    let p = privileged_pid(net);
    assert!(status(p, "Uid").split_whitespace().all(|u| u == "0"));
    // CAP_NET_ADMIN = 12, CAP_NET_RAW = 13, nothing else, in every set
    // that matters; the bounding set narrowed too (root outside a unit).
    assert_eq!(status(p, "CapEff"), "0000000000003000");
    assert_eq!(status(p, "CapPrm"), "0000000000003000");
    assert_eq!(status(p, "CapInh"), "0000000000000000");
    assert_eq!(status(p, "CapAmb"), "0000000000000000");
    assert_eq!(status(p, "CapBnd"), "0000000000003000");
    // The state directory was handed to the network side's user.
    let md = std::fs::metadata(r.state_dir()).expect("state dir");
    let owner = std::os::unix::fs::MetadataExt::uid(&md).to_string();
    assert!(
        uid.split_whitespace().all(|u| u == owner),
        "state dir owner {owner}, uid {uid}"
    );
    // Its packet sockets (and only they) sit at CAPTURE_FD_BASE and above,
    // where its seccomp filter lets them receive and nothing more.
    let packet_inodes: Vec<String> = std::fs::read_to_string(format!("/proc/{net}/net/packet"))
        .expect("net/packet")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    let mut fds: Vec<(i32, bool)> = std::fs::read_dir(format!("/proc/{net}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let link = std::fs::read_link(e.path())
                .ok()?
                .to_string_lossy()
                .into_owned();
            let inode = link
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .unwrap_or("");
            Some((fd, packet_inodes.iter().any(|i| i == inode)))
        })
        .collect();
    fds.sort();
    let base = spa_server::privsep::sandbox::CAPTURE_FD_BASE;
    assert_eq!(fds.iter().filter(|(_, p)| *p).count(), 4, "{fds:?}");
    assert!(
        fds.iter().all(|&(fd, packet)| packet == (fd >= base)),
        "packet sockets at {base} and above, nothing else: {fds:?}"
    );
    // And it still works: open and close.
    let v4 = r.pair.v4();
    r.send(v4.cli, v4.srv, &["--open", "22", "-d", "60"]);
    r.expect_connect(v4.cli, v4.srv, true, "open under privsep", &s);
}

/// The network side's socket to the privileged side, duplicated into this
/// (root) process with pidfd_getfd(2): the one unix stream socket it has.
fn steal_channel(net: u32) -> UnixStream {
    let unix = std::fs::read_to_string(format!("/proc/{net}/net/unix")).expect("net/unix");
    // "Num RefCount Protocol Flags Type St Inode Path": Type 0001 = stream.
    let stream_inodes: Vec<String> = unix
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&"0001")).then(|| f.get(6).map(|s| s.to_string()))?
        })
        .collect();
    let fd_num = std::fs::read_dir(format!("/proc/{net}/fd"))
        .expect("fd dir")
        .flatten()
        .find_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            let l = link.to_string_lossy();
            let inode = l.strip_prefix("socket:[")?.strip_suffix(']')?;
            stream_inodes
                .iter()
                .any(|i| i == inode)
                .then(|| e.file_name().to_string_lossy().parse::<i32>().ok())?
        })
        .expect("the network side's unix stream socket");
    // SAFETY: plain syscalls; the returned descriptor is new and ours.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, net as libc::pid_t, 0) as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd_num, 0) as i32;
        assert!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        libc::close(pidfd);
        UnixStream::from_raw_fd(fd)
    }
}

fn ask(ch: &mut UnixStream, req: &Request) -> Reply {
    ch.write_all(&req.encode()).expect("send request");
    ch.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let msg = read_frame(ch).expect("read reply").expect("a reply");
    Reply::decode(&msg).expect("decode reply")
}

/// Asks for a capture socket down the channel: the decoded reply, and the
/// descriptor that came beside it (SCM_RIGHTS), if any.
fn ask_capture(
    ch: &mut UnixStream,
    interface: Option<String>,
    family: IpFamily,
    class: Class,
) -> (Result<Reply, DecodeError>, Option<OwnedFd>) {
    let req = Request::OpenCapture {
        interface,
        family,
        class,
    };
    ch.write_all(&req.encode()).expect("send request");
    let (msg, fd) = spa_server::privsep::fdpass::recv_with_fd(ch)
        .expect("reply")
        .expect("a reply");
    (Reply::decode(&msg), fd)
}

/// What a compromised network side could send: the privileged side checks
/// it against its own configuration. A grant a key may open passes (so the
/// channel works); tcp/25, which no key may open, and tcp/22 for longer
/// than `max_duration` are refused and logged, and the firewall does not
/// get them.
#[test]
fn the_privileged_side_refuses_a_grant_outside_its_configuration() {
    let r = Testbed::new(221, "privsep-refuse", "iptables", SID, &["alice"]);
    let s = r.server("server.log", &["--max-duration", "120"]);
    let net = s.pid().expect("server pid");
    let mut ch = steal_channel(net);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let cli: IpAddr = r.pair.v4().cli;
    let access = |port: u16, secs: u64| Access {
        addr: cli,
        grant: spa_proto::Grant::tcp(port).expect("port"),
        expires_at: now + secs,
        forward: None,
    };
    let ok = ask(
        &mut ch,
        &Request::Apply {
            add: vec![access(22, 60)],
            remove: vec![],
        },
    );
    assert_eq!(
        ok,
        Reply::Done,
        "an in-configuration grant; log:\n{}",
        s.log_text()
    );
    assert_eq!(
        r.grant_rules("iptables").len(),
        1,
        "{}",
        r.pair.srv_sh("iptables -w -S")
    );

    for (what, bad) in [("tcp/25", access(25, 60)), ("too long", access(22, 3600))] {
        let reply = ask(
            &mut ch,
            &Request::Apply {
                add: vec![bad],
                remove: vec![],
            },
        );
        assert!(
            matches!(reply, Reply::Refused(_)),
            "{what}: {reply:?}; log:\n{}",
            s.log_text()
        );
        assert_eq!(
            r.grant_rules("iptables").len(),
            1,
            "{what}: firewall unchanged"
        );
    }
    s.expect_lines(
        &["privileged side refused a batch", "outside_configuration"],
        2,
    );
    let junk = [0u8, 0, 0, 2, 0xee, 0];
    ch.write_all(&junk).expect("send junk");
    let msg = read_frame(&mut ch).expect("reply").expect("a reply");
    assert!(matches!(Reply::decode(&msg), Ok(Reply::Refused(_))));
    s.expect_lines(&["privileged side refused a request", "malformed"], 1);
}

/// The filter the network side installs makes forbidden calls fail: a
/// child process installs it exactly as the daemon does (the same
/// function), then tries socket(2), execve(2) and fork(2).
#[test]
fn the_seccomp_filter_makes_forbidden_calls_fail() {
    // SAFETY: fork in a test process; the child only makes raw syscalls
    // and exits with a code that says what happened.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let code = (|| unsafe {
            // A socket made before the filter: bind is refused on it, as
            // on every socket (new capture sockets come from the
            // privileged side, ready to use).
            let capture = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
            if capture < 0 {
                return 16;
            }
            // A socket pair: one end where the network side keeps its
            // capture sockets (from CAPTURE_FD_BASE up), one below.
            let mut pair = [0; 2];
            if libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, pair.as_mut_ptr()) != 0 {
                return 16;
            }
            let high = libc::fcntl(
                pair[0],
                libc::F_DUPFD,
                spa_server::privsep::sandbox::CAPTURE_FD_BASE,
            );
            if high < 0 {
                return 16;
            }
            if spa_server::privsep::sandbox::install_seccomp().is_err() {
                return 10;
            }
            // An abstract name (leading NUL): nothing on the file system.
            let mut sa: libc::sockaddr_un = std::mem::zeroed();
            sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let tag = (libc::getpid() % 250) as u8;
            let name = [0u8, b's', b'p', b'a', b'-', b's', b'c', tag];
            for (d, &b) in sa.sun_path.iter_mut().zip(&name) {
                *d = b as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
            if libc::bind(capture, (&raw const sa).cast(), len as libc::socklen_t) == 0
                || *libc::__errno_location() != libc::EPERM
            {
                return 18;
            }
            if libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) >= 0 {
                return 11;
            }
            if *libc::__errno_location() != libc::EPERM {
                return 12;
            }
            let sh = c"/bin/sh".as_ptr();
            let argv = [sh, std::ptr::null()];
            libc::execv(sh, argv.as_ptr());
            if *libc::__errno_location() != libc::EPERM {
                return 13;
            }
            if libc::syscall(libc::SYS_setuid, 0) == 0 {
                return 14;
            }
            // From the capture range: no send, no socket option; below it,
            // both still work.
            let one: libc::c_int = 1;
            let opt = |fd: i32| {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_PASSCRED,
                    (&raw const one).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if libc::write(high, b"x".as_ptr().cast(), 1) >= 0
                || *libc::__errno_location() != libc::EPERM
            {
                return 19;
            }
            if libc::send(high, b"x".as_ptr().cast(), 1, 0) >= 0 || opt(high) == 0 {
                return 20;
            }
            if libc::write(pair[1], b"x".as_ptr().cast(), 1) != 1 || opt(pair[1]) != 0 {
                return 21;
            }
            // What the event loop needs still works.
            let mut buf = [0u8; 1];
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if fd < 0 || libc::read(fd, buf.as_mut_ptr().cast(), 1) < 0 {
                return 15;
            }
            0
        })();
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(libc::WIFEXITED(st), "child killed: status {st}");
    assert_eq!(
        libc::WEXITSTATUS(st),
        0,
        "10 no filter, 11 socket allowed, 12 socket not EPERM, 13 execve not EPERM, \
         14 setuid allowed, 15 open/read broken, 16 no socket before the filter, \
         18 bind allowed, 19 write on a capture-range fd allowed or not EPERM, \
         20 send or setsockopt on it allowed, 21 write or setsockopt below the range refused"
    );
}

/// Either side's death ends the other: SIGKILL to the privileged side stops
/// the network side (which removes nothing it cannot reach: the kernel
/// expiry and `spa-server flush` are the guarantees); SIGKILL to the
/// network side ends the privileged side (end of stream).
#[test]
fn either_sides_death_ends_the_other() {
    let r = Testbed::new(222, "privsep-death", "iptables", SID, &["alice"]);
    let s = r.server("server.log", &[]);
    let net = s.pid().expect("server pid");
    let p = privileged_pid(net);
    // SAFETY: kill(2) of a process this test's server started.
    unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
    s.expect_lines(&["the privileged side exited; stopping"], 1);
    let gone = |pid: u32| {
        spa_e2e::wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |st| st.contains(") Z "))
        })
    };
    assert!(
        gone(net),
        "network side still running; log:\n{}",
        s.log_text()
    );

    let s2 = r.server("server2.log", &[]);
    let net2 = s2.pid().expect("server pid");
    let p2 = privileged_pid(net2);
    // SAFETY: as above.
    unsafe { libc::kill(net2 as libc::pid_t, libc::SIGKILL) };
    assert!(gone(p2), "privileged side outlived the network side");
}

/// A second veth between the namespaces, `spa<id>s1` (198.19.<id>.1) to
/// `spa<id>c1` (198.19.<id>.2): another interface of the server, which the
/// client reaches only through it. Goes with the namespaces.
fn second_link(r: &Testbed) -> (String, IpAddr, IpAddr) {
    let id = r.pair.id;
    let (s, c) = (format!("spa{id}s1"), format!("spa{id}c1"));
    r.pair.srv_sh(&format!(
        "ip link add {s} type veth peer name {c} netns {cns} && ip addr add 198.19.{id}.1/24 dev {s} \
         && ip link set {s} up",
        cns = r.pair.cli_ns
    ));
    r.pair.cli_sh(&format!(
        "ip addr add 198.19.{id}.2/24 dev {c} && ip link set {c} up"
    ));
    let srv = format!("198.19.{id}.1").parse().expect("address");
    let cli = format!("198.19.{id}.2").parse().expect("address");
    (s, srv, cli)
}

/// server.toml capturing on `interfaces`, key alice allowed tcp/22.
fn write_config(r: &Testbed, interfaces: &[&str]) -> String {
    let list: Vec<String> = interfaces.iter().map(|i| format!("\"{i}\"")).collect();
    let t = format!(
        "server_id = \"{SID}\"\ninterfaces = [{}]\nstate_dir = \"{}\"\nfirewall = \"{}\"\n\n\
         [[key]]\nname = \"alice\"\nfile = \"{}\"\nallow = [\"tcp/{PORT}\"]\nmax_duration = 300\n",
        list.join(", "),
        r.state_dir().display(),
        r.backend,
        r.key_path("alice").display()
    );
    let p = r.dir.join("server.toml");
    std::fs::write(&p, t).expect("write server.toml");
    p.display().to_string()
}

fn hup(s: &Server) {
    // SAFETY: kill(2) of the server this test started.
    unsafe { libc::kill(s.pid().expect("pid") as libc::pid_t, libc::SIGHUP) };
}

/// Issue 9: a SIGHUP that adds an interface captures on it. The network
/// side may not open a packet socket; the privileged side makes one per
/// family and class for the new configuration's interfaces and hands them
/// over (SCM_RIGHTS). Before: the reload was refused ("capture ... socket
/// failed: Operation not permitted") and the old configuration stayed.
/// A reload naming a missing interface is still refused, the sockets and
/// the old configuration kept on both sides.
#[test]
fn sighup_adding_an_interface_captures_on_it() {
    let r = Testbed::new(127, "privsep-iface", "iptables", SID, &["alice"]);
    let (if1, srv1, cli1) = second_link(&r);
    let if0 = r.pair.srv_if.clone();
    let conf = write_config(&r, &[&if0]);
    let s = Server::start(&r.pair, &r.dir.join("server.log"), &["--config", &conf]);
    s.expect_lines(&["capture socket handed over (filter locked)"], 4);

    // Not captured on the second interface yet: nothing opens.
    r.send(cli1, srv1, &["--open", "22", "-d", "60"]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert!(
        !r.connects(cli1, srv1),
        "a datagram on an interface not captured opened; log:\n{}",
        s.log_text()
    );
    assert!(r.grant_rules("iptables").is_empty());

    write_config(&r, &[&if0, &if1]);
    hup(&s);
    s.expect_lines(&["reloaded"], 1);
    assert!(
        s.lines_with(&["reload refused"]).is_empty(),
        "{}",
        s.log_text()
    );
    // Eight more sockets: two interfaces, two families, two classes.
    s.expect_lines(&["capture socket handed over (filter locked)"], 12);
    r.send(cli1, srv1, &["--open", "22", "-d", "60"]);
    r.expect_connect(cli1, srv1, true, "a datagram on the added interface", &s);
    let v4 = r.pair.v4();
    r.send(v4.cli, v4.srv, &["--open", "22", "-d", "60"]);
    r.expect_connect(v4.cli, v4.srv, true, "the first interface still", &s);

    // A missing interface (and the second one dropped): refused, the old
    // configuration and sockets kept, on both sides: the privileged side
    // still makes sockets for the second interface. Before Settle it had
    // taken the refused configuration at `Reload` and refused them.
    write_config(&r, &[&if0, "spa127zz"]);
    hup(&s);
    s.expect_lines(&["reload refused", "spa127zz", "does not exist"], 1);
    r.send(v4.cli_b, v4.srv, &["--open", "22", "-d", "60"]);
    r.expect_connect(v4.cli_b, v4.srv, true, "after a refused reload", &s);
    let mut ch = steal_channel(s.pid().expect("server pid"));
    let (reply, fd) = ask_capture(&mut ch, Some(if1.clone()), IpFamily::V4, Class::Spa);
    assert!(
        matches!(reply, Ok(Reply::Capture { .. })) && fd.is_some(),
        "after a refused reload the privileged side judges by the refused file: {reply:?}; log:\n{}",
        s.log_text()
    );
    r.done("sighup_adding_an_interface_captures_on_it");
}

/// SO_DETACH_FILTER on `fd`: 0, or the errno.
fn detach_filter(fd: i32) -> i32 {
    let zero: libc::c_int = 0;
    // SAFETY: plain setsockopt with a live int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DETACH_FILTER,
            (&raw const zero).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

/// What a compromised network side could ask down the real socketpair: a
/// capture socket for an interface the configuration does not name (it
/// exists), or for every interface, is refused and logged; one for the
/// configured interface arrives, and its filter cannot be detached.
#[test]
fn the_privileged_side_refuses_a_capture_socket_outside_its_configuration() {
    let r = Testbed::new(128, "privsep-capture", "iptables", SID, &["alice"]);
    let (if1, _, _) = second_link(&r);
    let s = r.server("server.log", &[]);
    let mut ch = steal_channel(s.pid().expect("server pid"));
    for interface in [Some(if1.clone()), None] {
        let req = Request::OpenCapture {
            interface: interface.clone(),
            family: IpFamily::V4,
            class: Class::Spa,
        };
        let reply = ask(&mut ch, &req);
        assert!(
            matches!(&reply, Reply::Refused(why) if why.contains("not in the configuration")
                || why.contains("names its interfaces")),
            "{interface:?}: {reply:?}; log:\n{}",
            s.log_text()
        );
    }
    s.expect_lines(
        &[
            "privileged side refused a request",
            "outside_configuration",
            "capture socket",
        ],
        2,
    );
    let (reply, fd) = ask_capture(
        &mut ch,
        Some(r.pair.srv_if.clone()),
        IpFamily::V6,
        Class::Knock,
    );
    assert!(
        matches!(reply, Ok(Reply::Capture { ifindex }) if ifindex > 0),
        "{reply:?}"
    );
    let fd = fd.expect("the socket beside the reply");
    assert_eq!(
        detach_filter(fd.as_raw_fd()),
        libc::EPERM,
        "the handed-over socket's filter came off"
    );
    r.done("the_privileged_side_refuses_a_capture_socket_outside_its_configuration");
}
