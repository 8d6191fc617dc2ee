use super::*;
use crate::firewall::FakeFirewall;

fn key(n: &str) -> Owner {
    Owner::Key(n.into())
}

fn setup() -> (GrantTable, FakeFirewall, IpAddr, Grant) {
    let fw = FakeFirewall::new();
    let mut g = GrantTable::new(Box::new(fw.clone()));
    g.setup().unwrap();
    (
        g,
        fw,
        "198.18.0.2".parse().unwrap(),
        Grant::tcp(22).unwrap(),
    )
}

#[test]
fn open_refresh_close_keep_memory_and_firewall_equal() {
    let (mut g, fw, a, ssh) = setup();
    let alice = key("alice");
    let c = g.open(&alice, a, &[ssh], 30, 1000).unwrap();
    assert_eq!((c.added, c.refreshed), (1, 0));
    let c = g.open(&alice, a, &[ssh, ssh], 30, 1010).unwrap();
    assert_eq!((c.added, c.refreshed), (0, 1));
    assert_eq!(fw.live().len(), 1, "a refresh never duplicates");
    assert_eq!(fw.live()[0].expires_at, 1040);
    assert_eq!(g.next_expiry(), Some(1040));
    // An owner may shorten its own grant.
    g.open(&alice, a, &[ssh], 5, 1010).unwrap();
    assert_eq!(fw.live()[0].expires_at, 1015);
    assert_eq!(g.close(&alice, a, &[ssh], 1011).unwrap().removed, 1);
    assert!(fw.live().is_empty() && g.is_empty());
    // Closing what is not open is a no-op, not a firewall call.
    let calls = fw.apply_count();
    assert_eq!(g.close(&alice, a, &[ssh], 1011).unwrap(), Change::default());
    assert_eq!(fw.apply_count(), calls);
}

/// Finding 2: bob's close or 1 s open for alice's (address, port) never
/// ends or shortens alice's grant; the one rule lasts until the last
/// owner's grant ends.
#[test]
fn another_owner_can_neither_close_nor_shorten_a_grant() {
    let (mut g, fw, a, ssh) = setup();
    let (alice, bob) = (key("alice"), key("bob"));
    g.open(&alice, a, &[ssh], 300, 1000).unwrap();
    // Bob closes alice's address: he holds nothing there, nothing changes.
    let calls = fw.apply_count();
    assert_eq!(g.close(&bob, a, &[ssh], 1001).unwrap().removed, 0);
    assert_eq!(fw.apply_count(), calls, "no firewall call");
    // Bob opens it for 1 s: alice's 300 s stand.
    let c = g.open(&bob, a, &[ssh], 1, 1002).unwrap();
    assert_eq!((c.added, c.refreshed), (0, 1));
    assert_eq!(fw.live().len(), 1);
    assert_eq!(fw.live()[0].expires_at, 1300, "not shortened to 1003");
    // Bob closes his own: alice's rule stays as it was.
    assert_eq!(g.close(&bob, a, &[ssh], 1002).unwrap().removed, 1);
    assert_eq!(fw.live().len(), 1);
    assert_eq!(fw.live()[0].expires_at, 1300);
    // Bob holds it longer than alice; his close brings the rule back
    // to alice's expiry, not to nothing.
    g.open(&bob, a, &[ssh], 900, 1010).unwrap();
    assert_eq!(fw.live()[0].expires_at, 1910);
    g.close(&bob, a, &[ssh], 1011).unwrap();
    assert_eq!(fw.live().len(), 1);
    assert_eq!(fw.live()[0].expires_at, 1300);
    assert_eq!(g.next_expiry(), Some(1300));
    // The rule goes when alice, its last owner, closes.
    assert_eq!(g.close(&alice, a, &[ssh], 1012).unwrap().removed, 1);
    assert!(fw.live().is_empty() && g.is_empty());
}

