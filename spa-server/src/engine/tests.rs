//! The engine with the fake firewall: the ordering guarantees and the
//! policy checks that used to be reachable only end to end.

use super::*;
use crate::config::KeyPolicy;
use crate::firewall::{Access, FakeCall, FakeFirewall, Firewall};
use crate::legacy::tcp_flag;
use crate::state::ReplayLog;
use spa_proto::{
    seal_with, AllowAddr, Grant, Grants, KeySet, MasterKey, Proto, ReplayRecord, Request, ServerId,
    TimeWindow,
};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const T: u64 = 1_700_000_000;
const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

fn at(secs: u64) -> Now {
    Now {
        ms: secs * 1000,
        mono: Instant::now(),
    }
}

fn keys(b: u8) -> KeySet {
    MasterKey::from_bytes([b; 32]).derive()
}

fn tcp(p: u16) -> Grant {
    Grant::tcp(p).unwrap()
}

fn policy(b: u8, name: &str, allow: &[Grant]) -> KeyPolicy {
    KeyPolicy {
        allow_other_address: true,
        ..KeyPolicy::for_tests(name, b, allow, 300)
    }
}

/// alice (0x11) and bob (0x22) may both open tcp/22; alice also tcp/80.
fn config() -> Config {
    Config::for_tests(
        vec![
            policy(0x11, "alice", &[tcp(22), tcp(80)]),
            policy(0x22, "bob", &[tcp(22)]),
        ],
        30,
    )
}

fn datagram(key: u8, action: Action, grants: &[Grant], nonce: u8) -> Vec<u8> {
    let r = Request {
        action,
        timestamp: T,
        duration_secs: 60,
        allow: AllowAddr::Source,
        server: ServerId::from_name("gw"),
        grants: Grants::new(grants).unwrap(),
    };
    seal_with(&keys(key), &r, &[nonce; 24], &[0x5a; 16]).to_vec()
}

fn spa(payload: &[u8]) -> Event<'_> {
    Event::Packet(Packet::Spa {
        src: SRC,
        dst: DST,
        payload,
    })
}

fn engine_with(cfg: Config, fw: Box<dyn Firewall>, replay: DurableReplay) -> Engine {
    let mut grants = GrantTable::new(fw);
    grants.setup().unwrap();
    let legacy = knocks::Runtime::new(&cfg);
    let local = LocalAddrs::from_addrs([DST], Instant::now());
    Engine::new(cfg, replay, grants, legacy, local)
}

fn engine(cfg: Config) -> (Engine, FakeFirewall) {
    let fw = FakeFirewall::new();
    let replay = DurableReplay::in_memory(ReplayRecord::new(TimeWindow::default(), 64));
    (engine_with(cfg, Box::new(fw.clone()), replay), fw)
}

/// A firewall that, at every batch, reads how many bytes the replay log has
/// on disk: what a crash at that instant would leave behind.
struct Probe {
    inner: FakeFirewall,
    log: PathBuf,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Firewall for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn setup(&mut self) -> Result<(), FwError> {
        self.inner.setup()
    }
    fn apply(&mut self, add: &[Access], remove: &[Access]) -> Result<(), FwError> {
        let len = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        self.seen.lock().unwrap().push(len);
        self.inner.apply(add, remove)
    }
    fn teardown(&mut self) -> Result<(), FwError> {
        self.inner.teardown()
    }
}

#[test]
fn the_replay_entry_is_on_disk_before_the_firewall_batch() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let opened = ReplayLog::open(&state, None, TimeWindow::default(), 32, T).unwrap();
    let log = opened.log.path().to_owned();
    let before = std::fs::metadata(&log).unwrap().len();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let probe = Probe {
        inner: FakeFirewall::new(),
        log: log.clone(),
        seen: seen.clone(),
    };
    let replay = DurableReplay::new(opened.record, opened.log);
    let mut e = engine_with(config(), Box::new(probe), replay);
    let d = datagram(0x11, Action::Open, &[tcp(22)], 1);
    let out = e.handle(spa(&d), &at(T));
    assert!(matches!(out[..], [Outcome::Opened(_)]), "{out:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one batch");
    assert_eq!(
        seen[0],
        before + 44,
        "the 44-byte record was on disk when the batch ran"
    );
}

#[test]
fn a_replayed_datagram_changes_nothing() {
    let (mut e, fw) = engine(config());
    let d = datagram(0x11, Action::Open, &[tcp(22)], 1);
    assert!(matches!(
        e.handle(spa(&d), &at(T))[..],
        [Outcome::Opened(_)]
    ));
    let applied = fw.apply_count();
    assert_eq!(
        e.handle(spa(&d), &at(T + 1)),
        vec![Outcome::Refused("replayed")]
    );
    assert_eq!(fw.apply_count(), applied, "no batch for a replay");
    assert_eq!(e.stats().datagrams_accepted, 1);
    assert_eq!(e.stats().datagrams_rejected, 1);
}

#[test]
fn a_denied_request_changes_nothing() {
    let (mut e, fw) = engine(config());
    let d = datagram(0x22, Action::Open, &[tcp(80)], 1);
    assert_eq!(
        e.handle(spa(&d), &at(T)),
        vec![Outcome::Refused("not_allowed")]
    );
    assert_eq!(fw.apply_count(), 0);
    assert!(fw.live().is_empty());
}

