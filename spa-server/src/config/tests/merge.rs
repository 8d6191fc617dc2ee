//! File and command line merged, every value checked (merge.rs).

use super::*;

#[test]
fn every_field_is_read() {
    let env = Env::new();
    let id = MasterKey::from_bytes([0x22; 32]).derive().key_id();
    let bob = env.dir.path().join("bob.key");
    let text = format!(
        "server_id = \"gw1\"\n\
         interfaces = [\"eth0\", \"wg0\"]\n\
         spa_port = 40000\n\
         state_dir = \"/tmp/spa-state\"\n\
         firewall = \"nftables\"\n\
         default_duration = 45\n\
         duration_limit = 7200\n\
         max_grants_total = 100\n\
         window_secs = 10\n\
         replay_capacity = 1024\n\
         {ALICE}\
         [[key]]\n\
         name = \"bob\"\n\
         file = \"{}\"\n\
         allow = [\"22\", \"udp/53\", \"TCP/443\"]\n\
         max_duration = 3600\n\
         allow_other_address = true\n\
         require_explicit_address = true\n\
         max_grants = 3\n\
         key_id = \"{id}\"\n",
        bob.display()
    );
    let cfg = env.load(&text).unwrap();
    assert_eq!(cfg.server_name, "gw1");
    assert_eq!(cfg.server_id, ServerId::from_name("gw1"));
    assert_eq!(cfg.interfaces, vec!["eth0", "wg0"]);
    assert_eq!(cfg.spa_port, 40000);
    assert_eq!(cfg.state_dir, PathBuf::from("/tmp/spa-state"));
    assert_eq!(cfg.firewall, BackendKind::Nftables);
    assert_eq!(cfg.default_duration, 45);
    assert_eq!(cfg.window.past_secs, 10);
    assert_eq!(cfg.replay_capacity, 1024);
    let b = cfg.key(&id).unwrap();
    assert_eq!(b.name, "bob");
    assert_eq!(b.file, bob);
    assert_eq!(b.max_duration, 3600);
    assert_eq!((cfg.duration_limit, cfg.max_grants_total), (7200, 100));
    assert!(b.allow_other_address && b.require_explicit_address);
    assert_eq!(b.max_grants, 3);
    let a = &cfg.keys[0];
    assert!(
        !a.allow_other_address,
        "default: opens only for the sender's address"
    );
    assert!(!a.require_explicit_address);
    assert_eq!(a.max_grants, limits::DEFAULT_KEY_MAX_GRANTS);
    assert_eq!(
        b.allow,
        vec![tcp(22), Grant::new(Proto::Udp, 53).unwrap(), tcp(443)]
    );
}

#[test]
fn command_line_overrides_the_file() {
    let env = Env::new();
    let ov = Overrides {
        server_id: Some("cli-gw".into()),
        interfaces: vec!["veth0".into()],
        spa_port: Some(1234),
        state_dir: Some("/tmp/x".into()),
        firewall: Some(BackendKind::Nftables),
        default_duration: Some(5),
        window_secs: Some(7),
        keys: vec![env.dir.path().join("bob.key")],
        key_allow: vec![tcp(443)],
        key_max_duration: Some(9),
        ..Overrides::default()
    };
    let text = format!(
        "server_id = \"file-gw\"\nspa_port = 99\nfirewall = \"iptables\"\ndefault_duration = 60\n{ALICE}"
    );
    let cfg = env.load_ov(&text, &ov).unwrap();
    assert_eq!(cfg.server_name, "cli-gw");
    assert_eq!(cfg.interfaces, vec!["veth0"]);
    assert_eq!(cfg.spa_port, 1234);
    assert_eq!(cfg.state_dir, PathBuf::from("/tmp/x"));
    assert_eq!(cfg.firewall, BackendKind::Nftables);
    assert_eq!(cfg.default_duration, 5);
    assert_eq!(cfg.window.future_secs, 7);
    assert_eq!(cfg.keys.len(), 2, "file keys and --key keys together");
    let bob = &cfg.keys[1];
    assert_eq!(bob.name, "bob", "a --key key is named by its file");
    assert_eq!(bob.allow, vec![tcp(443)]);
    assert_eq!(bob.max_duration, 9);
}

