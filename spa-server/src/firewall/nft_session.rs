//! A long-lived `nft -i` process for the hot path (apply).
//!
//! Spawning `nft -f -` costs a process start and a ruleset cache load per
//! batch (median 6.5 ms on the loaded build box); a persistent interactive
//! session answers one transaction in ~0.5 ms. In interactive mode each input
//! line is parsed and committed as one transaction (all or nothing), and
//! errors go to stderr (merged into the same pipe). No `-e` (echo): with
//! it nft keeps every element the session added in its cache, and each
//! batch cost grew with them (issue 14, measured: 3 ms at 0, 52 ms at 10,000
//! elements added through one session; without: 0.25-0.34 ms throughout). After each batch line we send a
//! sentinel (`describe inet_service`, which needs no kernel access and prints a
//! fixed `datatype inet_service ...` line), so we know exactly where the
//! batch's output ends.

use super::FwError;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const SENTINEL_CMD: &str = "describe inet_service";
const SENTINEL_OUT: &str = "datatype inet_service";
/// At most this many output lines per batch before we call the session
/// broken (a batch of N elements echoes about N + 2 lines).
const MAX_LINES: usize = 10_000;

pub struct NftSession {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    cmd: String,
}

impl NftSession {
    /// `prefix… sh -c 'exec "$0" -i 2>&1' <nft>`: the shell only merges
    /// stderr into stdout (std cannot), then becomes nft.
    pub fn spawn(prefix: &[String], nft: &str) -> Result<NftSession, FwError> {
        let mut argv: Vec<&str> = prefix.iter().map(String::as_str).collect();
        argv.extend([super::tools::SH, "-c", "exec \"$0\" -i 2>&1", nft]);
        let cmd = format!("{} (persistent)", argv.join(" "));
        let spawn_err = |error| FwError::Spawn {
            cmd: cmd.clone(),
            error,
        };
        let mut child = super::tools::command(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(spawn_err)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err(std::io::Error::other("no pipes")));
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("nft-session".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(spawn_err)?;
        Ok(NftSession {
            child,
            stdin,
            lines: rx,
            cmd,
        })
    }

    /// Runs `commands` as ONE transaction. Err(Failed) when nft refused it
    /// (nothing committed); Err(Spawn) when the session broke or timed out,
    /// after which the caller must drop this session (state unknown).
    pub fn transaction(&mut self, commands: &[String], timeout: Duration) -> Result<(), FwError> {
        // Stale output from an earlier, abandoned exchange would confuse us.
        while self.lines.try_recv().is_ok() {}
        let line = commands.join("; ");
        let broken = |what: &str| FwError::Spawn {
            cmd: self.cmd.clone(),
            error: std::io::Error::other(what.to_owned()),
        };
        if line.contains('\n') {
            return Err(broken("batch text contains a newline"));
        }
        let msg = format!("{line}\n{SENTINEL_CMD}\n");
        self.stdin
            .write_all(msg.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|error| FwError::Spawn {
                cmd: self.cmd.clone(),
                error,
            })?;
        let deadline = Instant::now() + timeout;
        let mut out: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // `contains`: tolerate a prompt an nft build might print.
                Ok(l) if l.contains(SENTINEL_OUT) => break,
                Ok(l) => {
                    if out.len() >= MAX_LINES {
                        return Err(broken("too much output"));
                    }
                    out.push(l);
                }
                Err(RecvTimeoutError::Timeout) => return Err(broken("no answer in time")),
                Err(RecvTimeoutError::Disconnected) => return Err(broken("nft exited")),
            }
        }
        // nft handles input lines strictly in order, so reaching the
        // sentinel means the batch line is finished; it either printed an
        // error or committed. (Deletes echo nothing, so there is no positive
        // acknowledgement to wait for.)
        if out.iter().any(|l| l.contains("Error:")) {
            return Err(FwError::Failed {
                cmd: self.cmd.clone(),
                status: "transaction refused".into(),
                stderr: out.join("\n"),
            });
        }
        Ok(())
    }
}

impl Drop for NftSession {
    fn drop(&mut self) {
        // EOF on stdin ends `nft -i`; kill is the backstop, wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for `nft -i` that answers like it: echo on success,
    /// `Error:` on stderr for a bad line, the sentinel's fixed line.
    const FAKE_NFT: &str = r##"#!/bin/sh
while IFS= read -r line; do
  case "$line" in
    describe*) echo "datatype inet_service (internet network service) (basetype integer), 16 bits";;
    *bad*) echo "Error: Could not process rule: No such file or directory" >&2; echo "$line" >&2;;
    *hang*) sleep 5;;
    *quit*) exit 0;;
    *) echo "$line"; echo "# new generation 1 by process 1 (nft)";;
  esac
done
"##;

    fn fake() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nft");
        std::fs::write(&path, FAKE_NFT).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = path.to_str().unwrap().to_owned();
        (dir, p)
    }

    fn cmds(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn framing_success_error_timeout_exit() {
        let (_dir, nft) = fake();
        let mut s = NftSession::spawn(&[], &nft).unwrap();
        let t = Duration::from_secs(2);
        s.transaction(&cmds(&["add element a", "add element b"]), t)
            .unwrap();
        let e = s
            .transaction(&cmds(&["add element a", "bad delete"]), t)
            .unwrap_err();
        assert!(matches!(e, FwError::Failed { .. }), "{e:?}");
        assert!(e.to_string().contains("No such file or directory"), "{e}");
        // The session is still usable after a refused batch.
        s.transaction(&cmds(&["add element c"]), t).unwrap();
        let e = s
            .transaction(&cmds(&["hang"]), Duration::from_millis(200))
            .unwrap_err();
        assert!(e.to_string().contains("no answer in time"), "{e}");
        drop(s);

        let mut s = NftSession::spawn(&[], &nft).unwrap();
        let e = s.transaction(&cmds(&["quit"]), t).unwrap_err();
        assert!(matches!(e, FwError::Spawn { .. }), "{e:?}");
        let e = s.transaction(&cmds(&["a\nb"]), t).unwrap_err();
        assert!(matches!(e, FwError::Spawn { .. }), "{e:?}");
    }

    #[test]
    fn missing_tool_fails_cleanly() {
        // `sh` starts; exec of the missing tool fails, sh exits.
        let mut s = NftSession::spawn(&[], "/nonexistent/nft").unwrap();
        let e = s
            .transaction(&cmds(&["add element a"]), Duration::from_secs(2))
            .unwrap_err();
        assert!(matches!(e, FwError::Spawn { .. }), "{e:?}");
    }
}
