//! Replay protection: a time window on the sender's timestamp, and a bounded
//! record of the datagrams accepted inside that window.
//!
//! Why both: the window alone lets an observer replay a datagram for as long
//! as it is fresh; the record alone would have to remember forever. Together
//! the record only needs what is still inside the window, so it forgets
//! everything older and its size is bounded by the accept rate times the
//! window. The server persists it (fsync) before acting on a datagram, so a
//! restart does not reopen the window to replays.

use crate::error::Reject;
use crate::kdf::KeyId;
use crate::wire::NONCE_LEN;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Default half-width of the acceptance window. 30 s tolerates NTP-synced
/// clocks and slow links, and bounds how long a captured datagram is worth
/// anything. fwknop's default is 120 s; we can afford less because the
/// server never needs to answer and clients send one datagram per use.
pub const DEFAULT_WINDOW_SECS: u64 = 30;
/// Default cap on remembered datagrams: at the default window this allows
/// over 1000 authenticated requests per second before failing closed.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// How far a timestamp may be behind or ahead of the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    pub past_secs: u64,
    pub future_secs: u64,
}

impl Default for TimeWindow {
    fn default() -> Self {
        TimeWindow {
            past_secs: DEFAULT_WINDOW_SECS,
            future_secs: DEFAULT_WINDOW_SECS,
        }
    }
}

impl TimeWindow {
    /// `Ok` when `ts` is inside the window around `now`.
    pub fn check(&self, ts: u64, now: u64) -> Result<(), Reject> {
        if ts < now && now - ts > self.past_secs {
            return Err(Reject::TooOld { age_secs: now - ts });
        }
        if ts > now && ts - now > self.future_secs {
            return Err(Reject::InFuture {
                ahead_secs: ts - now,
            });
        }
        Ok(())
    }
}

/// One accepted datagram. Ordered by timestamp first, so expiry is a range
/// split of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seen {
    pub timestamp: u64,
    pub key_id: KeyId,
    pub nonce: [u8; NONCE_LEN],
}

/// The window plus what was accepted inside it. Serializable so the server
/// can persist it; it holds no key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRecord {
    window: TimeWindow,
    capacity: usize,
    /// Datagrams with a timestamp below this are refused. Raised when the
    /// record was lost, so nothing sent before the loss can come back.
    floor: u64,
    seen: BTreeSet<Seen>,
}

impl ReplayRecord {
    pub fn new(window: TimeWindow, capacity: usize) -> Self {
        ReplayRecord {
            window,
            capacity,
            floor: 0,
            seen: BTreeSet::new(),
        }
    }

    /// A record that stands in for one that was lost (missing or corrupt
    /// state file): every timestamp up to `now + future_secs` may have been
    /// accepted before, so all of them are refused. Costs legitimate clients
    /// at most one window of refusals; never reopens a replay.
    pub fn after_loss(window: TimeWindow, capacity: usize, now: u64) -> Self {
        let mut r = ReplayRecord::new(window, capacity);
        r.floor = now.saturating_add(window.future_secs).saturating_add(1);
        r
    }

    pub fn window(&self) -> TimeWindow {
        self.window
    }

