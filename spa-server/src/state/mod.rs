//! The persisted replay record: an append-only log in the state directory,
//! fsync'd before any firewall change, so a datagram the record took once
//! (accepted or denied) is refused after a restart too.
//!
//! Format (`replay.log`): an 8-byte header `SPARPL2\n`, then fixed 44-byte
//! records `timestamp u64 BE | key-id 8 | nonce 24 | CRC-32C 4 BE` (the
//! checksum covers the 40 bytes before it). A torn final record (a crash
//! mid-write) is dropped: its datagram was never acted on, because the
//! grant is applied only after the write returned from fdatasync. The log is
//! compacted (rewritten with the live entries, then renamed into place) at
//! start and when dead entries dominate.
//!
//! **Lost or suspect state fails closed.** The server then starts from
//! [`ReplayRecord::after_loss`], refusing every timestamp that could have
//! been accepted before, rather than trusting a partial record: a header
//! that does not match (also the version-1 header of an older build), a
//! record whose checksum fails, a log over [`MAX_LOG_BYTES`], and a missing
//! log unless this is provably the first start (the state directory was
//! empty: every start leaves [`MARKER_NAME`] in it). A floor read back
//! beyond what a loss at the current time would need (written while the
//! clock was far ahead) is capped to that, and logged.
//!
//! **Volatile mode** (`runtime_dir`, e.g. /run/spa-server on tmpfs): on a
//! disk whose cache flush costs milliseconds (4 ms on our test VMs), an
//! fdatasync per datagram dominates knock-to-open latency. A log on tmpfs
//! survives every daemon crash, kill and restart (the kernel keeps it), and
//! is lost only with the kernel itself. That loss is detectable: the marker
//! (fsync'd) in the persistent state directory says a log existed, so a
//! missing log means "lost", and the server starts with the floor above.
//! Replays stay rejected across restarts and reboots; a reboot costs clients
//! at most one window of refusals.
//!
//! Both directories are checked and every file is opened as
//! [`crate::safefile`] describes (owner, mode, no symlinks, capped reads).

mod durable;
mod hmac_used;

pub use crate::safefile::StateError;
use crate::safefile::{self, err, Contents, DirState};
pub use durable::{DurableReplay, Refused};
pub use hmac_used::{load_hmac_used, save_hmac_used, HmacUsed};
use rand::RngCore;
use spa_proto::{KeyId, ReplayRecord, Seen, TimeWindow};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const HEADER: &[u8; 8] = b"SPARPL2\n";
/// The header of the unchecksummed format of older builds: read as lost.
const HEADER_V1: &[u8; 8] = b"SPARPL1\n";
const ENTRY_LEN: usize = 40;
const RECORD_LEN: usize = ENTRY_LEN + 4;
const LOG_NAME: &str = "replay.log";
pub const MARKER_NAME: &str = "replay.marker";
/// No log this size is ever written: live entries are bounded by the
/// shares, and compaction keeps dead ones under half. 64 MiB is 1.5 M
/// records; a larger file is not read (lost state: the floor).
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// Why the record was treated as lost, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostWhy {
    /// No log, in a state directory that was used before.
    Missing,
    /// The header is not this format's.
    BadHeader,
    /// The header of the older format without checksums.
    OldFormat,
    /// Over [`MAX_LOG_BYTES`].
    TooLarge,
    /// This many records failed their checksum (the others were restored).
    BadRecords(usize),
}

impl std::fmt::Display for LostWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostWhy::Missing => f.write_str(
                "the log is missing from a state directory used before (moved, deleted, or runtime_dir changed)",
            ),
            LostWhy::BadHeader => f.write_str("the log's header is not SPARPL2 (corrupt)"),
            LostWhy::OldFormat => {
                f.write_str("the log is in the older format without checksums (SPARPL1)")
            }
            LostWhy::TooLarge => write!(f, "the log is over {MAX_LOG_BYTES} bytes"),
            LostWhy::BadRecords(n) => write!(f, "{n} record(s) failed their checksum"),
        }
    }
}

