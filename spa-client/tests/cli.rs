//! Runs the real `spa-client` binary: key generation, datagrams checked with
//! spa_proto::verify, sends to a loopback socket, and every error message a
//! user is likely to meet.

// One test binary; its groups in cli/ (cargo would build a file directly
// in tests/ as a binary of its own).
#[path = "cli/profiles.rs"]
mod profiles;
#[path = "cli/v2.rs"]
mod v2;

use spa_keys::KeyFile;
use spa_proto::{Action, AllowAddr, Opened, Proto, Reject, ReplayRecord, ServerId, TimeWindow};
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn client() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spa-client"));
    // Never let the developer's own key or environment leak into a test.
    c.env_remove("SPA_KEY")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", "/nonexistent-spa-test-home");
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("spawn spa-client")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run printed exactly one `error: ...` line containing
/// every needle.
fn assert_error(o: &Output, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let e = stderr(o);
    assert!(e.starts_with("error: "), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in {e}");
    }
    assert!(o.stdout.is_empty(), "{o:?}");
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn make_key(dir: &Path, server_id: Option<&str>) -> PathBuf {
    let path = dir.join("k.key");
    let mut c = client();
    c.args(["keygen", "--name", "tester", "--out"]).arg(&path);
    if let Some(s) = server_id {
        c.args(["--server-id", s]);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{o:?}");
    path
}

fn verify(bytes: &[u8], key: &Path, server_id: &str) -> Result<Opened, Reject> {
    let kf = KeyFile::read(key).unwrap();
    let keys = kf.key.derive();
    let mut replay = ReplayRecord::new(TimeWindow::default(), 16);
    spa_proto::verify(
        bytes,
        |id| (*id == keys.key_id()).then_some(&keys),
        &ServerId::from_name(server_id),
        now(),
        &mut replay,
    )
}

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn keygen_matches_the_library_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/k.key");
    let o = run(client().args(["keygen", "--out"]).arg(&path).args([
        "--server-id",
        "gw1",
        "--name",
        "alice-laptop",
    ]));
    assert!(o.status.success(), "{o:?}");
    let kf = KeyFile::read(&path).unwrap();
    assert_eq!(kf.server_id.as_deref(), Some("gw1"));
    assert_eq!(stdout(&o), spa_keys::setup_snippet(&kf, &path));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    // A second run refuses to overwrite.
    let o = run(client().args(["keygen", "--out"]).arg(&path));
    assert_error(&o, &["already exists", "--force"]);
}

#[test]
fn output_file_is_a_valid_datagram() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), Some("gw1"));
    let out = dir.path().join("d.bin");
    let o = run(client()
        .args([
            "send",
            "--open",
            "22,udp/53",
            "--open",
            "443",
            "-d",
            "60",
            "--key",
        ])
        .arg(&key)
        .arg("--output")
        .arg(&out));
    assert!(o.status.success(), "{o:?}");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), spa_proto::DATAGRAM_LEN);
    let r = verify(&bytes, &key, "gw1").unwrap().request;
    assert_eq!(r.action, Action::Open);
    assert_eq!(r.duration_secs, 60);
    assert_eq!(r.allow, AllowAddr::Source);
    let g = grants_of(&r);
    assert_eq!(
        g,
        vec![(Proto::Tcp, 22), (Proto::Udp, 53), (Proto::Tcp, 443)]
    );
    assert!(r.timestamp.abs_diff(now()) <= 5);
    // Sealed for gw1 only.
    assert_eq!(verify(&bytes, &key, "gw2"), Err(Reject::WrongServer));
}

#[test]
fn dry_run_prints_hex_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), None);
    let o = run(client()
        .args([
            "send",
            "--close",
            "tcp/2222",
            "--allow-ip",
            "198.18.0.7",
            "--server-id",
            "other",
            "--dry-run",
        ])
        .env("SPA_KEY", &key));
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 1);
    let bytes = unhex(&text);
    assert_eq!(bytes.len(), spa_proto::DATAGRAM_LEN);
    let r = verify(&bytes, &key, "other").unwrap().request;
    assert_eq!(r.action, Action::Close);
    assert_eq!(r.allow, AllowAddr::V4("198.18.0.7".parse().unwrap()));
    assert_eq!(r.grants.as_slice()[0].port.get(), 2222);
}

