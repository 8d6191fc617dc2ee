//! Dropping privilege: the network side becomes an unprivileged user with
//! no capabilities, `NoNewPrivs` and a seccomp allow-list; the privileged
//! side keeps CAP_NET_ADMIN and CAP_NET_RAW and nothing else.
//!
//! The seccomp filter comes from Firecracker's `seccompiler` (pure Rust, no
//! C library, only `libc` underneath; maintained by rust-vmm for a VMM whose
//! whole threat model is a hostile guest): a BTreeMap of allowed syscalls
//! compiled to classic BPF, checked against the target architecture.
//! Anything not listed fails with EPERM: `execve`, `socket`, `connect`,
//! `bind`, `ptrace`, `clone`/`fork`, `setuid`... A file's path cannot be
//! checked by seccomp (it is a pointer); which files the network side can
//! open is left to its user's permissions (its own state and runtime
//! directories; everything else is root's) and, under systemd, to
//! `ProtectSystem=strict`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Why a step of dropping privilege failed: the daemon does not start.
#[derive(Debug)]
pub enum SandboxError {
    /// The configured user cannot be the network side: `why` says whether
    /// it is missing or is root.
    NoUser { name: String, why: NoUserWhy },
    /// A system call failed; `what` names it.
    Sys { what: String, error: std::io::Error },
    /// The seccomp filter could not be built or installed.
    Seccomp(SeccompError),
}

/// Why the configured user cannot run the network side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoUserWhy {
    /// Not in the user database (or a name no database can hold: a NUL).
    Missing,
    /// It exists but is uid 0: no privilege would be dropped.
    Root,
}

/// Why the seccomp filter could not be built or installed. Kept as
/// seccompiler's own values (the failing call and its `io::Error` inside
/// [`seccompiler::Error`]), reachable through `source()`.
#[derive(Debug)]
pub enum SeccompError {
    /// seccompiler refused the filter while building it (the architecture,
    /// a condition, a rule, the compilation to BPF).
    Build(seccompiler::BackendError),
    /// Installing it failed: `prctl` or `seccomp(2)` and its OS error.
    Install(seccompiler::Error),
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SandboxError::NoUser {
                name,
                why: NoUserWhy::Missing,
            } => write!(
                f,
                "user `{name}` does not exist: create it (adduser --system --group --no-create-home {name}) \
                 or set `user` in server.toml to an existing unprivileged user"
            ),
            SandboxError::NoUser {
                name,
                why: NoUserWhy::Root,
            } => write!(
                f,
                "user `{name}` is uid 0: the network side must run unprivileged; set `user` in \
                 server.toml to an unprivileged user (the Debian package creates `spa`: adduser \
                 --system --group --no-create-home spa)"
            ),
            SandboxError::Sys { what, error } => write!(f, "{what}: {error}"),
            SandboxError::Seccomp(e) => write!(f, "seccomp filter: {e}"),
        }
    }
}

impl std::error::Error for SandboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SandboxError::NoUser { .. } => None,
            SandboxError::Sys { error, .. } => Some(error),
            SandboxError::Seccomp(e) => Some(e),
        }
    }
}

impl fmt::Display for SeccompError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeccompError::Build(e) => write!(f, "{e}"),
            SeccompError::Install(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SeccompError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SeccompError::Build(e) => Some(e),
            // seccompiler's error holds the call's io::Error as its source.
            SeccompError::Install(e) => std::error::Error::source(e),
        }
    }
}

impl From<seccompiler::BackendError> for SandboxError {
    fn from(e: seccompiler::BackendError) -> Self {
        SandboxError::Seccomp(SeccompError::Build(e))
    }
}

impl From<seccompiler::Error> for SandboxError {
    fn from(e: seccompiler::Error) -> Self {
        SandboxError::Seccomp(SeccompError::Install(e))
    }
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |error| SandboxError::Sys { what, error }
}

fn check(rc: libc::c_int, what: &str) -> Result<(), SandboxError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(SandboxError::Sys {
            what: what.to_owned(),
            error: std::io::Error::last_os_error(),
        })
    }
}

