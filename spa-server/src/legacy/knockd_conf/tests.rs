//! knockd.conf import: what is taken, what is refused, with its line.

use super::*;
use proptest::prelude::*;

fn parse(text: &str) -> Result<KnockdImport, KnockdConfError> {
    parse_knockd_conf(Path::new("/etc/knockd.conf"), text)
}

fn err_at(text: &str) -> (usize, String) {
    let e = parse(text).unwrap_err();
    let shown = e.to_string();
    assert!(shown.starts_with("/etc/knockd.conf"), "{shown}");
    (e.line, e.problem.to_string())
}

fn ssh() -> Grant {
    Grant::tcp(22).unwrap()
}

/// Debian's stock /etc/knockd.conf (knockd 0.8-2), verbatim.
const DEBIAN_STOCK: &str = "[options]
\tUseSyslog

[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[openHTTPS]
\tsequence    = 12345,54321,24680,13579
\tseq_timeout = 5
\tcommand     = /usr/local/sbin/knock_add -i -c INPUT -p tcp -d 443 -f %IP%
\ttcpflags    = syn
";

#[test]
fn debian_stock_config_imports() {
    let imp = parse(DEBIAN_STOCK).unwrap();
    assert_eq!(imp.doors.len(), 3);
    let d = &imp.doors[0];
    assert_eq!(d.name.as_ref(), "openSSH");
    assert_eq!(d.sequence, parse_sequence("7000,8000,9000").unwrap());
    assert_eq!(d.seq_timeout_ms, 5000);
    assert_eq!(d.tcpflags, TcpFlags::SYN);
    assert_eq!(
        d.action,
        DoorAction::Open {
            grant: ssh(),
            duration_secs: None
        }
    );
    assert_eq!(imp.doors[1].action, DoorAction::Close { grant: ssh() });
    assert_eq!(
        imp.doors[2].action,
        DoorAction::Open {
            grant: Grant::tcp(443).unwrap(),
            duration_secs: None
        }
    );
    assert_eq!(imp.warnings.len(), 1);
    assert!(
        imp.warnings[0].contains(":2: UseSyslog"),
        "{:?}",
        imp.warnings
    );
    // The doors equal our defaults, as the issue promises.
    assert_eq!(imp.doors[..2], super::super::tracker::default_doors(5)[..]);
}

/// The file the knockd package installed on this machine, if present.
#[test]
fn installed_knockd_conf_imports_if_present() {
    let p = Path::new("/etc/knockd.conf");
    if p.exists() {
        let imp = read_knockd_conf(p).unwrap();
        assert!(!imp.doors.is_empty());
    }
}

/// The bench adapter's config, with the fail-closed timed door.
#[test]
fn bench_adapter_config_with_timed_door() {
    let text = "[options]
\tLogFile = /tmp/w/knockd.log
\tInterface = veth-srv

[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 5
\tcommand     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 5
\tcommand     = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[openSSHtimed]
\tsequence      = 7100,8100,9100
\tseq_timeout   = 5
\tstart_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\tcmd_timeout   = 10
\tstop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags      = syn
";
    let imp = parse(text).unwrap();
    assert_eq!(imp.doors.len(), 3);
    assert_eq!(
        imp.doors[2].action,
        DoorAction::Open {
            grant: ssh(),
            duration_secs: Some(10)
        }
    );
    assert_eq!(imp.warnings.len(), 2);
    assert!(imp.warnings[1].contains(":3: Interface = veth-srv"));
}

#[test]
fn defaults_follow_knockd() {
    let imp = parse(
        "[d]\nsequence = 1000:udp,2000\nstart_command = iptables -A INPUT -s %IP% -p udp --dport 53 -j ACCEPT\n\
         stop_command = iptables -D INPUT -s %IP% -p udp -m udp --dport 53 -j ACCEPT\n",
    )
    .unwrap();
    let d = &imp.doors[0];
    assert_eq!(d.seq_timeout_ms, 25_000, "knockd's SEQ_TIMEOUT");
    assert_eq!(d.tcpflags, TcpFlags::ANY);
    assert_eq!(
        d.action,
        DoorAction::Open {
            grant: Grant::new(Proto::Udp, 53).unwrap(),
            duration_secs: Some(10)
        }
    );
    assert_eq!(
        d.sequence[0],
        Step {
            port: 1000,
            proto: Proto::Udp
        }
    );
}

#[test]
fn accepted_command_variants() {
    for cmd in [
        "iptables -I INPUT 1 -s %IP% -p tcp --dport 22 -j ACCEPT",
        "/usr/sbin/iptables -w -t filter --insert INPUT --source %IP% --protocol TCP -m tcp --destination-port 22 --jump ACCEPT",
        "/sbin/iptables -w 5 -A INPUT -p tcp -s %IP%/32 --dport 22 -j ACCEPT",
        "/usr/sbin/iptables-nft -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT",
        "knock_add -a -f %IP% -d 22",
        "/usr/local/sbin/knock_add -i -v -m -c INPUT -p tcp -d 22 -f %IP%",
    ] {
        let imp = parse(&format!("[d]\nsequence=1\ncommand = {cmd}\n"))
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert_eq!(imp.doors[0].action, DoorAction::Open { grant: ssh(), duration_secs: None }, "{cmd}");
    }
    let imp = parse("[d]\nsequence=1\ncommand = knock_add -x -f %IP% -d 22\n").unwrap();
    assert_eq!(imp.doors[0].action, DoorAction::Close { grant: ssh() });
}

#[test]
fn ipv6_commands_must_match_ipv4() {
    let base = "[d]\nsequence=1\nstart_command = iptables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT\n\
                stop_command = iptables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT\ncmd_timeout = 5\n";
    let ok = format!(
        "{base}start_command_6 = /usr/sbin/ip6tables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT\n\
         stop_command_6 = /usr/sbin/ip6tables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT\n"
    );
    let imp = parse(&ok).unwrap();
    assert_eq!(
        imp.doors[0].action,
        DoorAction::Open {
            grant: Grant::tcp(25).unwrap(),
            duration_secs: Some(5)
        }
    );
    let bad =
        format!("{base}start_command_6 = ip6tables -A INPUT -s %IP% -p tcp --dport 26 -j ACCEPT\n");
    assert_eq!(err_at(&bad).0, 6);
}

#[test]
fn unsupported_things_name_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("[options]\nUseSyslog\nfoo = bar\n", 3, "unsupported [options] key"),
        ("sequence = 1\n", 1, "outside any [section]"),
        ("[]\n", 1, "empty section"),
        ("[d\u{1b}[2J]\n", 1, "control characters"),
        ("[d]\nsequence = 1\ntarget = 10.0.0.1\n", 3, "target"),
        ("[d]\none_time_sequences = /etc/otp\n", 2, "one_time_sequences"),
        ("[d]\nsequence = 7000,abc\n", 2, "sequence"),
        ("[d]\nsequence = 1\nseq_timeout = 0\n", 3, "seq_timeout"),
        ("[d]\nsequence = 1\nseq_timeout = five\n", 3, "seq_timeout"),
        ("[d]\nsequence = 1\ntcpflags = syn,xmas\n", 3, "tcpflags"),
        ("[d]\nsequence = 1\ntcpflags = fin,!ack\n", 3, "bare SYN"),
        ("[d]\nsequence = 1\nfrobnicate = 1\n", 3, "unsupported door key"),
        ("[d]\nsequence = 1\nbogus\n", 3, "without a value"),
        ("[d]\n  # comment\nsequence = 1\ncommand = /usr/local/bin/open-door %IP%\n", 4, "not supported"),
        ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT; reboot\n", 3, "shell syntax"),
        ("[d]\nsequence = 1\ncommand = iptables -A FORWARD -s %IP% -p tcp --dport 22 -j ACCEPT\n", 3, "chain"),
        ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s 10.0.0.1 -p tcp --dport 22 -j ACCEPT\n", 3, "%IP%"),
        ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% --dport 22 -j ACCEPT\n", 3, "-p"),
        ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --syn -j ACCEPT\n", 3, "--syn"),
        ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22:25 -j ACCEPT\n", 3, "single port"),
        ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22 -j DROP\n", 3, "ACCEPT"),
        ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22\n", 3, "-j ACCEPT"),
        ("[d]\nsequence = 1\ncommand = iptables -A INPUT -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n", 3, "twice"),
        ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp -m udp --dport 22 -j ACCEPT\n", 3, "-m"),
        ("[d]\nsequence = 1\ncommand = knock_add -t -i -f %IP% -d 22\n", 3, "dry run"),
        ("[d]\nsequence = 1\ncommand =\n", 3, "empty command"),
        (
            "[d]\nsequence = 1\nstart_command = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
             stop_command = iptables -D INPUT -s %IP% -p tcp --dport 23 -j ACCEPT\n",
            4,
            "stop_command must delete",
        ),
        (
            "[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\ncmd_timeout = 5\n",
            4,
            "cmd_timeout",
        ),
        ("[d]\nseq_timeout = 5\n", 1, "no sequence"),
        ("[d]\nsequence = 1\n[e]\nsequence = 2\n", 1, "no command"),
        (
            "[d]\nsequence = 1\ncommand = knock_add -i -f %IP% -d 22\n[d]\n",
            4,
            "defined twice",
        ),
        (
            "[d]\nsequence = 1\ncommand = knock_add -i -f %IP% -d 22\n[e]\nsequence = 1:tcp\ncommand = knock_add -x -f %IP% -d 22\n",
            4,
            "same sequence",
        ),
    ];
    for (text, line, needle) in cases {
        let (l, msg) = err_at(text);
        assert_eq!(l, *line, "{text:?}: {msg}");
        assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
    }
}

