//! The real OpenSSH for the end-to-end tests that log in through a grant
//! (ssh.rs: the README's recipe; forward.rs: through a forward): throwaway
//! keys and one sshd, started in a test's namespace and in a mount
//! namespace of its own, so nothing of it touches the host.

use crate::{run_ok, spawn_logged, wait_for, Guard, Scratch};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub const SSHD: &str = "/usr/sbin/sshd";
pub const SSH: &str = "/usr/bin/ssh";
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// Fails (never skips) when OpenSSH is missing, naming the package.
pub fn require_openssh() {
    for (path, pkg) in [
        (SSHD, "openssh-server"),
        (SSH, "openssh-client"),
        (SSH_KEYGEN, "openssh-client"),
    ] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: install the Debian package {pkg} (`scripts/prereqs.sh test` does)"
        );
    }
}

/// A new ed25519 key pair at `path` and `path.pub`, no passphrase.
pub fn ssh_keygen(path: &Path) {
    let _ = std::fs::remove_file(path);
    run_ok(
        Command::new(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "spa-e2e", "-f"])
            .arg(path),
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Starts sshd, as `in_ns` runs a command in the test's namespace
/// (`NetPair::srv`, or another namespace's), listening on `listen`
/// (`198.18.1.1:22`, `[::]:22`), and returns once it listens (10 s at
/// most). In `dir`: `host_key`, the client's `id_ed25519` (authorized for
/// root), `sshd_config`, `sshd.log`.
///
/// sshd without PAM refuses an account whose password field is locked
/// ('!', as on hosts where root has no password): it runs in a mount
/// namespace where /etc/shadow has root with no password and not locked
/// ('*'), so key login works whatever the host has. Its privilege
/// separation directory (Debian's unit makes /run/sshd) goes on a tmpfs of
/// that mount namespace too.
pub fn start_sshd(dir: &Scratch, listen: &[&str], in_ns: impl FnOnce(&[&str]) -> Command) -> Guard {
    require_openssh();
    ssh_keygen(&dir.join("host_key"));
    ssh_keygen(&dir.join("id_ed25519"));
    let id_pub = std::fs::read_to_string(dir.join("id_ed25519.pub")).expect("read id pub");
    write(&dir.join("authorized_keys"), &id_pub);
    let d = dir.path.display();
    let listen: String = listen
        .iter()
        .map(|a| format!("ListenAddress {a}\n"))
        .collect();
    write(
        &dir.join("sshd_config"),
        &format!(
            "{listen}HostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n"
        ),
    );
    write(&dir.join("shadow"), "root:*:19000:0:99999:7:::\n");
    let sh = format!(
        "mount --bind {d}/shadow /etc/shadow && mount -t tmpfs -o mode=0755 spa-e2e-sshd /run && \
         mkdir -m 0755 /run/sshd && exec {SSHD} -D -e -f {d}/sshd_config"
    );
    let sshd = Guard(spawn_logged(
        in_ns(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &sh,
        ]),
        &dir.join("sshd.log"),
        false,
    ));
    let log = || std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(10), || log()
            .contains("Server listening")),
        "sshd did not start: {}",
        log()
    );
    sshd
}
