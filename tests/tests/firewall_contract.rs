//! The `Firewall` contract (spa-server/src/firewall/contract.rs: one suite
//! of the trait's promises) against the real backends: iptables and
//! nftables, the real tools and kernel, in a fresh network namespace with
//! the admin's baseline, judged by real TCP connections from the client
//! namespace. The same suite runs against the fake in spa-server's unit
//! tests, so the fake the engine's tests rely on keeps the same promises.
//!
//! The backend runs in this test process, its tools through
//! `ip netns exec` (`exec_prefix`), as the other backend tests do: no
//! daemon, nothing in the root namespace. Namespace ids 129..=131.

use spa_e2e::{Guard, NetPair, Scratch};
use spa_proto::{Grant, IpFamily};
use spa_server::firewall::contract::{run_all, World};
use spa_server::firewall::{backend, BackendKind, Firewall, FirewallOptions};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The two ports the baseline refuses and a listener serves.
const PORTS: [u16; 2] = [22, 2222];

struct NsWorld {
    pair: NetPair,
    kind: BackendKind,
    opts: FirewallOptions,
    dir: Scratch,
    _listeners: Vec<Guard>,
}

impl NsWorld {
    fn new(
        id: u8,
        kind: BackendKind,
        opts: impl FnOnce(FirewallOptions) -> FirewallOptions,
    ) -> Self {
        let pair = NetPair::new(id);
        let dir = Scratch::new(&format!("fw-contract{id}"));
        let [p0, p1] = PORTS;
        match kind {
            // The nat table exists already (an empty one would otherwise
            // appear with the first forward and stay: iptables never
            // unloads a table, which is no rule of ours).
            BackendKind::Iptables => {
                for t in ["iptables", "ip6tables"] {
                    pair.srv_sh(&format!(
                        "{t} -w -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT && \
                         {t} -w -A INPUT -p tcp --dport {p0} -j REJECT --reject-with tcp-reset && \
                         {t} -w -A INPUT -p tcp --dport {p1} -j REJECT --reject-with tcp-reset && \
                         {t} -w -t nat -A POSTROUTING -j RETURN && \
                         {t} -w -t nat -D POSTROUTING -j RETURN"
                    ));
                }
                let save = dir.join("base");
                pair.srv_sh(&format!(
                    "iptables-save > {s}.v4 && ip6tables-save > {s}.v6",
                    s = save.display()
                ));
            }
            BackendKind::Nftables => {
                let text = format!(
                    "table inet filter {{\n\
                       chain input {{\n\
                         type filter hook input priority 0; policy accept;\n\
                         ct state established,related accept\n\
                         tcp dport {{ {p0}, {p1} }} reject with tcp reset\n\
                       }}\n\
                       chain forward {{\n\
                         type filter hook forward priority 0; policy accept;\n\
                       }}\n\
                     }}\n"
                );
                let f = dir.join("base.nft");
                std::fs::write(&f, text).expect("write base.nft");
                pair.srv_sh(&format!("nft -f {}", f.display()));
            }
        }
        let listeners = PORTS.iter().map(|&p| Guard(pair.listen(p))).collect();
        let opts = opts(pair.fw_options());
        NsWorld {
            pair,
            kind,
            opts,
            dir,
            _listeners: listeners,
        }
    }

    fn name(&self) -> &'static str {
        self.kind.as_str()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl World for NsWorld {
    fn backend(&mut self) -> Box<dyn Firewall> {
        backend(self.kind, &self.opts)
    }

    fn clients(&self, family: IpFamily) -> [IpAddr; 2] {
        match family {
            IpFamily::V4 => [self.pair.cli_ip4.into(), self.pair.cli_ip4_b.into()],
            IpFamily::V6 => [self.pair.cli_ip6.into(), self.pair.cli_ip6_b.into()],
        }
    }

    fn grants(&self) -> [Grant; 2] {
        PORTS.map(|p| Grant::tcp(p).expect("port"))
    }

    fn forward_target(&self) -> SocketAddr {
        // On the server's link, where nothing answers.
        SocketAddr::new(IpAddr::from([198, 18, self.pair.id, 9]), 22)
    }

    fn now(&self) -> u64 {
        unix_now()
    }

    fn wait_until(&mut self, unix: u64) {
        let give_up = Instant::now() + Duration::from_secs(15);
        while unix_now() < unix && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn admits(&mut self, src: IpAddr, grant: Grant) -> bool {
        let dst: IpAddr = if src.is_ipv4() {
            self.pair.srv_ip4.into()
        } else {
            self.pair.srv_ip6.into()
        };
        self.pair.can_connect(src, dst, grant.port.get())
    }

    fn ruleset(&mut self) -> String {
        self.pair.firewall_snapshot(self.name())
    }

    fn reload_behind_its_back(&mut self) {
        match self.kind {
            BackendKind::Iptables => {
                let s = self.dir.join("base");
                self.pair.srv_sh(&format!(
                    "iptables-restore < {s}.v4 && ip6tables-restore < {s}.v6",
                    s = s.display()
                ));
            }
            BackendKind::Nftables => {
                let f = self.dir.join("base.nft");
                self.pair
                    .srv_sh(&format!("nft flush ruleset && nft -f {}", f.display()));
            }
        }
    }

    fn break_family(&mut self, family: IpFamily) {
        let (tool, set) = match family {
            IpFamily::V4 => ("iptables", &self.opts.nft_set4),
            IpFamily::V6 => ("ip6tables", &self.opts.nft_set6),
        };
        match self.kind {
            BackendKind::Iptables => {
                let chain = &self.opts.chain;
                self.pair.srv_sh(&format!(
                    "{tool} -w -S INPUT | grep -- '-j {chain}' | sed 's/^-A/-D/' | \
                     while read -r rule; do {tool} -w $rule; done; \
                     {tool} -w -F {chain} && {tool} -w -X {chain}"
                ));
            }
            BackendKind::Nftables => {
                let handles: Vec<String> = self
                    .pair
                    .srv_sh("nft -a list chain inet filter input")
                    .lines()
                    .filter(|l| l.contains(&format!("@{set} ")))
                    .filter_map(|l| l.rsplit("# handle ").next())
                    .map(|h| h.trim().to_owned())
                    .collect();
                let mut script: Vec<String> = handles
                    .iter()
                    .map(|h| format!("nft delete rule inet filter input handle {h}"))
                    .collect();
                script.push(format!("nft delete set inet filter {set}"));
                self.pair.srv_sh(&script.join(" && "));
            }
        }
    }
}

fn keeps_the_contract(mut w: NsWorld) {
    let started = Instant::now();
    let broken = run_all(&mut w);
    eprintln!(
        "{}: contract run in {:.1} s",
        w.name(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        broken.is_empty(),
        "{} breaks the Firewall contract:\n{}",
        w.name(),
        broken
            .iter()
            .map(|(name, why)| format!("- {name}: {why}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn iptables_keeps_the_firewall_contract() {
    keeps_the_contract(NsWorld::new(129, BackendKind::Iptables, |o| o));
}

#[test]
fn nftables_keeps_the_firewall_contract() {
    keeps_the_contract(NsWorld::new(130, BackendKind::Nftables, |o| o));
}

/// nftables without its persistent `nft -i` session: one `nft -f -` per
/// batch, the fallback path.
#[test]
fn nftables_without_a_session_keeps_the_firewall_contract() {
    keeps_the_contract(NsWorld::new(131, BackendKind::Nftables, |o| {
        FirewallOptions {
            nft_session: false,
            ..o
        }
    }));
}
