//! HMAC knocks: a plain port-knock sequence that only a key holder can
//! compute and that is accepted once.
//!
//! The sequence for a key, server and time step is
//! `spa_proto::knock::sequence` (specified in docs/protocol.md). The server
//! accepts the sequence of the current step and of the steps just before and
//! after it (clock skew), from any configured key, and remembers every
//! accepted (key-id, step) until that step leaves the window, so a sequence
//! seen on the wire cannot be used again.
//!
//! Cost per knock is hash lookups only: the expected sequences of every key
//! for the three steps of the window are computed when the step changes
//! (3 HMACs per key per `step_secs`), indexed by their first port.
//!
//! What an HMAC knock opens: a sequence carries no request, so it opens all
//! the grants the key's policy allows, for the server's default duration
//! (`duration_secs: None`), for the source address of the knocks.
//!
//! Per-source progress follows knockd's rule that a knock on a port that is
//! not the next one resets the source (otherwise sweeping the port range a
//! few times would complete any sequence), with two differences that cost an
//! attacker nothing: the resetting knock is itself looked at as a possible
//! first knock, and a repeat of the knock just matched is ignored (a
//! retransmitted SYN must not spoil a sequence).

use super::table::{BoundedTable, TableStats};
use spa_proto::knock::{sequence, MAX_KNOCK_PORTS};
use spa_proto::{Grants, KeyId, KeySet, KnockParams, Proto, ServerId};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// One key the server accepts HMAC knocks from, with what it may open.
#[derive(Debug, Clone)]
pub struct HmacKey {
    pub keys: Arc<KeySet>,
    /// Everything a completed sequence of this key opens.
    pub grants: Grants,
}

/// A completed, first-time HMAC knock sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HmacOpen {
    pub addr: IpAddr,
    pub key_id: KeyId,
    /// The time step whose sequence was knocked.
    pub step: u64,
    pub grants: Grants,
    /// Always None: the server's default duration.
    pub duration_secs: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seq {
    ports: [u16; MAX_KNOCK_PORTS],
    len: u8,
}