/// The user the network side runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Looks `name` up in the user database (getpwnam_r).
pub fn lookup_user(name: &str) -> Result<User, SandboxError> {
    let missing = || SandboxError::NoUser {
        name: name.to_owned(),
        why: NoUserWhy::Missing,
    };
    let cname = CString::new(name).map_err(|_| missing())?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data filled by getpwnam_r; buf outlives the
    // call and the fields we read (uid, gid) are copied out at once.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 || out.is_null() {
        return Err(missing());
    }
    Ok(User {
        name: name.to_owned(),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

/// Creates `dir` (0700) if missing and hands it, with the entries directly
/// in it, to `user` (not following symlinks), so the network side keeps its
/// state there. Run as root before the drop, with nothing but CAP_CHOWN
/// needed: under the unit root has no CAP_DAC_*, so a directory already
/// handed over is not listed again (what is in it is the user's already).
/// Refused, as by `safefile::ensure_private_dir`: anything but a directory
/// of root or `user`, or one that group or others may write.
pub fn give_dir(dir: &Path, user: &User) -> Result<(), SandboxError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(sys(format!("create {}", dir.display())))?;
    let md = std::fs::symlink_metadata(dir).map_err(sys(format!("stat {}", dir.display())))?;
    let refuse = |why: String| SandboxError::Sys {
        what: format!("refusing state directory {}", dir.display()),
        error: std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
    };
    if !md.is_dir() {
        return Err(refuse("not a directory".into()));
    }
    if md.uid() != 0 && md.uid() != user.uid {
        return Err(refuse(format!(
            "owned by uid {}, neither root nor the network side's user {} ({}): \
             `chown {} {}` if it is ours",
            md.uid(),
            user.name,
            user.uid,
            user.name,
            dir.display()
        )));
    }
    if md.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "mode {:04o} lets group or others write it; `chmod go-w {}`",
            md.mode() & 0o7777,
            dir.display()
        )));
    }
    if let Some(blocked) = unsearchable_parent(dir, user) {
        return Err(refuse(format!(
            "the network side's user {} cannot reach it: {} is not searchable by that user \
             (`chmod o+x {}`, or choose a state directory under /var/lib)",
            user.name,
            blocked.display(),
            blocked.display()
        )));
    }
    let chown = |p: &Path| -> Result<(), SandboxError> {
        let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| SandboxError::Sys {
            what: format!("chown {}", p.display()),
            error: std::io::ErrorKind::InvalidInput.into(),
        })?;
        // SAFETY: c is a valid NUL-terminated path.
        let rc = unsafe { libc::lchown(c.as_ptr(), user.uid, user.gid) };
        check(rc, &format!("chown {} to {}", p.display(), user.name))
    };
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                chown(&e.path())?;
            }
        }
        // Handed over before, and root may not read it: nothing to do.
        Err(_) if md.uid() == user.uid => {}
        Err(e) => return Err(sys(format!("list {}", dir.display()))(e)),
    }
    chown(dir)
}

/// The first parent directory of `dir` that `user` may not search (x bit
/// for its owner, group or others, as the kernel checks it), if any. After
/// the drop the network side opens its state by path: a private parent (a
/// 0700 `mktemp -d`, a home directory) would fail only then, as "permission
/// denied" on a directory that exists; this names the parent up front.
fn unsearchable_parent(dir: &Path, user: &User) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let abs = std::path::absolute(dir).ok()?;
    for parent in abs.ancestors().skip(1) {
        let md = std::fs::metadata(parent).ok()?;
        let bit = if md.uid() == user.uid {
            0o100
        } else if md.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        if md.mode() & bit == 0 {
            return Some(parent.to_path_buf());
        }
    }
    None
}

