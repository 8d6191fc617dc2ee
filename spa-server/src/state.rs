//! The persisted replay record: an append-only log in the state directory,
//! fsync'd before any firewall change, so a datagram accepted once is
//! refused after a restart too.
//!
//! Format (`replay.log`): an 8-byte header `SPARPL1\n`, then fixed 40-byte
//! records `timestamp u64 BE | key-id 8 | nonce 24`. A torn final record (a
//! crash mid-write) is dropped: its datagram was never acted on, because the
//! grant is applied only after the write returned from fdatasync. The log is
//! compacted (rewritten with the live entries, then renamed into place) at
//! start and when dead entries dominate.
//!
//! A header that does not match means the record is lost: the server then
//! starts from [`ReplayRecord::after_loss`], refusing every timestamp that
//! could have been accepted before, rather than trusting an empty record.
//!
//! **Volatile mode** (`runtime_dir`, e.g. /run/spa-server on tmpfs): on a
//! disk whose cache flush costs milliseconds (4 ms on our test VMs), an
//! fdatasync per datagram dominates knock-to-open latency. A log on tmpfs
//! survives every daemon crash, kill and restart (the kernel keeps it), and
//! is lost only with the kernel itself. That loss is detectable: a marker
//! written once (fsync'd) in the persistent state directory says a log
//! existed, so a missing log with a marker present means "lost", and the
//! server starts with the floor above. Replays stay rejected across restarts
//! and reboots; a reboot costs clients at most one window of refusals.

use spa_proto::{KeyId, ReplayRecord, Seen, TimeWindow};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const HEADER: &[u8; 8] = b"SPARPL1\n";
const RECORD_LEN: usize = 40;
const LOG_NAME: &str = "replay.log";
const MARKER_NAME: &str = "replay.marker";

#[derive(Debug)]
pub struct StateError {
    pub path: PathBuf,
    pub what: &'static str,
    pub source: io::Error,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path.display(), self.what, self.source)
    }
}

impl std::error::Error for StateError {}

/// How the record was found at start, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// No log yet: a first start.
    Fresh,
    /// Read back, `live` entries still inside the window.
    Restored { live: usize, torn_tail: bool },
    /// The log was unreadable; the floor protects the past window.
    Lost,
}

pub struct ReplayLog {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    records: usize,
}

fn err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError {
        path: path.to_owned(),
        what,
        source,
    }
}

