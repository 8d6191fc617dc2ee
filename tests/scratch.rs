//! A scratch directory of a test's own under /tmp, and key files made in it
//! by the real `spa-keygen`.

use crate::{bin, run};
use std::path::PathBuf;
use std::process::Command;

/// A directory of our own under /tmp (keys, state, logs), removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    /// `/tmp/spa-e2e.<tag>.<pid>`, emptied first if a killed run left it.
    pub fn new(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("spa-e2e.{tag}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Scratch { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes a new key file (mode 0600) with the real `spa-keygen`, for
/// `server_id`, and returns its path as a string for argv use.
pub fn keygen(path: &std::path::Path, name: &str, server_id: &str) -> String {
    let out = run(Command::new(bin("spa-keygen"))
        .arg("--out")
        .arg(path)
        .args(["--name", name, "--server-id", server_id]));
    assert!(
        out.status.success(),
        "spa-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.display().to_string()
}
