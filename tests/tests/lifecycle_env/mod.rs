//! Shared by `lifecycle.rs`, `notify.rs` and `unit_file.rs`: a server
//! namespace with the admin's baseline, key files, a configuration file on
//! disk, and spa-server started from it the way systemd would start it
//! (`spa-server --config FILE`), with its log kept in a file.
//!
//! Everything lives in a private directory under /tmp that is removed on drop;
//! the namespaces (and every process in them) go with the `NetPair`.

#![allow(dead_code)]

use spa_e2e::{bin, wait_for, Guard, NetPair};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What the daemon logs once its firewall chain and capture are in place.
pub const READY_LINE: &str = "INFO ready ";

/// The port the baseline keeps closed and the grants open.
pub const PORT: u16 = 22;

pub struct Env {
    pub pair: NetPair,
    pub dir: PathBuf,
    pub server_id: String,
    pub backend: &'static str,
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
        let pair = NetPair::new(id);
        match backend {
            "iptables" => pair.iptables_baseline(PORT),
            "nftables" => pair.nft_baseline(PORT),
            other => panic!("unknown backend {other}"),
        }
        let dir = std::env::temp_dir().join(format!("spa-lifecycle-{id}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let env = Env {
            pair,
            dir,
            server_id: format!("spa-test-{id}"),
            backend,
        };
        for k in keys {
            env.keygen(k);
        }
        // The listener is killed with the namespace.
        std::mem::forget(env.pair.listen(PORT));
        env
    }

    pub fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("server.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn keygen(&self, name: &str) {
        let out = Command::new(bin("spa-keygen"))
            .arg("--out")
            .arg(self.key_path(name))
            .args(["--name", name, "--server-id", &self.server_id])
            .stdin(Stdio::null())
            .output()
            .expect("spawn spa-keygen");
        assert!(
            out.status.success(),
            "spa-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let log2 = log.try_clone().expect("clone log fd");
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
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("spawn spa-server");
        Guard(child)
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

    /// `spa-client send` from the client namespace, from address `src`.
    pub fn send(&self, key: &str, src: IpAddr, what: &str, port: u16, duration: u32) {
        let keyp = self.key_path(key);
        let srv = self.pair.srv_ip4.to_string();
        let src_s = src.to_string();
        let port_s = port.to_string();
        let dur = duration.to_string();
        let client = bin("spa-client");
        let out = self
            .pair
            .cli(&[
                client.to_str().expect("utf-8 path"),
                "send",
                "--quiet",
                "--key",
                keyp.to_str().expect("utf-8 path"),
                what,
                &port_s,
                "--duration",
                &dur,
                "--source",
                &src_s,
                &srv,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("spawn spa-client");
        assert!(
            out.status.success(),
            "spa-client send: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn open(&self, key: &str, src: IpAddr, duration: u32) {
        self.send(key, src, "--open", PORT, duration);
    }

    /// Seals an open request into `file` without sending it.
    pub fn seal_to_file(&self, key: &str, duration: u32, file: &Path) {
        let client = bin("spa-client");
        let out = Command::new(client)
            .args(["send", "--quiet", "--key"])
            .arg(self.key_path(key))
            .args([
                "--open",
                &PORT.to_string(),
                "--duration",
                &duration.to_string(),
            ])
            .arg("--output")
            .arg(file)
            .stdin(Stdio::null())
            .output()
            .expect("spawn spa-client");
        assert!(
            out.status.success(),
            "spa-client --output: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends a sealed datagram again, byte for byte, from `src`.
    pub fn raw_send(&self, file: &Path, src: IpAddr) {
        let client = bin("spa-client");
        let srv = self.pair.srv_ip4.to_string();
        let src_s = src.to_string();
        let out = self
            .pair
            .cli(&[
                client.to_str().expect("utf-8 path"),
                "raw-send",
                file.to_str().expect("utf-8 path"),
                "--source",
                &src_s,
                &srv,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("spawn spa-client raw-send");
        assert!(
            out.status.success(),
            "spa-client raw-send: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Can `src` (a client address) connect to the server's PORT now?
    pub fn can_connect(&self, src: IpAddr) -> bool {
        self.pair
            .can_connect(src, IpAddr::V4(self.pair.srv_ip4), PORT)
    }

    pub fn wait_connect(&self, src: IpAddr, want: bool, within: Duration) -> bool {
        self.pair
            .wait_connect(src, IpAddr::V4(self.pair.srv_ip4), PORT, want, within)
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
    /// equal across runs: iptables-save and ip6tables-save without comments
    /// and counters, plus (nftables backend) the nftables ruleset.
    pub fn firewall_snapshot(&self) -> String {
        let mut s = String::new();
        for save in ["iptables-save", "ip6tables-save"] {
            for l in self.srv_out(&[save]).lines() {
                if l.starts_with('#') {
                    continue;
                }
                // ":INPUT ACCEPT [12:345]" → ":INPUT ACCEPT"
                let l = match l.rfind(" [") {
                    Some(i) if l.starts_with(':') => &l[..i],
                    _ => l,
                };
                s.push_str(l);
                s.push('\n');
            }
        }
        // With iptables-nft, `nft list ruleset` is a second view of the same
        // tables; read it only for the nftables backend.
        if self.backend == "nftables" {
            s.push_str(&self.srv_out(&["nft", "list", "ruleset"]));
        }
        s
    }

    /// Pids of spa-server processes in the server namespace.
    pub fn server_pids(&self) -> Vec<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.pair.srv_ns])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .map(|c| c.trim() == "spa-server")
                    .unwrap_or(false)
            })
            .collect()
    }

    /// `spa-server [--config FILE] flush` (the unit's ExecStopPost) in the
    /// server namespace.
    pub fn flush(&self) -> std::process::Output {
        let server = bin("spa-server");
        let config = self.config_path();
        self.pair
            .srv(&[
                server.to_str().expect("utf-8 path"),
                "--config",
                config.to_str().expect("utf-8 path"),
                "flush",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("spawn spa-server flush")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    let mut st = None;
    wait_for(within, || match g.0.try_wait() {
        Ok(Some(s)) => {
            st = Some(s);
            true
        }
        _ => false,
    });
    st
}