impl ReplayLog {
    /// Opens (creating if needed) the log in `state_dir`, or in `runtime_dir`
    /// (volatile mode, see the module docs) when given; loads it into a
    /// record with `window`/`capacity`, compacts it, and returns both.
    pub fn open(
        state_dir: &Path,
        runtime_dir: Option<&Path>,
        window: TimeWindow,
        capacity: usize,
        now: u64,
    ) -> Result<(ReplayLog, ReplayRecord, Loaded), StateError> {
        let mkdir = |d: &Path| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(err(d, "cannot create state directory"))
        };
        mkdir(state_dir)?;
        let dir = match runtime_dir {
            Some(r) => {
                mkdir(r)?;
                r
            }
            None => state_dir,
        };
        let path = dir.join(LOG_NAME);
        let marker = state_dir.join(MARKER_NAME);
        let (mut record, loaded) = match File::open(&path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)
                    .map_err(err(&path, "cannot read replay log"))?;
                decode(&bytes, window, capacity, now)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if runtime_dir.is_some() && marker.exists() {
                    (
                        ReplayRecord::after_loss(window, capacity, now),
                        Loaded::Lost,
                    )
                } else {
                    (ReplayRecord::new(window, capacity), Loaded::Fresh)
                }
            }
            Err(e) => return Err(err(&path, "cannot open replay log")(e)),
        };
        record.prune(now);
        // Everything older than the window is dropped here (and was dropped
        // by earlier compactions). Remember that as a floor in the log, or a
        // restart with a wider window (`window_secs` raised) would accept a
        // replay of a datagram whose record was compacted away.
        record.raise_floor(now.saturating_sub(window.past_secs));
        let mut log = ReplayLog {
            file: File::open("/dev/null").map_err(err(&path, "cannot open /dev/null"))?,
            path,
            dir: dir.to_owned(),
            records: 0,
        };
        log.compact(&record)?;
        if runtime_dir.is_some() && !marker.exists() {
            write_marker(state_dir)?;
        }
        Ok((log, record, loaded))
    }

    /// Appends one accepted datagram and waits until it is on disk.
    pub fn append(&mut self, seen: &Seen) -> Result<(), StateError> {
        self.file
            .write_all(&encode_record(seen))
            .map_err(err(&self.path, "cannot append to replay log"))?;
        self.file
            .sync_data()
            .map_err(err(&self.path, "cannot fsync replay log"))?;
        self.records += 1;
        Ok(())
    }

    /// Persists a floor (a record with an all-zero key-id and nonce): used
    /// when a reload widens the window, so entries already forgotten under
    /// the old window cannot come back, now or after a restart.
    pub fn append_floor(&mut self, floor: u64) -> Result<(), StateError> {
        self.append(&floor_entry(floor))
    }

    /// Rewrites the log with the live entries of `record` if the file holds
    /// mostly dead ones.
    pub fn maybe_compact(&mut self, record: &ReplayRecord) -> Result<(), StateError> {
        if self.records > 1024 && self.records > 2 * record.len() {
            self.compact(record)?;
        }
        Ok(())
    }

    fn compact(&mut self, record: &ReplayRecord) -> Result<(), StateError> {
        let mut bytes = Vec::with_capacity(16 + record.len() * RECORD_LEN);
        bytes.extend_from_slice(HEADER);
        if record.floor() > 0 {
            bytes.extend_from_slice(&encode_record(&floor_entry(record.floor())));
        }
        for s in record.entries() {
            bytes.extend_from_slice(&encode_record(s));
        }
        replace_durably(&self.dir, LOG_NAME, &bytes)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(err(&self.path, "cannot open replay log"))?;
        self.records = (bytes.len() - HEADER.len()) / RECORD_LEN;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The floor travels in the log as a record with an all-zero key-id and
/// nonce, which no accepted datagram has.
fn floor_entry(floor: u64) -> Seen {
    Seen {
        timestamp: floor,
        key_id: KeyId([0; 8]),
        nonce: [0; 24],
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old
/// or the new file: temp file, fsync, rename, fsync of the directory.
fn replace_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err(&tmp, "cannot create"))?;
    f.write_all(bytes).map_err(err(&tmp, "cannot write"))?;
    f.sync_all().map_err(err(&tmp, "cannot fsync"))?;
    std::fs::rename(&tmp, &path).map_err(err(&path, "cannot replace"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(dir, "cannot fsync state directory"))
}

/// Records, durably, that a volatile log exists; see the module docs.
fn write_marker(dir: &Path) -> Result<(), StateError> {
    replace_durably(
        dir,
        MARKER_NAME,
        b"spa-server keeps its replay log in a runtime directory; losing it raises the floor\n",
    )
}

/// The HMAC knock sequences accepted recently, one `key-id step` line each,
/// so a restart cannot make a used sequence usable again. Rewritten whole
/// (temp file, fsync, rename) on each HMAC open: rare, and tiny.
pub fn save_hmac_used(dir: &Path, used: &[(KeyId, u64)]) -> Result<(), StateError> {
    let text: String = used
        .iter()
        .map(|(id, step)| format!("{id} {step}\n"))
        .collect();
    replace_durably(dir, "hmac-used", text.as_bytes())
}

/// Reads what [`save_hmac_used`] wrote; a missing file is an empty list and
/// unreadable lines are skipped (the step window makes old ones moot anyway).
pub fn load_hmac_used(dir: &Path) -> Vec<(KeyId, u64)> {
    let Ok(text) = std::fs::read_to_string(dir.join("hmac-used")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (id, step) = l.split_once(' ')?;
            Some((id.parse().ok()?, step.trim().parse().ok()?))
        })
        .collect()
}

fn encode_record(s: &Seen) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    let (ts, rest) = r.split_at_mut(8);
    let (id, nonce) = rest.split_at_mut(8);
    ts.copy_from_slice(&s.timestamp.to_be_bytes());
    id.copy_from_slice(&s.key_id.0);
    nonce.copy_from_slice(&s.nonce);
    r
}