#[test]
fn command_line_alone_is_a_configuration() {
    let env = Env::new();
    let ov = Overrides {
        keys: vec![env.dir.path().join("alice.key")],
        ..Overrides::default()
    };
    let cfg = Config::load(None, &ov).unwrap();
    assert_eq!(
        cfg.keys[0].allow,
        vec![tcp(22)],
        "--allow defaults to tcp/22"
    );
    assert_eq!(cfg.keys[0].max_duration, DEFAULT_MAX_DURATION);
    // Without keys there is nothing to serve.
    let e = Config::load(None, &Overrides::default()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("key"));
    assert!(e.msg.contains("no keys configured"), "{e}");
}

#[test]
fn top_level_value_errors_name_line_and_field() {
    let env = Env::new();
    env.err(&format!("spa_port = 0\n{ALICE}"), 1, "spa_port", "1-65535");
    env.err(
        &format!("metrics_file = \"spa.prom\"\n{ALICE}"),
        1,
        "metrics_file",
        "absolute file path",
    );
    env.err(
        &format!("# comment\n\nfirewall = \"pf\"\n{ALICE}"),
        3,
        "firewall",
        "unknown backend `pf`",
    );
    env.err(
        &format!("\ndefault_duration = 0\n{ALICE}"),
        2,
        "default_duration",
        "at least 1",
    );
    env.err(
        &format!("window_secs = 0\n{ALICE}"),
        1,
        "window_secs",
        "1-3600",
    );
    env.err(
        &format!("window_secs = 3601\n{ALICE}"),
        1,
        "window_secs",
        "1-3600",
    );
    env.err(
        &format!("replay_capacity = 15\n{ALICE}"),
        1,
        "replay_capacity",
        "at least 16",
    );
    env.err(
        &format!("server_id = \" \"\n{ALICE}"),
        1,
        "server_id",
        "empty",
    );
    env.err(
        &format!("spa_port = 1\n[firewall_options]\nchain = \"a b\"\n{ALICE}"),
        2,
        "firewall_options",
        "chain",
    );
}

/// Also-item of issue 16: durations are bounded (default one day,
/// configurable up to 30 days) and grant caps are checked, each error
/// naming file, line, field and the limit.
#[test]
fn durations_and_grant_caps_are_bounded() {
    let env = Env::new();
    env.err(
        &format!("{ALICE}max_duration = 4294967295\n"),
        5,
        "key.max_duration",
        "above duration_limit (86400 s)",
    );
    env.err(
        &format!("default_duration = 86401\n{ALICE}"),
        1,
        "default_duration",
        "86400",
    );
    env.err(
        &format!("duration_limit = 2592001\n{ALICE}"),
        1,
        "duration_limit",
        "2592000",
    );
    env.err(
        &format!("duration_limit = 60\n{ALICE}max_duration = 61\n"),
        6,
        "key.max_duration",
        "above duration_limit (60 s)",
    );
    env.err(
        &format!("max_grants_total = 0\n{ALICE}"),
        1,
        "max_grants_total",
        "1-65536",
    );
    env.err(
        &format!("max_grants_total = 8\n{ALICE}max_grants = 9\n"),
        6,
        "key.max_grants",
        "above max_grants_total (8)",
    );
    // A door's own duration too.
    env.err(
        &format!(
            "duration_limit = 60\n{ALICE}[legacy]\nenabled = true\n[[legacy.door]]\n\
             name = \"web\"\nsequence = \"7000,8000\"\nopen = \"tcp/22\"\nduration = 120\n"
        ),
        6,
        "legacy.door.duration",
        "door `web`: 120 s is above duration_limit (60 s)",
    );
    // A raised limit admits what it says; defaults shrink to a lower one.
    let cfg = env
        .load(&format!(
            "duration_limit = 2592000\n{ALICE}max_duration = 2592000\n"
        ))
        .unwrap();
    assert_eq!(cfg.keys[0].max_duration, 2_592_000);
    let cfg = env.load(&format!("duration_limit = 10\n{ALICE}")).unwrap();
    assert_eq!((cfg.default_duration, cfg.keys[0].max_duration), (10, 10));
    // The command line is held to the same bound.
    let ov = Overrides {
        key_max_duration: Some(100_000),
        ..Overrides::default()
    };
    let e = env.load_ov(ALICE, &ov).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("--max-duration"), "{e}");
    let ov = Overrides {
        default_duration: Some(u32::MAX),
        ..Overrides::default()
    };
    let e = env.load_ov(ALICE, &ov).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("--default-duration"), "{e}");
}

