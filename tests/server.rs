//! A `spa-server` running in a test's server namespace, its output in a log
//! file the test greps.

use crate::{bin, run, wait_exit, wait_for, NetPair};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Spawns `cmd` with stdin from /dev/null and stdout and stderr going to
/// `log`: appended (a restart keeps the earlier lines) or truncated first.
pub fn spawn_logged(mut cmd: Command, log: &Path, append: bool) -> Child {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let f2 = f.try_clone().expect("dup log fd");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// A `spa-server` running in the server namespace, its stdout and stderr in
/// a log file the test can grep. Started and waited for (bounded) until it
/// logs `ready`; SIGKILLed on drop, so a failing test never leaves it behind
/// (the namespace and its firewall go with the `NetPair`).
pub struct Server {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Server {
    /// Starts `spa-server <args>` in `pair`'s server namespace, logging to
    /// `log` (truncated), and waits up to 10 s for `ready`. Panics with the
    /// log when it exits or does not get ready.
    pub fn start(pair: &NetPair, log: &std::path::Path, args: &[&str]) -> Server {
        let mut s = Server::spawn(pair, log, args);
        let ok = wait_for(Duration::from_secs(10), || s.is_ready() || !s.is_running());
        assert!(
            ok && s.is_running() && s.is_ready(),
            "spa-server did not get ready: {}",
            s.log_text()
        );
        s
    }

    /// True once the daemon logged its `ready` line (message exactly
    /// `ready`: other lines such as "iptables chain ready" come earlier,
    /// before the capture is open).
    pub fn is_ready(&self) -> bool {
        self.log_text()
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("ready"))
    }

    /// Starts `spa-server <args>` without waiting for anything (for start-up
    /// failure tests).
    pub fn spawn(pair: &NetPair, log: &std::path::Path, args: &[&str]) -> Server {
        let server = bin("spa-server");
        let mut argv: Vec<&str> = vec![server.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        let mut cmd = pair.srv(&argv);
        cmd.env("NO_COLOR", "1");
        let child = spawn_logged(cmd, log, false);
        Server {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines containing every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits (bounded) until at least `n` log lines contain all `needles`.
    pub fn wait_lines(&self, needles: &[&str], n: usize, within: Duration) -> bool {
        wait_for(within, || self.lines_with(needles).len() >= n)
    }

    /// Like `wait_lines`, but panics with the log when it times out.
    pub fn expect_lines(&self, needles: &[&str], n: usize) {
        assert!(
            self.wait_lines(needles, n, Duration::from_secs(5)),
            "expected {n} log line(s) with {needles:?} within 5 s; log:\n{}",
            self.log_text()
        );
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, then waits up to 10 s for the exit (SIGKILL after that).
    /// Returns the exit status; None if it had to be killed.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = run(Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null()));
        let st = wait_exit(&mut child, Duration::from_secs(10));
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        st
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
