//! Replay protection: a time window on the sender's timestamp, and a bounded
//! record of the datagrams accepted inside that window.
//!
//! Why both: the window alone lets an observer replay a datagram for as long
//! as it is fresh; the record alone would have to remember forever. Together
//! the record only needs what is still inside the window, so it forgets
//! everything older and its size is bounded by the accept rate times the
//! window. The server persists it (fsync) before acting on a datagram, so a
//! restart does not reopen the window to replays.
//!
//! Shape: one hash set of every entry (the replay lookup, O(1)) and, per
//! key, a queue of its nonces in timestamp order (the share count and the
//! expiry, O(1) amortized per entry). The timestamps a key can hold live in
//! a window about 61 seconds wide, so its queue is a map from the second to
//! that second's nonces: at most a few dozen buckets, however many entries.
//! Before, one B-tree per key did both jobs in O(log n) (issue 14).

use crate::error::Reject;
use crate::kdf::KeyId;
use crate::wire::NONCE_LEN;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};

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

/// One recorded datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seen {
    pub timestamp: u64,
    pub key_id: KeyId,
    pub nonce: [u8; NONCE_LEN],
}

/// The secret key of the record's hash tables. A key holder chooses its
/// nonces (and timestamps): with a hash known in advance it could pick
/// entries that all land in one bucket and make every lookup in the record
/// a walk. The crate has no randomness of its own, so the caller passes the
/// key in ([`ReplayRecord::set_hash_key`]); a server draws it from the OS
/// at start. It is never persisted by the server and never leaves memory.
pub type HashKey = [u8; 16];

/// SipHash-2-4 keyed with a [`HashKey`]. std's `SipHasher` is the one keyed
/// SipHash in std (`RandomState` draws its own key, which this pure crate
/// may not do); it is deprecated only in favour of `DefaultHasher`, whose
/// key cannot be set. One implementation of the primitive, no new crate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Keyed(u64, u64);

impl Keyed {
    fn new(key: &HashKey) -> Self {
        let (a, b) = key.split_at(8);
        let word = |s: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(s);
            u64::from_le_bytes(w)
        };
        Keyed(word(a), word(b))
    }
}

impl BuildHasher for Keyed {
    #[allow(deprecated)]
    type Hasher = std::hash::SipHasher;

    #[allow(deprecated)]
    fn build_hasher(&self) -> Self::Hasher {
        std::hash::SipHasher::new_with_keys(self.0, self.1)
    }
}

/// A [`Seen`] as the hash set holds it: hashed as its 40 bytes in one
/// write, a third of the hasher's work of the derived `Hash` (which writes
/// each array's length as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry(Seen);

impl Hash for Entry {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let mut b = [0u8; 8 + crate::kdf::KEY_ID_LEN + NONCE_LEN];
        b[..8].copy_from_slice(&self.0.timestamp.to_le_bytes());
        b[8..16].copy_from_slice(&self.0.key_id.0);
        b[16..].copy_from_slice(&self.0.nonce);
        h.write(&b);
    }
}

/// One key's entries in timestamp order: second → the nonces of that
/// second, oldest first. Expiry pops whole seconds from the front.
#[derive(Debug, Clone, Default)]
struct KeyQueue {
    by_second: BTreeMap<u64, Vec<[u8; NONCE_LEN]>>,
    len: usize,
}

/// The window plus every authenticated datagram taken inside it, whatever
/// its later verdict (a denied datagram must stay refused when replayed).
/// Each key has its own queue and its own share of room, so one key
/// holder's flood cannot lock the others out. Serializable (for anyone
/// embedding the crate; the server keeps its own log format) as its
/// limits, floor, hash key and entries; it holds no key material.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "Persisted")]
pub struct ReplayRecord {
    window: TimeWindow,
    /// Entries one key may hold at once.
    share: usize,
    /// Datagrams with a timestamp below this are refused: raised past every
    /// timestamp the record forgets, and to [`TimeWindow::loss_floor`] when
    /// the record was lost, so nothing seen before can come back.
    floor: u64,
    hash_key: HashKey,
    /// Every live entry: the replay lookup.
    seen: HashSet<Entry, Keyed>,
    /// The same entries per key, in timestamp order: the share and expiry.
    keys: HashMap<KeyId, KeyQueue, Keyed>,
}

/// Equal when the limits, the floor and the entries are: the hash key and
/// the order inside a second are how, not what, the record remembers.
impl PartialEq for ReplayRecord {
    fn eq(&self, other: &Self) -> bool {
        self.window == other.window
            && self.share == other.share
            && self.floor == other.floor
            && self.seen == other.seen
    }
}

impl Eq for ReplayRecord {}

/// The serialized shape of a [`ReplayRecord`]: its limits, floor, hash key
/// and entries; the tables are rebuilt from the entries when read back.
/// Written from a borrow (serde's `into` would clone every table first).
#[derive(Serialize)]
struct PersistedRef<'a> {
    window: TimeWindow,
    share: usize,
    floor: u64,
    hash_key: HashKey,
    entries: Entries<'a>,
}

struct Entries<'a>(&'a HashSet<Entry, Keyed>);

impl Serialize for Entries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|e| e.0))
    }
}

impl Serialize for ReplayRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PersistedRef {
            window: self.window,
            share: self.share,
            floor: self.floor,
            hash_key: self.hash_key,
            entries: Entries(&self.seen),
        }
        .serialize(s)
    }
}

/// What [`PersistedRef`] wrote, read back.
#[derive(Deserialize)]
struct Persisted {
    window: TimeWindow,
    share: usize,
    floor: u64,
    hash_key: HashKey,
    entries: Vec<Seen>,
}

