//! Protocol v2 from the real binary: enrollment (`server-key`), v2
//! datagrams bound to one server, key-ids that change every minute.

use super::*;

/// Protocol v2 enrollment and sending: `server-key` prints the file server A
/// stores; `send --server-uid A` seals a v2 datagram that A's file opens and
/// that the file made for server B (same master) does not.
#[test]
fn server_key_and_send_v2() {
    use spa_proto::v2::{epoch_of, verify_v2, ServerUid};
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), None);
    let (a, b) = (
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
    );
    let file_for = |uid: &str| {
        let o = run(client()
            .args(["server-key", "--server-uid", uid, "--key"])
            .arg(&key));
        assert!(o.status.success(), "{o:?}");
        let kf = KeyFile::parse(&stdout(&o), Path::new("-")).unwrap();
        assert_eq!(kf.server_uid, Some(uid.parse().unwrap()));
        assert_eq!(kf.name, "tester");
        spa_proto::ServerKey::from_bytes(*kf.key.as_bytes()).derive()
    };
    let (at_a, at_b) = (file_for(a), file_for(b));
    // `send --dry-run --open 22 --server-uid A --key <file>`.
    let dry_open = |file: &std::path::Path| {
        run(client()
            .args([
                "send",
                "--dry-run",
                "--open",
                "22",
                "--server-uid",
                a,
                "--key",
            ])
            .arg(file))
    };
    let o = dry_open(&key);
    assert!(o.status.success(), "{o:?}");
    let d = unhex(&stdout(&o));
    assert_eq!(d[4], 2, "a v2 datagram");
    let now = now();
    let uid_a: ServerUid = a.parse().unwrap();
    let uid_b: ServerUid = b.parse().unwrap();
    let live = |k: &spa_proto::KeySetV2| {
        [epoch_of(now) - 1, epoch_of(now), epoch_of(now) + 1]
            .into_iter()
            .find(|&e| spa_proto::KeyId(d[5..13].try_into().unwrap()) == k.wire_id(e))
    };
    let e = live(&at_a).expect("the wire id is A's for this minute");
    let mut rec = ReplayRecord::new(TimeWindow::default(), 16);
    let opened = verify_v2(&d, |_| Some((&at_a, e)), &uid_a, now, &mut rec).unwrap();
    assert_eq!(opened.request.action, Action::Open);
    assert_eq!(opened.key_id, at_a.stable_id());
    assert!(live(&at_b).is_none(), "B's map does not know the id");
    let mut rec = ReplayRecord::new(TimeWindow::default(), 16);
    assert_eq!(
        verify_v2(&d, |_| Some((&at_b, e)), &uid_b, now, &mut rec),
        Err(Reject::AuthFailed)
    );
    // The server's file is no client key.
    let ks = dir.path().join("server.key");
    let o = run(client()
        .args(["server-key", "--server-uid", a, "--key"])
        .arg(&key));
    std::fs::write(&ks, &o.stdout).unwrap();
    std::fs::set_permissions(&ks, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = dry_open(&ks);
    assert_error(&o, &["server's key file", "server_uid"]);
    // A bad uid is a usage error naming the form.
    let o = run(client()
        .args(["server-key", "--server-uid", "xyz", "--key"])
        .arg(&key));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("32 hex digits"), "{}", stderr(&o));
}

/// Two v2 datagrams of one key from different minutes carry different ids
/// in clear (the real binary, --time-offset), and one sealed two minutes ago
/// is unknown to a server's id map now, before any AEAD work.
#[test]
fn v2_ids_change_every_minute() {
    use spa_proto::v2::{IdMap, ServerUid};
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), None);
    let uid = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
    let sealed = |offset: &str| {
        let o = run(client()
            .args(["send", "--dry-run", "--open", "22", "--server-uid", uid])
            .args(["--time-offset", offset, "--key"])
            .arg(&key));
        assert!(o.status.success(), "{o:?}");
        unhex(&stdout(&o))
    };
    let (now, later, old) = (sealed("0"), sealed("120"), sealed("-120"));
    assert_ne!(now[5..13], later[5..13], "ids of different minutes");
    assert_ne!(now[5..13], old[5..13]);
    let master = KeyFile::read(&key).unwrap().key;
    let keys = [master
        .server_key(&uid.parse::<ServerUid>().unwrap())
        .derive()];
    let mut ids = IdMap::new();
    let id = |d: &[u8]| spa_proto::KeyId(d[5..13].try_into().unwrap());
    assert!(ids.lookup(&id(&now), now_secs(), &keys, v2of).is_some());
    assert!(ids.lookup(&id(&old), now_secs(), &keys, v2of).is_none());
}

fn now_secs() -> u64 {
    now()
}

fn v2of(k: &spa_proto::KeySetV2) -> Option<&spa_proto::KeySetV2> {
    Some(k)
}
