//! Revocation on reload (issue 10, item 3). A reload that removes a key,
//! replaces its key file, narrows its `allow`, lowers its `max_duration` or
//! disables the doors ends (or shortens) at once the live grants that no
//! longer fit, in one firewall batch; the other grants stay untouched. Each
//! grant remembers its owner (the key or the doors), which is what makes a
//! revocation precise: a key's removal never touches another key's grant of
//! the same (address, port).

use super::{GrantTable, Owner};
use crate::config::Config;
use crate::firewall::{Access, FwError};
use crate::legacy::DoorAction;
use spa_proto::Grant;
use std::collections::HashMap;
use std::net::IpAddr;

/// One rule's new owners and end (None: the rule goes), applied to memory
/// once the batch succeeded.
type Planned = ((IpAddr, Grant), HashMap<Owner, u64>, Option<u64>);

/// What the new configuration says of one owner's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    Keep,
    /// End it now, and why (for the log line).
    Remove(String),
    /// Shorten it to end at this Unix second, and why.
    Until(u64, String),
}

/// One grant revoked or shortened, for its log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub owner: Owner,
    pub addr: IpAddr,
    pub grant: Grant,
    /// None: ended; Some(t): now ends at t.
    pub until: Option<u64>,
    pub why: String,
}

/// The reload's verdict on `owner`'s grant of `grant` running until
/// `until`, under the new configuration (`old` tells a replaced key file).
pub fn fit(old: &Config, new: &Config, owner: &Owner, grant: Grant, until: u64, now: u64) -> Fit {
    match owner {
        Owner::Key(name) => {
            let Some(k) = new.keys.iter().find(|k| &k.name == name) else {
                return Fit::Remove(format!("key {name} is no longer configured"));
            };
            let was = old.keys.iter().find(|o| &o.name == name);
            if was.is_some_and(|o| o.key_id != k.key_id) {
                return Fit::Remove(format!("key {name}'s key file changed"));
            }
            if !k.allow.contains(&grant) {
                return Fit::Remove(format!("key {name} may no longer open {grant} (allow)"));
            }
            // A forward whose target changed (or that became local, or the
            // reverse) is not the path the key now opens (issue 15).
            let (was_to, now_to) = (
                crate::policy::forwards(&old.keys).get(&grant).copied(),
                crate::policy::forwards(&new.keys).get(&grant).copied(),
            );
            if was_to != now_to {
                return Fit::Remove(format!(
                    "{grant} now {} (forward)",
                    now_to.map_or("opens on the gateway".to_owned(), |t| format!(
                        "forwards to {t}"
                    ))
                ));
            }
            // A key whose `expires` moved earlier (policy.rs): its grants
            // end by the new instant, as new ones would.
            if let Some(at) = k.rules.expires {
                if at <= now {
                    return Fit::Remove(format!(
                        "key {name} expired at {} (expires)",
                        crate::policy::utc_text(at)
                    ));
                }
                if until > at {
                    return Fit::Until(
                        at,
                        format!("key {name} now expires at {}", crate::policy::utc_text(at)),
                    );
                }
            }
            let cap = now.saturating_add(u64::from(k.max_duration));
            if until > cap {
                return Fit::Until(
                    cap,
                    format!("key {name}'s max_duration is now {} s", k.max_duration),
                );
            }
            Fit::Keep
        }
        Owner::Doors => {
            let opens = new.doors.iter().any(|d| match d.action {
                DoorAction::Open { grant: g, .. } => g == grant,
                DoorAction::Close { .. } => false,
            });
            if opens {
                Fit::Keep
            } else {
                Fit::Remove(format!("no enabled door opens {grant}"))
            }
        }
    }
}

impl GrantTable {
    /// Applies `fit` to every owner of every live grant: one batch for all
    /// that changes, memory updated only after it succeeded.
    pub fn revoke(
        &mut self,
        now: u64,
        fit: impl Fn(&Owner, Grant, u64) -> Fit,
    ) -> Result<Vec<Revoked>, FwError> {
        self.revoke_at(now, |o, _, g, t| fit(o, g, t))
    }

