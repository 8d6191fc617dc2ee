//! One daemon per state directory (issue 10, item 2).
//!
//! Two daemons on one firewall undo each other: the second's setup flushes
//! the first's grants, and its teardown removes the chain the first still
//! uses. So the daemon takes an exclusive `flock(2)` on its state directory
//! before it reads state or touches the firewall, and holds it until exit
//! (the kernel drops it when the process dies, even on SIGKILL).
//!
//! Why the directory itself and not a lock file inside it: an empty state
//! directory is how a first start is told from lost state (state.rs), so
//! the lock must not create anything there. The holder's PID, for the
//! refusal message, comes from `/proc/locks`, which lists every flock with
//! its owner and the locked inode.

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Held while the value lives; dropped (closed) = released.
#[derive(Debug)]
pub struct InstanceLock {
    _dir: File,
    path: PathBuf,
}

impl InstanceLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock.
    Held { dir: PathBuf, pid: Option<u32> },
    /// The directory could not be opened or locked.
    Io { dir: PathBuf, error: std::io::Error },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held { dir, pid } => {
                let who = match pid {
                    Some(p) => format!("spa-server PID {p}"),
                    None => "another spa-server (PID unknown)".to_owned(),
                };
                write!(
                    f,
                    "{who} is running with state directory {}; one daemon per firewall: \
                     stop it first (systemctl stop spa-server), or give this one its own \
                     state_dir",
                    dir.display()
                )
            }
            LockError::Io { dir, error } => {
                write!(f, "cannot lock state directory {}: {error}", dir.display())
            }
        }
    }
}

impl std::error::Error for LockError {}

/// Takes the lock on `dir` (which must exist) without waiting.
pub fn acquire(dir: &Path) -> Result<InstanceLock, LockError> {
    let io = |error| LockError::Io {
        dir: dir.to_owned(),
        error,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(io)?;
    // SAFETY: flock on an fd we own; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let pid = f.metadata().ok().and_then(|m| holder(m.dev(), m.ino()));
            return Err(LockError::Held {
                dir: dir.to_owned(),
                pid,
            });
        }
        return Err(io(e));
    }
    Ok(InstanceLock {
        _dir: f,
        path: dir.to_owned(),
    })
}

/// Like [`acquire`], but a missing directory means no daemon ever ran with
/// it: `Ok(None)`, and nothing is created (for `spa-server flush`).
pub fn acquire_if_exists(dir: &Path) -> Result<Option<InstanceLock>, LockError> {
    match acquire(dir) {
        Ok(l) => Ok(Some(l)),
        Err(LockError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The PID holding a flock on (dev, ino), from `/proc/locks`.
fn holder(dev: u64, ino: u64) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    parse_proc_locks(&text, libc::major(dev), libc::minor(dev), ino)
}

/// Lines look like `1: FLOCK  ADVISORY  WRITE 1234 08:01:131 0 EOF`, the
/// device in hex as `major:minor`, the inode in decimal.
fn parse_proc_locks(text: &str, major: u32, minor: u32, ino: u64) -> Option<u32> {
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        // Blocked waiters are listed as "1: -> FLOCK ..."; skip them.
        if w.get(1) != Some(&"FLOCK") || w.len() < 6 {
            continue;
        }
        let mut id = w[5].split(':');
        let (Some(ma), Some(mi), Some(i)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        let same = u32::from_str_radix(ma, 16).ok() == Some(major)
            && u32::from_str_radix(mi, 16).ok() == Some(minor)
            && i.parse::<u64>().ok() == Some(ino);
        if same {
            return w[4].parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_line() {
        let t = "1: POSIX  ADVISORY  WRITE 99 08:01:131 0 EOF\n\
                 2: FLOCK  ADVISORY  WRITE 1234 fd:01:131 0 EOF\n\
                 2: -> FLOCK  ADVISORY  WRITE 55 fd:01:131 0 EOF\n";
        assert_eq!(parse_proc_locks(t, 0xfd, 1, 131), Some(1234));
        assert_eq!(parse_proc_locks(t, 8, 1, 131), None);
        assert_eq!(parse_proc_locks("garbage\n\n1:", 8, 1, 131), None);
    }

    #[test]
    fn second_lock_is_refused_with_our_pid() {
        let d = tempfile::tempdir().unwrap();
        let held = acquire(d.path()).unwrap();
        match acquire(d.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(held);
        assert!(acquire(d.path()).is_ok());
        assert!(acquire_if_exists(&d.path().join("missing"))
            .unwrap()
            .is_none());
        // Nothing was created in the directory.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
