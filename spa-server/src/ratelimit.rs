//! A token bucket per key, asked after the AEAD open and before the replay
//! record takes the datagram (issue 16, finding 16): every new datagram a
//! key holder sends costs the daemon an fdatasync and a firewall batch, so
//! one key may not take all of its time. Pure: the time is passed in.

use spa_proto::KeyId;
use std::collections::HashMap;

/// Default sustained rate: one request a second. A person opens a port or
/// three per login; a script that needs more says so in its `[[key]]`.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 60;
/// Default burst: a client opening several ports in a row, or retrying
/// through packet loss, is never slowed.
pub const DEFAULT_BURST: u32 = 10;
/// Highest values the configuration accepts: beyond them the limit would
/// not limit anything an fdatasync-bound daemon can do.
pub const MAX_RATE_PER_MINUTE: u32 = 60_000;
pub const MAX_BURST: u32 = 10_000;

/// Tokens are counted in 1/60000ths: a second at `per_minute` then adds
/// exactly `per_minute * 1000` of them, so no fraction is ever lost to
/// rounding, whatever the rate and however often the bucket is asked.
const UNIT: u64 = 60_000;

/// One key's limit, from its `[[key]] rate_per_minute` and `rate_burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            per_minute: DEFAULT_RATE_PER_MINUTE,
            burst: DEFAULT_BURST,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u64,
    /// Unix seconds of the last refill.
    at: u64,
}

/// The buckets of every key that sent something; a key's bucket starts full.
#[derive(Debug, Default)]
pub struct Buckets {
    map: HashMap<KeyId, Bucket>,
}

impl Buckets {
    /// Takes one token from `key`'s bucket at Unix time `now`; false when it
    /// is empty. A clock that steps back refills nothing and empties nothing.
    pub fn take(&mut self, key: &KeyId, rate: Rate, now: u64) -> bool {
        let cap = u64::from(rate.burst).saturating_mul(UNIT);
        let b = self.map.entry(*key).or_insert(Bucket {
            units: cap,
            at: now,
        });
        let elapsed = now.saturating_sub(b.at);
        let refill = elapsed
            .saturating_mul(u64::from(rate.per_minute))
            .saturating_mul(UNIT / 60);
        b.units = b.units.saturating_add(refill).min(cap);
        b.at = b.at.max(now);
        if b.units >= UNIT {
            b.units -= UNIT;
            true
        } else {
            false
        }
    }

    /// Drops the buckets of keys no longer configured (after a reload).
    pub fn retain(&mut self, mut keep: impl FnMut(&KeyId) -> bool) {
        self.map.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: KeyId = KeyId([1; 8]);
    const L: KeyId = KeyId([2; 8]);

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let rate = Rate {
            per_minute: 60,
            burst: 3,
        };
        let mut b = Buckets::default();
        let t = 1_000_000;
        assert!((0..3).all(|_| b.take(&K, rate, t)), "the burst");
        assert!(!b.take(&K, rate, t), "then empty");
        assert!(!b.take(&K, rate, t));
        assert!(b.take(&L, rate, t), "another key has its own bucket");
        assert!(b.take(&K, rate, t + 1), "one token a second");
        assert!(!b.take(&K, rate, t + 1));
        assert!(b.take(&K, rate, t + 100) && b.take(&K, rate, t + 100));
        assert!(b.take(&K, rate, t + 100));
        assert!(!b.take(&K, rate, t + 100), "refill stops at the burst");
    }

    #[test]
    fn slow_rates_refill_in_fractions() {
        let rate = Rate {
            per_minute: 2,
            burst: 1,
        };
        let mut b = Buckets::default();
        assert!(b.take(&K, rate, 100));
        assert!(!b.take(&K, rate, 129), "29 s: not yet one token");
        assert!(b.take(&K, rate, 130), "30 s: one token");
    }

    #[test]
    fn a_clock_stepping_back_neither_refills_nor_panics() {
        let rate = Rate {
            per_minute: 60,
            burst: 1,
        };
        let mut b = Buckets::default();
        assert!(b.take(&K, rate, 1000));
        assert!(!b.take(&K, rate, 10));
        assert!(!b.take(&K, rate, 1000));
        assert!(b.take(&K, rate, 1001));
        let max = Rate {
            per_minute: u32::MAX,
            burst: u32::MAX,
        };
        assert!(b.take(&K, max, u64::MAX));
    }
}