/// How the record was found at start, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// No log and an empty state directory: provably the first start.
    Fresh,
    /// Read back, `live` entries still inside the window.
    Restored { live: usize, torn_tail: bool },
    /// Lost or suspect; the floor protects the past window.
    Lost(LostWhy),
}

/// What [`ReplayLog::open`] found and made.
pub struct Opened {
    pub log: ReplayLog,
    pub record: ReplayRecord,
    pub loaded: Loaded,
    /// The floor read from disk, when it lay beyond now + window and was
    /// capped (the clock was far ahead when it was written).
    pub capped_floor: Option<u64>,
    /// The state directory was empty: nothing was ever kept (the HMAC knock
    /// record reads a missing file as "nothing used" only then).
    pub first_start: bool,
}

pub struct ReplayLog {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    records: usize,
}

impl ReplayLog {
    /// Opens (creating if needed) the log in `state_dir`, or in `runtime_dir`
    /// (volatile mode, see the module docs) when given; loads it into a
    /// record with `window` and each key's `share`, compacts it, and leaves
    /// the marker in `state_dir`.
    pub fn open(
        state_dir: &Path,
        runtime_dir: Option<&Path>,
        window: TimeWindow,
        share: usize,
        now: u64,
    ) -> Result<Opened, StateError> {
        let first_start = safefile::ensure_private_dir(state_dir)? == DirState::Empty;
        let dir = match runtime_dir {
            Some(r) => {
                safefile::ensure_private_dir(r)?;
                r
            }
            None => state_dir,
        };
        let path = dir.join(LOG_NAME);
        let (mut record, loaded) = match safefile::read_capped(&path, MAX_LOG_BYTES)
            .map_err(err(&path, "cannot read replay log"))?
        {
            Contents::Bytes(bytes) => decode(&bytes, window, share, now),
            Contents::TooLarge => lost(window, share, now, LostWhy::TooLarge),
            Contents::Missing if first_start => (ReplayRecord::new(window, share), Loaded::Fresh),
            Contents::Missing => lost(window, share, now, LostWhy::Missing),
        };
        // The record's hash tables are keyed with a secret of this process
        // (spa_proto::replay::HashKey): a key holder must not choose nonces
        // that collide. Drawn before the seccomp filter, like every start-up
        // resource.
        let mut hash_key = spa_proto::replay::HashKey::default();
        rand::rngs::OsRng
            .try_fill_bytes(&mut hash_key)
            .map_err(|e| err(&path, "cannot draw the replay record's hash key")(e.into()))?;
        record.set_hash_key(hash_key);
        let capped_floor = record.cap_floor(now);
        // Forgets what the window no longer accepts; the floor rises past
        // it (and only past it), and compaction writes that floor.
        record.prune(now);
        let mut log = ReplayLog {
            file: File::open("/dev/null").map_err(err(&path, "cannot open /dev/null"))?,
            path,
            dir: dir.to_owned(),
            records: 0,
        };
        log.compact(&record)?;
        if safefile::open_read(&state_dir.join(MARKER_NAME)).is_err() {
            write_marker(state_dir)?;
        }
        Ok(Opened {
            log,
            record,
            loaded,
            capped_floor,
            first_start,
        })
    }

    /// Appends one recorded datagram and waits until it is on disk.
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

    /// Rewrites the log with the live entries of `record` if the file holds
    /// mostly dead ones.
    pub fn maybe_compact(&mut self, record: &ReplayRecord) -> Result<(), StateError> {
        if self.records > 1024 && self.records > 2 * record.len() {
            self.compact(record)?;
        }
        Ok(())
    }