    /// [`GrantTable::revoke`] with the grant's address given to `fit` too
    /// (`spa-server revoke --address`).
    pub fn revoke_at(
        &mut self,
        now: u64,
        fit: impl Fn(&Owner, IpAddr, Grant, u64) -> Fit,
    ) -> Result<Vec<Revoked>, FwError> {
        let (mut add, mut remove, mut revoked) = (Vec::new(), Vec::new(), Vec::new());
        let mut plan: Vec<Planned> = Vec::new();
        for (key, e) in &self.live {
            let mut owners = e.owners.clone();
            let mut changed = false;
            for (o, &t) in e.owners.iter().filter(|(_, &t)| t > now) {
                let (until, why) = match fit(o, key.0, key.1, t) {
                    Fit::Keep => continue,
                    Fit::Until(u, _) if u >= t => continue,
                    Fit::Until(u, why) => {
                        owners.insert(o.clone(), u);
                        (Some(u), why)
                    }
                    Fit::Remove(why) => {
                        owners.remove(o);
                        (None, why)
                    }
                };
                changed = true;
                revoked.push(Revoked {
                    owner: o.clone(),
                    addr: key.0,
                    grant: key.1,
                    until,
                    why,
                });
            }
            if !changed {
                continue;
            }
            let until = owners.values().copied().filter(|&t| t > now).max();
            match until {
                None => remove.push(e.rule),
                Some(u) if u != e.rule.expires_at => {
                    remove.push(e.rule);
                    add.push(Access {
                        expires_at: u,
                        ..e.rule
                    });
                }
                Some(_) => {}
            }
            plan.push((*key, owners, until));
        }
        if !add.is_empty() || !remove.is_empty() {
            self.apply(&add, &remove, now)?;
        }
        for (key, owners, until) in plan {
            match until {
                None => self.drop_entry(key),
                Some(u) => {
                    let old: Vec<Owner> = self
                        .live
                        .get(&key)
                        .map(|e| e.owners.keys().cloned().collect())
                        .unwrap_or_default();
                    for o in old.iter().filter(|o| !owners.contains_key(o)) {
                        self.drop_owner(key, o);
                    }
                    for (o, t) in owners {
                        self.set_owner(key, &o, t);
                    }
                    if let Some(rule) = self.live.get(&key).map(|e| e.rule) {
                        self.set_rule(Access {
                            expires_at: u,
                            ..rule
                        });
                    }
                }
            }
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::FakeFirewall;
    use spa_proto::Proto;

    #[test]
    fn revokes_only_what_no_longer_fits() {
        let fake = FakeFirewall::new();
        let mut g = GrantTable::new(Box::new(fake.clone()));
        g.setup().unwrap();
        let a: IpAddr = "198.18.1.2".parse().unwrap();
        let ssh = Grant::new(Proto::Tcp, 22).unwrap();
        let (alice, bob) = (Owner::Key("alice".into()), Owner::Key("bob".into()));
        g.open(&alice, a, &[ssh], 300, 1000).unwrap();
        g.open(&bob, a, &[ssh], 100, 1000).unwrap();
        let b: IpAddr = "198.18.1.3".parse().unwrap();
        g.open(&bob, b, &[ssh], 100, 1000).unwrap();
        // alice removed: the shared rule falls back to bob's end.
        let out = g
            .revoke(1010, |o, _, _| match o {
                Owner::Key(n) if n == "alice" => Fit::Remove("gone".into()),
                _ => Fit::Keep,
            })
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].owner, alice);
        let live = fake.live();
        assert_eq!(live.len(), 2, "{live:?}");
        assert!(live.iter().all(|r| r.expires_at == 1100), "{live:?}");
        // bob capped to 1050 ends both at 1050.
        let out = g
            .revoke(1010, |_, _, _| Fit::Until(1050, "cap".into()))
            .unwrap();
        assert_eq!(out.len(), 2);
        assert!(fake.live().iter().all(|r| r.expires_at == 1050));
        // Nothing to do: no batch.
        let n = fake.apply_count();
        assert!(g.revoke(1010, |_, _, _| Fit::Keep).unwrap().is_empty());
        assert_eq!(fake.apply_count(), n);
    }

    /// Issue 15: a reload that moves a key's `expires` earlier ends its
    /// grants by the new instant, or now if it has passed.
    #[test]
    fn an_earlier_expiry_shortens_or_ends_the_keys_grants() {
        let k = std::sync::Arc::new(spa_proto::MasterKey::from_bytes([7; 32]).derive());
        let ssh = Grant::new(Proto::Tcp, 22).unwrap();
        let key = |expires| crate::config::KeyPolicy {
            name: "carol".into(),
            key_id: k.key_id(),
            keys: k.clone(),
            allow: vec![ssh],
            max_duration: 300,
            allow_other_address: false,
            require_explicit_address: false,
            max_grants: 16,
            rate: crate::ratelimit::Rate::default(),
            rules: crate::policy::KeyRules {
                from: Vec::new(),
                expires,
                forward: Vec::new(),
            },
            file: "/k".into(),
        };
        let old = Config::for_tests(vec![key(None)], 30);
        let carol = Owner::Key("carol".into());
        let fit_with = |expires| {
            let new = Config::for_tests(vec![key(expires)], 30);
            fit(&old, &new, &carol, ssh, 1200, 1000)
        };
        assert_eq!(fit_with(None), Fit::Keep);
        assert_eq!(fit_with(Some(1300)), Fit::Keep);
        assert!(matches!(fit_with(Some(1100)), Fit::Until(1100, _)));
        assert!(matches!(fit_with(Some(1000)), Fit::Remove(w) if w.contains("expired")));
        // A changed forward target ends the grant.
        let mut moved = Config::for_tests(vec![key(None)], 30);
        moved.keys[0].rules.forward = vec![(ssh, "10.20.0.5:22".parse().unwrap())];
        assert!(matches!(
            fit(&old, &moved, &carol, ssh, 1200, 1000),
            Fit::Remove(w) if w.contains("forwards to 10.20.0.5:22")
        ));
        assert_eq!(fit(&moved, &moved, &carol, ssh, 1200, 1000), Fit::Keep);
    }
}
