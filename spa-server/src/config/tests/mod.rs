//! The configuration's unit tests, beside the part each one tests; the
//! shared fixture (a folder of key files and `server.toml`) is here.

use super::*;
use proptest::prelude::*;
use spa_proto::{MasterKey, Proto};
use std::os::unix::fs::PermissionsExt;

/// A temporary folder holding `server.toml`'s key files (mode 0600).
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let e = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        e.key("alice.key", "alice", 0x11);
        e.key("bob.key", "bob", 0x22);
        e
    }
    fn key(&self, file: &str, name: &str, byte: u8) -> PathBuf {
        let p = self.dir.path().join(file);
        KeyFile {
            name: name.into(),
            key: MasterKey::from_bytes([byte; 32]),
            server_id: None,
            server_uid: None,
        }
        .write_new(&p, true)
        .unwrap();
        p
    }
    fn conf(&self) -> PathBuf {
        self.dir.path().join("server.toml")
    }
    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        Config::from_text(text, &self.conf(), &Overrides::default())
    }
    fn load_ov(&self, text: &str, ov: &Overrides) -> Result<Config, ConfigError> {
        Config::from_text(text, &self.conf(), ov)
    }
    /// Asserts the error names this file, `line` and `field`, and that
    /// its message contains `msg`.
    fn err(&self, text: &str, line: usize, field: &str, msg: &str) -> ConfigError {
        let e = match self.load(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        assert_eq!(e.file, self.conf(), "{e}");
        assert_eq!(e.line, Some(line), "line of: {e}\n{text}");
        assert_eq!(e.field.as_deref(), Some(field), "field of: {e}");
        assert!(e.msg.contains(msg), "`{msg}` not in: {e}");
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!(
                "{}:{line}: field `{field}`: ",
                self.conf().display()
            )),
            "{shown}"
        );
        e
    }
}

const ALICE: &str = "[[key]]\nname = \"alice\"\nfile = \"alice.key\"\nallow = [\"tcp/22\"]\n";

fn tcp(p: u16) -> Grant {
    Grant::tcp(p).unwrap()
}

mod keys;
mod locate;
mod merge;
mod schema;
