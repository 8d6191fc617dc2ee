//! A systemd booted as PID 1 of its own pid, mount, UTS, IPC and cgroup
//! namespaces inside a test's server network namespace, fenced off from the
//! host (systemd.rs's module comment says how): booted, entered with
//! nsenter, killed with its cgroup on drop.

use spa_e2e::{run_ok, wait_for, Testbed};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How long systemd has to boot, or a unit job to finish.
pub const WAIT: Duration = Duration::from_secs(20);

/// The mount point of the cgroup2 hierarchy (`/sys/fs/cgroup` on a unified
/// host, `/sys/fs/cgroup/unified` on a hybrid one).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .next()
        .expect("a cgroup2 hierarchy is mounted (systemd needs one)")
}

/// systemd booted as PID 1 of its own namespaces; killed, with everything
/// it started, and its cgroup removed on drop.
pub struct Systemd {
    /// `unshare`, the parent of systemd.
    pub child: Child,
    /// systemd's pid as seen from here.
    pub pid: u32,
    pub cgroup: PathBuf,
}

impl Systemd {
    pub fn boot(tb: &Testbed) -> Systemd {
        assert!(
            Path::new("/lib/systemd/systemd").exists(),
            "/lib/systemd/systemd missing: apt-get install systemd"
        );
        let dir = &tb.dir.path;
        let cgroup = cgroup2_root().join(format!("spa-e2e-{}-{}", tb.pair.id, std::process::id()));
        std::fs::create_dir_all(&cgroup).expect("create the test's cgroup");
        let boot = dir.join("boot.sh");
        std::fs::write(&boot, BOOT_SH).expect("write boot.sh");
        let child = Command::new("sh")
            .arg("-c")
            // Into the test's cgroup first: `unshare --cgroup` makes it the
            // root of systemd's cgroup namespace.
            .arg(r#"echo $$ > "$1/cgroup.procs" && exec ip netns exec "$2" unshare --pid --fork --kill-child --mount --uts --ipc --cgroup sh "$3" "$4""#)
            .arg("sh")
            .arg(&cgroup)
            .arg(&tb.pair.srv_ns)
            .arg(&boot)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("boot.log")).expect("boot.log"))
            .spawn()
            .expect("spawn unshare");
        let mut sd = Systemd {
            pid: 0,
            child,
            cgroup,
        };
        let parent = sd.child.id();
        let found = wait_for(WAIT, || {
            let children =
                std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                    .unwrap_or_default();
            match children.split_whitespace().next().map(str::parse) {
                Some(Ok(pid)) => {
                    sd.pid = pid;
                    true
                }
                _ => false,
            }
        });
        assert!(found, "systemd did not start: {}", sd.boot_log(dir));
        let running = wait_for(WAIT, || {
            let out = sd.sh("systemctl is-system-running 2>/dev/null || true");
            let state = String::from_utf8_lossy(&out.stdout);
            matches!(state.trim(), "running" | "degraded")
        });
        assert!(
            running,
            "systemd did not finish booting: {}",
            sd.boot_log(dir)
        );
        sd
    }

    pub fn boot_log(&self, dir: &Path) -> String {
        std::fs::read_to_string(dir.join("boot.log")).unwrap_or_default()
    }

    /// `sh -c script` inside systemd's namespaces (its mounts, its pid
    /// namespace, the server network namespace).
    pub fn nsenter(&self, script: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-a", "sh", "-c", script])
            .stdin(Stdio::null());
        c
    }

    pub fn sh(&self, script: &str) -> Output {
        self.nsenter(script).output().expect("spawn nsenter")
    }

    /// `sh`, which must exit 0; its stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = run_ok(&mut self.nsenter(script));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show -p PROP --value spa-server`.
    pub fn prop(&self, prop: &str) -> String {
        self.sh_ok(&format!("systemctl show -p {prop} --value spa-server"))
            .trim()
            .to_owned()
    }

    /// The unit's log and status, for failure messages.
    pub fn diag(&self) -> String {
        let out = self.sh("systemctl status --no-pager spa-server; echo; cat /run/spa-e2e.log");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // SIGKILL to PID 1 of a pid namespace ends every process in it.
        if self.pid != 0 {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Empty once its processes are gone: remove the tree bottom-up.
        let cgroup = self.cgroup.clone();
        wait_for(Duration::from_secs(5), || {
            remove_cgroup(&cgroup);
            !cgroup.exists()
        });
    }
}

fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// PID 1's preparation; `$1` is the scratch directory.
const BOOT_SH: &str = r#"set -e
mount --make-rprivate /
mount -t proc proc /proc
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -o remount,ro /sys
# The overlays' upper layers on a tmpfs of their own: any /tmp will do
# (an overlayfs /tmp could not hold an upper layer).
mkdir -p "$1/ovl"
mount -t tmpfs -o mode=0700 tmpfs "$1/ovl"
for d in etc usr; do
    mkdir -p "$1/ovl/$d.upper" "$1/ovl/$d.work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$1/ovl/$d.upper,workdir=$1/ovl/$d.work" "/$d"
done
mount -t tmpfs -o mode=0755 tmpfs /run
# dpkg's database, as an overlay too (the package test installs .debs):
# its lower layer is bound aside before /var is hidden.
mkdir -p "$1/ovl/dpkg.lower" "$1/ovl/dpkg.upper" "$1/ovl/dpkg.work"
mount --bind /var/lib/dpkg "$1/ovl/dpkg.lower"
mount -t tmpfs -o mode=0755 tmpfs /var
mkdir -p /var/lib/dpkg /var/log /var/cache /var/tmp
mount -t overlay overlay -o "lowerdir=$1/ovl/dpkg.lower,upperdir=$1/ovl/dpkg.upper,workdir=$1/ovl/dpkg.work" /var/lib/dpkg
mkdir -p /run/systemd/system
printf '[Unit]\nDescription=spa e2e\nDefaultDependencies=no\n' >/run/systemd/system/spa-e2e.target
export container=spa-e2e
exec /lib/systemd/systemd --system --unit=spa-e2e.target systemd.unified_cgroup_hierarchy=1
"#;