/// Becomes `user` for good: supplementary groups, then gid, then uid (real,
/// effective and saved), so there is no way back to root.
pub fn become_user(user: &User) -> Result<(), SandboxError> {
    let groups = [user.gid];
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        check(libc::setgroups(1, groups.as_ptr()), "setgroups")?;
        check(libc::setresgid(user.gid, user.gid, user.gid), "setresgid")?;
        check(libc::setresuid(user.uid, user.uid, user.uid), "setresuid")?;
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
const CAP_LAST_POSSIBLE: u32 = 63;

/// Sets the effective and permitted sets to exactly `keep` and the
/// inheritable and ambient sets to empty. With `keep` empty: no capability
/// at all.
pub fn limit_caps(keep: &[u32]) -> Result<(), SandboxError> {
    // SAFETY: prctl with constant arguments.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    check(rc, "clear the ambient capabilities")?;
    let mut data = [CapData::default(); 2];
    for &c in keep {
        let (i, bit) = ((c / 32) as usize, 1u32 << (c % 32));
        if let Some(d) = data.get_mut(i) {
            d.effective |= bit;
            d.permitted |= bit;
        }
    }
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: header and a two-element data array, as capset(2) wants for
    // version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    check(rc as libc::c_int, "capset")
}

/// Drops every capability but `keep` from the bounding set, so nothing
/// this process runs later can get them back. Needs CAP_SETPCAP; without
/// it (a unit's bounding set is already narrow) this does nothing.
pub fn limit_bounding(keep: &[u32]) {
    for c in 0..=CAP_LAST_POSSIBLE {
        if !keep.contains(&c) {
            // SAFETY: prctl with plain integer arguments; EINVAL past the
            // kernel's last capability and EPERM without CAP_SETPCAP are
            // both fine here.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) };
        }
    }
}

/// NoNewPrivs: no execve can ever raise privilege again (also needed to
/// install a seccomp filter without CAP_SYS_ADMIN).
pub fn no_new_privs() -> Result<(), SandboxError> {
    // SAFETY: prctl with constant arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "PR_SET_NO_NEW_PRIVS",
    )
}

/// What the network side's event loop calls once it runs: reading and
/// writing its sockets and files, poll, the clock, memory, signals, exit.
/// Opening files stays allowed (the replay log's compaction writes a new
/// file and renames it), and accepting on the control socket bound before;
/// creating sockets, connecting, binding, executing, forking, tracing and
/// changing identity do not.
fn allowed() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_close,
        libc::SYS_openat,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_lseek,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_ftruncate,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_unlinkat,
        libc::SYS_getdents64,
        libc::SYS_fcntl,
        libc::SYS_ioctl,
        libc::SYS_ppoll,
        libc::SYS_recvfrom,
        // The capture's batched receive (capture/sys.rs, issue 14).
        libc::SYS_recvmmsg,
        // The control socket's connections (bound before the filter).
        libc::SYS_accept4,
        libc::SYS_shutdown,
        // Also how capture sockets arrive from the privileged side.
        libc::SYS_recvmsg,
        libc::SYS_sendto,
        libc::SYS_sendmsg,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_getsockname,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_tgkill,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_getrandom,
        libc::SYS_sched_yield,
        libc::SYS_restart_syscall,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_open,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_poll,
        libc::SYS_rename,
        libc::SYS_unlink,
        libc::SYS_time,
    ]);
    v
}

/// The network side keeps its capture sockets at this descriptor number
/// and above (`Remote::open_capture` moves each one there), and nothing
/// else: its seccomp filter refuses every call that sends or changes a
/// socket option on a descriptor from here up. Why: a packet socket can
/// also send (the kernel checks CAP_NET_RAW only when it is created), to
/// any interface and with any source address (`sendto` names them), and
/// its options include promiscuous mode. Seccomp sees only the number, and
/// a socket received later gets a number no filter installed earlier could
/// name: a range can. Well under the usual soft RLIMIT_NOFILE of 1024; the
/// network side's other descriptors (state files, the control socket and
/// its few connections) stay far below it.
pub const CAPTURE_FD_BASE: std::os::fd::RawFd = 512;
// The seccomp comparison takes it unsigned: checked here, not at run time.
const _: () = assert!(CAPTURE_FD_BASE > 0);

