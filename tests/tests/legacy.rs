//! Legacy (knockd) knocks and HMAC knocks end to end: the real `spa-server`
//! and `spa-client`, real iptables, and the stock `knock` client from
//! Debian's knockd package, run in the client namespace.
//!
//! Namespace ids 30..=40 in use (30..=49 reserved), one per test. Every wait and loop is bounded; the
//! server is killed on drop and the namespaces are deleted, also when a test
//! fails. Single SYNs from a chosen source address (which `knock` cannot
//! pick) and the spoofed flood are sent by small python3 scripts inside the
//! client namespace; nothing leaves the two namespaces.

mod legacy_rig;

use legacy_rig::{rig, Rig, KNOCK};
use spa_e2e::{bin, wait_for, Guard, SynFlood};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Case 1: knockd's default doors: 7000,8000,9000 opens tcp/22 for the knocking
/// source only; 9000,8000,7000 closes it.
#[test]
fn default_doors_open_for_the_source_only_and_close() {
    let r = rig(30);
    let (a, b, srv) = (r.a(), r.b(), r.srv().to_string());
    assert!(!r.connects(a, r.srv()), "tcp/22 must be refused before");
    let s = r.server("server.log", true, &["--legacy-knock"]);
    assert!(
        s.log_text().contains("INSECURE"),
        "start must warn that legacy knocks are replayable:\n{}",
        s.log_text()
    );
    assert!(!r.connects(a, r.srv()), "still refused with the server up");

    r.knock(&["-v", &srv, "7000", "8000", "9000"]);
    s.expect_lines(
        &["knock accepted: rule added", &a.to_string(), "openSSH"],
        1,
    );
    r.expect_connect(a, r.srv(), true, "after 7000,8000,9000", &s);
    assert!(
        !r.connects(b, r.srv()),
        "the other client address must stay refused"
    );
    r.assert_one_grant(a);

    r.knock(&["-v", &srv, "9000", "8000", "7000"]);
    s.expect_lines(
        &["knock accepted: rule removed", &a.to_string(), "closeSSH"],
        1,
    );
    r.expect_connect(a, r.srv(), false, "after 9000,8000,7000", &s);
    assert!(r.grants().is_empty(), "{:?}", r.grants());
    r.done("default_doors");
}

/// Case 2: The right ports in the wrong order open nothing; the same source can
/// still knock correctly right after.
#[test]
fn wrong_order_opens_nothing() {
    let r = rig(31);
    let (a, srv) = (r.a(), r.srv().to_string());
    let s = r.server("server.log", true, &["--legacy-knock"]);

    r.knock(&[&srv, "8000", "7000", "9000"]);
    r.expect_nothing_opens(a, &s, 0, "8000,7000,9000");
    r.knock(&[&srv, "7000", "9000", "8000"]);
    r.expect_nothing_opens(a, &s, 0, "7000,9000,8000");
    assert!(r.grants().is_empty());

    // Control: the detector works and the source is not locked out.
    r.knock(&[&srv, "7000", "8000", "9000"]);
    r.expect_connect(a, r.srv(), true, "a correct knock after the wrong ones", &s);
    r.done("wrong_order");
}

/// Case 3: A sequence slower than seq_timeout (1 s here, from a `[legacy]`
/// section) opens nothing; the same sequence at full speed opens.
#[test]
fn too_slow_opens_nothing() {
    let r = rig(32);
    let (a, srv) = (r.a(), r.srv().to_string());
    let conf = r.file("server.toml", "[legacy]\nenabled = true\nseq_timeout = 1\n");
    let s = r.server("server.log", true, &["--config", &conf]);

    let t = Instant::now();
    r.knock(&["-d", "1500", &srv, "7000", "8000", "9000"]);
    assert!(
        t.elapsed() >= Duration::from_millis(2900),
        "knock -d 1500 must take 3 s, took {:?}",
        t.elapsed()
    );
    r.expect_nothing_opens(a, &s, 0, "knocks 1.5 s apart with seq_timeout 1");

    // Just inside the timeout: 2 × 400 ms = 0.8 s < 1 s.
    r.knock(&["-d", "400", &srv, "7000", "8000", "9000"]);
    r.expect_connect(a, r.srv(), true, "knocks 0.4 s apart", &s);
    r.done("too_slow");
}

