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
use std::collections::{BTreeMap, BTreeSet};

/// Default half-width of the acceptance window. 30 s tolerates NTP-synced
/// clocks and slow links, and bounds how long a captured datagram is worth
/// anything. fwknop's default is 120 s; we can afford less because the
/// server never needs to answer and clients send one datagram per use.
pub const DEFAULT_WINDOW_SECS: u64 = 30;
/// Default cap on remembered datagrams, shared out among the keys (see
/// [`share_of`]): at the default window one key alone may make over 1000
/// authenticated requests per second before its share fails closed.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// The smallest share a key gets, however many keys divide the capacity: a
/// client that opens a few ports in a row must not fail for want of room.
pub const MIN_SHARE: usize = 16;

/// Each key's share of a record of `capacity` entries divided among `keys`
/// keys. A key's flood fills only its own share (issue 16, finding 3), so
/// the shares together never exceed the capacity unless [`MIN_SHARE`] lifts
/// them (many keys, small capacity): memory stays bounded by keys × share.
pub fn share_of(capacity: usize, keys: usize) -> usize {
    (capacity / keys.max(1)).max(MIN_SHARE)
}

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

    /// The floor that stands for lost state at `now`: every timestamp the
    /// window could have accepted until now is refused.
    pub fn loss_floor(&self, now: u64) -> u64 {
        now.saturating_add(self.future_secs).saturating_add(1)
    }
}

/// One recorded datagram. Ordered by timestamp first, so expiry is a range
/// split of a key's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seen {
    pub timestamp: u64,
    pub key_id: KeyId,
    pub nonce: [u8; NONCE_LEN],
}

/// The window plus every authenticated datagram taken inside it, whatever
/// its later verdict (a denied datagram must stay refused when replayed).
/// Each key has its own set and its own share of room, so one key holder's
/// flood cannot lock the others out. Serializable so the server can persist
/// it; it holds no key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRecord {
    window: TimeWindow,
    /// Entries one key may hold at once.
    share: usize,
    /// Datagrams with a timestamp below this are refused: raised past every
    /// timestamp the record forgets, and to [`TimeWindow::loss_floor`] when
    /// the record was lost, so nothing seen before can come back.
    floor: u64,
    seen: BTreeMap<KeyId, BTreeSet<Seen>>,
    len: usize,
}

/// The key-id that sorts first: the bound for a timestamp cut in one key's set.
const CUT_ID: KeyId = KeyId([0; crate::kdf::KEY_ID_LEN]);

impl ReplayRecord {
    /// A record where each key may hold up to `share` live entries (see
    /// [`share_of`]).
    pub fn new(window: TimeWindow, share: usize) -> Self {
        ReplayRecord {
            window,
            share,
            floor: 0,
            seen: BTreeMap::new(),
            len: 0,
        }
    }

    /// A record that stands in for one that was lost (missing or corrupt
    /// state file): every timestamp up to `now + future_secs` may have been
    /// accepted before, so all of them are refused. Costs legitimate clients
    /// at most one window of refusals; never reopens a replay.
    pub fn after_loss(window: TimeWindow, share: usize, now: u64) -> Self {
        let mut r = ReplayRecord::new(window, share);
        r.floor = window.loss_floor(now);
        r
    }

    pub fn window(&self) -> TimeWindow {
        self.window
    }

