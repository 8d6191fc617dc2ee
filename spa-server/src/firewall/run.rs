//! Running the firewall tools (`iptables-restore`, `nft`, `ipset`), by the
//! absolute paths tools.rs resolved, optionally through `exec_prefix`: the
//! one place a backend starts a process.

use super::{tools, FwError};
use std::io::Write;
use std::process::Stdio;

/// Runs the firewall tools, optionally through `exec_prefix`.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    prefix: Vec<String>,
}

/// What a tool said; `status` is kept so callers can tell "not found" (1)
/// from "cannot run" (spawn error) from other failures.
#[derive(Debug)]
pub(crate) struct Ran {
    pub cmd: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    pub fn into_result(self) -> Result<Ran, FwError> {
        if self.ok() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }
    pub fn into_error(self) -> FwError {
        FwError::Failed {
            cmd: self.cmd,
            status: match self.code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".into(),
            },
            stderr: self.stderr,
        }
    }
}

impl Runner {
    pub fn new(prefix: &[String]) -> Self {
        Runner {
            prefix: prefix.to_vec(),
        }
    }

    /// Runs `argv`, feeding `stdin` if given. Err only when the process could
    /// not run at all; a non-zero exit is in [`Ran::code`].
    pub fn run(&self, argv: &[&str], stdin: Option<&str>) -> Result<Ran, FwError> {
        let full: Vec<&str> = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain(argv.iter().copied())
            .collect();
        let cmd = full.join(" ");
        let Some((prog, args)) = full.split_first() else {
            return Err(FwError::Spawn {
                cmd,
                error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
            });
        };
        let mut c = tools::command(prog);
        c.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|error| FwError::Spawn {
            cmd: cmd.clone(),
            error,
        })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that dies early closes the pipe; its exit status and
            // stderr below say why, so a write error here is not the story.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(|error| FwError::Spawn {
            cmd: cmd.clone(),
            error,
        })?;
        Ok(Ran {
            cmd,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