    fn compact(&mut self, record: &ReplayRecord) -> Result<(), StateError> {
        let mut bytes = Vec::with_capacity(HEADER.len() + (record.len() + 1) * RECORD_LEN);
        bytes.extend_from_slice(HEADER);
        if record.floor() > 0 {
            bytes.extend_from_slice(&encode_record(&floor_entry(record.floor())));
        }
        for s in record.entries() {
            bytes.extend_from_slice(&encode_record(s));
        }
        safefile::replace_durably(&self.dir, LOG_NAME, &bytes)?;
        self.file =
            safefile::open_append(&self.path).map_err(err(&self.path, "cannot open replay log"))?;
        self.records = (bytes.len() - HEADER.len()) / RECORD_LEN;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lost(window: TimeWindow, share: usize, now: u64, why: LostWhy) -> (ReplayRecord, Loaded) {
    (
        ReplayRecord::after_loss(window, share, now),
        Loaded::Lost(why),
    )
}

/// The floor travels in the log as a record with an all-zero key-id and
/// nonce, which no authentic datagram has.
fn floor_entry(floor: u64) -> Seen {
    Seen {
        timestamp: floor,
        key_id: KeyId([0; 8]),
        nonce: [0; 24],
    }
}

/// Records, durably, that this state directory was used; see the module docs.
fn write_marker(dir: &Path) -> Result<(), StateError> {
    safefile::replace_durably(
        dir,
        MARKER_NAME,
        b"spa-server kept its replay record for this directory; a missing log now means lost state (a floor)\n",
    )
}

/// CRC-32C (Castagnoli), bitwise: 40 bytes per record, at start and once
/// per recorded datagram, so a table buys nothing. Detects corruption (a
/// bad disk, a stray write), not tampering: whoever can write the state
/// directory is root already.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn encode_record(s: &Seen) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    let (entry, sum) = r.split_at_mut(ENTRY_LEN);
    let (ts, rest) = entry.split_at_mut(8);
    let (id, nonce) = rest.split_at_mut(8);
    ts.copy_from_slice(&s.timestamp.to_be_bytes());
    id.copy_from_slice(&s.key_id.0);
    nonce.copy_from_slice(&s.nonce);
    sum.copy_from_slice(&crc32c(entry).to_be_bytes());
    r
}

/// One record back, or None when its checksum fails.
fn decode_record(c: &[u8]) -> Option<Seen> {
    let (entry, sum) = c.split_at_checked(ENTRY_LEN)?;
    if crc32c(entry).to_be_bytes() != *sum {
        return None;
    }
    let (ts, rest) = entry.split_at(8);
    let (id, nonce) = rest.split_at(8);
    Some(Seen {
        timestamp: u64::from_be_bytes(ts.try_into().ok()?),
        key_id: KeyId(id.try_into().ok()?),
        nonce: nonce.try_into().ok()?,
    })
}

fn decode(bytes: &[u8], window: TimeWindow, share: usize, now: u64) -> (ReplayRecord, Loaded) {
    let Some(body) = bytes.strip_prefix(HEADER.as_slice()) else {
        let why = if bytes.starts_with(HEADER_V1) {
            LostWhy::OldFormat
        } else {
            LostWhy::BadHeader
        };
        return lost(window, share, now, why);
    };
    let mut record = ReplayRecord::new(window, share);
    let chunks = body.chunks_exact(RECORD_LEN);
    let torn_tail = !chunks.remainder().is_empty();
    let mut bad = 0;
    for c in chunks {
        let Some(seen) = decode_record(c) else {
            bad += 1;
            continue;
        };
        if seen.key_id == KeyId([0; 8]) && seen.nonce == [0; 24] {
            record.raise_floor(seen.timestamp);
        } else {
            record.restore(seen, now);
        }
    }
    if bad > 0 {
        // What the bad records held is unknown: keep what the good ones
        // say, and refuse everything that could have been in the others.
        record.raise_floor(window.loss_floor(now));
        return (record, Loaded::Lost(LostWhy::BadRecords(bad)));
    }
    let live = record.len();
    (record, Loaded::Restored { live, torn_tail })
}

#[cfg(test)]
mod tests;