/// Case 4: Two sources knocking interleaved (A 7000, B 7000, A 8000, B 8000,
/// A 9000, B 9000) both get in: progress is per source.
#[test]
fn two_sources_interleaved_both_open() {
    let r = rig(33);
    let (a, b) = (r.a(), r.b());
    let s = r.server("server.log", true, &["--legacy-knock"]);
    assert!(!r.connects(a, r.srv()) && !r.connects(b, r.srv()));

    r.syns(
        &[
            (a, 7000),
            (b, 7000),
            (a, 8000),
            (b, 8000),
            (a, 9000),
            (b, 9000),
        ],
        50,
    );
    s.expect_lines(&["knock accepted: rule added"], 2);
    r.expect_connect(a, r.srv(), true, "A after interleaved knocks", &s);
    r.expect_connect(b, r.srv(), true, "B after interleaved knocks", &s);
    assert_eq!(r.grants().len(), 2, "{:?}", r.grants());

    // Interleaved close by A only: B keeps its grant.
    r.syns(&[(a, 9000), (b, 7000), (a, 8000), (a, 7000)], 50);
    s.expect_lines(&["knock accepted: rule removed", &a.to_string()], 1);
    r.expect_connect(a, r.srv(), false, "A after its close", &s);
    assert!(r.connects(b, r.srv()), "B's grant must survive A's close");
    r.done("interleaved");
}

/// Case 5: A knockd.conf imported with `--knockd-conf`: a timed door
/// (start_command / cmd_timeout / stop_command, as knockd's openSSHtimed)
/// opens, then closes by itself after cmd_timeout. The imported file
/// replaces the default doors.
#[test]
fn knockd_conf_timed_door_opens_then_closes_itself() {
    let r = rig(34);
    let (a, b, srv) = (r.a(), r.b(), r.srv().to_string());
    let conf = r.file(
        "knockd.conf",
        "[options]\n\
         \tUseSyslog\n\
         \n\
         [openSSHtimed]\n\
         \tsequence      = 7100,8100,9100\n\
         \tseq_timeout   = 5\n\
         \tstart_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
         \tcmd_timeout   = 3\n\
         \tstop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
         \ttcpflags      = syn\n",
    );
    let s = r.server("server.log", true, &["--knockd-conf", &conf]);
    let warned = s.lines_with(&["UseSyslog"]);
    assert_eq!(warned.len(), 1, "one warning for UseSyslog: {warned:?}");

    // knockd's default doors are not in force: only the imported file is.
    r.knock(&[&srv, "7000", "8000", "9000"]);
    r.expect_nothing_opens(a, &s, 0, "default sequence with an imported knockd.conf");

    r.knock(&[&srv, "7100", "8100", "9100"]);
    let opened = Instant::now();
    s.expect_lines(
        &["knock accepted: rule added", "openSSHtimed", "duration=3"],
        1,
    );
    r.expect_connect(a, r.srv(), true, "after 7100,8100,9100", &s);
    assert!(
        !r.connects(b, r.srv()),
        "the other client address must stay refused"
    );
    assert!(
        r.pair
            .wait_connect(a, r.srv(), 22, false, Duration::from_secs(8)),
        "the timed door must close by itself; log:\n{}",
        s.log_text()
    );
    let closed_after = opened.elapsed();
    // Grants expire on whole unix seconds: a 3 s grant lasts 2..=3 s.
    assert!(
        closed_after >= Duration::from_millis(1500),
        "closed after {closed_after:?}, well before cmd_timeout = 3 s"
    );
    assert!(r.grants().is_empty(), "{:?}", r.grants());
    eprintln!(
        "timed door closed {:.2} s after the knock",
        closed_after.as_secs_f64()
    );
    r.done("knockd_conf");
}

/// Config for HMAC knocks: alice's key listed in the file, HMAC knocks on,
/// no fixed-sequence doors (`enabled` stays false).
fn hmac_conf(r: &Rig, extra: &str) -> String {
    r.file(
        "server.toml",
        &format!(
            "[[key]]\nname = \"alice\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\n\n\
             [legacy.hmac]\nenabled = true\n{extra}",
            r.key
        ),
    )
}

