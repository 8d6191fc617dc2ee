//! The server configuration: TOML on disk (default /etc/spa/server.toml),
//! command-line overrides on top, one typed [`Config`] out.
//!
//! Loading is all or nothing: every key file is read and every field is
//! checked before anything is returned, so the daemon never starts (or
//! reloads into) a half-valid configuration. Every error names the file, the
//! line and the field.

use crate::firewall::BackendKind;
use serde::Deserialize;
use spa_keys::KeyFile;
use spa_proto::{Grant, KeyId, KeySet, Proto, ServerId, TimeWindow};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Where the configuration lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/spa/server.toml";
/// fwknop's well-known SPA port; any UDP port works.
pub const DEFAULT_SPA_PORT: u16 = 62201;
/// Where the replay record is persisted.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/spa-server";
/// How long a grant lasts when the request does not say (seconds).
pub const DEFAULT_DURATION: u32 = 30;
/// Longest grant a key may ask for unless its policy says otherwise.
pub const DEFAULT_MAX_DURATION: u32 = 300;

/// A configuration problem, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// One accepted key and what it may open.
pub struct KeyPolicy {
    pub name: String,
    pub key_id: KeyId,
    pub keys: std::sync::Arc<KeySet>,
    /// Grants this key may request; a request for anything else is refused.
    pub allow: Vec<Grant>,
    /// Longest duration this key may ask for; longer requests are capped.
    pub max_duration: u32,
    /// Whether the request may name an address other than its source.
    pub allow_other_address: bool,
    pub file: PathBuf,
}

impl fmt::Debug for KeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPolicy")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("allow", &self.allow)
            .field("max_duration", &self.max_duration)
            .finish()
    }
}

/// The whole, validated configuration.
#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub server_name: String,
    pub server_id: ServerId,
    /// Empty: capture on every interface.
    pub interfaces: Vec<String>,
    pub spa_port: u16,
    pub state_dir: PathBuf,
    /// Volatile (tmpfs) directory for the replay log; see state.rs. None:
    /// the log lives in `state_dir` and every entry costs a disk flush.
    pub runtime_dir: Option<PathBuf>,
    pub firewall: BackendKind,
    pub firewall_options: crate::firewall::FirewallOptions,
    pub default_duration: u32,
    pub window: TimeWindow,
    pub replay_capacity: usize,
    pub keys: Vec<KeyPolicy>,
    /// key-id → index into `keys`: the O(1) lookup the wire format is built for.
    pub by_id: HashMap<KeyId, usize>,
    /// The `[legacy]` section, with `--legacy-knock`/`--knockd-conf` applied.
    pub legacy: crate::legacy::LegacyConfig,
    /// Fixed-sequence doors in force (empty unless legacy knocks are enabled).
    pub doors: Vec<crate::legacy::Door>,
}

impl Config {
    pub fn key(&self, id: &KeyId) -> Option<&KeyPolicy> {
        self.by_id.get(id).and_then(|&i| self.keys.get(i))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server_id: Option<Spanned<String>>,
    interfaces: Option<Spanned<Vec<String>>>,
    spa_port: Option<Spanned<u16>>,
    state_dir: Option<Spanned<PathBuf>>,
    runtime_dir: Option<Spanned<PathBuf>>,
    firewall: Option<Spanned<String>>,
    default_duration: Option<Spanned<u32>>,
    window_secs: Option<Spanned<u64>>,
    replay_capacity: Option<Spanned<usize>>,
    #[serde(default)]
    key: Vec<Spanned<RawKey>>,
    legacy: Option<Spanned<crate::legacy::LegacyConfig>>,
    firewall_options: Option<Spanned<crate::firewall::FirewallOptions>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Spanned<String>,
    file: Spanned<PathBuf>,
    allow: Spanned<Vec<String>>,
    max_duration: Option<Spanned<u32>>,
    allow_other_address: Option<bool>,
    /// Informational copy of the key-id (spa-keygen prints it); checked
    /// against the key file when present.
    key_id: Option<Spanned<String>>,
}

/// Command-line settings that override (or, without a file, replace) the
/// configuration file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub server_id: Option<String>,
    pub interfaces: Vec<String>,
    pub spa_port: Option<u16>,
    pub state_dir: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub firewall: Option<BackendKind>,
    pub default_duration: Option<u32>,
    pub window_secs: Option<u64>,
    /// Extra keys given on the command line (`--key FILE`), each allowed
    /// `key_allow` with `key_max_duration`.
    pub keys: Vec<PathBuf>,
    pub key_allow: Vec<Grant>,
    pub key_max_duration: Option<u32>,
    /// `--legacy-knock`: enable knockd's default doors even without a
    /// `[legacy]` section.
    pub legacy_knock: bool,
    /// `--knockd-conf FILE`: import an existing knockd.conf.
    pub knockd_conf: Option<PathBuf>,
}

