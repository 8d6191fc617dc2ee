//! Runs the real `spa-keygen` binary into a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn keygen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spa-keygen"))
}

#[test]
fn writes_key_prints_setup_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys/alice.key");
    let run = |extra: &[&str]| {
        keygen()
            .args(["--out"])
            .arg(&out)
            .args(["--name", "alice-laptop", "--server-id", "gw1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8(first.stdout).unwrap();
    let kf = spa_keys::KeyFile::read(&out).unwrap();
    assert_eq!(kf.name, "alice-laptop");
    assert_eq!(kf.server_id.as_deref(), Some("gw1"));
    let id = kf.key.derive().key_id().to_string();
    assert!(stdout.starts_with(&format!("key-id: {id}\n")), "{stdout}");
    assert!(
        stdout.contains("[[key]]\nname = \"alice-laptop\"\n"),
        "{stdout}"
    );
    assert!(stdout.contains("file = \"/etc/spa/keys/alice-laptop.key\""));
    assert!(stdout.contains(&format!(
        "spa-client send --key {} --open 22 SERVER",
        out.display()
    )));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);

    let second = run(&[]);
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8(second.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(spa_keys::KeyFile::read(&out).unwrap(), kf, "untouched");

    let third = run(&["--force"]);
    assert!(third.status.success(), "{third:?}");
    assert_ne!(spa_keys::KeyFile::read(&out).unwrap().key, kf.key);
}

#[test]
fn default_location_is_under_home() {
    let dir = tempfile::tempdir().unwrap();
    let st = keygen().env("HOME", dir.path()).output().unwrap();
    assert!(st.status.success(), "{st:?}");
    let path = dir.path().join(".config/spa/default.key");
    let kf = spa_keys::KeyFile::read(&path).unwrap();
    // Default server id is this host's name, as the server's default is.
    assert_eq!(kf.server_id, spa_keys::hostname());
}

#[test]
fn help_mentions_defaults() {
    let out = keygen().arg("--help").output().unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("~/.config/spa/default.key"), "{s}");
    assert!(s.contains("--server-id"), "{s}");
    assert!(s.contains("--force"), "{s}");
}

/// `--out -` (issue 12): the key file's text on stdout, usable as is once
/// saved, the setup notes on stderr, and no file named `-`.
#[test]
fn out_dash_writes_the_key_file_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let o = keygen()
        .current_dir(dir.path())
        .args(["--out", "-", "--name", "alice", "--server-id", "gw1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(!dir.path().join("-").exists(), "no file named '-'");
    let text = String::from_utf8(o.stdout).unwrap();
    let saved = dir.path().join("saved.key");
    std::fs::write(&saved, &text).unwrap();
    std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o600)).unwrap();
    let kf = spa_keys::KeyFile::read(&saved).unwrap();
    assert_eq!(
        (kf.name.as_str(), kf.server_id.as_deref()),
        ("alice", Some("gw1"))
    );
    let notes = String::from_utf8(o.stderr).unwrap();
    let id = kf.key.derive().key_id().to_string();
    assert!(notes.starts_with(&format!("key-id: {id}\n")), "{notes}");
    assert!(notes.contains("[[key]]"), "{notes}");
}

/// A WireGuard key (one base64 line) given as a key file: the error says
/// what a spa key file is and how to make one, not a TOML position.
#[test]
fn a_wireguard_key_is_not_a_spa_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let wg = dir.path().join("wg0.key");
    std::fs::write(&wg, "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").unwrap();
    std::fs::set_permissions(&wg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = spa_keys::KeyFile::read(&wg).unwrap_err().to_string();
    for needle in [
        &format!("{} is not a spa key file", wg.display()),
        "such as a WireGuard key",
        "key = \"<32 bytes in base64>\"",
        "spa-keygen --out FILE",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in {e}");
    }
}