#[test]
fn non_utf8_file_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("knockd.conf");
    std::fs::write(&p, b"[options]\nUseSyslog\n[d]\nsequence = 1\xff\n").unwrap();
    let e = read_knockd_conf(&p).unwrap_err();
    assert_eq!(e.line, 4);
    let e = read_knockd_conf(&dir.path().join("missing")).unwrap_err();
    assert_eq!(e.line, 0);
    assert!(e.to_string().contains("missing"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary text never panics; an error always carries a line in range.
    #[test]
    fn never_panics_on_arbitrary_text(text in "(\\PC{0,40}\n){0,12}") {
        match parse(&text) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.line <= text.lines().count()),
        }
    }

    /// Arbitrary text built from knockd's own vocabulary.
    #[test]
    fn never_panics_on_knockd_like_text(lines in proptest::collection::vec(
        prop_oneof![
            Just("[options]".to_string()),
            Just("[door]".to_string()),
            Just("UseSyslog".to_string()),
            "(sequence|seq_timeout|tcpflags|command|start_command|stop_command|cmd_timeout|target) *= *[0-9a-z:,!%/ -]{0,30}",
            "command = (/sbin/)?(iptables|knock_add) (-[AIDxaifdpcsjm]|--dport|INPUT|%IP%|tcp|udp|ACCEPT|[0-9]{1,6}| )*",
        ], 0..12)) {
        let text = lines.join("\n");
        if let Err(e) = parse(&text) {
            prop_assert!(e.line <= lines.len());
        }
    }
}