/// Finding 5: a door (spoofable by anyone) closes and refreshes only
/// what a door opened, never a key's grant.
#[test]
fn a_door_touches_only_door_grants() {
    let (mut g, fw, a, ssh) = setup();
    let (alice, door) = (key("alice"), Owner::Doors);
    g.open(&alice, a, &[ssh], 300, 1000).unwrap();
    let calls = fw.apply_count();
    assert_eq!(g.close(&door, a, &[ssh], 1001).unwrap().removed, 0);
    assert_eq!(fw.apply_count(), calls);
    assert_eq!(fw.live()[0].expires_at, 1300);
    // A door open on top (30 s) neither shortens alice's grant nor lets
    // the door's close end it.
    g.open(&door, a, &[ssh], 30, 1001).unwrap();
    assert_eq!(fw.live()[0].expires_at, 1300);
    assert_eq!(g.close(&door, a, &[ssh], 1002).unwrap().removed, 1);
    assert_eq!(fw.live().len(), 1);
    assert_eq!(fw.live()[0].expires_at, 1300);
}

#[test]
fn failed_batch_changes_nothing_in_memory() {
    let (mut g, fw, a, ssh) = setup();
    let (alice, bob) = (key("alice"), key("bob"));
    fw.fail_next(1);
    assert!(g.open(&alice, a, &[ssh], 30, 1000).is_err());
    assert!(g.is_empty() && fw.live().is_empty());
    g.open(&alice, a, &[ssh], 30, 1000).unwrap();
    fw.fail_next(1);
    assert!(g.close(&alice, a, &[ssh], 1001).is_err());
    assert_eq!(g.len(), 1, "still open, as in the firewall");
    assert_eq!(fw.live().len(), 1);
    // A failed rewrite keeps the owner: bob's open failed, so alice's
    // close still removes the rule.
    fw.fail_next(1);
    assert!(g.open(&bob, a, &[ssh], 900, 1001).is_err());
    assert_eq!(fw.live()[0].expires_at, 1030);
    g.close(&alice, a, &[ssh], 1002).unwrap();
    assert!(g.is_empty() && fw.live().is_empty());
}

#[test]
fn expire_removes_only_what_is_due() {
    let (mut g, fw, a, ssh) = setup();
    let alice = key("alice");
    let web = Grant::tcp(443).unwrap();
    g.open(&alice, a, &[ssh], 10, 1000).unwrap();
    g.open(&alice, a, &[web], 20, 1000).unwrap();
    assert!(g.expire(1009).unwrap().is_empty());
    let gone = g.expire(1010).unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].grant, ssh);
    assert_eq!(fw.live().len(), 1);
    assert_eq!(g.next_expiry(), Some(1020));
}

/// Issue 14: ends close together cost one wake-up; the indexes (next
/// end, the owner's running grants, the count) follow opens, refreshes,
/// closes and expiry without a scan, and agree with the table.
#[test]
fn expiry_is_indexed_and_batched_in_one_wake_up() {
    let (mut g, fw, _, ssh) = setup();
    let (alice, bob) = (key("alice"), key("bob"));
    let addr = |i: usize| IpAddr::from([198, 18, (i >> 8) as u8, i as u8]);
    for i in 0..10_000 {
        // 10,000 grants ending over 3 s (1010..=1012), as a burst of
        // opens does.
        g.open(&alice, addr(i), &[ssh], 10 + (i % 3) as u32, 1000)
            .unwrap();
    }
    g.open(&bob, addr(20_000), &[ssh], 60, 1000).unwrap();
    assert_eq!(g.next_expiry(), Some(1010));
    assert_eq!(g.next_wake(), Some(1012), "one wake-up for the burst");
    assert_eq!(g.count(1009), 10_001);
    assert_eq!(
        g.check_caps(&alice, addr(30_000), &[ssh], 1010, 6_667, 65_536),
        Ok(()),
        "3,333 of alice's ended at 1010"
    );
    let calls = fw.apply_count();
    let gone = g.expire(1012).unwrap();
    assert_eq!(gone.len(), 10_000);
    assert_eq!(fw.apply_count(), calls + 1, "one batch for all of them");
    assert_eq!((g.len(), g.count(1012)), (1, 1));
    assert_eq!((g.next_expiry(), g.next_wake()), (Some(1060), Some(1060)));
    // A refresh moves the end; a close of a shared rule keeps the other
    // owner's end; the indexes follow.
    g.open(&alice, addr(20_000), &[ssh], 100, 1013).unwrap();
    assert_eq!(g.next_expiry(), Some(1113));
    g.close(&alice, addr(20_000), &[ssh], 1014).unwrap();
    assert_eq!((g.next_expiry(), g.count(1014)), (Some(1060), 1));
    assert_eq!(
        g.check_caps(&alice, addr(1), &[ssh], 1014, 1, 65_536),
        Ok(())
    );
    assert!(g.expire(1060).unwrap().len() == 1 && g.is_empty());
    assert_eq!((g.next_expiry(), g.count(1060)), (None, 0));
    assert!(g.by_owner.is_empty() && g.owner_ends.is_empty());
}

