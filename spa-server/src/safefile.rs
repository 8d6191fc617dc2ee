//! Files in a directory that only the daemon may write (issue 16, finding
//! 7): the directory must belong to the daemon's user and be closed to
//! group and others, files are opened without following a symlink, a
//! temporary file is created exclusively, and nothing is read past a cap.
//!
//! Why each: a directory another user can write lets that user plant a
//! symlink where the daemon (root) will write, and so overwrite any file;
//! `O_NOFOLLOW` refuses a planted symlink in the last component, `O_EXCL`
//! refuses a planted temporary file; a cap keeps a huge file from costing
//! memory at start.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct StateError {
    pub path: PathBuf,
    pub what: &'static str,
    pub source: io::Error,
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.path.display(), self.what, self.source)
    }
}

impl std::error::Error for StateError {}

pub fn err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError {
        path: path.to_owned(),
        what,
        source,
    }
}

/// How a directory was found by [`ensure_private_dir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    /// Created by this call, or found with nothing in it: nothing was ever
    /// kept here (every start leaves a marker, see state/mod.rs).
    Empty,
    /// Existed with entries in it.
    Used,
}

/// Creates `dir` (mode 0700) if missing, then refuses it unless it belongs
/// to the daemon's effective user and neither group nor others may write
/// it. The error names the path and what the admin should run.
pub fn ensure_private_dir(dir: &Path) -> Result<DirState, StateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir, "cannot create state directory"))?;
    let md = std::fs::metadata(dir).map_err(err(dir, "cannot stat state directory"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !md.is_dir() {
        return Err(refuse(dir, "is not a directory".to_owned()));
    }
    if md.uid() != me {
        return Err(refuse(
            dir,
            format!(
                "owned by uid {}, not by the daemon's uid {me}; another user could plant symlinks \
                 there: `chown {me} {}` if it is ours, or point the setting at another directory",
                md.uid(),
                dir.display()
            ),
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(refuse(
            dir,
            format!(
                "mode {:04o} lets group or others write it; `chmod go-w {}`",
                md.mode() & 0o7777,
                dir.display()
            ),
        ));
    }
    let mut entries = std::fs::read_dir(dir).map_err(err(dir, "cannot list state directory"))?;
    Ok(if entries.next().is_none() {
        DirState::Empty
    } else {
        DirState::Used
    })
}

fn refuse(dir: &Path, msg: String) -> StateError {
    StateError {
        path: dir.to_owned(),
        what: "refusing state directory",
        source: io::Error::new(io::ErrorKind::PermissionDenied, msg),
    }
}

/// Opens an existing file for reading without following a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens an existing file for appending without following a symlink.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// What [`read_capped`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Contents {
    Missing,
    Bytes(Vec<u8>),
    /// Larger than the cap: not read.
    TooLarge,
}

/// Reads `path` whole, refusing a symlink and anything over `cap` bytes.
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Contents> {
    let f = match open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::Missing),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    f.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Ok(Contents::TooLarge);
    }
    Ok(Contents::Bytes(bytes))
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old
/// or the new file: a temporary file created exclusively (a stale one from
/// a crash is removed first: the directory is ours alone), fsync, rename,
/// fsync of the directory.
pub fn replace_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&tmp, "cannot remove stale temporary file")(e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(err(&tmp, "cannot create"))?;
    f.write_all(bytes).map_err(err(&tmp, "cannot write"))?;
    f.sync_all().map_err(err(&tmp, "cannot fsync"))?;
    std::fs::rename(&tmp, &path).map_err(err(&path, "cannot replace"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(dir, "cannot fsync state directory"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_directory_others_may_write_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        assert_eq!(ensure_private_dir(&state).unwrap(), DirState::Empty);
        std::fs::write(state.join("x"), b"").unwrap();
        assert_eq!(ensure_private_dir(&state).unwrap(), DirState::Used);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&state).unwrap_err().to_string();
        assert!(e.contains(&state.display().to_string()), "{e}");
        assert!(e.contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o720)).unwrap();
        assert!(ensure_private_dir(&state).is_err(), "group-writable too");
    }

    #[test]
    fn a_directory_of_another_user_is_refused_with_the_fix() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return; // chown needs root; the tests run as root
        }
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
        let e = ensure_private_dir(&state).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        assert!(e.contains("chown 0"), "{e}");
    }

    #[test]
    fn symlinks_are_not_followed_and_a_planted_temp_file_is_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"root's file").unwrap();
        let dir = d.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        // A planted symlink at the temporary name: removed, not followed.
        std::os::unix::fs::symlink(&victim, dir.join("f.tmp")).unwrap();
        replace_durably(&dir, "f", b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"root's file");
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"new");
        // A symlink in place of the file itself is refused for reading and
        // appending.
        std::os::unix::fs::symlink(&victim, dir.join("g")).unwrap();
        assert!(read_capped(&dir.join("g"), 100).is_err());
        assert!(open_append(&dir.join("g")).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"root's file");
    }

    #[test]
    fn reads_are_capped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        std::fs::write(&p, vec![0u8; 101]).unwrap();
        assert_eq!(read_capped(&p, 100).unwrap(), Contents::TooLarge);
        assert_eq!(
            read_capped(&p, 101).unwrap(),
            Contents::Bytes(vec![0u8; 101])
        );
        assert_eq!(
            read_capped(&d.path().join("none"), 1).unwrap(),
            Contents::Missing
        );
    }
}
