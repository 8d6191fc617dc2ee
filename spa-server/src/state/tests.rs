use super::*;
use spa_proto::Reject;

const W: TimeWindow = TimeWindow {
    past_secs: 30,
    future_secs: 30,
};
const YEAR: u64 = 365 * 86_400;

fn seen(ts: u64, n: u8) -> Seen {
    Seen {
        timestamp: ts,
        key_id: KeyId([n; 8]),
        nonce: [n; 24],
    }
}

fn open(dir: &Path, now: u64) -> Opened {
    ReplayLog::open(dir, None, W, 100, now).unwrap()
}

/// Records `seen(ts, n)` as the daemon does: in the record, then on disk.
fn record(o: &mut Opened, ts: u64, n: u8, now: u64) {
    o.record
        .check_and_insert(&KeyId([n; 8]), &[n; 24], ts, now)
        .unwrap();
    o.log.append(&seen(ts, n)).unwrap();
}

fn check(o: &mut Opened, ts: u64, n: u8, now: u64) -> Result<(), Reject> {
    o.record.check_and_insert(&KeyId([n; 8]), &[n; 24], ts, now)
}

#[test]
fn each_open_keys_the_record_with_a_fresh_secret() {
    // A key holder picks its nonces: with a hash key known in advance
    // (the all-zero default) it could make them collide (issue 14).
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ka, kb) = (
        open(a.path(), 1000).record.hash_key(),
        open(b.path(), 1000).record.hash_key(),
    );
    let kc = open(a.path(), 1001).record.hash_key();
    assert_ne!(ka, [0; 16]);
    assert!(ka != kb && ka != kc, "drawn at every open, never stored");
}

#[test]
fn survives_reopen_and_rejects_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), 1000);
    assert_eq!(o.loaded, Loaded::Fresh);
    assert!(o.first_start);
    record(&mut o, 1000, 1, 1000);
    drop(o);
    let mut o = open(dir.path(), 1005);
    assert_eq!(
        o.loaded,
        Loaded::Restored {
            live: 1,
            torn_tail: false
        }
    );
    assert!(!o.first_start);
    assert_eq!(check(&mut o, 1000, 1, 1005), Err(Reject::Replayed));
}

#[test]
fn torn_tail_is_dropped_and_stale_entries_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = HEADER.to_vec();
    bytes.extend_from_slice(&encode_record(&seen(900, 1)));
    bytes.extend_from_slice(&encode_record(&seen(1000, 2)));
    bytes.extend_from_slice(&[7; 13]);
    std::fs::write(dir.path().join(LOG_NAME), &bytes).unwrap();
    let o = open(dir.path(), 1000);
    assert_eq!(
        o.loaded,
        Loaded::Restored {
            live: 1,
            torn_tail: true
        }
    );
    assert_eq!(o.record.len(), 1);
    assert_eq!(
        o.record.floor(),
        901,
        "the forgotten 900 is below the floor"
    );
    // Compacted: header + the floor + one record.
    let len = std::fs::metadata(dir.path().join(LOG_NAME)).unwrap().len();
    assert_eq!(len as usize, HEADER.len() + 2 * RECORD_LEN);
}

#[test]
fn a_wider_window_after_restart_does_not_reopen_compacted_replays() {
    let dir = tempfile::tempdir().unwrap();
    let wide = TimeWindow {
        past_secs: 300,
        future_secs: 300,
    };
    let mut o = open(dir.path(), 1000);
    record(&mut o, 1000, 1, 1000);
    drop(o);
    // Restarted at 1040 with the same window: the entry is compacted away.
    drop(open(dir.path(), 1040));
    // Restarted at 1050 with window 300: 1000 is inside it again, and
    // the datagram must still be refused.
    let mut o = ReplayLog::open(dir.path(), None, wide, 100, 1050).unwrap();
    assert_eq!(check(&mut o, 1000, 1, 1050), Err(Reject::Replayed));
    assert!(check(&mut o, 1050, 2, 1050).is_ok(), "a fresh one is fine");
}

#[test]
fn volatile_log_lost_with_marker_sets_floor() {
    let state = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let open_v = |now| ReplayLog::open(state.path(), Some(run.path()), W, 100, now).unwrap();
    let mut o = open_v(1000);
    assert_eq!(o.loaded, Loaded::Fresh);
    record(&mut o, 1000, 1, 1000);
    drop(o);
    // A daemon restart: the runtime log is still there.
    let mut o = open_v(1001);
    assert_eq!(
        o.loaded,
        Loaded::Restored {
            live: 1,
            torn_tail: false
        }
    );
    assert!(check(&mut o, 1000, 1, 1001).is_err());
    drop(o);
    // A reboot: tmpfs is gone, the marker is not.
    std::fs::remove_file(run.path().join(LOG_NAME)).unwrap();
    let mut o = open_v(1002);
    assert_eq!(o.loaded, Loaded::Lost(LostWhy::Missing));
    assert!(check(&mut o, 1020, 9, 1020).is_err());
    assert!(check(&mut o, 1033, 9, 1033).is_ok());
}

#[test]
fn corrupt_log_sets_floor_which_persists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOG_NAME), b"garbage").unwrap();
    let mut o = open(dir.path(), 1000);
    assert_eq!(o.loaded, Loaded::Lost(LostWhy::BadHeader));
    assert!(check(&mut o, 1010, 1, 1010).is_err());
    drop(o);
    let mut o = open(dir.path(), 1011);
    assert!(check(&mut o, 1011, 2, 1011).is_err());
    assert!(check(&mut o, 1031, 2, 1031).is_ok());
}

