//! The server's one map from wire id to key for v2: the ids of the previous,
//! current and next epoch of every v2 key, so a datagram still costs one
//! hash probe. Pure: the caller passes the time and its keys.
//!
//! Why three epochs: a client stamps the id of its own clock's epoch, and the
//! time window (30 s each way by default) lets its clock be a little behind or
//! ahead; an id two or more epochs away is refused as unknown before any
//! AEAD work (also by [`super::epoch_is_live`], whatever the map holds).
//!
//! Refreshing is lazy: [`IdMap::lookup`] notices a new epoch (one division)
//! and refreshes then; a server with a timer of its own may call
//! [`IdMap::refresh`] from it, so the packet path rarely pays. Moving one epoch
//! on computes one HMAC per key (10,000 keys: milliseconds); anything else
//! (first use, a clock step, a new key set) rebuilds all three epochs.

use super::{epoch_of, KeySetV2};
use crate::kdf::KeyId;
use std::collections::HashMap;

/// Wire id → (index of the key in the caller's list, epoch of the id).
#[derive(Debug, Default)]
pub struct IdMap {
    /// The epoch the map is centred on; `None` until the first refresh.
    centre: Option<u64>,
    map: HashMap<KeyId, (usize, u64)>,
}

impl IdMap {
    pub fn new() -> Self {
        IdMap::default()
    }

    /// Forgets every id, so the next lookup or refresh rebuilds from the
    /// keys it is given (call after the key set changed, e.g. on reload).
    pub fn clear(&mut self) {
        self.centre = None;
        self.map.clear();
    }

    /// Number of ids held (three per v2 key once refreshed).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Brings the map to the epoch of `now`. `v2` gives the v2 key set of
    /// each of `keys`, or `None` for a key that does not speak v2.
    pub fn refresh<T>(&mut self, now: u64, keys: &[T], v2: impl Fn(&T) -> Option<&KeySetV2>) {
        let current = epoch_of(now);
        match self.centre {
            Some(c) if c == current => return,
            Some(c) if c.checked_add(1) == Some(current) => {
                let oldest = current.saturating_sub(1);
                self.map.retain(|_, (_, e)| *e >= oldest);
                self.insert_epoch(current.saturating_add(1), keys, &v2);
            }
            _ => {
                self.map.clear();
                for e in [
                    current.saturating_sub(1),
                    current,
                    current.saturating_add(1),
                ] {
                    self.insert_epoch(e, keys, &v2);
                }
            }
        }
        self.centre = Some(current);
    }

    fn insert_epoch<T>(&mut self, epoch: u64, keys: &[T], v2: &impl Fn(&T) -> Option<&KeySetV2>) {
        for (i, k) in keys.iter().enumerate() {
            if let Some(ks) = v2(k) {
                self.map.insert(ks.wire_id(epoch), (i, epoch));
            }
        }
    }

    /// The key index and epoch of a wire id, after refreshing to `now` if
    /// the epoch moved. One hash probe on the common path.
    pub fn lookup<T>(
        &mut self,
        id: &KeyId,
        now: u64,
        keys: &[T],
        v2: impl Fn(&T) -> Option<&KeySetV2>,
    ) -> Option<(usize, u64)> {
        self.refresh(now, keys, v2);
        self.map.get(id).copied()
    }
}
