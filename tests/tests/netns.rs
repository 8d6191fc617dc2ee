//! The test hosts themselves: a pair comes up, talks, and goes away.
use spa_e2e::{Guard, NetPair};
use std::process::Command;

#[test]
fn pair_connects_and_cleans_up() {
    let names;
    {
        let p = NetPair::new(9);
        names = (p.srv_ns.clone(), p.cli_ns.clone());
        let _l = Guard(p.listen(2222));
        assert!(p.can_connect(p.cli_ip4.into(), p.srv_ip4.into(), 2222));
        assert!(p.can_connect(p.cli_ip6.into(), p.srv_ip6.into(), 2222));
        p.iptables_baseline(2222);
        assert!(!p.can_connect(p.cli_ip4.into(), p.srv_ip4.into(), 2222));
        assert!(!p.can_connect(p.cli_ip6_b.into(), p.srv_ip6.into(), 2222));
    }
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        !list.contains(&names.0) && !list.contains(&names.1),
        "{list}"
    );
}
