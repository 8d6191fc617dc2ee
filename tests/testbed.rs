//! A daemon test's world (daemon*.rs, legacy.rs, and through lifecycle_env
//! lifecycle.rs, notify.rs, unit_file.rs): namespaces with the admin's
//! baseline, a listener, a scratch directory and keys.

use crate::{bin, keygen, run_ok, Guard, NetPair, Scratch, Server};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// The port the baseline keeps closed, a listener serves, and grants open.
pub const PORT: u16 = 22;

/// Namespaces with the admin's baseline for a backend and a listener on
/// tcp/`PORT`, a scratch directory, and key files made by the real
/// `spa-keygen`. Everything goes on drop, also when a test fails.
pub struct Testbed {
    pub pair: NetPair,
    pub dir: Scratch,
    /// "iptables" or "nftables": the baseline, and `--firewall`.
    pub backend: &'static str,
    pub server_id: String,
    /// Path of the first key made (argv form).
    pub key: String,
    started: Instant,
    _listener: Guard,
}

impl Testbed {
    /// Namespaces `id`, the `backend` baseline, the listener, the scratch
    /// directory `<tag><id>`, and `<name>.key` for each of `keys`.
    pub fn new(
        id: u8,
        tag: &str,
        backend: &'static str,
        server_id: &str,
        keys: &[&str],
    ) -> Testbed {
        let started = Instant::now();
        let pair = NetPair::new(id);
        pair.baseline(backend, PORT);
        let listener = Guard(pair.listen(PORT));
        let dir = Scratch::new(&format!("{tag}{id}"));
        let paths: Vec<String> = keys
            .iter()
            .map(|k| keygen(&dir.join(&format!("{k}.key")), k, server_id))
            .collect();
        Testbed {
            pair,
            dir,
            backend,
            server_id: server_id.to_owned(),
            key: paths.first().cloned().unwrap_or_default(),
            started,
            _listener: listener,
        }
    }

    /// Where `new` wrote key `name`.
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join(&format!("{name}.key"))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `spa-server` with the testbed's interface, server id, state directory
    /// and backend, its first key allowed tcp/22, then `extra`; started as
    /// `Server::start` does (ready, or the test fails), logging to `log` in
    /// the scratch directory.
    pub fn server(&self, log: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--key", &self.key, "--allow", "tcp/22"];
        args.extend_from_slice(extra);
        self.server_without_key(log, &args)
    }

    /// `server` without the key (for a configuration file that lists it:
    /// it must not be given twice).
    pub fn server_without_key(&self, log: &str, extra: &[&str]) -> Server {
        self.server_in(&self.state_dir(), log, extra)
    }

    /// `server_without_key` with the state directory `state` (a second
    /// server, or a state directory a test prepares).
    pub fn server_in(&self, state: &Path, log: &str, extra: &[&str]) -> Server {
        let base = self.server_args(state);
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        Server::start(&self.pair, &self.dir.join(log), &args)
    }

    /// The arguments `server_in` gives spa-server (interface, server id,
    /// `--state-dir state`, backend), for a test that runs it another way
    /// (`Server::spawn`, under `env`).
    pub fn server_args(&self, state: &Path) -> Vec<String> {
        let state = state.display().to_string();
        [
            "--interface",
            &self.pair.srv_if,
            "--server-id",
            &self.server_id,
            "--state-dir",
            &state,
            "--firewall",
            self.backend,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `server_args` with the first key allowed tcp/22, as `server` gives.
    pub fn server_args_with_key(&self) -> Vec<String> {
        let mut args = ["--key", &self.key, "--allow", "tcp/22"]
            .map(str::to_owned)
            .to_vec();
        args.extend(self.server_args(&self.state_dir()));
        args
    }

    /// `spa-client <args>` in the client namespace; must exit 0.
    pub fn client(&self, args: &[&str]) -> Output {
        let client = bin("spa-client");
        let mut argv = vec![client.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        run_ok(&mut self.pair.cli(&argv))
    }

    /// `spa-client send --quiet --key KEY <args> --source SRC DST`.
    pub fn send_with_key(&self, key: &str, src: IpAddr, dst: IpAddr, args: &[&str]) {
        let (src, dst) = (src.to_string(), dst.to_string());
        let mut argv = vec!["send", "--quiet", "--key", key];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--source", &src, &dst]);
        self.client(&argv);
    }

    /// `send_with_key` with the first key.
    pub fn send(&self, src: IpAddr, dst: IpAddr, args: &[&str]) {
        self.send_with_key(&self.key, src, dst, args);
    }

    /// `spa-client send --quiet --key KEY <args> --output FILE`: a sealed
    /// datagram on disk, not sent, for `raw_send` or tampering.
    pub fn seal_with_key(&self, key: &str, file: &Path, args: &[&str]) {
        let file = file.display().to_string();
        let mut argv = vec!["send", "--quiet", "--key", key];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--output", &file]);
        self.client(&argv);
    }

    /// `seal_with_key` with the first key.
    pub fn seal(&self, file: &Path, args: &[&str]) {
        self.seal_with_key(&self.key, file, args);
    }

    /// `spa-client raw-send --quiet --source SRC FILE DST`: the file's bytes
    /// again, unchanged.
    pub fn raw_send(&self, file: &Path, src: IpAddr, dst: IpAddr) {
        let (f, src, dst) = (file.display().to_string(), src.to_string(), dst.to_string());
        self.client(&["raw-send", "--quiet", "--source", &src, &f, &dst]);
    }

    /// Can `src` connect to `dst`'s tcp/`PORT` right now?
    pub fn connects(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.pair.can_connect(src, dst, PORT)
    }

    /// Waits (bounded, 5 s) until a connect from `src` to `dst`'s
    /// tcp/`PORT` succeeds or is refused, as wanted; fails the test with
    /// `what` and the server's log otherwise.
    pub fn expect_connect(&self, src: IpAddr, dst: IpAddr, want: bool, what: &str, s: &Server) {
        assert!(
            self.pair
                .wait_connect(src, dst, PORT, want, Duration::from_secs(5)),
            "{what}: connect {src} -> {dst}:{PORT} should {}; server log:\n{}",
            if want { "succeed" } else { "be refused" },
            s.log_text()
        );
    }

    /// The iptables backend's grants of `tool`'s family (iptables or
    /// ip6tables) in the server namespace: the entries of its grant set
    /// (issue 14; `add SPA4 198.18.0.2,tcp:22 timeout 29 comment
    /// "spa-server exp=..."`), see [`NetPair::set_entries`].
    pub fn grant_rules(&self, tool: &str) -> Vec<String> {
        self.pair.set_entries(tool)
    }

    /// Asserts the iptables backend holds exactly one grant: for `src` on
    /// tcp/22.
    pub fn assert_one_grant(&self, src: IpAddr) {
        let rules = self.grant_rules("iptables");
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert!(rules[0].contains(&format!(" {src},tcp:22 ")), "{rules:?}");
    }

    /// Prints how long the test took since `new`.
    pub fn done(&self, name: &str) {
        eprintln!("{name}: {:.2} s", self.started.elapsed().as_secs_f64());
    }
}
