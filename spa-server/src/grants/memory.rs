//! The table's memory: the rules, their owners and the indexes over their
//! ends, kept in step. Nothing here touches the firewall; grants.rs calls
//! these only after a batch succeeded (or to forget what the kernel ended),
//! which is what keeps memory and firewall equal.

use super::{Entry, GrantTable, Key, Owner};
use crate::firewall::Access;
use spa_proto::Grant;
use std::collections::HashMap;
use std::net::IpAddr;

impl GrantTable {
    /// Puts `a` in as the rule of its (address, grant), replacing the old one.
    pub(super) fn set_rule(&mut self, a: Access) {
        let key = (a.addr, a.grant);
        match self.live.get_mut(&key) {
            Some(e) => {
                self.rule_ends.remove(e.rule.expires_at, &key);
                e.rule = a;
            }
            None => {
                self.live.insert(
                    key,
                    Entry {
                        rule: a,
                        owners: HashMap::new(),
                    },
                );
            }
        }
        self.rule_ends.insert(a.expires_at, key);
    }

    /// `owner` holds `key` (which has a rule) until `until`.
    pub(super) fn set_owner(&mut self, key: Key, owner: &Owner, until: u64) {
        let Some(e) = self.live.get_mut(&key) else {
            return;
        };
        if let Some(old) = e.owners.insert(owner.clone(), until) {
            self.unindex_owner(key, owner, old);
        }
        self.owner_ends.insert(until, (key.0, key.1, owner.clone()));
        self.by_owner
            .entry(owner.clone())
            .or_default()
            .insert(until, key);
    }

    pub(super) fn unindex_owner(&mut self, key: Key, owner: &Owner, end: u64) {
        self.owner_ends.remove(end, &(key.0, key.1, owner.clone()));
        if let Some(mine) = self.by_owner.get_mut(owner) {
            mine.remove(end, &key);
            if mine.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    /// `owner` no longer holds `key` (memory only).
    pub(super) fn drop_owner(&mut self, key: Key, owner: &Owner) {
        if let Some(t) = self.live.get_mut(&key).and_then(|e| e.owners.remove(owner)) {
            self.unindex_owner(key, owner, t);
        }
        self.origins.remove(&(key.0, key.1, owner.clone()));
    }

    /// The rule of `key` and its owners are gone (memory only).
    pub(super) fn drop_entry(&mut self, key: Key) {
        let Some(e) = self.live.remove(&key) else {
            return;
        };
        self.rule_ends.remove(e.rule.expires_at, &key);
        for (o, t) in e.owners {
            self.unindex_owner(key, &o, t);
            self.origins.remove(&(key.0, key.1, o));
        }
    }

    pub(super) fn clear(&mut self) {
        self.live.clear();
        self.rule_ends.clear();
        self.owner_ends.clear();
        self.by_owner.clear();
        self.origins.clear();
    }

    /// Forgets the owners whose own grant ended by `now` (the rule may stay
    /// for another owner). Each owner's end is visited once: amortised O(1).
    pub(super) fn prune_owners(&mut self, now: u64) {
        let ended: Vec<(u64, IpAddr, Grant, Owner)> = self
            .owner_ends
            .due(now)
            .map(|(t, (a, g, o))| (t, *a, *g, o.clone()))
            .collect();
        for (t, a, g, o) in ended {
            let held = self.live.get(&(a, g)).and_then(|e| e.owners.get(&o)) == Some(&t);
            if held {
                self.drop_owner((a, g), &o);
            } else {
                self.unindex_owner((a, g), &o, t);
            }
        }
    }
}