/// Finding 13: a name that reaches a log line cannot carry a control
/// character (a newline in `[[key]] name` forged a whole log line).
#[test]
fn control_characters_in_names_are_refused() {
    let env = Env::new();
    let forged = "alice\\n2026-11-30T00:00:00Z  INFO accepted open: rule added key=root";
    env.err(
        &format!("spa_port = 1\n\n[[key]]\nname = \"{forged}\"\nfile = \"alice.key\"\nallow = [\"22\"]\n"),
        4,
        "key.name",
        "control characters",
    );
    env.err(
        &format!("server_id = \"gw\\u001b[2J\"\n{ALICE}"),
        1,
        "server_id",
        "control characters",
    );
    env.err(
        &format!("interfaces = [\"eth0\\r\"]\n{ALICE}"),
        1,
        "interfaces",
        "control characters",
    );
    env.err(
        &format!("{ALICE}\n[[legacy.door]]\nname = \"web\\nx\"\nsequence = \"7000\"\nopen = \"tcp/22\"\n[legacy]\nenabled = true\n"),
        6,
        "legacy.door[0].name",
        "control characters",
    );
    let ov = Overrides {
        server_id: Some("gw\n".into()),
        ..Overrides::default()
    };
    let e = env.load_ov(ALICE, &ov).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("--server-id"), "{e}");
}

/// The label refusals as the server prints them, byte for byte, behind the
/// file:line: field or the option (`--interface` quotes the name).
#[test]
fn label_messages_are_pinned() {
    let env = Env::new();
    let conf = env.conf().display().to_string();
    let e = env
        .load(&format!("server_id = \"gw\\u001b\"\n{ALICE}"))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{conf}:1: field `server_id`: must not contain control characters")
    );
    let e = env
        .load("spa_port = 1\n[[key]]\nname = \" \"\nfile = \"alice.key\"\nallow = [\"22\"]\n")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{conf}:3: field `key.name`: must not be empty")
    );
    let ov = Overrides {
        interfaces: vec!["eth0\r".into()],
        ..Overrides::default()
    };
    let e = env.load_ov(ALICE, &ov).unwrap_err();
    assert_eq!(
        (e.field.as_deref(), e.msg.as_str()),
        (
            Some("--interface"),
            "\"eth0\\r\" must not contain control characters"
        )
    );
    let ov = Overrides {
        server_id: Some("x".repeat(256)),
        ..Overrides::default()
    };
    let e = env.load_ov(ALICE, &ov).unwrap_err();
    assert_eq!(e.msg, "is 256 bytes long, at most 255 are allowed");
}

#[test]
fn from_and_expires_are_read_and_their_errors_located() {
    let env = Env::new();
    let cfg = env
        .load(&format!(
            "{ALICE}from = [\"203.0.113.0/24\", \"2001:db8:5::/48\"]\nexpires = 2027-01-31\n"
        ))
        .unwrap();
    assert_eq!(
        cfg.keys[0].rules.from_text(),
        "203.0.113.0/24,2001:db8:5::/48"
    );
    assert_eq!(cfg.keys[0].rules.expires, Some(1_801_440_000));
    let cfg = env.load(ALICE).unwrap();
    assert_eq!(cfg.keys[0].rules, crate::policy::KeyRules::default());
    env.err(
        &format!("{ALICE}from = [\"10.0.0.1/8\"]\n"),
        5,
        "key.from",
        "host bits",
    );
    env.err(&format!("{ALICE}from = []\n"), 5, "key.from", "empty list");
    env.err(
        &format!("{ALICE}expires = 12:00:00\n"),
        5,
        "key.expires",
        "without a date",
    );
    let e = env
        .load(&format!("{ALICE}expires = \"2027-01-31\"\n"))
        .unwrap_err();
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(5), Some("key.expires")),
        "{e}"
    );
}

