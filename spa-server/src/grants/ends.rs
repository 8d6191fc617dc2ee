//! Items by the second they end, earliest first (issue 14): the next end,
//! what is due and how many have not ended yet, each without a scan of the
//! whole grant table, so an open, a close, a wake-up's deadline or a status
//! line costs the same with 10,000 live grants as with one.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;

#[derive(Debug)]
pub(super) struct Ends<K> {
    by_end: BTreeMap<u64, HashSet<K>>,
    len: usize,
}

impl<K> Default for Ends<K> {
    fn default() -> Self {
        Ends {
            by_end: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone> Ends<K> {
    pub fn insert(&mut self, end: u64, k: K) {
        if self.by_end.entry(end).or_default().insert(k) {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, end: u64, k: &K) {
        let Some(set) = self.by_end.get_mut(&end) else {
            return;
        };
        if set.remove(k) {
            self.len -= 1;
        }
        if set.is_empty() {
            self.by_end.remove(&end);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The earliest end.
    pub fn first(&self) -> Option<u64> {
        self.by_end.keys().next().copied()
    }

    /// The latest end no later than `t`.
    pub fn last_until(&self, t: u64) -> Option<u64> {
        self.by_end.range(..=t).next_back().map(|(e, _)| *e)
    }

    /// Every item ending at or before `now`, with its end.
    pub fn due(&self, now: u64) -> impl Iterator<Item = (u64, &K)> {
        self.by_end
            .range(..=now)
            .flat_map(|(e, set)| set.iter().map(move |k| (*e, k)))
    }

    /// How many end at or before `now` (the ended ones not yet removed:
    /// few, as expiry removes them).
    pub fn count_due(&self, now: u64) -> usize {
        self.by_end.range(..=now).map(|(_, s)| s.len()).sum()
    }

    /// How many have not ended at `now`.
    pub fn running(&self, now: u64) -> usize {
        self.len - self.count_due(now)
    }

    pub fn clear(&mut self) {
        self.by_end.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_counted_and_due() {
        let mut e: Ends<u32> = Ends::default();
        e.insert(20, 1);
        e.insert(10, 2);
        e.insert(10, 3);
        e.insert(10, 3);
        assert_eq!((e.running(0), e.first()), (3, Some(10)));
        assert_eq!(e.running(9), 3);
        assert_eq!(e.running(10), 1);
        assert_eq!(e.last_until(15), Some(10));
        assert_eq!(e.last_until(25), Some(20));
        let mut due: Vec<(u64, u32)> = e.due(10).map(|(t, k)| (t, *k)).collect();
        due.sort_unstable();
        assert_eq!(due, vec![(10, 2), (10, 3)]);
        e.remove(10, &2);
        e.remove(10, &3);
        e.remove(10, &3);
        assert_eq!((e.running(0), e.first()), (1, Some(20)));
        e.clear();
        assert!(e.is_empty() && e.first().is_none());
    }
}
