//! Test hosts for the end-to-end tests: two network namespaces joined by a
//! veth pair, with addresses from the benchmarking ranges (198.18.0.0/15,
//! 2001:2::/48), torn down on drop, also when a test panics.
//!
//! Each test passes its own `id` (1..=250), which picks the namespace names
//! (`spa<id>s`, `spa<id>c`) and the subnet (198.18.<id>.0/24,
//! 2001:2:0:<id>::/64), so tests run in parallel without sharing anything.
//! Ids in use: 1-9 and 70 daemon tests, 10-19 firewall, 20-24 capture, 30-49 legacy,
//! 50-69 lifecycle (69: re-created interface), 100-103 replay_record, 120-126 owners, jump and addresses (B:
//! 120-139), 140 tools_env and 141 knock_flood (C: 140-159), 160-162 and 164 client, 163 ssh, 170-171 flood (h5: 170-179),
//! 200-213 issue 10 (instance, silent, journal in systemd.rs, rejections, fw_reload,
//! revocation, check_config; F: 200-219), 220-222 privsep (G: 220-239), 240 key_rules and 241-243 forward (H: 240-250), 60 protocol_v2 (J: 60-66, 73-79). Nothing here
//! touches the root namespace's firewall: every command runs through `ip netns exec`.
//!
//! Modules: netns.rs (`NetPair`), firewall.rs (ruleset snapshots, backends
//! driven directly), scratch.rs (`Scratch`, `keygen`), server.rs (`Server`,
//! `spawn_logged`), testbed.rs (`Testbed`), rawsyn.rs (`SynFlood`: spoofed
//! raw SYNs), sshd.rs; `spa_e2e::X` paths stay flat through the re-exports
//! below.

mod firewall;
mod netns;
mod rawsyn;
mod scratch;
mod server;
pub mod sshd;
mod testbed;

pub use firewall::{kernel_closes_at_expiry, tcp_access, Expiry};
pub use netns::{Family, NetPair};
pub use rawsyn::SynFlood;
pub use scratch::{keygen, Scratch};
pub use server::{spawn_logged, Server};
pub use testbed::{Testbed, PORT};

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Path of a workspace binary (`spa-server`, `spa-client`, `spa-keygen`),
/// found next to the test executable (`target/<profile>/deps/..`), so it works
/// for debug and release builds alike. `SPA_BIN_DIR` overrides.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("SPA_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps layout");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Fails the test early with a clear message when not run as root.
pub fn require_root() {
    // SAFETY-free check: /proc/self/status Uid line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        uid, "0",
        "end-to-end tests need root (network namespaces, firewall)"
    );
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    out
}

pub(crate) fn must(mut cmd: Command) {
    let cmd = &mut cmd;
    let dbg = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{dbg} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` to completion (stdin from /dev/null) and panics with its
/// command line, stdout and stderr unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A child process that is killed when dropped (SIGKILL), so a failing test
/// never leaves a daemon behind.
pub struct Guard(pub Child);

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most `within`) for `child` to exit; its status if it did.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let mut st = None;
    wait_for(within, || match child.try_wait() {
        Ok(Some(s)) => {
            st = Some(s);
            true
        }
        _ => false,
    });
    st
}

/// Polls `f` every 20 ms until it returns true or `within` passes.
pub fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unix seconds now: the clock of `Access::expires_at`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
