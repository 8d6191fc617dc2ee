//! Protocol v2 server key files.

use super::*;

#[test]
fn a_server_key_file_round_trips_and_a_bad_uid_names_its_line() {
    let uid: ServerUid = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf".parse().unwrap();
    let kf = KeyFile {
        name: "alice".into(),
        key: MasterKey::from_bytes([9; 32]),
        server_id: None,
        server_uid: Some(uid),
    };
    let text = kf.to_toml();
    assert!(
        text.contains("server_uid = \"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\""),
        "{text}"
    );
    assert!(text.contains("stable id"), "{text}");
    assert_eq!(KeyFile::parse(&text, Path::new("s.key")).unwrap(), kf);
    let bad = "name = \"a\"\nkey = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nserver_uid = \"xyz\"\n";
    let e = KeyFile::parse(bad, Path::new("s.key"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s.key") && e.contains(":3") || e.contains("line 3"),
        "{e}"
    );
    assert!(
        e.contains("server_uid") && e.contains("32 hex digits"),
        "{e}"
    );
}
