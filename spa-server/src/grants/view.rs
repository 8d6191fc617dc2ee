//! What `spa-server status` shows of the live grants: for each owner of
//! each (address, grant), when it was opened and how (a datagram, an HMAC
//! knock, a legacy door). The firewall needs none of this, so it lives
//! beside the grant table, not in it: recorded after a successful open,
//! forgotten once the owner no longer holds the grant.

use super::{GrantTable, Owner};
use spa_proto::Grant;
use std::net::IpAddr;

/// How a grant was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Datagram,
    HmacKnock,
    /// A fixed-sequence door, by name (`[[legacy.door]]` or knockd.conf).
    Door(String),
}

impl Via {
    /// The stable name in `status --json` and the text table.
    pub fn code(&self) -> &'static str {
        match self {
            Via::Datagram => "datagram",
            Via::HmacKnock => "hmac_knock",
            Via::Door(_) => "door",
        }
    }
}

/// When and how an owner's grant was first opened (a refresh keeps it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub opened_at: u64,
    pub via: Via,
}

/// One owner's live grant, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantView {
    pub owner: Owner,
    /// The key's name, or the door's (the doors own their grants together,
    /// the door that opened it is named).
    pub owner_name: String,
    pub addr: IpAddr,
    pub grant: Grant,
    pub opened_at: u64,
    /// This owner's end (the firewall rule ends at the latest owner's).
    pub expires_at: u64,
    pub via: Via,
    /// The host behind the gateway a forwarded grant leads to (issue 15).
    pub forward: Option<std::net::SocketAddr>,
}

impl GrantTable {
    /// Records how `owner`'s grants were opened, after a successful open;
    /// an earlier open's time is kept (a refresh is not a new grant).
    /// Origins of grants the owner no longer holds are dropped here, so the
    /// map never outgrows the grant table.
    pub fn note_origin(
        &mut self,
        owner: &Owner,
        addr: IpAddr,
        grants: &[Grant],
        via: Via,
        now: u64,
    ) {
        self.prune_owners(now);
        for g in grants {
            if self.held_until(owner, addr, *g, now).is_none() {
                continue;
            }
            let o = self
                .origins
                .entry((addr, *g, owner.clone()))
                .or_insert(Origin {
                    opened_at: now,
                    via: via.clone(),
                });
            o.via = via.clone();
        }
    }

    /// How many owners' grants run at `now` (what `list` would list),
    /// without a scan (read at every wake-up for the status line).
    pub fn count(&self, now: u64) -> usize {
        self.owner_ends.running(now)
    }

    /// Every owner's live grant at `now`, sorted by address, grant, owner.
    pub fn list(&self, now: u64) -> Vec<GrantView> {
        let mut out = Vec::new();
        for ((addr, grant), e) in &self.live {
            for (owner, &until) in e.owners.iter().filter(|(_, &t)| t > now) {
                let origin = self.origins.get(&(*addr, *grant, owner.clone()));
                let via = origin.map_or(
                    match owner {
                        Owner::Key(_) => Via::Datagram,
                        Owner::Doors => Via::Door(String::new()),
                    },
                    |o| o.via.clone(),
                );
                let owner_name = match (owner, &via) {
                    (Owner::Key(n), _) => n.clone(),
                    (Owner::Doors, Via::Door(d)) if !d.is_empty() => d.clone(),
                    (Owner::Doors, _) => "legacy doors".to_owned(),
                };
                out.push(GrantView {
                    owner: owner.clone(),
                    owner_name,
                    addr: *addr,
                    grant: *grant,
                    opened_at: origin.map_or(now, |o| o.opened_at),
                    expires_at: until,
                    via,
                    forward: e.rule.forward,
                });
            }
        }
        out.sort_by(|a, b| (a.addr, a.grant, &a.owner).cmp(&(b.addr, b.grant, &b.owner)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::FakeFirewall;

    #[test]
    fn origins_follow_opens_and_refreshes_and_are_dropped_with_the_grant() {
        let mut g = GrantTable::new(Box::new(FakeFirewall::new()));
        g.setup().unwrap();
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let ssh = Grant::tcp(22).unwrap();
        let alice = Owner::Key("alice".into());
        g.open(&alice, a, &[ssh], 30, 1000).unwrap();
        g.note_origin(&alice, a, &[ssh], Via::Datagram, 1000);
        g.open(&Owner::Doors, a, &[ssh], 10, 1005).unwrap();
        g.note_origin(&Owner::Doors, a, &[ssh], Via::Door("openSSH".into()), 1005);
        // A refresh by HMAC knock keeps the first open's time.
        g.open(&alice, a, &[ssh], 60, 1010).unwrap();
        g.note_origin(&alice, a, &[ssh], Via::HmacKnock, 1010);
        let l = g.list(1011);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(g.count(1011), 2);
        assert_eq!(
            (l[0].owner_name.as_str(), l[0].opened_at, l[0].expires_at),
            ("alice", 1000, 1070)
        );
        assert_eq!(l[0].via, Via::HmacKnock);
        assert_eq!(
            (l[1].owner_name.as_str(), l[1].via.code()),
            ("openSSH", "door")
        );
        // The door's grant ended: it is no longer listed, and its origin goes
        // at the next note.
        assert_eq!(g.list(1016).len(), 1);
        g.close(&alice, a, &[ssh], 1016).unwrap();
        g.note_origin(&alice, a, &[], Via::Datagram, 1016);
        assert!(g.origins.is_empty() && g.list(1016).is_empty());
    }
}