/// An owner closes only its own grant: bob's close of tcp/22 for the same
/// address leaves alice's rule in place.
#[test]
fn a_key_closes_only_its_own_grant() {
    let (mut e, fw) = engine(config());
    let open = datagram(0x11, Action::Open, &[tcp(22)], 1);
    assert!(matches!(
        e.handle(spa(&open), &at(T))[..],
        [Outcome::Opened(_)]
    ));
    let close = datagram(0x22, Action::Close, &[tcp(22)], 2);
    let out = e.handle(spa(&close), &at(T));
    assert_eq!(out, vec![Outcome::Closed(Change::default())], "{out:?}");
    assert_eq!(fw.live().len(), 1, "alice's rule stays");
    let close = datagram(0x11, Action::Close, &[tcp(22)], 3);
    let out = e.handle(spa(&close), &at(T));
    assert!(
        matches!(out[..], [Outcome::Closed(Change { removed: 1, .. })]),
        "{out:?}"
    );
    assert!(fw.live().is_empty());
}

#[test]
fn a_failed_batch_leaves_the_table_unchanged() {
    let (mut e, fw) = engine(config());
    fw.fail_next(1);
    let d = datagram(0x11, Action::Open, &[tcp(22)], 1);
    assert_eq!(e.handle(spa(&d), &at(T)), vec![Outcome::FirewallFailed]);
    assert!(e.grants().is_empty());
    assert_eq!(e.stats().firewall_failures, 1);
}

fn knock(src: IpAddr, dport: u16) -> Event<'static> {
    Event::Packet(Packet::Knock {
        src,
        dst: DST,
        proto: Proto::Tcp,
        dport,
        tcp_flags: tcp_flag::SYN,
    })
}

/// The doors share half of `max_grants_total`: with a total of 4, two
/// sources get a door grant, the third is refused and the firewall holds
/// two rules.
#[test]
fn the_doors_share_half_the_total_cap() {
    let mut cfg = config();
    cfg.doors = crate::legacy::default_doors(5);
    cfg.max_grants_total = 4;
    let (mut e, fw) = engine(cfg);
    let mut last = Vec::new();
    for host in 2..5u8 {
        let src = IpAddr::V4(Ipv4Addr::new(198, 18, 0, host));
        for port in [7000, 8000, 9000] {
            last = e.handle(knock(src, port), &at(T));
        }
        if host < 4 {
            assert!(matches!(last[..], [Outcome::Opened(_)]), "{host}: {last:?}");
        }
    }
    assert_eq!(last, vec![Outcome::Refused("grant_cap")]);
    assert_eq!(fw.live().len(), 2);
}

#[test]
fn a_knock_for_another_host_is_ignored() {
    let mut cfg = config();
    cfg.doors = crate::legacy::default_doors(5);
    let (mut e, fw) = engine(cfg);
    for port in [7000, 8000, 9000] {
        let out = e.handle(
            Event::Packet(Packet::Knock {
                src: SRC,
                dst: IpAddr::V4(Ipv4Addr::new(198, 18, 9, 9)),
                proto: Proto::Tcp,
                dport: port,
                tcp_flags: tcp_flag::SYN,
            }),
            &at(T),
        );
        assert_eq!(out, vec![Outcome::Ignored("not_local")]);
    }
    assert_eq!(fw.apply_count(), 0);
}

/// A reload revokes the grant of a key it removes at once (issue 10, item
/// 3), and the key is unknown from then on.
#[test]
fn a_reload_revokes_a_removed_keys_grant_and_drops_the_key() {
    let (mut e, fw) = engine(config());
    let d = datagram(0x22, Action::Open, &[tcp(22)], 1);
    assert!(matches!(
        e.handle(spa(&d), &at(T))[..],
        [Outcome::Opened(_)]
    ));
    let new = Config::for_tests(vec![policy(0x11, "alice", &[tcp(22)])], 30);
    assert_eq!(
        e.handle(Event::Reload(Box::new(new)), &at(T + 1)),
        vec![Outcome::Reloaded]
    );
    assert!(fw.live().is_empty(), "bob's grant is revoked");
    let again = datagram(0x22, Action::Open, &[tcp(22)], 2);
    assert_eq!(
        e.handle(spa(&again), &at(T + 1)),
        vec![Outcome::Refused("unknown_key_id")]
    );
    assert_eq!(
        fw.calls().first(),
        Some(&FakeCall::Setup),
        "set up before use"
    );
}

/// Time comes only from `Now`: a grant asked for 60 s at T ends at T + 60
/// whatever the wall clock says.
#[test]
fn grants_end_at_the_time_passed_in() {
    let (mut e, fw) = engine(config());
    let d = datagram(0x11, Action::Open, &[tcp(22)], 1);
    let now = Now {
        ms: T * 1000 + 1,
        mono: Instant::now(),
    };
    e.handle(spa(&d), &now);
    assert_eq!(fw.live()[0].expires_at, T + 1 + 60, "ceil(now) + duration");
    assert_eq!(e.next_deadline(&at(T)), Some(Duration::from_secs(61)));
}