impl From<Persisted> for ReplayRecord {
    fn from(p: Persisted) -> Self {
        let mut r = ReplayRecord::new(p.window, p.share);
        r.set_hash_key(p.hash_key);
        r.floor = p.floor;
        for s in p.entries {
            r.insert(s);
        }
        r
    }
}

/// Pops `q`'s seconds older than `oldest_live`, and their entries out of
/// `seen`; the newest timestamp forgotten, for the floor.
fn forget_before(
    q: &mut KeyQueue,
    seen: &mut HashSet<Entry, Keyed>,
    key_id: &KeyId,
    oldest_live: u64,
) -> Option<u64> {
    let mut newest_forgotten = None;
    while let Some(first) = q.by_second.first_entry() {
        if *first.key() >= oldest_live {
            break;
        }
        let (timestamp, nonces) = first.remove_entry();
        q.len -= nonces.len();
        for nonce in nonces {
            seen.remove(&Entry(Seen {
                timestamp,
                key_id: *key_id,
                nonce,
            }));
        }
        newest_forgotten = Some(timestamp);
    }
    newest_forgotten
}

impl ReplayRecord {
    /// A record where each key may hold up to `share` live entries (see
    /// [`share_of`]). Its hash key is all zeros until
    /// [`ReplayRecord::set_hash_key`]: fine for a client or a test, which
    /// record only their own datagrams; a server must set one.
    pub fn new(window: TimeWindow, share: usize) -> Self {
        let hasher = Keyed::default();
        ReplayRecord {
            window,
            share,
            floor: 0,
            hash_key: [0; 16],
            seen: HashSet::with_hasher(hasher),
            keys: HashMap::with_hasher(hasher),
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

    /// Re-keys the hash tables (see [`HashKey`]), keeping every entry.
    /// Costs one pass over the entries: call it once, before the record
    /// fills (a server does at start).
    pub fn set_hash_key(&mut self, key: HashKey) {
        let hasher = Keyed::new(&key);
        self.hash_key = key;
        let mut seen = HashSet::with_capacity_and_hasher(self.seen.len(), hasher);
        seen.extend(self.seen.drain());
        self.seen = seen;
        let mut keys = HashMap::with_capacity_and_hasher(self.keys.len(), hasher);
        keys.extend(self.keys.drain());
        self.keys = keys;
    }

    /// The key of the hash tables: for a test that a server set one.
    pub fn hash_key(&self) -> HashKey {
        self.hash_key
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
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Live entries of one key.
    pub fn len_of(&self, key_id: &KeyId) -> usize {
        self.keys.get(key_id).map_or(0, |q| q.len)
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Every live entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Seen> {
        self.seen.iter().map(|e| &e.0)
    }

    /// Forgets every entry that the window alone now rejects, and raises
    /// the floor past the newest one forgotten: should the clock later step
    /// back, a forgotten datagram would be inside the window again, so the
    /// floor (not the window) must keep refusing it. The floor comes only
    /// from timestamps actually forgotten, never from the clock: a start
    /// with the clock far ahead must not refuse the present once the clock
    /// is right again (finding 6). Walks every key: for a start, not for
    /// each datagram (a full share prunes its own key only).
    pub fn prune(&mut self, now: u64) {
        let oldest_live = now.saturating_sub(self.window.past_secs);
        let keys: Vec<KeyId> = self.keys.keys().copied().collect();
        for k in keys {
            self.prune_key(&k, oldest_live);
        }
    }

    /// Pops the key's seconds older than `oldest_live` off its queue, and
    /// their entries out of the set: O(1) per entry forgotten.
    fn prune_key(&mut self, key_id: &KeyId, oldest_live: u64) {
        let Some(q) = self.keys.get_mut(key_id) else {
            return;
        };
        let newest_forgotten = forget_before(q, &mut self.seen, key_id, oldest_live);
        if q.len == 0 {
            self.keys.remove(key_id);
        }
        if let Some(ts) = newest_forgotten {
            self.raise_floor(ts.saturating_add(1));
        }
    }

    /// Adds an entry to the set and its key's queue; false if it was there.
    fn insert(&mut self, s: Seen) -> bool {
        if !self.seen.insert(Entry(s)) {
            return false;
        }
        let q = self.keys.entry(s.key_id).or_default();
        q.by_second.entry(s.timestamp).or_default().push(s.nonce);
        q.len += 1;
        true
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
        let entry = Entry(Seen {
            timestamp,
            key_id: *key_id,
            nonce: *nonce,
        });
        // One probe of each table on the way in (hashing an entry is most
        // of the cost): the set takes the entry first, and gives it back
        // when the share or `admit` refuses it.
        if !self.seen.insert(entry) {
            return Err(Reject::Replayed);
        }
        let q = self.keys.entry(*key_id).or_default();
        let mut forgotten = None;
        if q.len >= self.share {
            let oldest_live = now.saturating_sub(self.window.past_secs);
            forgotten = forget_before(q, &mut self.seen, key_id, oldest_live);
        }
        let verdict = if q.len >= self.share {
            Err(Reject::ReplayRecordFull)
        } else {
            admit()
        };
        match verdict {
            Ok(()) => {
                q.by_second.entry(timestamp).or_default().push(*nonce);
                q.len += 1;
            }
            Err(_) => {
                if q.len == 0 {
                    self.keys.remove(key_id);
                }
                self.seen.remove(&entry);
            }
        }
        if let Some(ts) = forgotten {
            self.raise_floor(ts.saturating_add(1));
        }
        verdict
    }

    /// Re-inserts an entry read back from a persisted log. An entry outside
    /// the window at `now` is forgotten instead, through the floor.
    pub fn restore(&mut self, entry: Seen, now: u64) {
        if self.window.check(entry.timestamp, now).is_ok() || entry.timestamp > now {
            self.insert(entry);
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
mod tests;