#[test]
fn server_id_flag_overrides_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), Some("gw1"));
    let o = run(client()
        .args([
            "send",
            "--open",
            "22",
            "--server-id",
            "gw9",
            "--dry-run",
            "--key",
        ])
        .arg(&key));
    assert!(o.status.success(), "{o:?}");
    assert!(verify(&unhex(&stdout(&o)), &key, "gw9").is_ok());
}

#[test]
fn time_offset_makes_a_stale_datagram() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), Some("gw1"));
    let o = run(client()
        .args([
            "send",
            "--open",
            "22",
            "--time-offset",
            "-300",
            "--dry-run",
            "-k",
        ])
        .arg(&key));
    assert!(o.status.success(), "{o:?}");
    assert!(matches!(
        verify(&unhex(&stdout(&o)), &key, "gw1"),
        Err(Reject::TooOld { .. })
    ));
}

fn receiver(addr: &str) -> UdpSocket {
    let rx = UdpSocket::bind(addr).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rx
}

#[test]
fn send_reaches_a_udp_socket_v4() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), Some("gw1"));
    let rx = receiver("127.0.0.1:0");
    let port = rx.local_addr().unwrap().port();
    let o = run(client()
        .args(["send", "--open", "22", "--source", "127.0.0.1", "--key"])
        .arg(&key)
        .arg(format!("127.0.0.1:{port}")));
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).starts_with("sent SPA request to 127.0.0.1:"),
        "{o:?}"
    );
    let mut buf = [0u8; 2048];
    let (n, from) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(from.ip().to_string(), "127.0.0.1");
    assert_eq!(n, spa_proto::DATAGRAM_LEN);
    assert!(verify(&buf[..n], &key, "gw1").is_ok());
}

#[test]
fn send_with_port_option_and_v6() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), Some("gw1"));
    let Ok(rx) = UdpSocket::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback; skipping");
        return;
    };
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = rx.local_addr().unwrap().port().to_string();
    let o = run(client()
        .args(["send", "-q", "-6", "--open", "22", "--port", &port, "--key"])
        .arg(&key)
        .arg("::1"));
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout.is_empty());
    let mut buf = [0u8; 2048];
    let (n, _) = rx.recv_from(&mut buf).unwrap();
    assert!(verify(&buf[..n], &key, "gw1").is_ok());
}

#[test]
fn raw_send_replays_bytes_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), Some("gw1"));
    let out = dir.path().join("d.bin");
    let o = run(client()
        .args(["send", "--open", "22", "--key"])
        .arg(&key)
        .arg("-o")
        .arg(&out));
    assert!(o.status.success(), "{o:?}");
    let rx = receiver("127.0.0.1:0");
    let target = rx.local_addr().unwrap().to_string();
    for file in [out.clone(), {
        let g = dir.path().join("garbage");
        std::fs::write(&g, b"not an spa datagram").unwrap();
        g
    }] {
        let o = run(client().arg("raw-send").arg(&file).arg(&target));
        assert!(o.status.success(), "{o:?}");
        let mut buf = [0u8; 2048];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], std::fs::read(&file).unwrap().as_slice());
    }
    let o = run(client()
        .arg("raw-send")
        .arg(dir.path().join("missing"))
        .arg(&target));
    assert_error(&o, &["cannot read", "missing"]);
}

#[test]
fn missing_key_says_where_and_how() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(client()
        .args(["send", "--open", "22", "127.0.0.1"])
        .env("HOME", dir.path()));
    let default = dir.path().join(".config/spa/default.key");
    assert_error(
        &o,
        &[
            &default.display().to_string(),
            "spa-keygen",
            "--key",
            "SPA_KEY",
        ],
    );
    let o = run(client()
        .args(["send", "--open", "22", "127.0.0.1"])
        .env("SPA_KEY", dir.path().join("x.key")));
    assert_error(&o, &["x.key", "$SPA_KEY"]);
}

#[test]
fn unsafe_key_permissions_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), Some("gw1"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(client()
        .args(["send", "--open", "22", "--dry-run", "--key"])
        .arg(&key));
    assert_error(
        &o,
        &["0644", &format!("chmod 600 {}", key.display()), "too open"],
    );
}