    /// Adopts a new window (e.g. after a configuration reload) and capacity.
    pub fn set_limits(&mut self, window: TimeWindow, capacity: usize) {
        self.window = window;
        self.capacity = capacity;
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn entries(&self) -> impl Iterator<Item = &Seen> {
        self.seen.iter()
    }

    /// Forgets every entry that the window alone now rejects, and raises
    /// the floor to match: should the clock later step back, a forgotten
    /// datagram would be inside the window again, so the floor (not the
    /// window) must keep refusing it.
    pub fn prune(&mut self, now: u64) {
        let oldest_live = now.saturating_sub(self.window.past_secs);
        self.raise_floor(oldest_live);
        let cut = Seen {
            timestamp: oldest_live,
            key_id: KeyId([0; crate::kdf::KEY_ID_LEN]),
            nonce: [0; NONCE_LEN],
        };
        self.seen = self.seen.split_off(&cut);
    }

    /// Window check, replay check and insertion, in that order.
    pub fn check_and_insert(
        &mut self,
        key_id: &KeyId,
        nonce: &[u8; NONCE_LEN],
        timestamp: u64,
        now: u64,
    ) -> Result<(), Reject> {
        self.window.check(timestamp, now)?;
        if timestamp < self.floor {
            return Err(Reject::Replayed);
        }
        let entry = Seen {
            timestamp,
            key_id: *key_id,
            nonce: *nonce,
        };
        if self.seen.len() >= self.capacity {
            // A replay is a replay even when the record is full.
            if self.seen.contains(&entry) {
                return Err(Reject::Replayed);
            }
            self.prune(now);
            if self.seen.len() >= self.capacity {
                return Err(Reject::ReplayRecordFull);
            }
        }
        // One tree walk on the hot path: `insert` reports a duplicate.
        if !self.seen.insert(entry) {
            return Err(Reject::Replayed);
        }
        Ok(())
    }

    /// Re-inserts an entry read back from a persisted log. Entries outside
    /// the window at `now` are dropped instead.
    pub fn restore(&mut self, entry: Seen, now: u64) {
        if self.window.check(entry.timestamp, now).is_ok() || entry.timestamp > now {
            self.seen.insert(entry);
        }
    }

    /// Raises the floor (never lowers it).
    pub fn raise_floor(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> KeyId {
        KeyId([b; 8])
    }

    #[test]
    fn window_edges() {
        let w = TimeWindow::default();
        assert!(w.check(1000, 1000).is_ok());
        assert!(w.check(970, 1000).is_ok());
        assert_eq!(w.check(969, 1000), Err(Reject::TooOld { age_secs: 31 }));
        assert!(w.check(1030, 1000).is_ok());
        assert_eq!(
            w.check(1031, 1000),
            Err(Reject::InFuture { ahead_secs: 31 })
        );
    }

    #[test]
    fn second_insert_is_replay() {
        let mut r = ReplayRecord::new(TimeWindow::default(), 10);
        assert!(r.check_and_insert(&id(1), &[1; 24], 1000, 1000).is_ok());
        assert_eq!(
            r.check_and_insert(&id(1), &[1; 24], 1000, 1001),
            Err(Reject::Replayed)
        );
        assert!(r.check_and_insert(&id(2), &[1; 24], 1000, 1001).is_ok());
    }

    #[test]
    fn prune_forgets_only_dead_entries() {
        let mut r = ReplayRecord::new(TimeWindow::default(), 10);
        r.check_and_insert(&id(1), &[1; 24], 1000, 1000).unwrap();
        r.check_and_insert(&id(1), &[2; 24], 1020, 1020).unwrap();
        r.prune(1031);
        assert_eq!(r.len(), 1);
        // The forgotten one is now refused by the window anyway.
        assert!(matches!(
            r.check_and_insert(&id(1), &[1; 24], 1000, 1031),
            Err(Reject::TooOld { .. })
        ));
    }

    #[test]
    fn full_record_fails_closed() {
        let mut r = ReplayRecord::new(TimeWindow::default(), 2);
        r.check_and_insert(&id(1), &[1; 24], 1000, 1000).unwrap();
        r.check_and_insert(&id(1), &[2; 24], 1000, 1000).unwrap();
        assert_eq!(
            r.check_and_insert(&id(1), &[3; 24], 1000, 1000),
            Err(Reject::ReplayRecordFull)
        );
        // Once the old entries leave the window, there is room again.
        assert!(r.check_and_insert(&id(1), &[3; 24], 1040, 1040).is_ok());
    }

    #[test]
    fn replay_beats_full() {
        // A full record still names a replay as a replay, not as full.
        let mut r = ReplayRecord::new(TimeWindow::default(), 1);
        r.check_and_insert(&id(1), &[1; 24], 1000, 1000).unwrap();
        assert_eq!(
            r.check_and_insert(&id(1), &[1; 24], 1000, 1000),
            Err(Reject::Replayed)
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn clock_stepping_back_after_a_prune_does_not_reopen_a_replay() {
        // The record prunes at 1100 (as a full record does), forgetting the
        // datagram of 1000; then the clock steps back to 1010, where 1000
        // is inside the window again.
        let mut r = ReplayRecord::new(TimeWindow::default(), 10);
        r.check_and_insert(&id(1), &[1; 24], 1000, 1000).unwrap();
        r.prune(1100);
        assert!(r.is_empty());
        assert_eq!(
            r.check_and_insert(&id(1), &[1; 24], 1000, 1010),
            Err(Reject::Replayed)
        );
        // What was never accepted is refused too until the clock is back
        // past the old floor: fail closed, for one window at most.
        assert!(r.check_and_insert(&id(1), &[2; 24], 1070, 1070).is_ok());
    }

    #[test]
    fn after_loss_refuses_everything_possibly_seen() {
        let mut r = ReplayRecord::after_loss(TimeWindow::default(), 10, 1000);
        assert_eq!(
            r.check_and_insert(&id(1), &[1; 24], 1010, 1010),
            Err(Reject::Replayed)
        );
        assert!(r.check_and_insert(&id(1), &[1; 24], 1031, 1031).is_ok());
    }

    #[test]
    fn restore_drops_stale_entries() {
        let mut r = ReplayRecord::new(TimeWindow::default(), 10);
        let live = Seen {
            timestamp: 990,
            key_id: id(1),
            nonce: [1; 24],
        };
        let dead = Seen {
            timestamp: 900,
            key_id: id(1),
            nonce: [2; 24],
        };
        r.restore(live, 1000);
        r.restore(dead, 1000);
        assert_eq!(r.len(), 1);
    }
}
