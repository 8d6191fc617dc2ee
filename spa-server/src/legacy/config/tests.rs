//! The `[legacy]` section: parsing, checks, doors, HMAC settings.

use super::*;
use crate::legacy::knock_ports;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    legacy: LegacyConfig,
}

fn cfg(toml_text: &str) -> LegacyConfig {
    toml::from_str::<File>(toml_text).unwrap().legacy
}

fn field_of(r: Result<impl std::fmt::Debug, LegacyConfigError>) -> String {
    match r {
        Err(LegacyConfigError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn empty_section_gives_knockd_defaults() {
    let c = cfg("");
    assert_eq!(c, LegacyConfig::default());
    let doors = c.doors().unwrap();
    assert_eq!(doors, default_doors(5));
    assert_eq!(c.hmac_params().unwrap(), None);
    let p = knock_ports(&doors, None);
    assert_eq!(p.tcp, vec![7000, 8000, 9000]);
    assert!(p.udp.is_empty());
}

#[test]
fn full_example_parses() {
    let c = cfg(r#"
[legacy]
seq_timeout = 7
max_sources = 1000

[[legacy.door]]
name = "web"
sequence = "7000:tcp,8000:udp,9000"
tcpflags = "syn"
open = "tcp/443"
duration = 60

[[legacy.door]]
sequence = "9000,8000:udp,7000"
seq_timeout = 3
close = "tcp/443"

[legacy.hmac]
enabled = true
ports = 5
step_secs = 20
range = [20000, 40000]
protocol = "udp"
"#);
    let doors = c.doors().unwrap();
    assert_eq!(doors.len(), 2);
    assert_eq!(doors[0].name.as_ref(), "web");
    assert_eq!(doors[0].seq_timeout_ms, 7000);
    assert_eq!(
        doors[0].action,
        DoorAction::Open {
            grant: Grant::tcp(443).unwrap(),
            duration_secs: Some(60)
        }
    );
    assert_eq!(doors[1].name.as_ref(), "door1");
    assert_eq!(doors[1].seq_timeout_ms, 3000);
    let (params, proto) = c.hmac_params().unwrap().unwrap();
    assert_eq!(
        params,
        KnockParams {
            ports: 5,
            step_secs: 20,
            range: (20_000, 40_000)
        }
    );
    assert_eq!(proto, Proto::Udp);
    let p = knock_ports(&doors, Some((params, proto)));
    assert_eq!(p.tcp, vec![7000, 9000]);
    assert_eq!(p.udp, vec![8000]);
    assert_eq!(p.hmac, Some((Proto::Udp, 20_000, 40_000)));
}

#[test]
fn explicit_empty_door_list_means_none() {
    let c = cfg("[legacy]\ndoor = []\n[legacy.hmac]\nenabled = true\n");
    assert!(c.doors().unwrap().is_empty());
    assert!(c.hmac_params().unwrap().is_some());
}

#[test]
fn unknown_fields_are_rejected_by_serde() {
    for t in [
        "[legacy]\nseq_timout = 5\n",
        "[[legacy.door]]\nsequence = \"1\"\nopen = \"tcp/22\"\nport = 22\n",
        "[legacy.hmac]\nenable = true\n",
    ] {
        let e = toml::from_str::<File>(t).err().expect(t).to_string();
        assert!(e.contains("unknown field"), "{t}: {e}");
    }
}

#[test]
fn validation_errors_name_the_field() {
    let door = |extra: &str| cfg(&format!("[[legacy.door]]\n{extra}\n"));
    let cases: &[(&str, &str)] = &[
        ("sequence = \"7000,x\"\nopen = \"tcp/22\"", "legacy.door[0].sequence"),
        ("sequence = \"7000\"", "legacy.door[0].open"),
        ("sequence = \"7000\"\nopen = \"tcp/22\"\nclose = \"tcp/22\"", "legacy.door[0].close"),
        ("sequence = \"7000\"\nopen = \"icmp/22\"", "legacy.door[0].open"),
        ("sequence = \"7000\"\nopen = \"tcp/0\"", "legacy.door[0].open"),
        ("sequence = \"7000\"\nclose = \"22\"", "legacy.door[0].close"),
        ("sequence = \"7000\"\nclose = \"tcp/22\"\nduration = 5", "legacy.door[0].duration"),
        ("sequence = \"7000\"\nopen = \"tcp/22\"\nduration = 0", "legacy.door[0].duration"),
        ("sequence = \"7000\"\nopen = \"tcp/22\"\nseq_timeout = 0", "legacy.door[0].seq_timeout"),
        ("sequence = \"7000\"\nopen = \"tcp/22\"\ntcpflags = \"xmas\"", "legacy.door[0].tcpflags"),
        ("sequence = \"7000\"\nopen = \"tcp/22\"\nname = \" \"", "legacy.door[0].name"),
        (
            "sequence = \"7000\"\nopen = \"tcp/22\"\n[[legacy.door]]\nsequence = \"7000:tcp\"\nclose = \"tcp/22\"",
            "legacy.door[1].sequence",
        ),
        (
            "name = \"a\"\nsequence = \"1\"\nopen = \"tcp/22\"\n[[legacy.door]]\nname = \"a\"\nsequence = \"2\"\nclose = \"tcp/22\"",
            "legacy.door[1].name",
        ),
    ];
    for (text, field) in cases {
        assert_eq!(field_of(door(text).doors()), *field, "{text}");
    }
    assert_eq!(
        field_of(cfg("[legacy]\nseq_timeout = 0\n").doors()),
        "legacy.seq_timeout"
    );
    assert_eq!(
        field_of(cfg("[legacy]\nmax_sources = 0\n").doors()),
        "legacy.max_sources"
    );
    let hmac =
        |extra: &str| cfg(&format!("[legacy.hmac]\nenabled = true\n{extra}\n")).hmac_params();
    assert_eq!(field_of(hmac("ports = 0")), "legacy.hmac.ports");
    assert_eq!(field_of(hmac("ports = 9")), "legacy.hmac.ports");
    assert_eq!(field_of(hmac("ports = 2")), "legacy.hmac.ports");
    assert_eq!(field_of(hmac("step_secs = 0")), "legacy.hmac.step_secs");
    assert_eq!(field_of(hmac("range = [0, 100]")), "legacy.hmac.range");
    assert_eq!(field_of(hmac("range = [5000, 4000]")), "legacy.hmac.range");
    assert_eq!(field_of(hmac("range = [5000, 5100]")), "legacy.hmac.range");
    assert_eq!(
        field_of(hmac("protocol = \"sctp\"")),
        "legacy.hmac.protocol"
    );
    assert_eq!(field_of(hmac("seq_timeout = 0")), "legacy.hmac.seq_timeout");
    assert_eq!(field_of(hmac("max_sources = 0")), "legacy.hmac.max_sources");
    // Disabled: not checked.
    assert!(matches!(
        cfg("[legacy.hmac]\nports = 0\n").hmac_params(),
        Ok(None)
    ));
}

#[test]
fn knockd_conf_is_imported_alongside_our_doors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("knockd.conf");
    std::fs::write(
        &p,
        "[options]\n  UseSyslog\n[openSSHtimed]\n sequence = 7100,8100,9100\n seq_timeout = 5\n \
         start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n cmd_timeout = 10\n \
         stop_command = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n tcpflags = syn\n",
    )
    .unwrap();
    let mut c = LegacyConfig {
        knockd_conf: Some(p.clone()),
        ..LegacyConfig::default()
    };
    let doors = c.doors().unwrap();
    assert_eq!(
        doors.len(),
        1,
        "knockd_conf without [[legacy.door]]: only its doors"
    );
    assert_eq!(
        doors[0].action,
        DoorAction::Open {
            grant: Grant::tcp(22).unwrap(),
            duration_secs: Some(10)
        }
    );
    c.doors = Some(vec![DoorConfig {
        name: Some("openSSHtimed".into()),
        sequence: "1,2,3".into(),
        seq_timeout: None,
        tcpflags: None,
        open: Some("tcp/22".into()),
        close: None,
        duration: None,
    }]);
    let e = c.doors().unwrap_err().to_string();
    assert!(e.contains("used twice"), "{e}");
    std::fs::write(&p, "[d]\nsequence = 1\ncommand = sh -c 'true'\n").unwrap();
    let e = c.doors().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("legacy.knockd_conf: {}:3:", p.display())),
        "{e}"
    );
}

proptest::proptest! {
    /// Arbitrary door fields never panic; errors always name a field.
    #[test]
    fn arbitrary_door_fields_never_panic(
        seq in "\\PC{0,30}", flags in proptest::option::of("\\PC{0,12}"),
        open in proptest::option::of("\\PC{0,10}"), close in proptest::option::of("(tcp|udp)/[0-9]{1,6}"),
        timeout in proptest::option::of(0u32..100_000), duration in proptest::option::of(0u32..100_000),
    ) {
        let c = LegacyConfig {
            doors: Some(vec![DoorConfig { name: None, sequence: seq, seq_timeout: timeout, tcpflags: flags,
                open, close, duration }]),
            ..LegacyConfig::default()
        };
        match c.doors() {
            Ok(d) => proptest::prop_assert_eq!(d.len(), 1),
            Err(LegacyConfigError::Field { field, .. }) => proptest::prop_assert!(field.starts_with("legacy.door[0].")),
            Err(e) => proptest::prop_assert!(false, "unexpected {e}"),
        }
    }
}

/// Finding 15: settings a blind guesser can beat are refused, with the
/// bits computed and how to reach 64; the defaults pass.
#[test]
fn hmac_settings_under_64_bits_are_refused_with_the_bits_and_the_fix() {
    // The issue's example: 3 ports over 1001 with 10 keys, ~25 bits.
    let weak = cfg("[legacy.hmac]\nenabled = true\nports = 3\nrange = [10000, 11000]\n");
    assert!(weak.hmac_params().is_ok(), "the structural checks pass");
    let e = weak.check_hmac_strength(10).unwrap_err();
    let msg = e.to_string();
    assert_eq!(field_of(Err::<(), _>(e)), "legacy.hmac.ports");
    assert!(msg.contains("25.0 bits"), "{msg}");
    assert!(msg.contains("fewer than 64"), "{msg}");
    assert!(msg.contains("ports = 7"), "how to reach 64: {msg}");
    // The old default, 4 over 50001, is 60.9 bits with one key.
    let four = cfg("[legacy.hmac]\nenabled = true\nports = 4\n");
    let msg = four.check_hmac_strength(1).unwrap_err().to_string();
    assert!(
        msg.contains("60.9 bits") && msg.contains("ports = 5"),
        "{msg}"
    );
    // The new default passes, up to thousands of keys.
    let default = cfg("[legacy.hmac]\nenabled = true\n");
    assert_eq!(default.hmac.ports, 5);
    assert!(default.check_hmac_strength(1).is_ok());
    assert!(default.check_hmac_strength(5000).is_ok());
    assert!(default.check_hmac_strength(10_000).is_err());
    // Disabled: nothing to guess.
    assert!(cfg("").check_hmac_strength(1_000_000).is_ok());
    // 8 ports cannot save a range too narrow: widen it.
    let narrow = cfg("[legacy.hmac]\nenabled = true\nports = 8\nrange = [10000, 10100]\n");
    let msg = narrow.check_hmac_strength(1).unwrap_err().to_string();
    assert!(msg.contains("widen legacy.hmac.range"), "{msg}");
    assert!((hmac_knock_bits(5, [10_000, 60_000], 1) - 76.46).abs() < 0.01);
}

#[test]
fn parse_grant_forms() {
    assert_eq!(parse_grant("tcp/22"), Ok(Grant::tcp(22).unwrap()));
    assert_eq!(
        parse_grant(" UDP / 53 "),
        Ok(Grant::new(Proto::Udp, 53).unwrap())
    );
    for bad in ["22", "tcp/", "tcp/65536", "tcp/-1", "/22", "tcp/22/1"] {
        assert!(parse_grant(bad).is_err(), "{bad}");
    }
}

/// The door grant parser's messages, byte for byte.
#[test]
fn grant_messages_are_pinned() {
    assert_eq!(
        parse_grant("22").unwrap_err().to_string(),
        "\"22\" is not proto/port, e.g. \"tcp/22\""
    );
    assert_eq!(
        parse_grant(" tcp/0 ").unwrap_err().to_string(),
        "`tcp/0`: port 0 cannot be opened (ports are 1-65535)"
    );
}

/// Every `[legacy]` refusal, byte for byte (`field: message`; check-config
/// and the daemon print the message behind `file:line: field`).
const PINNED_DOORS: &[(&str, &str)] = &[
    ("[legacy]\nseq_timeout = 0\n", "legacy.seq_timeout: 0 is not 1..=86400 seconds"),
    ("[legacy]\nseq_timeout = 86401\n", "legacy.seq_timeout: 86401 is not 1..=86400 seconds"),
    ("[legacy]\nmax_sources = 0\n", "legacy.max_sources: 0 is not 1..=4000000"),
    ("[[legacy.door]]\nname = \" \"\nsequence = \"1\"\nopen = \"tcp/22\"\n", "legacy.door[0].name: empty name"),
    ("[[legacy.door]]\nname = \"a\\u001b\"\nsequence = \"1\"\nopen = \"tcp/22\"\n", "legacy.door[0].name: must not contain control characters"),
    ("[[legacy.door]]\nsequence = \"1,,2\"\nopen = \"tcp/22\"\n", "legacy.door[0].sequence: empty step in sequence \"1,,2\""),
    ("[[legacy.door]]\nsequence = \"1\"\nseq_timeout = 0\nopen = \"tcp/22\"\n", "legacy.door[0].seq_timeout: 0 is not 1..=86400 seconds"),
    ("[[legacy.door]]\nsequence = \"1\"\ntcpflags = \"ack\"\nopen = \"tcp/22\"\n", "legacy.door[0].tcpflags: \"ack\" never matches a bare SYN, and spa captures TCP knocks as bare SYNs (what knock clients send): this door could never open; use \"syn\" or remove the line"),
    ("[[legacy.door]]\nsequence = \"1\"\nopen = \"22\"\n", "legacy.door[0].open: \"22\" is not proto/port, e.g. \"tcp/22\""),
    ("[[legacy.door]]\nsequence = \"1\"\nclose = \"tcp/0\"\n", "legacy.door[0].close: `tcp/0`: port 0 cannot be opened (ports are 1-65535)"),
    ("[[legacy.door]]\nsequence = \"1\"\nopen = \"tcp/22\"\nduration = 0\n", "legacy.door[0].duration: 0 is not 1..=86400 seconds"),
    ("[[legacy.door]]\nsequence = \"1\"\nclose = \"tcp/22\"\nduration = 5\n", "legacy.door[0].duration: only an open door has a duration"),
    ("[[legacy.door]]\nsequence = \"1\"\nopen = \"tcp/22\"\nclose = \"tcp/22\"\n", "legacy.door[0].close: a door either opens or closes, not both"),
    ("[[legacy.door]]\nsequence = \"1\"\n", "legacy.door[0].open: a door needs open = \"tcp/22\" or close = \"tcp/22\""),
    ("[[legacy.door]]\nname = \"x\"\nsequence = \"1\"\nopen = \"tcp/22\"\n[[legacy.door]]\nname = \"x\"\nsequence = \"2\"\nopen = \"tcp/22\"\n", "legacy.door[1].name: door name \"x\" used twice (also x)"),
    ("[[legacy.door]]\nname = \"x\"\nsequence = \"1\"\nopen = \"tcp/22\"\n[[legacy.door]]\nname = \"y\"\nsequence = \"1:tcp\"\nopen = \"tcp/22\"\n", "legacy.door[1].sequence: same sequence as door \"x\""),
];

const PINNED_HMAC: &[(&str, &str)] = &[
    (
        "[legacy.hmac]\nenabled = true\nports = 0\n",
        "legacy.hmac.ports: 0 is not 1..=8",
    ),
    (
        "[legacy.hmac]\nenabled = true\nports = 9\n",
        "legacy.hmac.ports: 9 is not 1..=8",
    ),
    (
        "[legacy.hmac]\nenabled = true\nports = 2\n",
        "legacy.hmac.ports: fewer than 3 knocks is too easy to guess",
    ),
    (
        "[legacy.hmac]\nenabled = true\nstep_secs = 0\n",
        "legacy.hmac.step_secs: 0 is not 1..=3600 seconds",
    ),
    (
        "[legacy.hmac]\nenabled = true\nstep_secs = 3601\n",
        "legacy.hmac.step_secs: 3601 is not 1..=3600 seconds",
    ),
    (
        "[legacy.hmac]\nenabled = true\nrange = [0, 5000]\n",
        "legacy.hmac.range: knock port range must be lo..=hi with 0 < lo <= hi",
    ),
    (
        "[legacy.hmac]\nenabled = true\nrange = [20000, 10000]\n",
        "legacy.hmac.range: knock port range must be lo..=hi with 0 < lo <= hi",
    ),
    (
        "[legacy.hmac]\nenabled = true\nrange = [10000, 10500]\n",
        "legacy.hmac.range: fewer than 1000 ports makes sequences guessable",
    ),
    (
        "[legacy.hmac]\nenabled = true\nprotocol = \"sctp\"\n",
        "legacy.hmac.protocol: \"sctp\" is not tcp or udp",
    ),
    (
        "[legacy.hmac]\nenabled = true\nseq_timeout = 0\n",
        "legacy.hmac.seq_timeout: 0 is not 1..=86400 seconds",
    ),
    (
        "[legacy.hmac]\nenabled = true\nmax_sources = 0\n",
        "legacy.hmac.max_sources: 0 is not 1..=4000000",
    ),
];

#[test]
fn messages_are_pinned() {
    for (text, want) in PINNED_DOORS {
        assert_eq!(
            cfg(text).doors().unwrap_err().to_string(),
            *want,
            "{text:?}"
        );
    }
    let many: String = (1..=1025)
        .map(|i| format!("[[legacy.door]]\nsequence = \"{i}\"\nopen = \"tcp/22\"\n"))
        .collect();
    assert_eq!(
        cfg(&many).doors().unwrap_err().to_string(),
        "legacy.door: more than 1024 doors"
    );
    for (text, want) in PINNED_HMAC {
        assert_eq!(
            cfg(text).hmac_params().unwrap_err().to_string(),
            *want,
            "{text:?}"
        );
    }
    let strength = |text: &str, keys| cfg(text).check_hmac_strength(keys).unwrap_err().to_string();
    assert_eq!(
        strength(
            "[legacy.hmac]\nenabled = true\nports = 3\nrange = [10000, 11000]\n",
            10
        ),
        "legacy.hmac.ports: 3 knocks over 1001 ports with 10 key(s) give 25.0 bits against a \
         guesser, fewer than 64: set legacy.hmac.ports = 7 (64.9 bits) or widen legacy.hmac.range \
         (clients need the same --ports/--range)"
    );
    assert_eq!(
        strength(
            "[legacy.hmac]\nenabled = true\nports = 8\nrange = [10000, 11000]\n",
            1_000_000_000
        ),
        "legacy.hmac.ports: 8 knocks over 1001 ports with 1000000000 key(s) give 48.3 bits \
         against a guesser, fewer than 64: widen legacy.hmac.range (e.g. [10000, 60000] with \
         ports = 5) or use fewer keys (clients need the same --ports/--range)"
    );
    assert_eq!(
        cfg("[legacy]\nknockd_conf = \"/nonexistent-spa/knockd.conf\"\n")
            .validate()
            .unwrap_err()
            .to_string(),
        "legacy.knockd_conf: /nonexistent-spa/knockd.conf: cannot read: No such file or \
         directory (os error 2)"
    );
}

/// The facts stay reachable as values: the field, the text as written,
/// the numbers behind the strength refusal.
#[test]
fn errors_keep_their_facts() {
    match cfg("[[legacy.door]]\nsequence = \"1\"\nopen = \"22\"\n").doors() {
        Err(LegacyConfigError::Field {
            field,
            problem: FieldProblem::Grant(DoorGrantError::NoProtocol { text }),
        }) => assert_eq!(
            (field.as_str(), text.as_str()),
            ("legacy.door[0].open", "22")
        ),
        other => panic!("{other:?}"),
    }
    let weak = cfg("[legacy.hmac]\nenabled = true\nports = 3\nrange = [10000, 11000]\n");
    match weak.check_hmac_strength(10) {
        Err(LegacyConfigError::Field {
            problem:
                FieldProblem::HmacWeak {
                    ports: 3,
                    span: 1001,
                    keys: 10,
                    fix: Some((7, _)),
                    ..
                },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