/// Finding 6: a start with the clock a year ahead, with nothing recorded,
/// leaves no floor a year ahead: once the clock is right, datagrams of
/// the present are accepted.
#[test]
fn a_start_with_the_clock_far_ahead_does_not_lock_out_the_present() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 1000));
    let o = open(dir.path(), 1000 + YEAR);
    assert_eq!(o.record.floor(), 0, "nothing was forgotten");
    drop(o);
    let mut o = open(dir.path(), 1001);
    assert_eq!(o.capped_floor, None);
    assert!(check(&mut o, 1001, 1, 1001).is_ok());
}

/// Finding 6: a floor on disk beyond now + window (lost state seen while
/// the clock was a year ahead) is capped to one window, and reported.
#[test]
fn a_floor_far_ahead_on_disk_is_capped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOG_NAME), b"garbage").unwrap();
    let o = open(dir.path(), 1000 + YEAR);
    assert_eq!(o.record.floor(), 1031 + YEAR);
    drop(o);
    let mut o = open(dir.path(), 1000);
    assert_eq!(o.capped_floor, Some(1031 + YEAR));
    assert_eq!(o.record.floor(), 1031);
    assert_eq!(check(&mut o, 1030, 1, 1030), Err(Reject::Replayed));
    assert!(check(&mut o, 1031, 1, 1031).is_ok());
}

/// Finding 8: a log deleted (or moved) from a state directory used
/// before is lost state, not a first start; so is a log left behind
/// when `runtime_dir` is set afterwards.
#[test]
fn a_missing_log_in_a_used_state_directory_is_lost_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), 1000);
    record(&mut o, 1000, 1, 1000);
    drop(o);
    std::fs::remove_file(dir.path().join(LOG_NAME)).unwrap();
    let mut o = open(dir.path(), 1001);
    assert_eq!(o.loaded, Loaded::Lost(LostWhy::Missing));
    assert!(!o.first_start);
    assert_eq!(check(&mut o, 1000, 1, 1001), Err(Reject::Replayed));
    drop(o);

    let state = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let mut o = open(state.path(), 1000);
    record(&mut o, 1000, 1, 1000);
    drop(o);
    let mut o = ReplayLog::open(state.path(), Some(run.path()), W, 100, 1001).unwrap();
    assert_eq!(o.loaded, Loaded::Lost(LostWhy::Missing));
    assert_eq!(check(&mut o, 1000, 1, 1001), Err(Reject::Replayed));
}

/// The first start proper: an empty state directory that already
/// exists (systemd's StateDirectory= creates it) is one.
#[test]
fn an_empty_existing_state_directory_is_a_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 1000);
    assert_eq!((o.loaded, o.first_start), (Loaded::Fresh, true));
    assert!(
        dir.path().join(MARKER_NAME).exists(),
        "every start leaves the marker"
    );
}

/// Also c: a record whose checksum fails is lost state (the floor), not
/// an absent entry; the good records still count.
#[test]
fn a_record_with_a_bad_checksum_is_lost_state_not_absent() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), 1000);
    record(&mut o, 1000, 1, 1000);
    record(&mut o, 1010, 2, 1010);
    drop(o);
    let path = dir.path().join(LOG_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - RECORD_LEN;
    bytes[last + 3] ^= 0x40; // the timestamp of seen(1010, 2)
    std::fs::write(&path, &bytes).unwrap();
    let mut o = open(dir.path(), 1011);
    assert_eq!(o.loaded, Loaded::Lost(LostWhy::BadRecords(1)));
    assert_eq!(check(&mut o, 1010, 2, 1011), Err(Reject::Replayed));
    assert_eq!(check(&mut o, 1000, 1, 1011), Err(Reject::Replayed));
    assert_eq!(o.record.floor(), 1042);
}

#[test]
fn an_old_format_log_is_lost_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = HEADER_V1.to_vec();
    bytes.extend_from_slice(&[1; 40]);
    std::fs::write(dir.path().join(LOG_NAME), &bytes).unwrap();
    let mut o = open(dir.path(), 1000);
    assert_eq!(o.loaded, Loaded::Lost(LostWhy::OldFormat));
    assert!(check(&mut o, 1030, 1, 1030).is_err());
}

/// Finding 7, through the log: an oversized log is not read (lost
/// state), a symlinked log is refused, and a state directory others may
/// write is refused with the path and the fix.
#[test]
fn unsafe_state_files_and_directories_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(dir.path().join(LOG_NAME)).unwrap();
    f.set_len(MAX_LOG_BYTES + 1).unwrap();
    let o = open(dir.path(), 1000);
    assert_eq!(o.loaded, Loaded::Lost(LostWhy::TooLarge));
    drop(o);

    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    std::fs::remove_file(dir.path().join(LOG_NAME)).unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(LOG_NAME)).unwrap();
    assert!(ReplayLog::open(dir.path(), None, W, 100, 1000).is_err());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");

    let open_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let e = ReplayLog::open(open_dir.path(), None, W, 100, 1000)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&open_dir.path().display().to_string()), "{e}");
    assert!(e.contains("chmod go-w"), "{e}");
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}
