//! A fixed-capacity table of per-source knock progress.
//!
//! Why it exists: a knock daemon must keep state for sources that have sent
//! some but not all knocks, and the first knock of a legacy sequence is public
//! knowledge, so anyone can create state with one spoofed packet. knockd keeps
//! an unbounded list and scans it on every packet; under a spoofed flood it
//! grows and slows down. This table never holds more than `cap` sources, and
//! when it is full it evicts the entry whose first knock is the oldest — with
//! one "second chance" for an entry that has already advanced past its first
//! knock. The argument (docs/legacy.md): a flood of spoofed first knocks at
//! rate R evicts an entry only after `cap` newer first knocks, so a real
//! knocker that needs T seconds between its first and last knock survives as
//! long as `cap > R * T` (twice that once it is past its first knock), and
//! memory is `cap` entries whatever the flood.
//!
//! Time is a caller-supplied monotonic millisecond counter; nothing here reads
//! a clock.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// One source's progress and the bookkeeping the table needs.
#[derive(Debug)]
pub(crate) struct Slot<V> {
    /// Identifies this slot's current position in the FIFO, so stale FIFO
    /// items (the entry was removed or moved) are recognised in O(1).
    gen: u64,
    /// Monotonic ms of the source's first knock.
    pub started_ms: u64,
    /// Set once the entry has been moved to the back of the FIFO instead of
    /// being evicted; an entry gets this at most once, so eviction always
    /// terminates.
    second_chance_used: bool,
    pub value: V,
}

/// Counters for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Entries evicted because the table was full.
    pub evicted: u64,
    /// Entries dropped because their sequence timed out.
    pub expired: u64,
    /// Largest number of live entries seen.
    pub high_water: usize,
}

#[derive(Debug)]
pub(crate) struct BoundedTable<V> {
    // std's RandomState (SipHash with a per-process key): spoofed sources
    // cannot be chosen to collide in the hash table.
    map: HashMap<IpAddr, Slot<V>>,
    order: VecDeque<(IpAddr, u64)>,
    cap: usize,
    next_gen: u64,
    pub stats: TableStats,
}