#[test]
fn broken_key_file_names_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bad.key");
    std::fs::write(&key, "name = \"a\"\nkey = \"short\"\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(client()
        .args(["send", "--open", "22", "--dry-run", "--key"])
        .arg(&key));
    assert_error(&o, &[&format!("{}:2: field `key`", key.display())]);
}

#[test]
fn unknown_host_and_bad_ports() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), Some("gw1"));
    let base = |extra: &[&str]| {
        let mut c = client();
        c.arg("send").arg("--key").arg(&key).args(extra);
        run(&mut c)
    };
    assert_error(
        &base(&["--open", "22", "no-such-host.invalid"]),
        &["unknown host 'no-such-host.invalid'"],
    );
    assert_error(&base(&["--open", "0", "127.0.0.1"]), &["invalid port '0'"]);
    assert_error(
        &base(&["--open", "70000", "127.0.0.1"]),
        &["invalid port '70000'", "65535"],
    );
    assert_error(
        &base(&["--open", "sctp/1", "127.0.0.1"]),
        &["unknown protocol 'sctp'"],
    );
    assert_error(
        &base(&["--open", "1,2,3,4,5,6,7,8,9", "127.0.0.1"]),
        &["at most 8"],
    );
    assert_error(
        &base(&["--open", "22", "--port", "0", "127.0.0.1"]),
        &["invalid port '0'"],
    );
    assert_error(
        &base(&["--open", "22", "127.0.0.1:99999"]),
        &["invalid SERVER '127.0.0.1:99999'"],
    );
    // A send the kernel refuses (broadcast without SO_BROADCAST: EACCES,
    // nothing leaves the host) is reported with the destination.
    assert_error(
        &base(&["--open", "22", "-4", "255.255.255.255"]),
        &["cannot send to 255.255.255.255:62201"],
    );
    // Usage errors (clap) exit 2.
    let o = base(&["127.0.0.1"]);
    assert_eq!(o.status.code(), Some(2));
    let o = base(&["--open", "22", "--close", "22", "127.0.0.1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn no_server_id_anywhere_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), None);
    // keygen fills in this host's name when --server-id is absent; strip it
    // to get a key file without one.
    let mut kf = KeyFile::read(&key).unwrap();
    kf.server_id = None;
    kf.write_new(&key, true).unwrap();
    let o = run(client()
        .args(["send", "--open", "22", "--dry-run", "--key"])
        .arg(&key));
    assert_error(&o, &["no server id", "--server-id", "server_id"]);
}

#[test]
fn help_answers_the_usual_questions() {
    let o = run(client().args(["send", "--help"]));
    let h = stdout(&o);
    for needle in [
        "~/.config/spa/default.key",
        "$SPA_KEY",
        "--allow-ip",
        "NAT",
        "62201",
        "server_id",
        "--dry-run",
        // --wait, its exit status, profiles and groups (issue 12).
        "--wait[=<SECS>]",
        "3 when --wait saw a port not",
        "client.toml",
        "spa-client list",
        "group",
    ] {
        assert!(h.contains(needle), "{needle} missing from:\n{h}");
    }
    let o = run(client().args(["raw-send", "--help"]));
    assert!(stdout(&o).contains("Testing tool"));
    let o = run(client().args(["list", "--help"]));
    assert!(stdout(&o).contains("$XDG_CONFIG_HOME/spa/client.toml"));
}

/// The same through the client: one `error:` line that says what a spa
/// key file looks like and how to make one.
#[test]
fn a_wireguard_key_file_gets_a_what_and_how_error() {
    let dir = tempfile::tempdir().unwrap();
    let wg = dir.path().join("wg0.key");
    std::fs::write(&wg, "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").unwrap();
    std::fs::set_permissions(&wg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(client()
        .args([
            "send",
            "--open",
            "22",
            "--server-id",
            "gw1",
            "--dry-run",
            "--key",
        ])
        .arg(&wg));
    assert_error(
        &o,
        &[
            "is not a spa key file",
            "WireGuard",
            "spa-keygen --out FILE",
        ],
    );
}

/// A request's grants as (protocol, port) pairs, for comparing with a list.
fn grants_of(r: &spa_proto::Request) -> Vec<(Proto, u16)> {
    r.grants
        .as_slice()
        .iter()
        .map(|g| (g.proto, g.port.get()))
        .collect()
}