/// Case 6: An HMAC sequence from `spa-client knock-seq`, sent by the stock
/// `knock`, opens once; the same sequence again (same step) is refused, also
/// after a restart of the server; `spa-client knock --next` opens again.
#[test]
fn hmac_sequence_opens_once_not_twice() {
    let r = rig(35);
    let (a, b, srv) = (r.a(), r.b(), r.srv().to_string());
    let conf = hmac_conf(&r, "");
    let s = r.server(
        "server.log",
        false,
        &["--config", &conf, "--default-duration", "2"],
    );
    // HMAC knocks alone are not the replayable legacy doors: no INSECURE.
    assert!(
        !s.log_text().contains("INSECURE") && s.log_text().contains("HMAC knocks enabled"),
        "{}",
        s.log_text()
    );
    assert!(!r.connects(a, r.srv()));

    let seq = r.client_stdout(&["knock-seq", "--key", &r.key]);
    let ports: Vec<&str> = seq.split_whitespace().collect();
    assert_eq!(ports.len(), 5, "knock-seq printed {seq:?}");
    // As documented: knock SERVER $(spa-client knock-seq).
    let client = bin("spa-client").display().to_string();
    r.pair.cli_sh(&format!(
        "timeout 20 {KNOCK} {srv} $({client} knock-seq --key {})",
        r.key
    ));
    s.expect_lines(&["knock accepted: rule added", "hmac knock key alice"], 1);
    r.expect_connect(a, r.srv(), true, "after the HMAC sequence", &s);
    assert!(
        !r.connects(b, r.srv()),
        "the other client address must stay refused"
    );

    // The grant lasts 2 s; wait for it to end.
    r.expect_connect(a, r.srv(), false, "after the 2 s grant expired", &s);

    // The very same ports again: refused as a replay.
    let mut argv = vec![srv.as_str()];
    argv.extend(ports.iter().copied());
    r.knock(&argv);
    s.expect_lines(&["replayed"], 1);
    r.expect_nothing_opens(a, &s, 1, "the same HMAC sequence a second time");

    // And after a restart (same state directory): still used.
    let mut s = s;
    s.stop();
    let s = r.server(
        "server2.log",
        false,
        &["--config", &conf, "--default-duration", "2"],
    );
    r.knock(&argv);
    s.expect_lines(&["replayed"], 1);
    r.expect_nothing_opens(a, &s, 0, "the same HMAC sequence after a restart");

    // The next step's sequence is fresh.
    r.client_stdout(&["knock", "--key", &r.key, "--next", &srv]);
    s.expect_lines(&["knock accepted: rule added", "hmac knock key alice"], 1);
    r.expect_connect(a, r.srv(), true, "after spa-client knock --next", &s);
    r.done("hmac_once");
}

/// Case 7: A sequence of a step 3 steps ago (step_secs = 2) is refused; the
/// current one opens.
#[test]
fn hmac_sequence_from_an_expired_step_rejected() {
    let r = rig(36);
    let (a, srv) = (r.a(), r.srv().to_string());
    let conf = hmac_conf(&r, "step_secs = 2\n");
    let s = r.server("server.log", false, &["--config", &conf]);

    let old = r.client_stdout(&["knock-seq", "--key", &r.key, "--step-secs", "2"]);
    let old_ports: Vec<String> = old.split_whitespace().map(str::to_owned).collect();
    assert_eq!(old_ports.len(), 5, "knock-seq printed {old:?}");
    // Computed in step s at time t >= 2s; at t + 7 the server is in step
    // s + 3 at least, and accepts only s + 2 ..= s + 4.
    std::thread::sleep(Duration::from_secs(7));
    let mut argv = vec![srv.as_str()];
    argv.extend(old_ports.iter().map(String::as_str));
    r.knock(&argv);
    r.expect_nothing_opens(a, &s, 0, "a sequence 3 steps old");

    let fresh = r.client_stdout(&["knock-seq", "--key", &r.key, "--step-secs", "2"]);
    let mut argv = vec![srv.as_str()];
    argv.extend(fresh.split_whitespace());
    r.knock(&argv);
    r.expect_connect(a, r.srv(), true, "the current step's sequence", &s);
    r.done("hmac_expired");
}