/// The calls allowed on descriptors below [`CAPTURE_FD_BASE`] only: every
/// way to send, and socket options.
fn below_capture_fds() -> Vec<i64> {
    vec![
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_pwrite64,
        libc::SYS_sendto,
        libc::SYS_sendmsg,
        libc::SYS_setsockopt,
    ]
}

/// Installs the network side's allow-list (and NoNewPrivs): from here on a
/// forbidden call fails with EPERM.
///
/// No `bind` at all: a capture socket for a re-created interface, or for
/// one a reload adds, is made by the privileged side and received with
/// `recvmsg` (SCM_RIGHTS), already in the list for the control socket.
/// Sending and `setsockopt` only on descriptors below
/// [`CAPTURE_FD_BASE`]: the capture sockets receive, nothing more.
pub fn install_seccomp() -> Result<(), SandboxError> {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        allowed().into_iter().map(|s| (s, Vec::new())).collect();
    let base = u64::from(CAPTURE_FD_BASE.unsigned_abs());
    for call in below_capture_fds() {
        let below = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Lt, base)?;
        rules.insert(call, vec![SeccompRule::new(vec![below])?]);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )?;
    let prog: BpfProgram = filter.try_into()?;
    no_new_privs()?;
    Ok(seccompiler::apply_filter(&prog)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A state directory below a private parent (a 0700 `mktemp -d`) is
    /// named before the drop, not found unreadable after it.
    #[test]
    fn a_private_parent_is_named() {
        let top = tempfile::tempdir().expect("tempdir");
        let state = top.path().join("state");
        let nobody = User {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            unsearchable_parent(&state, &nobody).as_deref(),
            Some(top.path())
        );
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(unsearchable_parent(&state, &nobody), None);
    }

    /// The messages an admin reads when the drop cannot start, byte for
    /// byte: they are matched by people and scripts, so a refactor of the
    /// error types must not change them.
    #[test]
    fn messages_are_pinned() {
        let e = lookup_user("spa-no-such-user").unwrap_err();
        assert_eq!(
            e.to_string(),
            "user `spa-no-such-user` does not exist: create it (adduser --system --group \
             --no-create-home spa-no-such-user) or set `user` in server.toml to an existing \
             unprivileged user"
        );
        let e = lookup_user("a\0b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "user `a\0b` does not exist: create it (adduser --system --group \
             --no-create-home a\0b) or set `user` in server.toml to an existing \
             unprivileged user"
        );
        let e = SandboxError::from(seccompiler::Error::Seccomp(
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ));
        assert_eq!(
            e.to_string(),
            "seccomp filter: Error calling `seccomp`: Invalid argument (os error 22)"
        );
        let e = SandboxError::from(seccompiler::Error::Prctl(
            std::io::Error::from_raw_os_error(libc::EPERM),
        ));
        assert_eq!(
            e.to_string(),
            "seccomp filter: Error calling `prctl`: Operation not permitted (os error 1)"
        );
        let e = SandboxError::from(seccompiler::Error::EmptyFilter);
        assert_eq!(
            e.to_string(),
            "seccomp filter: Cannot install empty filter."
        );
        let e = SandboxError::from(seccompiler::BackendError::InvalidTargetArch("vax".into()));
        assert_eq!(e.to_string(), "seccomp filter: Invalid target arch: vax.");
        let e = SandboxError::from(seccompiler::BackendError::EmptyRule);
        assert_eq!(
            e.to_string(),
            "seccomp filter: The condition vector of a rule cannot be empty."
        );
    }

    /// The facts stay reachable: the user and why, the seccomp call's OS
    /// error through `source()`.
    #[test]
    fn errors_keep_their_facts() {
        match lookup_user("spa-no-such-user") {
            Err(SandboxError::NoUser { name, why }) => {
                assert_eq!(
                    (name.as_str(), why),
                    ("spa-no-such-user", NoUserWhy::Missing)
                );
            }
            other => panic!("{other:?}"),
        }
        let e = SandboxError::from(seccompiler::Error::Seccomp(
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ));
        let os = std::error::Error::source(&e)
            .and_then(std::error::Error::source)
            .and_then(|c| c.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        assert_eq!(os, Some(libc::EINVAL));
    }
}