/// Every refusal of the import, byte for byte as `main` prints it: admins
/// and scripts match these lines, so the error types may change but not
/// the text.
const PINNED: &[(&str, &str)] = &[
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT; reboot\n", "/etc/knockd.conf:3: command: shell syntax (';') is not supported: only a single iptables or knock_add command"),
    ("[d]\nsequence = 1\ncommand = \n", "/etc/knockd.conf:3: command: empty command"),
    ("[d]\nsequence = 1\ncommand = /usr/local/bin/open-door %IP%\n", "/etc/knockd.conf:3: command: command \"open-door\" is not supported: only iptables/ip6tables -I/-A/-D INPUT -s %IP% -p tcp|udp --dport N -j ACCEPT, or knock_add"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p icmp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: protocol \"icmp\" is not supported (tcp or udp)"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22:25 -j ACCEPT\n", "/etc/knockd.conf:3: command: \"22:25\" is not a single port 1..=65535 (ranges and service names are not supported)"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: the rule operation (-I/-A/-D) given twice"),
    ("[d]\nsequence = 1\ncommand = iptables -A\n", "/etc/knockd.conf:3: command: -A needs a value"),
    ("[d]\nsequence = 1\ncommand = iptables -A FORWARD -s %IP% -p tcp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: chain \"FORWARD\" is not supported: spa manages its own rules hooked into INPUT"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s 10.0.0.1 -p tcp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: source must be %IP% (the knocker), not \"10.0.0.1\""),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp -m state --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: match module \"state\" is not supported (only -m tcp/-m udp)"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22 -j DROP\n", "/etc/knockd.conf:3: command: target \"DROP\" is not supported (only -j ACCEPT)"),
    ("[d]\nsequence = 1\ncommand = iptables -t nat -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: table \"nat\" is not supported (only filter)"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --syn -j ACCEPT\n", "/etc/knockd.conf:3: command: iptables argument \"--syn\" is not supported"),
    ("[d]\nsequence = 1\ncommand = iptables -s %IP% -p tcp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: no -I, -A or -D INPUT"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -p tcp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: no -s %IP%: spa only grants to the knocking source"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: no -p tcp|udp"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp -m udp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: -m does not match -p"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp -j ACCEPT\n", "/etc/knockd.conf:3: command: no --dport"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22\n", "/etc/knockd.conf:3: command: no -j ACCEPT"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -s %IP% -p tcp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:3: command: -s given twice"),
    ("[d]\nsequence = 1\ncommand = knock_add -t -i -f %IP% -d 22\n", "/etc/knockd.conf:3: command: knock_add -t (dry run) changes nothing; remove the door or the flag"),
    ("[d]\nsequence = 1\ncommand = knock_add -z\n", "/etc/knockd.conf:3: command: knock_add argument \"-z\" is not supported"),
    ("[d]\nsequence = 1\ncommand = knock_add -f %IP% -d 22\n", "/etc/knockd.conf:3: command: knock_add needs -a, -i or -x"),
    ("[d]\nsequence = 1\ncommand = knock_add -a -d 22\n", "/etc/knockd.conf:3: command: knock_add needs -f %IP%"),
    ("[d]\nsequence = 1\ncommand = knock_add -a -f %IP%\n", "/etc/knockd.conf:3: command: knock_add needs -d PORT"),
    ("[d]\nsequence = 1\ncommand = knock_add -a -f 1.2.3.4 -d 22\n", "/etc/knockd.conf:3: command: source must be %IP% (the knocker), not \"1.2.3.4\""),
    ("[d]\nsequence = 1\ncommand = knock_add -a -c FORWARD -f %IP% -d 22\n", "/etc/knockd.conf:3: command: chain \"FORWARD\" is not supported: spa manages its own rules hooked into INPUT"),
    ("[d]\nsequence = 1\ncommand = knock_add -a -f %IP% -d\n", "/etc/knockd.conf:3: command: -d needs a value"),
    ("[d]\nsequence = 1\ncommand = knock_add -a -x -f %IP% -d 22\n", "/etc/knockd.conf:3: command: the operation (-a/-i/-x) given twice"),
    ("[d]\nsequence = 1\ncommand = knock_add -a -f %IP% -d 22 -p sctp\n", "/etc/knockd.conf:3: command: protocol \"sctp\" is not supported (tcp or udp)"),
    ("[d]\nsequence = 1\nstart_command = iptables -A INPUT -s %IP% -p tcp -j ACCEPT\n", "/etc/knockd.conf:3: start_command: no --dport"),
    ("[d]\nsequence = 1\ncommand_6 = iptables -A INPUT -s %IP% -p tcp -j ACCEPT\n", "/etc/knockd.conf:3: command_6: no --dport"),
    ("[d]\nsequence = 1\nstart_command_6 = iptables -A INPUT -s %IP% -p tcp -j ACCEPT\n", "/etc/knockd.conf:3: start_command_6: no --dport"),
    ("[d]\nsequence = 1\nstop_command = iptables -A INPUT -s %IP% -p tcp -j ACCEPT\n", "/etc/knockd.conf:3: stop_command: no --dport"),
    ("[d]\nsequence = 1\nstop_command_6 = iptables -A INPUT -s %IP% -p tcp -j ACCEPT\n", "/etc/knockd.conf:3: stop_command_6: no --dport"),
    ("[options]\nUseSyslog\nfoo = bar\n", "/etc/knockd.conf:3: unsupported [options] key \"FOO\" (supported: UseSyslog, LogFile, PidFile, Interface)"),
    ("sequence = 1\n", "/etc/knockd.conf:1: directive outside any [section]"),
    ("[]\n", "/etc/knockd.conf:1: empty section name"),
    ("[d\u{1b}[2J]\n", "/etc/knockd.conf:1: section name must not contain control characters"),
    ("[d]\nsequence = 1\ntarget = 10.0.0.1\n", "/etc/knockd.conf:3: target is not supported: spa accepts knocks to the addresses its capture sees; remove the line or run knockd for this door"),
    ("[d]\none_time_sequences = /etc/otp\n", "/etc/knockd.conf:2: one_time_sequences is not supported: use HMAC knocks ([legacy.hmac]), which change every time step and need no sequence file"),
    ("[d]\nsequence = 7000,abc\n", "/etc/knockd.conf:2: sequence: \"abc\" is not a port number 1..=65535"),
    ("[d]\nsequence = 1\nseq_timeout = 0\n", "/etc/knockd.conf:3: seq_timeout: must be at least 1 second"),
    ("[d]\nsequence = 1\ntimeout = five\n", "/etc/knockd.conf:3: seq_timeout: \"five\" is not a whole number of seconds"),
    ("[d]\nsequence = 1\ncmd_timeout = 0\n", "/etc/knockd.conf:3: cmd_timeout: must be at least 1 second"),
    ("[d]\nsequence = 1\ntcpflags = syn,xmas\n", "/etc/knockd.conf:3: tcpflags: unknown TCP flag \"xmas\" (fin, syn, rst, psh, ack, urg, or !flag)"),
    ("[d]\nsequence = 1\ntcpflags = fin,!ack\n", "/etc/knockd.conf:3: tcpflags: \"fin,!ack\" never matches a bare SYN, and spa captures TCP knocks as bare SYNs (what knock clients send): this door could never open; use \"syn\" or remove the line"),
    ("[d]\nsequence = 1\nfrobnicate = 1\n", "/etc/knockd.conf:3: unsupported door key \"FROBNICATE\""),
    ("[d]\nsequence = 1\nbogus\n", "/etc/knockd.conf:3: \"BOGUS\" without a value: expected key = value"),
    ("[d]\nsequence = 1\nstart_command = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\nstop_command = iptables -D INPUT -s %IP% -p tcp --dport 23 -j ACCEPT\n", "/etc/knockd.conf:4: stop_command must delete the rule start_command added (tcp/22); anything else is not supported"),
    ("[d]\nsequence = 1\nstart_command = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\nstop_command = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:4: stop_command must delete the rule start_command added (tcp/22); anything else is not supported"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\ncmd_timeout = 5\n", "/etc/knockd.conf:4: cmd_timeout without stop_command has no effect; remove it or add the matching stop_command"),
    ("[d]\nsequence = 1\ncommand = iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\ncmd_timeout = 5\n", "/etc/knockd.conf:4: cmd_timeout without stop_command has no effect; remove it"),
    ("[d]\nsequence = 1\ncommand = iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\nstop_command = iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n", "/etc/knockd.conf:4: stop_command after a start_command that deletes a rule is not supported"),
    ("[d]\nsequence = 1\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\ncommand_6 = ip6tables -A INPUT -s %IP% -p tcp --dport 23 -j ACCEPT\n", "/etc/knockd.conf:4: start_command_6 differs from its IPv4 command; spa applies one grant to both address families"),
    ("[d]\nsequence = 1\nstart_command = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\nstop_command = iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\nstop_command_6 = ip6tables -D INPUT -s %IP% -p tcp --dport 23 -j ACCEPT\n", "/etc/knockd.conf:5: stop_command_6 differs from its IPv4 command; spa applies one grant to both address families"),
    ("[d]\nseq_timeout = 5\n", "/etc/knockd.conf:1: door [d] has no sequence"),
    ("[d]\nsequence = 1\n[e]\nsequence = 2\n", "/etc/knockd.conf:1: door [d] has no command or start_command"),
    ("[d]\nsequence = 1\ncommand = knock_add -i -f %IP% -d 22\n[d]\n", "/etc/knockd.conf:4: door [d] is defined twice"),
    ("[d]\nsequence = 1\ncommand = knock_add -i -f %IP% -d 22\n[e]\nsequence = 1:tcp\ncommand = knock_add -x -f %IP% -d 22\n", "/etc/knockd.conf:4: door [e] has the same sequence as [d]"),
];

#[test]
fn messages_are_pinned() {
    for (text, want) in PINNED {
        assert_eq!(parse(text).unwrap_err().to_string(), *want, "{text:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("knockd.conf");
    std::fs::write(&p, b"[d]\nsequence = 1\xff\n").unwrap();
    assert_eq!(
        read_knockd_conf(&p).unwrap_err().to_string(),
        format!("{}:2: not valid UTF-8", p.display())
    );
    let missing = dir.path().join("missing");
    assert_eq!(
        read_knockd_conf(&missing).unwrap_err().to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            missing.display()
        )
    );
    std::fs::write(&p, vec![b'#'; MAX_FILE_LEN + 1]).unwrap();
    assert_eq!(
        read_knockd_conf(&p).unwrap_err().to_string(),
        format!("{}: larger than 1048576 bytes", p.display())
    );
}

/// The facts stay reachable as values: the key, the word as written, the
/// OS error under a read failure.
#[test]
fn errors_keep_their_facts() {
    let e = parse(
        "[d]\nsequence = 1\nstop_command_6 = iptables -A INPUT -s %IP% -p tcp --dport 22:25 -j ACCEPT\n",
    )
    .unwrap_err();
    assert_eq!(e.line, 3);
    match e.problem {
        KnockdProblem::Command {
            key,
            error: CommandError::Port { value },
        } => assert_eq!((key.as_str(), value.as_str()), ("stop_command_6", "22:25")),
        other => panic!("{other:?}"),
    }
    let e = read_knockd_conf(Path::new("/nonexistent-spa/knockd.conf")).unwrap_err();
    let io = std::error::Error::source(&e).and_then(|c| c.downcast_ref::<std::io::Error>());
    assert_eq!(
        io.map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
}