impl<V> BoundedTable<V> {
    /// `cap` is clamped to at least 1.
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        BoundedTable {
            // Do not pre-allocate the whole capacity: most servers see a
            // handful of knockers; the map grows to `cap` only under load.
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
            next_gen: 0,
            stats: TableStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// FIFO length, for the memory bound test (it stays below 2*cap + 2).
    #[cfg(test)]
    pub fn order_len(&self) -> usize {
        self.order.len()
    }

    pub fn get_mut(&mut self, src: &IpAddr) -> Option<&mut Slot<V>> {
        self.map.get_mut(src)
    }

    pub fn remove(&mut self, src: &IpAddr) -> Option<V> {
        // The FIFO item goes stale and is skipped later; `compact` bounds
        // how many stale items can pile up.
        let v = self.map.remove(src).map(|s| s.value);
        self.compact_if_needed();
        v
    }

    /// Drops entries from the front of the FIFO whose first knock is at
    /// least `ttl_ms` old. Entries that got a second chance sit further back
    /// with an older start; callers also check age on access, so they never
    /// outlive their timeout as far as matching is concerned.
    pub fn expire(&mut self, now_ms: u64, ttl_ms: u64) {
        while let Some(&(src, gen)) = self.order.front() {
            match self.map.get(&src) {
                Some(slot) if slot.gen == gen => {
                    if now_ms.saturating_sub(slot.started_ms) >= ttl_ms {
                        self.order.pop_front();
                        self.map.remove(&src);
                        self.stats.expired += 1;
                    } else {
                        break;
                    }
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Inserts (or replaces) the entry for `src`. When the table is full,
    /// evicts the entry with the oldest first knock, except that an entry
    /// for which `advanced` is true is moved to the back once instead.
    pub fn insert(
        &mut self,
        src: IpAddr,
        started_ms: u64,
        value: V,
        advanced: impl Fn(&V) -> bool,
    ) {
        if !self.map.contains_key(&src) {
            while self.map.len() >= self.cap {
                if !self.evict_one(&advanced) {
                    break;
                }
            }
        }
        let gen = self.bump_gen();
        self.order.push_back((src, gen));
        match self.map.entry(src) {
            Entry::Occupied(mut o) => {
                *o.get_mut() = Slot {
                    gen,
                    started_ms,
                    second_chance_used: false,
                    value,
                };
            }
            Entry::Vacant(v) => {
                v.insert(Slot {
                    gen,
                    started_ms,
                    second_chance_used: false,
                    value,
                });
            }
        }
        self.stats.high_water = self.stats.high_water.max(self.map.len());
        self.compact_if_needed();
    }

    fn bump_gen(&mut self) -> u64 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }

    /// Returns false only if the FIFO is empty (cannot happen while the map
    /// is non-empty, but the caller must not loop forever on a bug).
    fn evict_one(&mut self, advanced: &impl Fn(&V) -> bool) -> bool {
        // Each live entry is moved back at most once, so this loop runs at
        // most len(order) + len(map) times.
        while let Some((src, gen)) = self.order.pop_front() {
            let new_gen = self.next_gen.wrapping_add(1);
            let Some(slot) = self.map.get_mut(&src) else {
                continue;
            };
            if slot.gen != gen {
                continue;
            }
            if !slot.second_chance_used && advanced(&slot.value) {
                slot.second_chance_used = true;
                slot.gen = new_gen;
                self.next_gen = new_gen;
                self.order.push_back((src, new_gen));
                continue;
            }
            self.map.remove(&src);
            self.stats.evicted += 1;
            return true;
        }
        false
    }

    /// Keeps the FIFO at most about twice the map: stale items are dropped
    /// in one pass when they outnumber live ones, amortised O(1) per call.
    fn compact_if_needed(&mut self) {
        if self.order.len() > 2 * self.cap + 1 {
            let map = &self.map;
            self.order
                .retain(|(src, gen)| map.get(src).is_some_and(|s| s.gen == *gen));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn never_exceeds_cap_and_evicts_oldest() {
        let mut t = BoundedTable::new(3);
        for i in 0..10u32 {
            t.insert(ip(i), u64::from(i), 0u8, |_| false);
            assert!(t.len() <= 3);
        }
        assert!(t.get_mut(&ip(9)).is_some());
        assert!(t.get_mut(&ip(7)).is_some());
        assert!(t.get_mut(&ip(6)).is_none());
        assert_eq!(t.stats.evicted, 7);
    }

    #[test]
    fn advanced_entries_get_one_second_chance() {
        let mut t = BoundedTable::new(2);
        t.insert(ip(1), 0, 1u8, |v| *v > 0);
        t.insert(ip(2), 1, 0u8, |v| *v > 0);
        // Full: ip(1) is oldest but advanced, so ip(2) goes.
        t.insert(ip(3), 2, 0u8, |v| *v > 0);
        assert!(t.get_mut(&ip(1)).is_some());
        assert!(t.get_mut(&ip(2)).is_none());
        // ip(1) has used its chance: now it is evicted before ip(3).
        t.insert(ip(4), 3, 0u8, |v| *v > 0);
        t.insert(ip(5), 4, 0u8, |v| *v > 0);
        assert!(t.get_mut(&ip(1)).is_none());
        assert!(t.len() <= 2);
    }

    #[test]
    fn expire_drops_old_fronts_and_stale_items() {
        let mut t = BoundedTable::new(10);
        t.insert(ip(1), 0, (), |_| false);
        t.insert(ip(2), 500, (), |_| false);
        t.remove(&ip(2));
        t.insert(ip(3), 900, (), |_| false);
        t.expire(1000, 1000);
        assert!(t.get_mut(&ip(1)).is_none());
        assert!(t.get_mut(&ip(3)).is_some());
        assert_eq!(t.stats.expired, 1);
        assert_eq!(t.order_len(), 1);
    }

    #[test]
    fn fifo_stays_bounded_under_insert_remove_churn() {
        let mut t = BoundedTable::new(4);
        for i in 0..10_000u32 {
            t.insert(ip(i % 7), u64::from(i), (), |_| false);
            if i % 2 == 0 {
                t.remove(&ip(i % 7));
            }
            assert!(t.len() <= 4);
            assert!(t.order_len() <= 2 * 4 + 2, "fifo {}", t.order_len());
        }
    }

    #[test]
    fn reinserting_same_source_does_not_evict_others() {
        let mut t = BoundedTable::new(2);
        t.insert(ip(1), 0, (), |_| false);
        t.insert(ip(2), 0, (), |_| false);
        t.insert(ip(2), 5, (), |_| false);
        assert_eq!(t.len(), 2);
        assert!(t.get_mut(&ip(1)).is_some());
        assert_eq!(t.stats.evicted, 0);
    }
}