impl Seq {
    fn get(&self, i: u8) -> Option<u16> {
        if i < self.len {
            self.ports.get(usize::from(i)).copied()
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Cand {
    key: u32,
    step: u64,
    matched: u8,
}

/// The HMAC knock checker. Pure: `now_ms` is a monotonic millisecond clock
/// (sequence timeout, like the legacy tracker), `unix_secs` the wall clock
/// (it selects the time step, which the client computes from its own wall
/// clock).
#[derive(Debug)]
pub struct HmacKnocks {
    params: KnockParams,
    proto: Proto,
    server: ServerId,
    seq_timeout_ms: u64,
    keys: Vec<HmacKey>,
    center: Option<u64>,
    seqs: HashMap<(u32, u64), Seq>,
    first: HashMap<u16, Vec<(u32, u64)>>,
    used: HashSet<(KeyId, u64)>,
    /// Steps below this are treated as used: accepted sequences that left
    /// the window were forgotten, and a wall clock that steps back would
    /// bring their steps into the window again.
    floor: u64,
    table: BoundedTable<Vec<Cand>>,
    replays: ReplayNotes,
}

/// Knocks of already used sequences, and the rate limit of their log line:
/// whoever saw a sequence on the wire can repeat its ports at will, so the
/// line is written at most once per [`REPLAY_LOG_EVERY_MS`] with a count.
#[derive(Debug, Default)]
struct ReplayNotes {
    total: u64,
    last_log_ms: Option<u64>,
    since_log: u64,
}

/// At most one "already used" log line per this many milliseconds.
const REPLAY_LOG_EVERY_MS: u64 = 1000;

/// Stands for the floor in [`HmacKnocks::used`]; no real key derives it.
const FLOOR_KEY_ID: KeyId = KeyId([0; 8]);

fn advanced(c: &[Cand]) -> bool {
    c.iter().any(|c| c.matched >= 2)
}

impl HmacKnocks {
    /// `params` must pass `KnockParams::validate` (the config loader checks
    /// it and names the field); invalid values are clamped, never a panic.
    pub fn new(
        params: KnockParams,
        proto: Proto,
        server: ServerId,
        seq_timeout_ms: u64,
        max_sources: usize,
        keys: Vec<HmacKey>,
    ) -> Self {
        HmacKnocks {
            params,
            proto,
            server,
            seq_timeout_ms: seq_timeout_ms.max(1),
            keys,
            center: None,
            seqs: HashMap::new(),
            first: HashMap::new(),
            used: HashSet::new(),
            floor: 0,
            table: BoundedTable::new(max_sources),
            replays: ReplayNotes::default(),
        }
    }

    /// Replaces the key set (e.g. on reload). Progress is dropped; the
    /// record of accepted sequences is kept, so a reload cannot reopen one.
    pub fn set_keys(&mut self, keys: Vec<HmacKey>) {
        self.keys = keys;
        // Sequences are indexed by key position: all of them are stale.
        self.seqs.clear();
        self.first.clear();
        self.center = None;
        self.table = BoundedTable::new(self.table.cap());
    }

    /// The (protocol, inclusive port range) the capture must deliver.
    pub fn watched(&self) -> (Proto, u16, u16) {
        (self.proto, self.params.range.0, self.params.range.1)
    }

    pub fn tracked_sources(&self) -> usize {
        self.table.len()
    }

    pub fn stats(&self) -> TableStats {
        self.table.stats
    }

    /// Accepted (key, step) pairs currently remembered.
    pub fn remembered(&self) -> usize {
        self.used.len()
    }

    /// Knocks refused because their sequence was already used: first knocks
    /// of a used sequence (they create no state) and completions that lost
    /// a race with another source.
    pub fn replays_ignored(&self) -> u64 {
        self.replays.total
    }

    /// Counts a knock of a used sequence and logs it, rate-limited.
    fn note_replay(&mut self, src: IpAddr, c: &Cand, now_ms: u64) {
        let key = self.key_id(c.key);
        let r = &mut self.replays;
        r.total = r.total.saturating_add(1);
        r.since_log = r.since_log.saturating_add(1);
        if r.last_log_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < REPLAY_LOG_EVERY_MS)
        {
            return;
        }
        let key = key.map(|k| k.to_string()).unwrap_or_default();
        tracing::warn!(
            %src,
            key = %key,
            step = c.step,
            knocks = r.since_log,
            "HMAC knock sequence replayed: already used, ignored (each sequence opens once)"
        );
        r.last_log_ms = Some(now_ms);
        r.since_log = 0;
    }

    fn window(s: u64) -> impl Iterator<Item = u64> {
        let lo = s.saturating_sub(1);
        let hi = s.saturating_add(1);
        lo..=hi
    }

    /// Recomputes the expected sequences when the time step changes.
    fn refresh(&mut self, unix_secs: u64) {
        let s = self.params.step_at(unix_secs);
        if self.center == Some(s) {
            return;
        }
        let lo = s.saturating_sub(1);
        let hi = s.saturating_add(1);
        self.seqs.retain(|&(_, st), _| (lo..=hi).contains(&st));
        for (ki, k) in self.keys.iter().enumerate() {
            let Ok(ki) = u32::try_from(ki) else { break };
            for st in Self::window(s) {
                self.seqs.entry((ki, st)).or_insert_with(|| {
                    let v = sequence(&k.keys, &self.server, st, &self.params);
                    let mut ports = [0u16; MAX_KNOCK_PORTS];
                    let n = v.len().min(MAX_KNOCK_PORTS);
                    ports[..n].copy_from_slice(&v[..n]);
                    Seq {
                        ports,
                        len: n as u8,
                    }
                });
            }
        }
        self.first.clear();
        for (&(ki, st), seq) in &self.seqs {
            if let Some(p) = seq.get(0) {
                self.first.entry(p).or_default().push((ki, st));
            }
        }
        // Keep every accepted step that is not older than the window, also
        // those ahead of it (the wall clock may have stepped back). What is
        // forgotten stays refused through the floor.
        let floor = &mut self.floor;
        self.used.retain(|&(_, st)| {
            if st < lo {
                *floor = (*floor).max(st.saturating_add(1));
            }
            st >= lo
        });
        self.center = Some(s);
    }

    /// Sequences accepted and still inside the step window, for the daemon
    /// to persist: a restart must not make them usable again. The floor
    /// travels as an entry with an all-zero key-id (as in the replay log)
    /// holding the floor step's start in Unix seconds, so a restart with a
    /// different `step_secs` reads it as a time, not as a foreign step count.
    pub fn used(&self) -> Vec<(KeyId, u64)> {
        let mut v: Vec<(KeyId, u64)> = self.used.iter().copied().collect();
        if self.floor > 0 {
            let secs = self.floor.saturating_mul(self.params.step_secs.max(1));
            v.push((FLOOR_KEY_ID, secs));
        }
        v.sort_unstable();
        v
    }

    /// Restores a sequence accepted before a restart (see [`Self::used`]).
    pub fn mark_used(&mut self, key_id: KeyId, step: u64) {
        if key_id == FLOOR_KEY_ID {
            self.floor = self.floor.max(self.params.step_at(step));
        } else {
            self.used.insert((key_id, step));
        }
    }

    /// Stands in for a lost record of used sequences (issue 16, finding
    /// 10): every step up to the current one + 1 (the newest the window
    /// accepts at `now_unix`) may have been used, so all are refused, as
    /// the replay log's floor refuses one window of timestamps.
    pub fn after_loss(&mut self, now_unix: u64) {
        let s = self.params.step_at(now_unix);
        self.floor = self.floor.max(s.saturating_add(2));
    }

    /// A floor read back beyond what a loss at `now_unix` would set (it was
    /// written while the clock was far ahead, or altered) is brought down to
    /// that: still refusing the current and next step, but not until that
    /// far date (as the replay log's floor is capped, finding 6). Returns
    /// the floor step it had.
    pub fn cap_floor(&mut self, now_unix: u64) -> Option<u64> {
        let cap = self.params.step_at(now_unix).saturating_add(2);
        if self.floor > cap {
            let was = self.floor;
            self.floor = cap;
            return Some(was);
        }
        None
    }

    fn key_id(&self, ki: u32) -> Option<KeyId> {
        self.keys.get(ki as usize).map(|k| k.keys.key_id())
    }

    fn is_used(&self, c: &Cand) -> bool {
        c.step < self.floor
            || self
                .key_id(c.key)
                .is_some_and(|id| self.used.contains(&(id, c.step)))
    }

    fn accept(&mut self, src: IpAddr, c: Cand) -> Option<HmacOpen> {
        let k = self.keys.get(c.key as usize)?;
        let key_id = k.keys.key_id();
        self.used.insert((key_id, c.step));
        tracing::info!(%src, key = %key_id, step = c.step, "HMAC knock sequence accepted");
        Some(HmacOpen {
            addr: src,
            key_id,
            step: c.step,
            grants: k.grants,
            duration_secs: None,
        })
    }

    /// Feeds one captured knock. Knocks of the wrong protocol or outside the
    /// port range are not HMAC knocks and change nothing.
    pub fn observe(
        &mut self,
        src: IpAddr,
        proto: Proto,
        dport: u16,
        now_ms: u64,
        unix_secs: u64,
    ) -> Option<HmacOpen> {
        if proto != self.proto || dport < self.params.range.0 || dport > self.params.range.1 {
            return None;
        }
        self.refresh(unix_secs);
        self.table.expire(now_ms, self.seq_timeout_ms);
        let mut progress = None;
        if let Some(slot) = self.table.get_mut(&src) {
            if now_ms.saturating_sub(slot.started_ms) < self.seq_timeout_ms {
                progress = Some(std::mem::take(&mut slot.value));
            }
        }
        if let Some(cands) = progress {
            let mut next = Vec::with_capacity(cands.len());
            let mut replayed = None;
            for c in cands {
                let Some(seq) = self.seqs.get(&(c.key, c.step)) else {
                    continue; // its step left the window
                };
                if seq.get(c.matched) == Some(dport) {
                    let c = Cand {
                        matched: c.matched.saturating_add(1),
                        ..c
                    };
                    if c.matched >= seq.len {
                        if self.is_used(&c) {
                            replayed = Some(c);
                            continue;
                        }
                        self.table.remove(&src);
                        return self.accept(src, c);
                    }
                    next.push(c);
                } else if c.matched > 0 && seq.get(c.matched - 1) == Some(dport) {
                    next.push(c); // a repeat of the knock just matched
                }
            }
            if let Some(c) = replayed {
                self.note_replay(src, &c, now_ms);
            }
            if !next.is_empty() {
                if let Some(slot) = self.table.get_mut(&src) {
                    slot.value = next;
                }
                return None;
            }
            self.table.remove(&src);
        }
        // A possible first knock.
        let mut cands = Vec::new();
        let mut used_first = None;
        for &(key, step) in self.first.get(&dport).map(Vec::as_slice).unwrap_or(&[]) {
            let c = Cand {
                key,
                step,
                matched: 1,
            };
            if self.is_used(&c) {
                used_first = Some(c);
                continue;
            }
            let len = self.seqs.get(&(key, step)).map_or(0, |s| s.len);
            if len <= 1 {
                return self.accept(src, c);
            }
            cands.push(c);
        }
        if let Some(c) = used_first {
            self.note_replay(src, &c, now_ms);
        }
        if !cands.is_empty() {
            self.table
                .insert(src, now_ms, cands, |c: &Vec<Cand>| advanced(c));
        }
        None
    }
}

#[cfg(test)]
mod tests;
