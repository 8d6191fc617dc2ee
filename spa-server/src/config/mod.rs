//! The server configuration: TOML on disk (default /etc/spa/server.toml),
//! command-line overrides on top, one typed [`Config`] out.
//!
//! Loading is all or nothing: every key file is read and every field is
//! checked before anything is returned, so the daemon never starts (or
//! reloads into) a half-valid configuration. Every error names the file, the
//! line and the field.
//!
//! One file per job: `schema` (the file's and the command line's shapes,
//! the defaults), `merge` (both into a checked [`Config`]), `keys` (every
//! read: the file, key files, the host name), `locate` (file:line:field).
//! `legacy/` does not import this module: knocks.rs hands it its part.

mod keys;
mod locate;
mod merge;
mod schema;
#[cfg(test)]
mod tests;

pub use keys::hostname;
pub use locate::{line_of, ConfigError};
pub use schema::{
    parse_grant, GrantError, Overrides, DEFAULT_CONFIG, DEFAULT_DURATION, DEFAULT_MAX_DURATION,
    DEFAULT_SPA_PORT, DEFAULT_STATE_DIR, DEFAULT_USER,
};

use crate::firewall::BackendKind;
use crate::limits;
use spa_keys::KeyFile;
use spa_proto::{Grant, KeyId, KeySet, ServerId, TimeWindow};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the daemon reads its configuration from, kept for SIGHUP (and
/// for the privileged side, which re-reads it).
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.path.as_deref(), &self.overrides)
    }
}

/// Files a configuration was read from, path and bytes (privsep reloads).
pub type Files = Vec<(PathBuf, Vec<u8>)>;

/// One accepted key and what it may open.
pub struct KeyPolicy {
    pub name: String,
    pub key_id: KeyId,
    pub keys: std::sync::Arc<KeySet>,
    /// Grants this key may request; a request for anything else is refused.
    pub allow: Vec<Grant>,
    /// Longest duration this key may ask for; longer requests are capped.
    pub max_duration: u32,
    /// Whether the request may name an address other than its source
    /// (default false: a key opens for the address it sends from).
    pub allow_other_address: bool,
    /// Whether the request must name the address to open: then a datagram
    /// taken off the wire and resent from another address opens nothing
    /// for the sender (see docs/operations.md for the NAT trade-off).
    pub require_explicit_address: bool,
    /// Live grants this key may hold at once (`limits::DEFAULT_KEY_MAX_GRANTS`).
    pub max_grants: usize,
    /// This key's token bucket (`rate_per_minute`, `rate_burst`).
    pub rate: crate::ratelimit::Rate,
    /// `from` and `expires` (policy.rs).
    pub rules: crate::policy::KeyRules,
    pub file: PathBuf,
}

impl fmt::Debug for KeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPolicy")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("allow", &self.allow)
            .field("max_duration", &self.max_duration)
            .field("allow_other_address", &self.allow_other_address)
            .field("require_explicit_address", &self.require_explicit_address)
            .field("max_grants", &self.max_grants)
            .field("rules", &self.rules)
            .finish()
    }
}

/// The whole, validated configuration.
#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub server_name: String,
    /// Where `server_name` came from, for check-config: "--server-id",
    /// the configuration file, or "the host name".
    pub server_id_source: String,
    pub server_id: ServerId,
    /// Empty: capture on every interface.
    pub interfaces: Vec<String>,
    pub spa_port: u16,
    pub state_dir: PathBuf,
    /// Volatile (tmpfs) directory for the replay log; see state/mod.rs. None:
    /// the log lives in `state_dir` and every entry costs a disk flush.
    pub runtime_dir: Option<PathBuf>,
    pub firewall: BackendKind,
    pub firewall_options: crate::firewall::FirewallOptions,
    pub default_duration: u32,
    /// No duration setting may exceed this (`limits`).
    pub duration_limit: u32,
    /// Live grants (firewall rules) in all; doors share half of it.
    pub max_grants_total: usize,
    pub window: TimeWindow,
    pub replay_capacity: usize,
    pub keys: Vec<KeyPolicy>,
    /// key-id → index into `keys`: the O(1) lookup the wire format is built for.
    pub by_id: HashMap<KeyId, usize>,
    /// The `[legacy]` section, with `--legacy-knock`/`--knockd-conf` applied.
    pub legacy: crate::legacy::LegacyConfig,
    /// Fixed-sequence doors in force (empty unless legacy knocks are enabled).
    pub doors: Vec<crate::legacy::Door>,
    /// Our chain/sets also DROP what arrives for the SPA port and the knock
    /// ports, so the host answers nothing there (no ICMP, no RST); the
    /// capture reads frames before netfilter and still sees them.
    pub silent: bool,
    /// The unprivileged user the network side runs as (privsep).
    pub user: String,
    /// Protocol v2: the server uid, each key's protocols and v2 key (v2.rs).
    pub v2: crate::v2::V2Config,
    /// Prometheus text file rewritten (atomically, on change, at most every
    /// few seconds) for node_exporter's textfile collector (control/publish.rs).
    pub metrics_file: Option<PathBuf>,
}

impl Config {
    pub fn key(&self, id: &KeyId) -> Option<&KeyPolicy> {
        self.by_id.get(id).and_then(|&i| self.keys.get(i))
    }
}

impl Config {
    /// Reads `path` (if `Some`) and applies `ov`. With no file, the command
    /// line alone must name at least one key.
    pub fn load(path: Option<&Path>, ov: &Overrides) -> Result<Config, ConfigError> {
        match path {
            Some(p) => {
                let text = keys::read_text(p)?;
                Config::from_text(&text, p, ov)
            }
            None => Config::from_text("", Path::new("<command line>"), ov),
        }
    }