#[test]
fn forwards_are_read_allowed_and_one_meaning_per_grant() {
    let env = Env::new();
    let fwd =
        "[key.forward]\n\"tcp/2222\" = \"10.20.0.5:22\"\n\"2223\" = \"[2001:db8:20::5]:22\"\n";
    let cfg = env.load(&format!("{ALICE}{fwd}")).unwrap();
    let k = &cfg.keys[0];
    assert!(k.allow.contains(&tcp(2222)) && k.allow.contains(&tcp(2223)));
    assert_eq!(
        crate::policy::forwards(&cfg.keys).get(&tcp(2223)),
        Some(&"[2001:db8:20::5]:22".parse().unwrap())
    );
    env.err(
        &format!("{ALICE}[key.forward]\n\"tcp/2222\" = \"10.20.0.5\"\n"),
        5,
        "key.forward",
        "not host:port",
    );
    env.err(
        &format!("{ALICE}[key.forward]\n\"tcp/2222\" = \"127.0.0.1:22\"\n"),
        5,
        "key.forward",
        "loopback",
    );
    // bob opens tcp/2222 on the gateway while alice forwards it.
    env.key("bob.key", "bob", 0x22);
    let e = env
        .load(&format!(
            "{ALICE}{fwd}[[key]]\nname = \"bob\"\nfile = \"bob.key\"\nallow = [\"tcp/2222\"]\n"
        ))
        .unwrap_err();
    assert!(e.msg.contains("one thing on the gateway"), "{e}");
    // forward_all: every other allowed grant to one host, same port.
    let cfg = env
        .load(&format!(
            "{ALICE}forward_all = \"10.20.0.7\"\n[key.forward]\n\"tcp/2222\" = \"10.20.0.5:22\"\n"
        ))
        .unwrap();
    let f = crate::policy::forwards(&cfg.keys);
    assert_eq!(f.get(&tcp(22)), Some(&"10.20.0.7:22".parse().unwrap()));
    assert_eq!(f.get(&tcp(2222)), Some(&"10.20.0.5:22".parse().unwrap()));
    env.err(
        &format!("{ALICE}forward_all = \"10.20.0.7:22\"\n"),
        5,
        "key.forward_all",
        "not an address",
    );
}

#[test]
fn no_keys_is_an_error() {
    let env = Env::new();
    let e = env.load("spa_port = 5\n").unwrap_err();
    assert_eq!(e.field.as_deref(), Some("key"));
    assert!(e.msg.contains("spa-keygen"), "{e}");
}

#[test]
fn command_line_values_are_checked_too() {
    let env = Env::new();
    let bad = [
        (
            Overrides {
                spa_port: Some(0),
                ..Overrides::default()
            },
            "--port",
        ),
        (
            Overrides {
                window_secs: Some(0),
                ..Overrides::default()
            },
            "--window",
        ),
        (
            Overrides {
                window_secs: Some(3601),
                ..Overrides::default()
            },
            "--window",
        ),
        (
            Overrides {
                default_duration: Some(0),
                ..Overrides::default()
            },
            "--default-duration",
        ),
        (
            Overrides {
                key_max_duration: Some(0),
                keys: vec![env.dir.path().join("bob.key")],
                ..Overrides::default()
            },
            "--max-duration",
        ),
        (
            Overrides {
                server_id: Some("  ".into()),
                ..Overrides::default()
            },
            "--server-id",
        ),
    ];
    for (ov, field) in bad {
        let e = match env.load_ov(ALICE, &ov) {
            Ok(_) => panic!("{field} accepted: {ov:?}"),
            Err(e) => e,
        };
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert_eq!(e.line, None, "a command-line value has no line: {e}");
    }
}

/// Finding 16: each key's token bucket is configurable, with a default,
/// and an out-of-range value names its line and field.
#[test]
fn key_rate_limit_defaults_and_bounds() {
    let env = Env::new();
    let cfg = env.load(ALICE).unwrap();
    assert_eq!(cfg.keys[0].rate, crate::ratelimit::Rate::default());
    let cfg = env
        .load(&format!("{ALICE}rate_per_minute = 6\nrate_burst = 2\n"))
        .unwrap();
    assert_eq!(
        cfg.keys[0].rate,
        crate::ratelimit::Rate {
            per_minute: 6,
            burst: 2
        }
    );
    env.err(
        &format!("{ALICE}rate_per_minute = 0\n"),
        5,
        "key.rate_per_minute",
        "must be 1-60000",
    );
    env.err(
        &format!("{ALICE}rate_burst = 10001\n"),
        5,
        "key.rate_burst",
        "must be 1-10000",
    );
}