/// Parses "tcp/22", "udp/53" or "22" (tcp).
pub fn parse_grant(s: &str) -> Result<Grant, String> {
    let s = s.trim();
    let (proto, port) = match s.split_once('/') {
        Some((p, n)) => (p, n),
        None => ("tcp", s),
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            return Err(format!(
                "unknown protocol `{other}` in `{s}` (use tcp or udp)"
            ))
        }
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port in `{s}` (1-65535)"))?;
    Grant::new(proto, port).map_err(|_| format!("invalid port in `{s}` (1-65535)"))
}

/// 1-based line of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(pos.min(text.len()))
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// This host's name, the default server id on both sides.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

impl Config {
    /// Reads `path` (if `Some`) and applies `ov`. With no file, the command
    /// line alone must name at least one key.
    pub fn load(path: Option<&Path>, ov: &Overrides) -> Result<Config, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    file: p.to_owned(),
                    line: None,
                    field: None,
                    msg: format!("cannot read: {e}"),
                })?;
                Config::from_text(&text, p, ov)
            }
            None => Config::from_text("", Path::new("<command line>"), ov),
        }
    }

    pub fn from_text(text: &str, file: &Path, ov: &Overrides) -> Result<Config, ConfigError> {
        let err = |span: Option<std::ops::Range<usize>>, field: &str, msg: String| ConfigError {
            file: file.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
            field: (!field.is_empty()).then(|| field.to_owned()),
            msg,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_owned();
            err(e.span(), "", msg)
        })?;

        let server_name = match (&ov.server_id, &raw.server_id) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) if s.get_ref().trim().is_empty() => {
                return Err(err(Some(s.span()), "server_id", "must not be empty".into()))
            }
            (None, Some(s)) => s.get_ref().clone(),
            (None, None) => hostname(),
        };
        let interfaces = if !ov.interfaces.is_empty() {
            ov.interfaces.clone()
        } else {
            raw.interfaces.map(|s| s.into_inner()).unwrap_or_default()
        };
        let spa_port = match (ov.spa_port, &raw.spa_port) {
            (Some(p), _) => p,
            (None, Some(p)) if *p.get_ref() == 0 => {
                return Err(err(Some(p.span()), "spa_port", "must be 1-65535".into()))
            }
            (None, Some(p)) => *p.get_ref(),
            (None, None) => DEFAULT_SPA_PORT,
        };
        let state_dir = ov
            .state_dir
            .clone()
            .or(raw.state_dir.map(|s| s.into_inner()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let runtime_dir = ov
            .runtime_dir
            .clone()
            .or(raw.runtime_dir.map(|s| s.into_inner()));
        let firewall = match (ov.firewall, &raw.firewall) {
            (Some(k), _) => k,
            (None, Some(s)) => s.get_ref().parse::<BackendKind>().map_err(|_| {
                err(
                    Some(s.span()),
                    "firewall",
                    format!("unknown backend `{}` (iptables or nftables)", s.get_ref()),
                )
            })?,
            (None, None) => BackendKind::Iptables,
        };
        let firewall_options = match &raw.firewall_options {
            Some(o) => {
                o.get_ref()
                    .validate()
                    .map_err(|e| err(Some(o.span()), "firewall_options", e.to_string()))?;
                o.get_ref().clone()
            }
            None => crate::firewall::FirewallOptions::default(),
        };
        let default_duration = match (ov.default_duration, &raw.default_duration) {
            (Some(d), _) => d,
            (None, Some(d)) => *d.get_ref(),
            (None, None) => DEFAULT_DURATION,
        };
        if default_duration == 0 {
            return Err(err(
                raw.default_duration.as_ref().map(|d| d.span()),
                "default_duration",
                "must be at least 1 second".into(),
            ));
        }
        let window_secs = match (ov.window_secs, &raw.window_secs) {
            (Some(w), _) => w,
            (None, Some(w)) if *w.get_ref() == 0 || *w.get_ref() > 3600 => {
                return Err(err(Some(w.span()), "window_secs", "must be 1-3600".into()))
            }
            (None, Some(w)) => *w.get_ref(),
            (None, None) => spa_proto::replay::DEFAULT_WINDOW_SECS,
        };
        let replay_capacity = match &raw.replay_capacity {
            Some(c) if *c.get_ref() < 16 => {
                return Err(err(
                    Some(c.span()),
                    "replay_capacity",
                    "must be at least 16".into(),
                ))
            }
            Some(c) => *c.get_ref(),
            None => spa_proto::replay::DEFAULT_CAPACITY,
        };

        let mut keys = Vec::new();
        for k in &raw.key {
            let kspan = k.span();
            let k = k.get_ref();
            let name = k.name.get_ref().trim().to_owned();
            if name.is_empty() {
                return Err(err(
                    Some(k.name.span()),
                    "key.name",
                    "must not be empty".into(),
                ));
            }
            let mut allow = Vec::new();
            for g in k.allow.get_ref() {
                allow.push(parse_grant(g).map_err(|m| err(Some(k.allow.span()), "key.allow", m))?);
            }
            if allow.is_empty() {
                return Err(err(
                    Some(k.allow.span()),
                    "key.allow",
                    format!("key `{name}` allows nothing; list ports like [\"tcp/22\"]"),
                ));
            }
            let max_duration = k
                .max_duration
                .as_ref()
                .map(|d| *d.get_ref())
                .unwrap_or(DEFAULT_MAX_DURATION);
            if max_duration == 0 {
                return Err(err(
                    k.max_duration.as_ref().map(|d| d.span()),
                    "key.max_duration",
                    "must be at least 1 second".into(),
                ));
            }
            let path = resolve(file, k.file.get_ref());
            let kf = KeyFile::read(&path)
                .map_err(|e| err(Some(k.file.span()), "key.file", e.to_string()))?;
            let key_id = kf.key.derive().key_id();
            if let Some(expect) = &k.key_id {
                let want: KeyId = expect
                    .get_ref()
                    .parse()
                    .map_err(|m: &str| err(Some(expect.span()), "key.key_id", m.to_owned()))?;
                if want != key_id {
                    return Err(err(
                        Some(expect.span()),
                        "key.key_id",
                        format!(
                            "{} has key-id {key_id}, not {want}: wrong key file?",
                            path.display()
                        ),
                    ));
                }
            }
            let _ = kspan;
            keys.push(KeyPolicy {
                name,
                key_id,
                keys: std::sync::Arc::new(kf.key.derive()),
                allow,
                max_duration,
                allow_other_address: k.allow_other_address.unwrap_or(true),
                file: path,
            });
        }
        for path in &ov.keys {
            let kf = KeyFile::read(path).map_err(|e| ConfigError {
                file: path.clone(),
                line: None,
                field: Some("--key".into()),
                msg: e.to_string(),
            })?;
            let allow = if ov.key_allow.is_empty() {
                vec![Grant::tcp(22).map_err(|e| err(None, "--allow", e.to_string()))?]
            } else {
                ov.key_allow.clone()
            };
            let keys_derived = kf.key.derive();
            keys.push(KeyPolicy {
                name: kf.name.clone(),
                key_id: keys_derived.key_id(),
                keys: std::sync::Arc::new(keys_derived),
                allow,
                max_duration: ov.key_max_duration.unwrap_or(DEFAULT_MAX_DURATION),
                allow_other_address: true,
                file: path.clone(),
            });
        }
        let legacy_span = raw.legacy.as_ref().map(|l| l.span());
        let mut legacy = raw.legacy.map(|l| l.into_inner()).unwrap_or_default();
        if ov.legacy_knock {
            legacy.enabled = true;
        }
        if let Some(p) = &ov.knockd_conf {
            legacy.knockd_conf = Some(p.clone());
            legacy.enabled = true;
        }
        if let Some(p) = &legacy.knockd_conf {
            if p.is_relative() {
                legacy.knockd_conf = Some(resolve(file, p));
            }
        }
        let legacy_err = |e: crate::legacy::LegacyConfigError| match e {
            crate::legacy::LegacyConfigError::Field { field, msg } => {
                err(legacy_span.clone(), &field, msg)
            }
            other => err(legacy_span.clone(), "legacy", other.to_string()),
        };
        legacy.validate().map_err(legacy_err)?;
        let doors = if legacy.enabled {
            legacy.doors().map_err(legacy_err)?
        } else {
            Vec::new()
        };
        if keys.is_empty() && doors.is_empty() {
            return Err(err(
                None,
                "key",
                "no keys configured: add a [[key]] table (spa-keygen prints one) or pass --key FILE"
                    .into(),
            ));
        }
        let mut by_id = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(&j) = by_id.get(&k.key_id) {
                let other: &KeyPolicy = &keys[j];
                return Err(err(
                    None,
                    "key",
                    format!(
                        "keys `{}` ({}) and `{}` ({}) have the same key-id {}: the same key listed twice?",
                        other.name,
                        other.file.display(),
                        k.name,
                        k.file.display(),
                        k.key_id
                    ),
                ));
            }
            by_id.insert(k.key_id, i);
        }
        Ok(Config {
            source: file.to_owned(),
            server_id: ServerId::from_name(&server_name),
            server_name,
            interfaces,
            spa_port,
            state_dir,
            runtime_dir,
            firewall,
            firewall_options,
            default_duration,
            window: TimeWindow {
                past_secs: window_secs,
                future_secs: window_secs,
            },
            replay_capacity,
            keys,
            by_id,
            legacy,
            doors,
        })
    }
}

/// Key file paths in the config are relative to the config file's folder.
fn resolve(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    config
        .parent()
        .map(|d| d.join(p))
        .unwrap_or_else(|| p.to_owned())
}