    pub fn from_text(text: &str, file: &Path, ov: &Overrides) -> Result<Config, ConfigError> {
        Config::from_text_with(text, file, ov, &mut |p| KeyFile::read(p))
    }

    /// Derives every v2 key for this server's `uid` (v2.rs): at start, and
    /// for each reloaded configuration, with the uid of the running daemon.
    /// A server key file made for another uid is refused, naming both.
    pub fn attach_uid(&mut self, uid: spa_proto::v2::ServerUid) -> Result<(), crate::v2::UidError> {
        let names: Vec<(&str, &Path)> = self
            .keys
            .iter()
            .map(|k| (k.name.as_str(), k.file.as_path()))
            .collect();
        self.v2.attach(uid, &names)
    }

    /// [`Config::load`], also returning every file it read (the config
    /// file's text, each key file re-encoded): the privileged side reads,
    /// the network side parses the same bytes with [`Config::load_from`].
    pub fn load_recording(
        path: Option<&Path>,
        ov: &Overrides,
    ) -> Result<(Config, Files), ConfigError> {
        let mut files = Vec::new();
        let text = match path {
            Some(p) => {
                let t = keys::read_text(p)?;
                files.push((p.to_owned(), t.clone().into_bytes()));
                t
            }
            None => String::new(),
        };
        let file = path.unwrap_or(Path::new("<command line>"));
        let cfg = Config::from_text_with(&text, file, ov, &mut |p| {
            let kf = KeyFile::read(p)?;
            files.push((p.to_owned(), kf.to_toml().into_bytes()));
            Ok(kf)
        })?;
        Ok((cfg, files))
    }

    /// [`Config::load`] over files another process read
    /// ([`Config::load_recording`]): the network side cannot read key files.
    pub fn load_from(
        path: Option<&Path>,
        ov: &Overrides,
        files: &[(PathBuf, Vec<u8>)],
    ) -> Result<Config, ConfigError> {
        // One map, not a scan of the bundle per key file: with 10,000 keys
        // that was 50 M path comparisons, 5.6 s per SIGHUP (issue 14). The
        // first copy of a path wins, as the scan's did.
        let mut by_path: HashMap<&Path, &[u8]> = HashMap::with_capacity(files.len());
        for (f, b) in files {
            by_path.entry(f.as_path()).or_insert(b.as_slice());
        }
        let find = |p: &Path| by_path.get(p).copied();
        let text = match path {
            Some(p) => String::from_utf8_lossy(find(p).unwrap_or(&[])).into_owned(),
            None => String::new(),
        };
        let file = path.unwrap_or(Path::new("<command line>"));
        Config::from_text_with(&text, file, ov, &mut |p| match find(p) {
            Some(b) => KeyFile::parse(&String::from_utf8_lossy(b), p),
            None => KeyFile::read(p),
        })
    }
}

impl crate::policy::PolicyKey for KeyPolicy {
    fn name(&self) -> &str {
        &self.name
    }
    fn allow(&self) -> &[Grant] {
        &self.allow
    }
    fn rules(&self) -> &crate::policy::KeyRules {
        &self.rules
    }
}

impl KeyPolicy {
    /// A key built in code, for unit tests and fuzz targets, so each does
    /// not spell out every field: master key `[byte; 32]`, allowed `allow`
    /// for up to `max_duration` s, for its own address only, 16 live grants,
    /// a generous token bucket (60 a minute, bursts of 1000: tests send many
    /// datagrams at one instant), no `from`/`expires`/forwards, file
    /// /etc/spa/NAME.key. Never used by the daemon.
    #[doc(hidden)]
    pub fn for_tests(name: &str, byte: u8, allow: &[Grant], max_duration: u32) -> KeyPolicy {
        let keys = spa_proto::MasterKey::from_bytes([byte; 32]).derive();
        KeyPolicy {
            name: name.to_owned(),
            key_id: keys.key_id(),
            keys: std::sync::Arc::new(keys),
            allow: allow.to_vec(),
            max_duration,
            allow_other_address: false,
            require_explicit_address: false,
            max_grants: 16,
            rate: crate::ratelimit::Rate {
                per_minute: 60,
                burst: 1000,
            },
            rules: crate::policy::KeyRules::default(),
            file: PathBuf::from(format!("/etc/spa/{name}.key")),
        }
    }
}

impl Config {
    /// A configuration built in code, for the unit tests of the modules
    /// that read one (verdict, knocks, privsep) and the fuzz targets: server
    /// id "gw", defaults elsewhere. Never used by the daemon.
    #[doc(hidden)]
    pub fn for_tests(keys: Vec<KeyPolicy>, default_duration: u32) -> Config {
        let by_id = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.key_id, i))
            .collect();
        Config {
            source: PathBuf::from("/etc/spa/server.toml"),
            server_name: "gw".into(),
            server_id_source: "test".into(),
            server_id: ServerId::from_name("gw"),
            interfaces: vec![],
            spa_port: DEFAULT_SPA_PORT,
            v2: crate::v2::V2Config::default(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            runtime_dir: None,
            firewall: BackendKind::Iptables,
            firewall_options: crate::firewall::FirewallOptions::default(),
            default_duration,
            duration_limit: limits::DEFAULT_DURATION_LIMIT,
            max_grants_total: limits::DEFAULT_MAX_GRANTS_TOTAL,
            window: TimeWindow::default(),
            replay_capacity: 64,
            keys,
            by_id,
            legacy: crate::legacy::LegacyConfig::default(),
            doors: vec![],
            silent: true,
            user: DEFAULT_USER.to_owned(),
            metrics_file: None,
        }
    }
}