/// Sends `count` raw TCP SYNs to `dport` from random spoofed sources in
/// 198.19.0.0/16 at about `pps`, from the client namespace (at most 30 s).
/// Prints `start` before the first packet and `sent N` at the end. The
/// server has no route to 198.19/16, so its RSTs die in its namespace.
fn flood_script(dst: Ipv4Addr, dport: u16, count: u32, pps: u32) -> String {
    SynFlood {
        dst,
        seed: 2544,
        packets: &format!(
            "pkts=[syn('198.19.%d.%d'%(rnd.randrange(256),rnd.randrange(1,255)),{dport}) \
             for _ in range({count})]"
        ),
        pps,
        announce_start: true,
        max_secs: 30,
    }
    .script()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Memory bound for the daemon under the flood (peak resident set).
const FLOOD_HWM_LIMIT_KIB: u64 = 64 * 1024;

/// Case 8: 20 000 spoofed first knocks (port 7000, random sources in
/// 198.19.0.0/16, ~10 000 pps, a progress table of 4096 so the flood
/// evicts) while the real `knock` runs mid-flood: the real knocker gets in,
/// the daemon lives and its peak RSS stays under 64 MiB.
#[test]
fn spoofed_first_knock_flood_real_knocker_gets_in_memory_bounded() {
    let r = rig(37);
    let (a, srv) = (r.a(), r.srv().to_string());
    let conf = r.file(
        "server.toml",
        "[legacy]\nenabled = true\nmax_sources = 4096\n",
    );
    let mut s = r.server("server.log", true, &["--config", &conf]);
    let pid = s.pid().expect("server pid");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "spa-server", "pid {pid} is not the daemon");
    let hwm_before = vm_hwm_kib(pid).expect("VmHWM of the daemon");
    let rx_before = r.pair.srv_rx_packets();

    const COUNT: u32 = 20_000;
    let script = flood_script(r.pair.srv_ip4, 7000, COUNT, 10_000);
    let mut flood = Guard(
        r.pair
            .cli(&["timeout", "60", "python3", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the flood in the client namespace"),
    );
    // Wait (bounded) for the flood's "start" line, then let it run a while.
    {
        use std::io::Read;
        let mut buf = [0u8; 6];
        let out = flood.0.stdout.as_mut().expect("flood stdout");
        out.read_exact(&mut buf).expect("flood start line");
        assert_eq!(&buf, b"start\n");
    }
    std::thread::sleep(Duration::from_millis(500));

    r.knock(&[&srv, "7000", "8000", "9000"]);
    let knocked = Instant::now();
    assert!(
        matches!(flood.0.try_wait(), Ok(None)),
        "the flood must still be running when the real knock is sent"
    );
    s.expect_lines(&["knock accepted: rule added", &a.to_string()], 1);
    eprintln!(
        "real knock opened {} ms after it was sent, mid-flood",
        knocked.elapsed().as_millis()
    );

    // Let the flood finish (bounded: 20k at 10 kpps is ~2 s, cap 30 s).
    assert!(
        wait_for(Duration::from_secs(40), || !matches!(
            flood.0.try_wait(),
            Ok(None)
        )),
        "flood did not finish"
    );
    let mut report = String::new();
    {
        use std::io::Read;
        let _ = flood
            .0
            .stdout
            .as_mut()
            .map(|o| o.read_to_string(&mut report));
    }
    let status = flood.0.wait().expect("flood status");
    assert!(status.success(), "flood failed: {report}");
    eprintln!("flood: {}", report.trim());
    let rx = r.pair.srv_rx_packets() - rx_before;
    assert!(
        rx >= u64::from(COUNT),
        "the server interface received only {rx} packets"
    );

    assert!(s.is_running(), "the daemon died:\n{}", s.log_text());
    r.expect_connect(a, r.srv(), true, "after the flood", &s);
    let hwm = vm_hwm_kib(pid).expect("VmHWM of the daemon");
    eprintln!(
        "daemon VmHWM: {hwm_before} KiB before, {hwm} KiB after {COUNT} spoofed first knocks (limit {FLOOD_HWM_LIMIT_KIB} KiB)"
    );
    assert!(
        hwm < FLOOD_HWM_LIMIT_KIB,
        "peak RSS {hwm} KiB exceeds {FLOOD_HWM_LIMIT_KIB} KiB"
    );
    // Only the real knocker got a grant.
    assert_eq!(r.grants().len(), 1, "{:?}", r.grants());
    r.done("flood");
}

/// Case 9: protocols per step and UDP HMAC knocks. A `[[legacy.door]]` of
/// our own with a UDP middle step (`7200,8200:udp,9200`) opens only when
/// the middle knock is UDP; with `[legacy.hmac] protocol = "udp"`,
/// `knock SRV $(spa-client knock-seq --udp)` (ports suffixed `:udp`) opens.
#[test]
fn udp_steps_and_udp_hmac_knocks() {
    let r = rig(38);
    let (a, srv) = (r.a(), r.srv().to_string());
    let conf = r.file(
        "server.toml",
        &format!(
            "[[key]]\nname = \"alice\"\nfile = \"{}\"\nallow = [\"tcp/22\"]\n\n\
             [legacy]\nenabled = true\n\n\
             [[legacy.door]]\nname = \"mixed\"\nsequence = \"7200,8200:udp,9200\"\n\
             open = \"tcp/22\"\nduration = 2\n\n\
             [legacy.hmac]\nenabled = true\nprotocol = \"udp\"\n",
            r.key
        ),
    );
    let s = r.server(
        "server.log",
        false,
        &["--config", &conf, "--default-duration", "2"],
    );

    // All TCP: the middle step has the wrong protocol.
    r.knock(&[&srv, "7200", "8200", "9200"]);
    r.expect_nothing_opens(a, &s, 0, "7200,8200,9200 all TCP");
    r.knock(&[&srv, "7200", "8200:udp", "9200"]);
    s.expect_lines(&["knock accepted: rule added", "mixed", "duration=2"], 1);
    r.expect_connect(a, r.srv(), true, "after 7200,8200:udp,9200", &s);
    r.expect_connect(a, r.srv(), false, "after the 2 s door grant ended", &s);

    let seq = r.client_stdout(&["knock-seq", "--key", &r.key, "--udp"]);
    assert!(
        seq.split_whitespace().count() == 5 && seq.split_whitespace().all(|p| p.ends_with(":udp")),
        "knock-seq --udp printed {seq:?}"
    );
    // The same ports as TCP SYNs are no HMAC knocks.
    let tcp: Vec<&str> = seq
        .split_whitespace()
        .map(|p| p.trim_end_matches(":udp"))
        .collect();
    let mut argv = vec![srv.as_str()];
    argv.extend(tcp.iter().copied());
    r.knock(&argv);
    r.expect_nothing_opens(a, &s, 1, "the UDP HMAC sequence sent as TCP SYNs");
    let client = bin("spa-client").display().to_string();
    r.pair.cli_sh(&format!(
        "timeout 20 {KNOCK} {srv} $({client} knock-seq --udp --key {})",
        r.key
    ));
    s.expect_lines(&["knock accepted: rule added", "hmac knock key alice"], 1);
    r.expect_connect(a, r.srv(), true, "after the UDP HMAC sequence", &s);
    r.done("udp");
}

/// Case 10: the default doors over IPv6 (`knock -6`): the grant is for the
/// knocking IPv6 source only.
#[test]
fn default_doors_over_ipv6() {
    let r = rig(39);
    let srv6: IpAddr = r.pair.srv_ip6.into();
    let (a6, b6): (IpAddr, IpAddr) = (r.pair.cli_ip6.into(), r.pair.cli_ip6_b.into());
    let s = r.server("server.log", true, &["--legacy-knock"]);
    let refused = |src: IpAddr| !r.pair.can_connect(src, srv6, 22);
    assert!(
        refused(a6) && refused(b6),
        "tcp/22 over IPv6 must be refused before"
    );

    let srv = srv6.to_string();
    r.knock(&["-6", &srv, "7000", "8000", "9000"]);
    s.expect_lines(&["knock accepted: rule added", "openSSH"], 1);
    // `knock` cannot pick its source: find which of the two it used.
    let line = s.lines_with(&["knock accepted: rule added"]).remove(0);
    let (from, other) = if line.contains(&format!("addr={a6} ")) {
        (a6, b6)
    } else if line.contains(&format!("addr={b6} ")) {
        (b6, a6)
    } else {
        panic!("grant for an unexpected address: {line}")
    };
    assert!(
        r.pair
            .wait_connect(from, srv6, 22, true, Duration::from_secs(5)),
        "{from} must get in over IPv6; log:\n{}",
        s.log_text()
    );
    assert!(refused(other), "{other} must stay refused");
    assert!(
        !r.pair.can_connect(r.a(), r.srv(), 22),
        "an IPv6 knock opens nothing for IPv4"
    );

    r.knock(&["-6", &srv, "9000", "8000", "7000"]);
    s.expect_lines(&["knock accepted: rule removed", "closeSSH"], 1);
    assert!(
        r.pair
            .wait_connect(from, srv6, 22, false, Duration::from_secs(5)),
        "closed again over IPv6"
    );
    r.done("ipv6");
}

/// Knocks that only pass through this host (routed via it to a host behind)
/// do not count: a router running spa-server must not open its own port for
/// a sequence aimed at someone else. The client routes 198.18.40.99 via the
/// server; the capture sees those SYNs (same interface, same MAC), the
/// daemon ignores them. Control: the same sequence to the server opens.
#[test]
fn forwarded_knocks_do_not_count() {
    let r = rig(40);
    let (a, srv) = (r.a(), r.srv().to_string());
    let behind = Ipv4Addr::new(198, 18, 40, 99);
    r.pair
        .cli_sh(&format!("ip route add {behind}/32 via {}", r.pair.srv_ip4));
    let s = r.server("server.log", true, &["--legacy-knock"]);

    r.knock(&[&behind.to_string(), "7000", "8000", "9000"]);
    r.expect_nothing_opens(a, &s, 0, "7000,8000,9000 to a host behind");
    assert!(r.grants().is_empty(), "{:?}", r.grants());

    r.knock(&[&srv, "7000", "8000", "9000"]);
    r.expect_connect(a, r.srv(), true, "the same sequence to the server", &s);
    r.done("forwarded_knocks");
}