/// Issue 14: grants the kernel ends itself (set timeouts) expire in
/// memory with no firewall call: 10,000 of them cost no batch (and,
/// through privsep, no frame to the privileged side).
#[test]
fn expiry_of_what_the_kernel_ends_calls_no_firewall() {
    let (mut g, fw, _, ssh) = setup();
    fw.expire_in_kernel(true);
    let alice = key("alice");
    for i in 0..10_000u32 {
        let a = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
        g.open(&alice, a, &[ssh], 10, 1000).unwrap();
    }
    let calls = fw.apply_count();
    assert_eq!(g.expire(1010).unwrap().len(), 10_000, "all forgotten");
    assert_eq!(fw.apply_count(), calls, "no batch: the kernel ends them");
    assert!(g.is_empty() && fw.open_at(1010).is_empty());
}

/// Finding 1: a key holds at most its cap of live grants, all owners at
/// most the total; refreshes pass at the cap; doors share one cap.
#[test]
fn grant_caps_per_owner_and_in_all() {
    let (mut g, _fw, _, ssh) = setup();
    let addr = |i: usize| IpAddr::from([198, 18, (i >> 8) as u8, i as u8]);
    let (alice, bob) = (key("alice"), key("bob"));
    for i in 0..16 {
        assert_eq!(g.check_caps(&alice, addr(i), &[ssh], 1000, 16, 40), Ok(()));
        g.open(&alice, addr(i), &[ssh], 30, 1000).unwrap();
    }
    assert_eq!(
        g.check_caps(&alice, addr(16), &[ssh], 1000, 16, 40),
        Err(CapHit::Owner { live: 16, cap: 16 })
    );
    // A refresh adds nothing; a second port for a held address does.
    assert_eq!(g.check_caps(&alice, addr(3), &[ssh], 1000, 16, 40), Ok(()));
    let web = Grant::tcp(443).unwrap();
    assert!(g
        .check_caps(&alice, addr(3), &[ssh, web], 1000, 16, 40)
        .is_err());
    // Bob has his own cap; a grant alice's rule already covers adds no rule.
    assert_eq!(g.check_caps(&bob, addr(0), &[ssh], 1000, 16, 16), Ok(()));
    assert_eq!(
        g.check_caps(&bob, addr(99), &[ssh], 1000, 16, 16),
        Err(CapHit::Total { live: 16, cap: 16 })
    );
    // Alice's grants that ended no longer count, even before expire().
    assert_eq!(g.check_caps(&alice, addr(16), &[ssh], 1030, 16, 40), Ok(()));
    // Doors: one owner, one cap.
    g.open(&Owner::Doors, addr(200), &[ssh], 30, 1000).unwrap();
    assert_eq!(
        g.check_caps(&Owner::Doors, addr(201), &[ssh], 1000, 1, 40),
        Err(CapHit::Owner { live: 1, cap: 1 })
    );
    assert_eq!(
        g.check_caps(&Owner::Doors, addr(200), &[ssh], 1000, 1, 40),
        Ok(())
    );
}
