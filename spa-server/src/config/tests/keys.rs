//! Reading the file and the key files, and what a key file may be (keys.rs).

use super::*;

#[test]
fn load_reads_the_file_and_names_it_when_missing() {
    let env = Env::new();
    std::fs::write(env.conf(), ALICE).unwrap();
    let cfg = Config::load(Some(&env.conf()), &Overrides::default()).unwrap();
    assert_eq!(cfg.source, env.conf());
    let missing = env.dir.path().join("nope.toml");
    let e = Config::load(Some(&missing), &Overrides::default()).unwrap_err();
    assert_eq!(e.file, missing);
    assert!(e.to_string().contains("nope.toml"), "{e}");
    assert!(e.msg.contains("cannot read"), "{e}");
}

#[test]
fn key_table_errors_name_line_and_field() {
    let env = Env::new();
    let k = |body: &str| format!("spa_port = 1\n\n[[key]]\n{body}");
    env.err(
        &k("name = \"\"\nfile = \"alice.key\"\nallow = [\"22\"]\n"),
        4,
        "key.name",
        "empty",
    );
    env.err(
        &k("name = \"a\"\nfile = \"alice.key\"\nallow = [\"sctp/22\"]\n"),
        6,
        "key.allow",
        "unknown protocol 'sctp'",
    );
    for bad in ["tcp/0", "tcp/65536", "tcp/x", "tcp/"] {
        env.err(
            &k(&format!(
                "name = \"a\"\nfile = \"alice.key\"\nallow = [\"{bad}\"]\n"
            )),
            6,
            "key.allow",
            "invalid port",
        );
    }
    env.err(
        &k("name = \"a\"\nfile = \"alice.key\"\nallow = []\n"),
        6,
        "key.allow",
        "allows nothing",
    );
    env.err(
        &k("name = \"a\"\nfile = \"alice.key\"\nallow = [\"22\"]\nmax_duration = 0\n"),
        7,
        "key.max_duration",
        "at least 1",
    );
    env.err(
        &k("name = \"a\"\nfile = \"missing.key\"\nallow = [\"22\"]\n"),
        5,
        "key.file",
        "missing.key",
    );
    env.err(
        &k("name = \"a\"\nfile = \"alice.key\"\nallow = [\"22\"]\nkey_id = \"0011223344556677\"\n"),
        7,
        "key.key_id",
        "wrong key file",
    );
    env.err(
        &k("name = \"a\"\nfile = \"alice.key\"\nallow = [\"22\"]\nkey_id = \"zz\"\n"),
        7,
        "key.key_id",
        "",
    );
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let env = Env::new();
    let p = env.dir.path().join("alice.key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = env.err(&format!("\n{ALICE}"), 4, "key.file", "alice.key");
    assert!(
        e.msg.contains("permission") || e.msg.contains("0644") || e.msg.contains("mode"),
        "{e}"
    );
    // The same for --key: the error names the file and the option.
    let ov = Overrides {
        keys: vec![p.clone()],
        ..Overrides::default()
    };
    let e = Config::load(None, &ov).unwrap_err();
    assert_eq!(e.file, p);
    assert_eq!(e.field.as_deref(), Some("--key"));
}

#[test]
fn the_same_key_twice_is_refused() {
    let env = Env::new();
    env.key("alice-copy.key", "alice2", 0x11);
    let text = format!(
        "{ALICE}\n[[key]]\nname = \"alice2\"\nfile = \"alice-copy.key\"\nallow = [\"22\"]\n"
    );
    let e = env.load(&text).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("key"));
    assert!(e.msg.contains("same key-id"), "{e}");
    assert!(e.msg.contains("alice-copy.key"), "{e}");
}

#[test]
fn two_keys_with_one_name_are_refused() {
    let env = Env::new();
    let text =
        format!("{ALICE}\n[[key]]\nname = \"alice\"\nfile = \"bob.key\"\nallow = [\"22\"]\n");
    let e = env.load(&text).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("key.name"), "{e}");
    assert!(e.msg.contains("both named `alice`"), "{e}");
    assert!(e.msg.contains("bob.key"), "{e}");
}
