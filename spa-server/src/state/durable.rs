//! The replay record and its on-disk log as one value: a datagram is either
//! refused, or in memory *and* on disk, with nothing in between for a
//! caller to forget. Before, the daemon kept the two in step by hand (take
//! what the record took, append it, compact), in four places.

use super::{ReplayLog, StateError};
use spa_proto::{Reject, ReplayRecord, Seen, TimeWindow};

/// Why [`DurableReplay::check_and_commit`] did not commit.
#[derive(Debug)]
pub enum Refused {
    /// The record refuses it (window, floor, replay, share, or `admit`).
    Reject(Reject),
    /// The record took it in memory but it could not be made durable: the
    /// caller must not act on the datagram. It stays in memory, so it is
    /// still refused until a restart (fail closed).
    NotPersisted(StateError),
}

/// The replay record, persisted before anything acts on what it took.
pub struct DurableReplay {
    record: ReplayRecord,
    /// None: memory only (unit tests, and the engine's tests).
    log: Option<ReplayLog>,
}

impl DurableReplay {
    pub fn new(record: ReplayRecord, log: ReplayLog) -> Self {
        DurableReplay {
            record,
            log: Some(log),
        }
    }

    /// A record that never touches the disk: for tests only.
    pub fn in_memory(record: ReplayRecord) -> Self {
        DurableReplay { record, log: None }
    }

    /// Window, floor, replay and share checks, then `admit` (the key's token
    /// bucket), then the entry goes into memory and is appended and
    /// fdatasync'd. Only an `Ok` may lead to a firewall change.
    pub fn check_and_commit(
        &mut self,
        seen: &Seen,
        now: u64,
        admit: impl FnOnce() -> Result<(), Reject>,
    ) -> Result<(), Refused> {
        self.record
            .check_admit_insert(&seen.key_id, &seen.nonce, seen.timestamp, now, admit)
            .map_err(Refused::Reject)?;
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        log.append(seen).map_err(Refused::NotPersisted)?;
        if let Err(e) = log.maybe_compact(&self.record) {
            // The entry is on disk already; a failed compaction only leaves
            // dead records in the file until the next one.
            tracing::warn!("replay log compaction failed: {e}");
        }
        Ok(())
    }

    /// A reload's new window and per-key share. A wider window needs no new
    /// floor: what the record forgot under the old one is below its floor
    /// already (in memory, and on disk at the next compaction).
    pub fn set_limits(&mut self, window: TimeWindow, share: usize) {
        self.record.set_limits(window, share);
    }

    pub fn record(&self) -> &ReplayRecord {
        &self.record
    }

    pub fn len(&self) -> usize {
        self.record.len()
    }

    pub fn is_empty(&self) -> bool {
        self.record.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spa_proto::KeyId;

    const NOW: u64 = 1_700_000_000;

    fn seen(n: u8) -> Seen {
        Seen {
            timestamp: NOW,
            key_id: KeyId([7; 8]),
            nonce: [n; 24],
        }
    }

    #[test]
    fn a_committed_entry_is_on_disk_before_check_and_commit_returns() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let opened =
            ReplayLog::open(&state, None, TimeWindow::default(), 64, NOW).expect("open log");
        let mut r = DurableReplay::new(opened.record, opened.log);
        r.check_and_commit(&seen(1), NOW, || Ok(())).unwrap();
        // A second process reading the directory now sees the entry.
        let again =
            ReplayLog::open(&state, None, TimeWindow::default(), 64, NOW).expect("reopen log");
        let mut back = DurableReplay::in_memory(again.record);
        assert!(matches!(
            back.check_and_commit(&seen(1), NOW, || Ok(())),
            Err(Refused::Reject(Reject::Replayed))
        ));
        assert!(back.check_and_commit(&seen(2), NOW, || Ok(())).is_ok());
    }

    #[test]
    fn a_refused_admit_records_nothing() {
        let mut r = DurableReplay::in_memory(ReplayRecord::new(TimeWindow::default(), 64));
        assert!(matches!(
            r.check_and_commit(&seen(1), NOW, || Err(Reject::RateLimited)),
            Err(Refused::Reject(Reject::RateLimited))
        ));
        assert!(r.is_empty());
        r.check_and_commit(&seen(1), NOW, || Ok(())).unwrap();
        assert_eq!(r.len(), 1);
    }
}
