//! Shared by `lifecycle.rs`, `notify.rs` and `unit_file.rs`: a
//! `spa_e2e::Testbed` (namespaces, the admin's baseline, a listener, key
//! files in a scratch directory), a configuration file on disk, and
//! spa-server started from it the way systemd would start it
//! (`spa-server --config FILE`), with its log kept in a file.
//!
//! Everything goes on drop: the scratch directory with the `Testbed`, the
//! namespaces (and every process in them) with its `NetPair`.

#![allow(dead_code)]

use spa_e2e::{bin, wait_for, Guard, Testbed};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub use spa_e2e::PORT;

/// What the daemon logs once its firewall chain and capture are in place.
pub const READY_LINE: &str = "INFO ready ";

/// The key most tests use: `a`, allowed tcp/22.
pub const KEY_A: KeySpec = KeySpec {
    name: "a",
    allow: &["tcp/22"],
};

/// A `Testbed` whose server runs from a configuration file. Derefs to the
/// `Testbed` (`pair`, `dir`, `backend`, `server_id`, `key_path`, ...).
pub struct Env(Testbed);

impl std::ops::Deref for Env {
    type Target = Testbed;
    fn deref(&self) -> &Testbed {
        &self.0
    }
}

/// One `[[key]]` table: name, and the grants it may open.
pub struct KeySpec<'a> {
    pub name: &'a str,
    pub allow: &'a [&'a str],
}

impl Env {
    /// Namespaces `id`, the baseline for `backend` ("iptables" or
    /// "nftables"), a listener on `PORT`, and keys generated for `keys`.
    pub fn new(id: u8, backend: &'static str, keys: &[&str]) -> Env {
        Env(Testbed::new(
            id,
            "lifecycle",
            backend,
            &format!("spa-test-{id}"),
            keys,
        ))
    }