fn decode(bytes: &[u8], window: TimeWindow, capacity: usize, now: u64) -> (ReplayRecord, Loaded) {
    let Some(body) = bytes.strip_prefix(HEADER.as_slice()) else {
        return (
            ReplayRecord::after_loss(window, capacity, now),
            Loaded::Lost,
        );
    };
    let mut record = ReplayRecord::new(window, capacity);
    let chunks = body.chunks_exact(RECORD_LEN);
    let torn_tail = !chunks.remainder().is_empty();
    for c in chunks {
        let (ts, rest) = c.split_at(8);
        let (id, nonce) = rest.split_at(8);
        let (Ok(ts), Ok(id), Ok(nonce)) = (
            <[u8; 8]>::try_from(ts),
            <[u8; 8]>::try_from(id),
            <[u8; 24]>::try_from(nonce),
        ) else {
            continue;
        };
        let timestamp = u64::from_be_bytes(ts);
        if id == [0; 8] && nonce == [0; 24] {
            record.raise_floor(timestamp);
            continue;
        }
        record.restore(
            Seen {
                timestamp,
                key_id: KeyId(id),
                nonce,
            },
            now,
        );
    }
    let live = record.len();
    (record, Loaded::Restored { live, torn_tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ts: u64, n: u8) -> Seen {
        Seen {
            timestamp: ts,
            key_id: KeyId([n; 8]),
            nonce: [n; 24],
        }
    }

    #[test]
    fn survives_reopen_and_rejects_replay() {
        let dir = tempfile::tempdir().unwrap();
        let w = TimeWindow::default();
        let (mut log, mut rec, loaded) = ReplayLog::open(dir.path(), None, w, 100, 1000).unwrap();
        assert_eq!(loaded, Loaded::Fresh);
        rec.check_and_insert(&KeyId([1; 8]), &[1; 24], 1000, 1000)
            .unwrap();
        log.append(&seen(1000, 1)).unwrap();
        drop(log);
        let (_log, mut rec2, loaded) = ReplayLog::open(dir.path(), None, w, 100, 1005).unwrap();
        assert_eq!(
            loaded,
            Loaded::Restored {
                live: 1,
                torn_tail: false
            }
        );
        assert_eq!(
            rec2.check_and_insert(&KeyId([1; 8]), &[1; 24], 1000, 1005),
            Err(spa_proto::Reject::Replayed)
        );
    }

    #[test]
    fn torn_tail_is_dropped_and_stale_entries_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(&encode_record(&seen(900, 1)));
        bytes.extend_from_slice(&encode_record(&seen(1000, 2)));
        bytes.extend_from_slice(&[7; 13]);
        std::fs::write(dir.path().join(LOG_NAME), &bytes).unwrap();
        let (_log, rec, loaded) =
            ReplayLog::open(dir.path(), None, TimeWindow::default(), 100, 1000).unwrap();
        assert_eq!(
            loaded,
            Loaded::Restored {
                live: 1,
                torn_tail: true
            }
        );
        assert_eq!(rec.len(), 1);
        // Compacted: header + the floor + one record.
        let len = std::fs::metadata(dir.path().join(LOG_NAME)).unwrap().len();
        assert_eq!(len as usize, HEADER.len() + 2 * RECORD_LEN);
    }

    #[test]
    fn a_wider_window_after_restart_does_not_reopen_compacted_replays() {
        let dir = tempfile::tempdir().unwrap();
        let narrow = TimeWindow {
            past_secs: 30,
            future_secs: 30,
        };
        let wide = TimeWindow {
            past_secs: 300,
            future_secs: 300,
        };
        let (mut log, mut rec, _) = ReplayLog::open(dir.path(), None, narrow, 100, 1000).unwrap();
        rec.check_and_insert(&KeyId([1; 8]), &[1; 24], 1000, 1000)
            .unwrap();
        log.append(&seen(1000, 1)).unwrap();
        drop(log);
        // Restarted at 1040 with the same window: the entry is compacted away.
        let (log, _, _) = ReplayLog::open(dir.path(), None, narrow, 100, 1040).unwrap();
        drop(log);
        // Restarted at 1050 with window 300: 1000 is inside it again, and
        // the datagram must still be refused.
        let (_log, mut rec, _) = ReplayLog::open(dir.path(), None, wide, 100, 1050).unwrap();
        assert_eq!(
            rec.check_and_insert(&KeyId([1; 8]), &[1; 24], 1000, 1050),
            Err(spa_proto::Reject::Replayed)
        );
        // A fresh datagram is fine.
        assert!(rec
            .check_and_insert(&KeyId([1; 8]), &[2; 24], 1050, 1050)
            .is_ok());
    }

    #[test]
    fn volatile_log_lost_with_marker_sets_floor() {
        let state = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        let w = TimeWindow::default();
        let (mut log, _rec, loaded) =
            ReplayLog::open(state.path(), Some(run.path()), w, 100, 1000).unwrap();
        assert_eq!(loaded, Loaded::Fresh);
        log.append(&seen(1000, 1)).unwrap();
        drop(log);
        // A daemon restart: the runtime log is still there.
        let (log, mut rec, loaded) =
            ReplayLog::open(state.path(), Some(run.path()), w, 100, 1001).unwrap();
        assert_eq!(
            loaded,
            Loaded::Restored {
                live: 1,
                torn_tail: false
            }
        );
        assert!(rec
            .check_and_insert(&KeyId([1; 8]), &[1; 24], 1000, 1001)
            .is_err());
        drop(log);
        // A reboot: tmpfs is gone, the marker is not.
        std::fs::remove_file(run.path().join(LOG_NAME)).unwrap();
        let (_log, mut rec, loaded) =
            ReplayLog::open(state.path(), Some(run.path()), w, 100, 1002).unwrap();
        assert_eq!(loaded, Loaded::Lost);
        assert!(rec
            .check_and_insert(&KeyId([9; 8]), &[9; 24], 1020, 1020)
            .is_err());
        assert!(rec
            .check_and_insert(&KeyId([9; 8]), &[9; 24], 1033, 1033)
            .is_ok());
    }

    #[test]
    fn hmac_used_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_hmac_used(dir.path()).is_empty());
        let used = vec![(KeyId([1; 8]), 100), (KeyId([2; 8]), 101)];
        save_hmac_used(dir.path(), &used).unwrap();
        assert_eq!(load_hmac_used(dir.path()), used);
    }

    #[test]
    fn corrupt_log_sets_floor_which_persists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_NAME), b"garbage").unwrap();
        let w = TimeWindow::default();
        let (_log, mut rec, loaded) = ReplayLog::open(dir.path(), None, w, 100, 1000).unwrap();
        assert_eq!(loaded, Loaded::Lost);
        assert!(rec
            .check_and_insert(&KeyId([1; 8]), &[1; 24], 1010, 1010)
            .is_err());
        drop(_log);
        let (_log, mut rec, _) = ReplayLog::open(dir.path(), None, w, 100, 1011).unwrap();
        assert!(rec
            .check_and_insert(&KeyId([1; 8]), &[2; 24], 1011, 1011)
            .is_err());
        assert!(rec
            .check_and_insert(&KeyId([1; 8]), &[2; 24], 1031, 1031)
            .is_ok());
    }
}