    /// Adopts a new window (e.g. after a configuration reload) and share.
    /// A wider window needs no floor change: everything forgotten under the
    /// old one is below the floor already.
    pub fn set_limits(&mut self, window: TimeWindow, share: usize) {
        self.window = window;
        self.share = share;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live entries of one key.
    pub fn len_of(&self, key_id: &KeyId) -> usize {
        self.seen.get(key_id).map_or(0, BTreeSet::len)
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn entries(&self) -> impl Iterator<Item = &Seen> {
        self.seen.values().flatten()
    }

    /// Forgets every entry that the window alone now rejects, and raises
    /// the floor past the newest one forgotten: should the clock later step
    /// back, a forgotten datagram would be inside the window again, so the
    /// floor (not the window) must keep refusing it. The floor comes only
    /// from timestamps actually forgotten, never from the clock: a start
    /// with the clock far ahead must not refuse the present once the clock
    /// is right again (finding 6).
    pub fn prune(&mut self, now: u64) {
        let oldest_live = now.saturating_sub(self.window.past_secs);
        let keys: Vec<KeyId> = self.seen.keys().copied().collect();
        for k in keys {
            self.prune_key(&k, oldest_live);
        }
    }

    fn prune_key(&mut self, key_id: &KeyId, oldest_live: u64) {
        let Some(set) = self.seen.get_mut(key_id) else {
            return;
        };
        let cut = Seen {
            timestamp: oldest_live,
            key_id: CUT_ID,
            nonce: [0; NONCE_LEN],
        };
        let newest_forgotten = set.range(..cut).next_back().map(|s| s.timestamp);
        let before = set.len();
        let live = set.split_off(&cut);
        *set = live;
        let after = set.len();
        if after == 0 {
            self.seen.remove(key_id);
        }
        self.len -= before - after;
        if let Some(ts) = newest_forgotten {
            self.raise_floor(ts.saturating_add(1));
        }
    }

    /// Window check, replay check and insertion, in that order.
    pub fn check_and_insert(
        &mut self,
        key_id: &KeyId,
        nonce: &[u8; NONCE_LEN],
        timestamp: u64,
        now: u64,
    ) -> Result<(), Reject> {
        self.check_admit_insert(key_id, nonce, timestamp, now, || Ok(()))
    }

    /// Window, floor and replay checks, then the key's share, then `admit`
    /// (the server's per-key rate limit), then insertion. `admit` runs only
    /// for a datagram that would be recorded: a replayed or stale copy must
    /// not spend the key's budget (an observer could then starve the key by
    /// replaying its datagrams).
    pub fn check_admit_insert(
        &mut self,
        key_id: &KeyId,
        nonce: &[u8; NONCE_LEN],
        timestamp: u64,
        now: u64,
        admit: impl FnOnce() -> Result<(), Reject>,
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
        if let Some(set) = self.seen.get(key_id) {
            if set.contains(&entry) {
                return Err(Reject::Replayed);
            }
            if set.len() >= self.share {
                self.prune_key(key_id, now.saturating_sub(self.window.past_secs));
                if self.len_of(key_id) >= self.share {
                    return Err(Reject::ReplayRecordFull);
                }
            }
        }
        admit()?;
        if self.seen.entry(*key_id).or_default().insert(entry) {
            self.len += 1;
        }
        Ok(())
    }

    /// Re-inserts an entry read back from a persisted log. An entry outside
    /// the window at `now` is forgotten instead, through the floor.
    pub fn restore(&mut self, entry: Seen, now: u64) {
        if self.window.check(entry.timestamp, now).is_ok() || entry.timestamp > now {
            if self.seen.entry(entry.key_id).or_default().insert(entry) {
                self.len += 1;
            }
        } else {
            self.raise_floor(entry.timestamp.saturating_add(1));
        }
    }

    /// Raises the floor (never lowers it).
    pub fn raise_floor(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
    }

    /// A floor read back from disk beyond what lost state would need at
    /// `now` (the clock was far ahead when it was written, or the file was
    /// tampered with) is brought down to [`TimeWindow::loss_floor`]: still
    /// failing closed for one window, but not until that far date. Returns
    /// the floor that was capped, for the loud log line the admin needs.
    pub fn cap_floor(&mut self, now: u64) -> Option<u64> {
        let cap = self.window.loss_floor(now);
        if self.floor > cap {
            let was = self.floor;
            self.floor = cap;
            return Some(was);
        }
        None
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
    fn one_keys_flood_fills_only_its_own_share() {
        // Finding 3: bob's datagrams (policy-denied or not, they are all in
        // the record) fill bob's share; alice still gets in, at once.
        let mut r = ReplayRecord::new(TimeWindow::default(), share_of(64, 2));
        assert_eq!(share_of(64, 2), 32);
        for n in 0..32u8 {
            r.check_and_insert(&id(2), &[n; 24], 1000, 1000).unwrap();
        }
        assert_eq!(
            r.check_and_insert(&id(2), &[99; 24], 1000, 1000),
            Err(Reject::ReplayRecordFull)
        );
        assert!(r.check_and_insert(&id(1), &[1; 24], 1000, 1000).is_ok());
        assert_eq!((r.len_of(&id(1)), r.len_of(&id(2)), r.len()), (1, 32, 33));
    }

    #[test]
    fn share_has_a_floor_of_its_own() {
        assert_eq!(share_of(DEFAULT_CAPACITY, 1), DEFAULT_CAPACITY);
        assert_eq!(share_of(DEFAULT_CAPACITY, 0), DEFAULT_CAPACITY);
        assert_eq!(share_of(64, 1000), MIN_SHARE);
    }

    #[test]
    fn the_floor_comes_from_forgotten_timestamps_not_from_the_clock() {
        // Finding 6: a start (prune) with the clock a year ahead and nothing
        // recorded must not refuse the present once the clock is right.
        let year = 365 * 86_400;
        let mut r = ReplayRecord::new(TimeWindow::default(), 10);
        r.prune(1000 + year);
        assert_eq!(r.floor(), 0);
        assert!(r.check_and_insert(&id(1), &[1; 24], 1000, 1000).is_ok());
        // What is forgotten is refused through the floor: one past it.
        r.check_and_insert(&id(1), &[2; 24], 1010, 1010).unwrap();
        r.prune(1000 + year);
        assert_eq!(r.floor(), 1011);
        assert!(r.is_empty());
    }

    #[test]
    fn a_floor_far_ahead_is_capped_to_one_window() {
        let year = 365 * 86_400;
        let w = TimeWindow::default();
        let mut r = ReplayRecord::after_loss(w, 10, 1000 + year);
        assert_eq!(r.cap_floor(1000), Some(1031 + year));
        assert_eq!(r.floor(), w.loss_floor(1000));
        assert_eq!(r.cap_floor(1000), None, "capped once, then in range");
        assert_eq!(
            r.check_and_insert(&id(1), &[1; 24], 1030, 1030),
            Err(Reject::Replayed)
        );
        assert!(r.check_and_insert(&id(1), &[1; 24], 1031, 1031).is_ok());
    }

    #[test]
    fn admit_runs_only_for_a_datagram_that_would_be_recorded() {
        // Finding 16: the rate limit is spent by new datagrams only, so an
        // observer replaying a key's datagram cannot starve the key.
        let mut r = ReplayRecord::new(TimeWindow::default(), 10);
        let mut calls = 0;
        let mut admit = |ok: bool| {
            calls += 1;
            if ok {
                Ok(())
            } else {
                Err(Reject::RateLimited)
            }
        };
        r.check_admit_insert(&id(1), &[1; 24], 1000, 1000, || admit(true))
            .unwrap();
        assert_eq!(
            r.check_admit_insert(&id(1), &[1; 24], 1000, 1000, || admit(true)),
            Err(Reject::Replayed)
        );
        assert!(matches!(
            r.check_admit_insert(&id(1), &[2; 24], 900, 1000, || admit(true)),
            Err(Reject::TooOld { .. })
        ));
        assert_eq!(
            r.check_admit_insert(&id(1), &[3; 24], 1000, 1000, || admit(false)),
            Err(Reject::RateLimited)
        );
        assert_eq!(calls, 2, "the replay and the stale one did not ask");
        assert_eq!(r.len(), 1, "a refused admission is not recorded");
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
        assert_eq!(r.floor(), 901, "forgotten through the floor");
    }
}