    /// `new` with the one key `KEY_A`, its configuration written.
    pub fn with_key_a(id: u8, backend: &'static str) -> Env {
        let env = Env::new(id, backend, &[KEY_A.name]);
        env.write_config(&[KEY_A]);
        env
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("server.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The configuration text for `keys` (key files relative to the config's
    /// folder, as an admin would write them).
    pub fn config_text(&self, keys: &[KeySpec]) -> String {
        let mut t = format!(
            "server_id = \"{}\"\n\
             interfaces = [\"{}\"]\n\
             spa_port = 62201\n\
             state_dir = \"{}\"\n\
             firewall = \"{}\"\n\
             default_duration = 30\n\
             window_secs = 30\n",
            self.server_id,
            self.pair.srv_if,
            self.state_dir().display(),
            self.backend
        );
        for k in keys {
            let allow: Vec<String> = k.allow.iter().map(|a| format!("\"{a}\"")).collect();
            t.push_str(&format!(
                "\n[[key]]\nname = \"{}\"\nfile = \"{}.key\"\nallow = [{}]\nmax_duration = 120\n",
                k.name,
                k.name,
                allow.join(", ")
            ));
        }
        t
    }

    /// Writes the configuration atomically (rename), as an editor would.
    pub fn write_config_text(&self, text: &str) {
        let tmp = self.dir.join("server.toml.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    pub fn write_config(&self, keys: &[KeySpec]) {
        self.write_config_text(&self.config_text(keys));
    }

    /// `spa-server --config FILE` in the server namespace; stderr goes to
    /// the log file (appended: a restart keeps the earlier lines).
    pub fn spawn(&self, envs: &[(&str, &str)]) -> Guard {
        self.spawn_with(&[], envs)
    }

    /// `spawn` with `prefix` (e.g. `setpriv ...` or `strace ...`) in front
    /// of the server's command line.
    pub fn spawn_with(&self, prefix: &[&str], envs: &[(&str, &str)]) -> Guard {
        let server = bin("spa-server");
        let config = self.config_path();
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.extend([
            server.to_str().expect("utf-8 path"),
            "--config",
            config.to_str().expect("utf-8 path"),
        ]);
        let mut cmd = self.pair.srv(&argv);
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Guard(spa_e2e::spawn_logged(cmd, &self.log_path(), true))
    }

    /// Starts the server and waits (≤ 10 s) for its `ready` line; the
    /// number of `ready` lines before the start tells a restart apart.
    pub fn start(&self) -> Guard {
        self.start_with(&[])
    }

    /// `start` with a command prefix (see `spawn_with`).
    pub fn start_with(&self, prefix: &[&str]) -> Guard {
        let before = self.count_in_log(READY_LINE);
        let mut g = self.spawn_with(prefix, &[]);
        let ok = wait_for(Duration::from_secs(10), || {
            self.count_in_log(READY_LINE) > before || matches!(g.0.try_wait(), Ok(Some(_)))
        });
        assert!(
            ok && matches!(g.0.try_wait(), Ok(None)),
            "spa-server did not become ready:\n{}",
            self.log()
        );
        g
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits (≤ `within`) until the log holds `needle` more than `before` times.
    pub fn wait_log(&self, needle: &str, before: usize, within: Duration) -> bool {
        wait_for(within, || self.count_in_log(needle) > before)
    }

    /// `spa-client send --open PORT --duration D` with key `key` from the
    /// client namespace, from address `src`.
    pub fn open(&self, key: &str, src: IpAddr, duration: u32) {
        self.request(
            key,
            src,
            &[
                "--open",
                &PORT.to_string(),
                "--duration",
                &duration.to_string(),
            ],
        );
    }

    /// `spa-client send --close PORT` with key `key`, from address `src`.
    pub fn close(&self, key: &str, src: IpAddr) {
        self.request(key, src, &["--close", &PORT.to_string(), "--duration", "0"]);
    }

    fn request(&self, key: &str, src: IpAddr, args: &[&str]) {
        let keyp = self.key_path(key);
        let keyp = keyp.to_str().expect("utf-8 path");
        self.send_with_key(keyp, src, self.pair.v4().srv, args);
    }

    /// Seals an open request into `file` without sending it.
    pub fn seal_to_file(&self, key: &str, duration: u32, file: &Path) {
        let keyp = self.key_path(key);
        let (port, duration) = (PORT.to_string(), duration.to_string());
        self.seal_with_key(
            keyp.to_str().expect("utf-8 path"),
            file,
            &["--open", &port, "--duration", &duration],
        );
    }

    /// Can `src` (a client address) connect to the server's PORT now?
    pub fn can_connect(&self, src: IpAddr) -> bool {
        self.pair.can_connect(src, self.pair.v4().srv, PORT)
    }

    pub fn wait_connect(&self, src: IpAddr, want: bool, within: Duration) -> bool {
        self.pair
            .wait_connect(src, self.pair.v4().srv, PORT, want, within)
    }

    /// Waits (≤ `within_secs`) until `src` can connect (a grant opened);
    /// fails the test with `what` and the log otherwise.
    pub fn assert_opens(&self, src: IpAddr, within_secs: u64, what: &str) {
        assert!(
            self.wait_connect(src, true, Duration::from_secs(within_secs)),
            "{what}; log:\n{}",
            self.log()
        );
    }

    /// A command's stdout in the server namespace (status ignored).
    pub fn srv_out(&self, argv: &[&str]) -> String {
        let out = self
            .pair
            .srv(argv)
            .stdin(Stdio::null())
            .output()
            .expect("spawn in server namespace");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn srv_ok(&self, argv: &[&str]) -> bool {
        self.pair
            .srv(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The whole firewall of the server namespace, in a form that compares
    /// equal across runs (see `NetPair::firewall_snapshot`).
    pub fn firewall_snapshot(&self) -> String {
        self.pair.firewall_snapshot(self.backend)
    }

    /// Pids of spa-server processes in the server namespace.
    pub fn server_pids(&self) -> Vec<u32> {
        self.pair.srv_pids("spa-server")
    }

    /// The network side (the main process; the privileged side is its
    /// child): the one spa-server whose parent is not a spa-server.
    pub fn network_side_pid(&self) -> u32 {
        // Two, or more for a moment: a firewall tool between fork and exec
        // is a spa-server too, a child of the privileged side.
        let pids = self.server_pids();
        assert!(pids.len() >= 2, "network and privileged side: {pids:?}");
        let parent = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("PPid:"))
                        .and_then(|v| v.trim().parse::<u32>().ok())
                })
                .unwrap_or(0)
        };
        *pids
            .iter()
            .find(|&&p| !pids.contains(&parent(p)))
            .expect("one spa-server has no spa-server parent")
    }
}

/// SIGKILLs the server and reaps it: no teardown, grants left as they are.
pub fn kill_9(server: &mut Guard) {
    server.0.kill().expect("kill -9");
    let _ = server.0.wait();
}

/// Sends `sig` to `pid` (a process this test started).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid of a child this test spawned and still holds.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Waits (≤ `within`) for the guarded child to exit; its status if it did.
pub fn wait_exit(g: &mut Guard, within: Duration) -> Option<std::process::ExitStatus> {
    spa_e2e::wait_exit(&mut g.0, within)
}
