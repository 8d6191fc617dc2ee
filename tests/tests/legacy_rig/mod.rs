//! The legacy tests' world (`Rig`): a `Testbed` with a key, the stock
//! `knock` client, single SYNs from a chosen source, and the checks that
//! nothing opened.

use spa_e2e::{run_ok, Server, Testbed};
use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

pub const SID: &str = "e2e-knock";
pub const KNOCK: &str = "/usr/bin/knock";

/// One test's world: namespaces with the admin's iptables baseline (new
/// tcp/22 refused) and a listener on tcp/22, a scratch dir and a key, plus
/// the knock-specific helpers below.
pub struct Rig(pub Testbed);

impl std::ops::Deref for Rig {
    type Target = Testbed;
    fn deref(&self) -> &Testbed {
        &self.0
    }
}

pub fn rig(id: u8) -> Rig {
    assert!((30..=49).contains(&id), "legacy tests own ids 30..=49");
    assert!(
        std::path::Path::new(KNOCK).exists(),
        "{KNOCK} missing: apt-get install knockd"
    );
    Rig(Testbed::new(id, "legacy", "iptables", SID, &["alice"]))
}

impl Rig {
    pub fn srv(&self) -> IpAddr {
        self.pair.v4().srv
    }
    pub fn a(&self) -> IpAddr {
        self.pair.v4().cli
    }
    pub fn b(&self) -> IpAddr {
        self.pair.v4().cli_b
    }

    /// `spa-server` in the server namespace with the base arguments plus
    /// `extra`. `with_key`: also `--key alice.key --allow tcp/22` (a config
    /// file that lists the key itself must not get it twice).
    pub fn server(&self, log: &str, with_key: bool, extra: &[&str]) -> Server {
        let s = if with_key {
            self.0.server(log, extra)
        } else {
            self.0.server_without_key(log, extra)
        };
        // Knocks sent before the capture is open would be lost: the
        // daemon's own `ready` line (it carries server_id=) must be there.
        assert!(
            s.wait_lines(&["ready", "server_id="], 1, Duration::from_secs(10)),
            "spa-server did not log ready:\n{}",
            s.log_text()
        );
        s
    }

    /// Writes `text` to the scratch dir and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p.display().to_string()
    }

    /// The stock `knock` client in the client namespace (bounded by
    /// `timeout`); must exit 0. It cannot choose its source address: it
    /// uses the interface's primary address, `cli_ip4`.
    pub fn knock(&self, args: &[&str]) -> Output {
        let mut argv = vec!["timeout", "20", KNOCK];
        argv.extend_from_slice(args);
        run_ok(&mut self.pair.cli(&argv))
    }

    /// One TCP SYN per `(source, port)`, in order, `gap_ms` apart, each
    /// from a socket bound to that source: a non-blocking connect that is
    /// abandoned, exactly what `knock` does per port.
    pub fn syns(&self, hits: &[(IpAddr, u16)], gap_ms: u64) {
        let list: Vec<String> = hits.iter().map(|(a, p)| format!("('{a}',{p})")).collect();
        let script = format!(
            "import socket,time\n\
             keep=[]\n\
             for src,port in [{}]:\n\
             \x20   s=socket.socket(socket.AF_INET,socket.SOCK_STREAM)\n\
             \x20   s.setblocking(False)\n\
             \x20   s.bind((src,0))\n\
             \x20   s.connect_ex(('{}',port))\n\
             \x20   keep.append(s)\n\
             \x20   time.sleep({})\n",
            list.join(","),
            self.pair.srv_ip4,
            gap_ms as f64 / 1000.0
        );
        run_ok(&mut self.pair.cli(&["timeout", "20", "python3", "-c", &script]));
    }

    /// `spa-client <args>` in the client namespace; must exit 0; stdout.
    pub fn client_stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.client(args).stdout).into_owned()
    }

    /// Grant rules (`-A SPA -s ...`) in the server namespace.
    pub fn grants(&self) -> Vec<String> {
        self.grant_rules("iptables")
    }

    /// Gives the daemon time to act on knocks it should ignore (it acts in
    /// well under 100 ms), then checks tcp/22 stays refused from `src` and
    /// no grant was added since `opens_before` lines.
    pub fn expect_nothing_opens(&self, src: IpAddr, s: &Server, opens_before: usize, what: &str) {
        std::thread::sleep(Duration::from_millis(700));
        let opens = s.lines_with(&["knock accepted: rule added"]).len();
        assert_eq!(
            opens,
            opens_before,
            "{what}: nothing may open; server log:\n{}",
            s.log_text()
        );
        assert!(
            !self.connects(src, self.srv()),
            "{what}: tcp/22 must stay refused from {src}; server log:\n{}",
            s.log_text()
        );
    }
}
