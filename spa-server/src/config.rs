//! The server configuration: TOML on disk (default /etc/spa/server.toml),
//! command-line overrides on top, one typed [`Config`] out.
//!
//! Loading is all or nothing: every key file is read and every field is
//! checked before anything is returned, so the daemon never starts (or
//! reloads into) a half-valid configuration. Every error names the file, the
//! line and the field.

use crate::firewall::BackendKind;
use crate::limits;
use serde::Deserialize;
use spa_keys::{check_label, KeyFile};
use spa_proto::{Grant, KeyId, KeySet, ServerId, TimeWindow};
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
/// Files a configuration was read from, path and bytes (privsep reloads).
pub type Files = Vec<(PathBuf, Vec<u8>)>;
/// The network side's user when `user` is not set (created by the Debian package).
pub const DEFAULT_USER: &str = "spa";
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
    duration_limit: Option<Spanned<u32>>,
    max_grants_total: Option<Spanned<usize>>,
    window_secs: Option<Spanned<u64>>,
    replay_capacity: Option<Spanned<usize>>,
    #[serde(default)]
    key: Vec<Spanned<RawKey>>,
    /// Not `Spanned`: toml 0.8 fails on a `Spanned` table that only exists
    /// through dotted headers (`[legacy.hmac]` without `[legacy]`).
    legacy: Option<crate::legacy::LegacyConfig>,
    firewall_options: Option<Spanned<crate::firewall::FirewallOptions>>,
    silent: Option<bool>,
    user: Option<String>,
    metrics_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Spanned<String>,
    file: Spanned<PathBuf>,
    allow: Spanned<Vec<String>>,
    max_duration: Option<Spanned<u32>>,
    allow_other_address: Option<bool>,
    require_explicit_address: Option<bool>,
    max_grants: Option<Spanned<usize>>,
    rate_per_minute: Option<Spanned<u32>>,
    rate_burst: Option<Spanned<u32>>,
    /// Networks the key may be used from (policy.rs).
    from: Option<Spanned<Vec<String>>>,
    /// When the key stops working: a TOML date or date-time, UTC.
    expires: Option<Spanned<toml::value::Datetime>>,
    /// `[key.forward]`: "tcp/2222" = "10.20.0.5:22" (policy.rs).
    forward: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// Every other allowed grant forwarded to this host, same port.
    forward_all: Option<Spanned<String>>,
    /// Informational copy of the key-id (spa-keygen prints it); checked
    /// against the key file when present.
    key_id: Option<Spanned<String>>,
    /// `["v1"]`, `["v2"]` or both (crate::v2::Protocols).
    protocols: Option<Spanned<Vec<String>>>,
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
    /// `--allow-other-address`: the `--key` keys may name other addresses.
    pub key_allow_other_address: bool,
    /// `--legacy-knock`: enable knockd's default doors even without a
    /// `[legacy]` section.
    pub legacy_knock: bool,
    /// `--knockd-conf FILE`: import an existing knockd.conf.
    pub knockd_conf: Option<PathBuf>,
}

/// A grant in the one grammar ([`Grant`]'s `FromStr`: `22`, `tcp/22`,
/// `udp/53`, `53/udp`), the error saying which text was refused.
pub fn parse_grant(s: &str) -> Result<Grant, String> {
    s.parse::<Grant>().map_err(|e| match e {
        spa_proto::GrantSyntax::UnknownProto(_) => format!("{e} in `{}`", s.trim()),
        _ => format!("invalid port `{}`: {e}", s.trim()),
    })
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
        Config::from_text_with(text, file, ov, &mut |p| KeyFile::read(p))
    }

    /// Derives every v2 key for this server's `uid` (v2.rs): at start, and
    /// for each reloaded configuration, with the uid of the running daemon.
    /// A server key file made for another uid is refused, naming both.
    pub fn attach_uid(&mut self, uid: spa_proto::v2::ServerUid) -> Result<(), String> {
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
                let t = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    file: p.to_owned(),
                    line: None,
                    field: None,
                    msg: format!("cannot read: {e}"),
                })?;
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
        let find = |p: &Path| files.iter().find(|(f, _)| f == p).map(|(_, b)| b);
        let text = match path {
            Some(p) => String::from_utf8_lossy(find(p).map_or(&[][..], |b| b)).into_owned(),
            None => String::new(),
        };
        let file = path.unwrap_or(Path::new("<command line>"));
        Config::from_text_with(&text, file, ov, &mut |p| match find(p) {
            Some(b) => KeyFile::parse(&String::from_utf8_lossy(b), p),
            None => KeyFile::read(p),
        })
    }

    fn from_text_with(
        text: &str,
        file: &Path,
        ov: &Overrides,
        read_key: &mut dyn FnMut(&Path) -> Result<KeyFile, spa_keys::KeyError>,
    ) -> Result<Config, ConfigError> {
        let err = |span: Option<std::ops::Range<usize>>, field: &str, msg: String| ConfigError {
            file: file.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
            field: (!field.is_empty()).then(|| field.to_owned()),
            msg,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_owned();
            let field = e
                .span()
                .and_then(|s| field_at(text, s.start, &msg))
                .unwrap_or_default();
            err(e.span(), &field, msg)
        })?;
        check_overrides(ov).map_err(|(field, msg)| err(None, field, msg))?;

        let server_name = match (&ov.server_id, &raw.server_id) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => {
                // Reaches every `ready` line: no control characters.
                check_label(s.get_ref()).map_err(|m| err(Some(s.span()), "server_id", m))?;
                s.get_ref().clone()
            }
            (None, None) => hostname(),
        };
        let server_id_source = match (&ov.server_id, &raw.server_id) {
            (Some(_), _) => "--server-id".to_owned(),
            (None, Some(_)) => file.display().to_string(),
            (None, None) => "the host name (no server_id set)".to_owned(),
        };
        let interfaces = if !ov.interfaces.is_empty() {
            ov.interfaces.clone()
        } else {
            let span = raw.interfaces.as_ref().map(|s| s.span());
            let list = raw.interfaces.map(|s| s.into_inner()).unwrap_or_default();
            for name in &list {
                check_label(name)
                    .map_err(|m| err(span.clone(), "interfaces", format!("{name:?} {m}")))?;
            }
            list
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
        let duration_limit = match &raw.duration_limit {
            Some(l) => {
                limits::check_duration_limit(*l.get_ref())
                    .map_err(|m| err(Some(l.span()), "duration_limit", m))?;
                *l.get_ref()
            }
            None => limits::DEFAULT_DURATION_LIMIT,
        };
        let max_grants_total = match &raw.max_grants_total {
            Some(t) => {
                limits::check_total(*t.get_ref())
                    .map_err(|m| err(Some(t.span()), "max_grants_total", m))?;
                *t.get_ref()
            }
            None => limits::DEFAULT_MAX_GRANTS_TOTAL,
        };
        let default_duration = match (ov.default_duration, &raw.default_duration) {
            (Some(d), _) => {
                limits::check_duration(d, duration_limit)
                    .map_err(|m| err(None, "--default-duration", m))?;
                d
            }
            (None, Some(d)) => {
                limits::check_duration(*d.get_ref(), duration_limit)
                    .map_err(|m| err(Some(d.span()), "default_duration", m))?;
                *d.get_ref()
            }
            (None, None) => DEFAULT_DURATION.min(duration_limit),
        };
        if let Some(d) = ov.key_max_duration {
            limits::check_duration(d, duration_limit)
                .map_err(|m| err(None, "--max-duration", m))?;
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
        let mut v2 = crate::v2::V2Config::default();
        for k in &raw.key {
            let kspan = k.span();
            let k = k.get_ref();
            let name = k.name.get_ref().trim().to_owned();
            // Names reach log lines: a newline in one forged a whole line.
            check_label(&name).map_err(|m| err(Some(k.name.span()), "key.name", m))?;
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
                .unwrap_or(DEFAULT_MAX_DURATION.min(duration_limit));
            limits::check_duration(max_duration, duration_limit).map_err(|m| {
                err(
                    k.max_duration.as_ref().map(|d| d.span()),
                    "key.max_duration",
                    m,
                )
            })?;
            let max_grants = match &k.max_grants {
                Some(n) => {
                    limits::check_key_grants(*n.get_ref(), max_grants_total)
                        .map_err(|m| err(Some(n.span()), "key.max_grants", m))?;
                    *n.get_ref()
                }
                None => limits::DEFAULT_KEY_MAX_GRANTS.min(max_grants_total),
            };
            let mut rate = crate::ratelimit::Rate::default();
            for (v, field, max, slot) in [
                (
                    &k.rate_per_minute,
                    "key.rate_per_minute",
                    crate::ratelimit::MAX_RATE_PER_MINUTE,
                    &mut rate.per_minute,
                ),
                (
                    &k.rate_burst,
                    "key.rate_burst",
                    crate::ratelimit::MAX_BURST,
                    &mut rate.burst,
                ),
            ] {
                if let Some(v) = v {
                    if !(1..=max).contains(v.get_ref()) {
                        return Err(err(Some(v.span()), field, format!("must be 1-{max}")));
                    }
                    *slot = *v.get_ref();
                }
            }
            let path = resolve(file, k.file.get_ref());
            let kf =
                read_key(&path).map_err(|e| err(Some(k.file.span()), "key.file", e.to_string()))?;
            // Protocol v2 (v2.rs): a server key file speaks v2 only, a
            // master key file v1 unless `protocols` says more.
            let protocols = match &k.protocols {
                Some(p) => crate::v2::Protocols::parse(p.get_ref())
                    .map_err(|m| err(Some(p.span()), "key.protocols", m))?,
                None => crate::v2::Protocols {
                    v1: kf.server_uid.is_none(),
                    v2: kf.server_uid.is_some(),
                },
            };
            let (key_id, source) = match kf.server_uid {
                Some(uid) => {
                    if protocols.v1 {
                        return Err(err(
                            k.protocols.as_ref().map(|p| p.span()),
                            "key.protocols",
                            format!(
                                "{} is a v2 server key file (server_uid {uid}): it cannot \
                                 speak v1; set protocols = [\"v2\"] or use a master key file",
                                path.display()
                            ),
                        ));
                    }
                    let ks = spa_proto::ServerKey::from_bytes(*kf.key.as_bytes());
                    (
                        ks.derive().stable_id(),
                        Some(crate::v2::V2Source::ServerKey {
                            key: std::sync::Arc::new(ks),
                            uid,
                        }),
                    )
                }
                None => (
                    kf.key.derive().key_id(),
                    protocols
                        .v2
                        .then(|| crate::v2::V2Source::Master(std::sync::Arc::new(kf.key.clone()))),
                ),
            };
            v2.keys.push(crate::v2::V2Key {
                protocols,
                source,
                set: None,
            });
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
            let mut rules = crate::policy::KeyRules {
                from: match &k.from {
                    Some(f) => crate::policy::parse_from(f.get_ref())
                        .map_err(|m| err(Some(f.span()), "key.from", m))?,
                    None => Vec::new(),
                },
                expires: match &k.expires {
                    Some(e) => Some(
                        crate::policy::parse_expires(e.get_ref())
                            .map_err(|m| err(Some(e.span()), "key.expires", m))?,
                    ),
                    None => None,
                },
                forward: Vec::new(),
            };
            if let Some(f) = &k.forward {
                for (g, t) in f.get_ref() {
                    let grant = parse_grant(g)
                        .map_err(|m| err(Some(f.span()), "key.forward", format!("{g:?}: {m}")))?;
                    let to = crate::policy::parse_target(t)
                        .map_err(|m| err(Some(f.span()), "key.forward", format!("{g}: {m}")))?;
                    rules.forward.push((grant, to));
                    // A forwarded grant is one the key may ask for.
                    if !allow.contains(&grant) {
                        allow.push(grant);
                    }
                }
            }
            // fwknop's FORWARD_ALL for one host: each allowed grant the
            // table does not name goes to that host on the same port.
            if let Some(h) = &k.forward_all {
                let ip: std::net::IpAddr = h.get_ref().trim().parse().map_err(|_| {
                    err(
                        Some(h.span()),
                        "key.forward_all",
                        format!(
                            "{:?} is not an address (10.20.0.5, 2001:db8:20::5)",
                            h.get_ref()
                        ),
                    )
                })?;
                for g in &allow {
                    if rules.forward.iter().all(|(f, _)| f != g) {
                        let to = crate::policy::parse_target(
                            &std::net::SocketAddr::new(ip, g.port.get()).to_string(),
                        )
                        .map_err(|m| err(Some(h.span()), "key.forward_all", m))?;
                        rules.forward.push((*g, to));
                    }
                }
            }
            keys.push(KeyPolicy {
                name,
                key_id,
                keys: std::sync::Arc::new(kf.key.derive()),
                allow,
                max_duration,
                allow_other_address: k.allow_other_address.unwrap_or(false),
                require_explicit_address: k.require_explicit_address.unwrap_or(false),
                max_grants,
                rate,
                rules,
                file: path,
            });
        }
        for path in &ov.keys {
            let kf = read_key(path).map_err(|e| ConfigError {
                file: path.clone(),
                line: None,
                field: Some("--key".into()),
                msg: e.to_string(),
            })?;
            if let Some(uid) = kf.server_uid {
                return Err(ConfigError {
                    file: path.clone(),
                    line: None,
                    field: Some("--key".into()),
                    msg: format!(
                        "a protocol v2 server key (server_uid {uid}): name it in a [[key]] \
                         table of the configuration file (--key takes master key files)"
                    ),
                });
            }
            v2.keys.push(crate::v2::V2Key {
                protocols: crate::v2::Protocols {
                    v1: true,
                    v2: false,
                },
                source: None,
                set: None,
            });
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
                max_duration: ov
                    .key_max_duration
                    .unwrap_or(DEFAULT_MAX_DURATION.min(duration_limit)),
                allow_other_address: ov.key_allow_other_address,
                require_explicit_address: false,
                max_grants: limits::DEFAULT_KEY_MAX_GRANTS.min(max_grants_total),
                rate: crate::ratelimit::Rate::default(),
                rules: crate::policy::KeyRules::default(),
                file: path.clone(),
            });
        }
        // The first `[legacy` header locates errors in the section.
        let legacy_span = text
            .match_indices("[legacy")
            .find(|(i, _)| {
                text[..*i]
                    .trim_end_matches([' ', '\t', '['])
                    .ends_with('\n')
                    || text[..*i].trim().is_empty()
            })
            .map(|(i, _)| i..i);
        let mut legacy = raw.legacy.unwrap_or_default();
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
        legacy.check_hmac_strength(keys.len()).map_err(legacy_err)?;
        let doors = if legacy.enabled {
            legacy.doors().map_err(legacy_err)?
        } else {
            Vec::new()
        };
        // A door's own duration (`[[legacy.door]] duration`, knockd.conf's
        // `cmd_timeout`) is held to the same bound as every other duration.
        for d in &doors {
            if let crate::legacy::DoorAction::Open {
                duration_secs: Some(secs),
                ..
            } = d.action
            {
                limits::check_duration(secs, duration_limit).map_err(|m| {
                    err(
                        legacy_span.clone(),
                        "legacy.door.duration",
                        format!("door `{}`: {m}", d.name),
                    )
                })?;
            }
        }
        if keys.is_empty() && doors.is_empty() {
            return Err(err(
                None,
                "key",
                "no keys configured: add a [[key]] table (spa-keygen prints one) or pass --key FILE"
                    .into(),
            ));
        }
        crate::policy::check_forwards(&keys).map_err(|m| err(None, "key.forward", m))?;
        let mut by_id = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            // v1's map holds only keys that speak v1 (a v2-only key's
            // stable id never travels, and v2 ids live in their own map).
            if !v2.keys.get(i).is_none_or(|p| p.protocols.v1) {
                continue;
            }
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
        // A grant belongs to its key by name (grants::Owner): two keys with
        // one name would share grants, closes and the grant cap.
        let mut by_name: HashMap<&str, &KeyPolicy> = HashMap::new();
        for k in &keys {
            if let Some(other) = by_name.insert(k.name.as_str(), k) {
                return Err(err(
                    None,
                    "key.name",
                    format!(
                        "keys {} and {} are both named `{}`: give each key its own name \
                         (grants are owned by key name)",
                        other.file.display(),
                        k.file.display(),
                        k.name
                    ),
                ));
            }
        }
        let metrics_file = match raw.metrics_file {
            Some(m) if !m.get_ref().is_absolute() || m.get_ref().file_name().is_none() => {
                return Err(err(
                    Some(m.span()),
                    "metrics_file",
                    "must be an absolute file path, e.g. \
                     /var/lib/prometheus/node-exporter/spa.prom"
                        .into(),
                ))
            }
            m => m.map(|m| m.into_inner()),
        };
        // The uid itself is state, not configuration: the daemon reads (or
        // creates) it in its state directory and attaches it with
        // [`Config::attach_uid`], at start and to each reloaded
        // configuration. Reading it here would make the privileged side,
        // which loads the configuration on reload, read a directory that
        // belongs to the network side's user.
        v2.uid_file = state_dir.join(crate::v2::UID_FILE);
        Ok(Config {
            v2,
            source: file.to_owned(),
            server_id: ServerId::from_name(&server_name),
            server_name,
            server_id_source,
            interfaces,
            spa_port,
            state_dir,
            runtime_dir,
            firewall,
            firewall_options,
            default_duration,
            duration_limit,
            max_grants_total,
            window: TimeWindow {
                past_secs: window_secs,
                future_secs: window_secs,
            },
            replay_capacity,
            keys,
            by_id,
            legacy,
            doors,
            silent: raw.silent.unwrap_or(true),
            user: raw.user.unwrap_or_else(|| DEFAULT_USER.to_owned()),
            metrics_file,
        })
    }
}

/// Command-line values get the same range checks as the file's; their
/// errors name the option (there is no line).
fn check_overrides(ov: &Overrides) -> Result<(), (&'static str, String)> {
    if ov.spa_port == Some(0) {
        return Err(("--port", "must be 1-65535".into()));
    }
    if let Some(w) = ov.window_secs {
        if w == 0 || w > 3600 {
            return Err(("--window", format!("{w}: must be 1-3600")));
        }
    }
    if ov.default_duration == Some(0) {
        return Err(("--default-duration", "must be at least 1 second".into()));
    }
    if ov.key_max_duration == Some(0) {
        return Err(("--max-duration", "must be at least 1 second".into()));
    }
    if let Some(s) = &ov.server_id {
        check_label(s).map_err(|m| ("--server-id", m))?;
    }
    for name in &ov.interfaces {
        check_label(name).map_err(|m| ("--interface", format!("{name:?} {m}")))?;
    }
    Ok(())
}

/// The dotted name of the setting a TOML error at byte `pos` is about
/// (`spa_port`, `key.allow`, `legacy.hmac.ports`): serde's type errors carry
/// only a span, and "line 7" alone makes the reader count lines. Uses the
/// name the message quotes (`unknown field `x``, `missing field `x``) when
/// there is one, else the key on that line (or the nearest line above it
/// that has one, for multi-line arrays), prefixed by the enclosing table.
fn field_at(text: &str, pos: usize, msg: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let pos = pos.min(bytes.len());
    let start = bytes[..pos]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut lines = text.get(..start)?.lines().rev();
    let this = text.get(start..)?.lines().next().unwrap_or("");
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        let inner = l.strip_prefix("[[").and_then(|r| r.split("]]").next());
        let inner = inner.or_else(|| l.strip_prefix('[').and_then(|r| r.split(']').next()))?;
        Some(inner.trim().replace(['"', ' '], ""))
    };
    let key_of = |l: &str| -> Option<String> {
        let (k, _) = l.split_once('=')?;
        let k = k.trim().replace(['"', ' '], "");
        let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
        (!k.is_empty() && k.chars().all(bare)).then_some(k)
    };
    let quoted = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| msg.split(p).nth(1)?.split('`').next().map(str::to_owned));
    // The table the error is in: this line if it is a header, else the
    // nearest header above.
    let (table, key) = if let Some(h) = header(this) {
        (Some(h), None)
    } else {
        let mut key = key_of(this);
        // A line without a key may be inside a multi-line array: walk up
        // the lines that continue it (ending in `[` or `,`) to its key.
        let mut in_array = key.is_none();
        let mut table = None;
        for l in lines.by_ref() {
            if let Some(h) = header(l) {
                table = Some(h);
                break;
            }
            if in_array {
                let t = l.trim_end();
                let continues = t.ends_with('[') || t.ends_with(',');
                if !continues {
                    in_array = false;
                } else if let Some(k) = key_of(l) {
                    key = Some(k);
                    in_array = false;
                }
            }
        }
        (table, key)
    };
    let name = quoted.or(key);
    match (table, name) {
        (Some(t), Some(n)) => Some(format!("{t}.{n}")),
        (None, Some(n)) => Some(n),
        (Some(t), None) => Some(t),
        (None, None) => None,
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let env = Env::new();
        let cfg = env.load(ALICE).unwrap();
        assert_eq!(cfg.spa_port, DEFAULT_SPA_PORT);
        assert_eq!(cfg.default_duration, DEFAULT_DURATION);
        assert_eq!(cfg.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(cfg.firewall, BackendKind::Iptables);
        assert_eq!(cfg.server_name, hostname());
        assert_eq!(cfg.server_id, ServerId::from_name(&hostname()));
        assert!(cfg.interfaces.is_empty());
        assert_eq!(cfg.window.past_secs, spa_proto::replay::DEFAULT_WINDOW_SECS);
        assert_eq!(
            cfg.window.future_secs,
            spa_proto::replay::DEFAULT_WINDOW_SECS
        );
        assert_eq!(cfg.replay_capacity, spa_proto::replay::DEFAULT_CAPACITY);
        assert_eq!(cfg.keys.len(), 1);
        let k = &cfg.keys[0];
        assert_eq!(k.name, "alice");
        assert_eq!(k.allow, vec![tcp(22)]);
        assert_eq!(k.max_duration, DEFAULT_MAX_DURATION);
        assert_eq!(
            k.file,
            env.dir.path().join("alice.key"),
            "relative to the config"
        );
        let id = MasterKey::from_bytes([0x11; 32]).derive().key_id();
        assert_eq!(k.key_id, id);
        assert_eq!(cfg.key(&id).map(|k| k.name.as_str()), Some("alice"));
        assert!(cfg.key(&KeyId([0; 8])).is_none());
        assert!(cfg.doors.is_empty());
    }

    #[test]
    fn every_field_is_read() {
        let env = Env::new();
        let id = MasterKey::from_bytes([0x22; 32]).derive().key_id();
        let bob = env.dir.path().join("bob.key");
        let text = format!(
            "server_id = \"gw1\"\n\
             interfaces = [\"eth0\", \"wg0\"]\n\
             spa_port = 40000\n\
             state_dir = \"/tmp/spa-state\"\n\
             firewall = \"nftables\"\n\
             default_duration = 45\n\
             duration_limit = 7200\n\
             max_grants_total = 100\n\
             window_secs = 10\n\
             replay_capacity = 1024\n\
             {ALICE}\
             [[key]]\n\
             name = \"bob\"\n\
             file = \"{}\"\n\
             allow = [\"22\", \"udp/53\", \"TCP/443\"]\n\
             max_duration = 3600\n\
             allow_other_address = true\n\
             require_explicit_address = true\n\
             max_grants = 3\n\
             key_id = \"{id}\"\n",
            bob.display()
        );
        let cfg = env.load(&text).unwrap();
        assert_eq!(cfg.server_name, "gw1");
        assert_eq!(cfg.server_id, ServerId::from_name("gw1"));
        assert_eq!(cfg.interfaces, vec!["eth0", "wg0"]);
        assert_eq!(cfg.spa_port, 40000);
        assert_eq!(cfg.state_dir, PathBuf::from("/tmp/spa-state"));
        assert_eq!(cfg.firewall, BackendKind::Nftables);
        assert_eq!(cfg.default_duration, 45);
        assert_eq!(cfg.window.past_secs, 10);
        assert_eq!(cfg.replay_capacity, 1024);
        let b = cfg.key(&id).unwrap();
        assert_eq!(b.name, "bob");
        assert_eq!(b.file, bob);
        assert_eq!(b.max_duration, 3600);
        assert_eq!((cfg.duration_limit, cfg.max_grants_total), (7200, 100));
        assert!(b.allow_other_address && b.require_explicit_address);
        assert_eq!(b.max_grants, 3);
        let a = &cfg.keys[0];
        assert!(
            !a.allow_other_address,
            "default: opens only for the sender's address"
        );
        assert!(!a.require_explicit_address);
        assert_eq!(a.max_grants, limits::DEFAULT_KEY_MAX_GRANTS);
        assert_eq!(
            b.allow,
            vec![tcp(22), Grant::new(Proto::Udp, 53).unwrap(), tcp(443)]
        );
    }

    #[test]
    fn command_line_overrides_the_file() {
        let env = Env::new();
        let ov = Overrides {
            server_id: Some("cli-gw".into()),
            interfaces: vec!["veth0".into()],
            spa_port: Some(1234),
            state_dir: Some("/tmp/x".into()),
            firewall: Some(BackendKind::Nftables),
            default_duration: Some(5),
            window_secs: Some(7),
            keys: vec![env.dir.path().join("bob.key")],
            key_allow: vec![tcp(443)],
            key_max_duration: Some(9),
            ..Overrides::default()
        };
        let text = format!(
            "server_id = \"file-gw\"\nspa_port = 99\nfirewall = \"iptables\"\ndefault_duration = 60\n{ALICE}"
        );
        let cfg = env.load_ov(&text, &ov).unwrap();
        assert_eq!(cfg.server_name, "cli-gw");
        assert_eq!(cfg.interfaces, vec!["veth0"]);
        assert_eq!(cfg.spa_port, 1234);
        assert_eq!(cfg.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.firewall, BackendKind::Nftables);
        assert_eq!(cfg.default_duration, 5);
        assert_eq!(cfg.window.future_secs, 7);
        assert_eq!(cfg.keys.len(), 2, "file keys and --key keys together");
        let bob = &cfg.keys[1];
        assert_eq!(bob.name, "bob", "a --key key is named by its file");
        assert_eq!(bob.allow, vec![tcp(443)]);
        assert_eq!(bob.max_duration, 9);
    }

    #[test]
    fn command_line_alone_is_a_configuration() {
        let env = Env::new();
        let ov = Overrides {
            keys: vec![env.dir.path().join("alice.key")],
            ..Overrides::default()
        };
        let cfg = Config::load(None, &ov).unwrap();
        assert_eq!(
            cfg.keys[0].allow,
            vec![tcp(22)],
            "--allow defaults to tcp/22"
        );
        assert_eq!(cfg.keys[0].max_duration, DEFAULT_MAX_DURATION);
        // Without keys there is nothing to serve.
        let e = Config::load(None, &Overrides::default()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("key"));
        assert!(e.msg.contains("no keys configured"), "{e}");
    }

    #[test]
    fn load_reads_the_file_and_names_it_when_missing() {
        let env = Env::new();
        std::fs::write(env.conf(), ALICE).unwrap();
        let cfg = Config::load(Some(&env.conf()), &Overrides::default()).unwrap();
        assert_eq!(cfg.source, env.conf());
        let missing = env.dir.path().join("nope.toml");
        let e = Config::load(Some(&missing), &Overrides::default()).unwrap_err();
        assert_eq!(e.file, missing);
        assert!(e.to_string().contains("nope.toml"), "{e}");
        assert!(e.msg.contains("cannot read"), "{e}");
    }

    #[test]
    fn top_level_value_errors_name_line_and_field() {
        let env = Env::new();
        env.err(&format!("spa_port = 0\n{ALICE}"), 1, "spa_port", "1-65535");
        env.err(
            &format!("metrics_file = \"spa.prom\"\n{ALICE}"),
            1,
            "metrics_file",
            "absolute file path",
        );
        env.err(
            &format!("# comment\n\nfirewall = \"pf\"\n{ALICE}"),
            3,
            "firewall",
            "unknown backend `pf`",
        );
        env.err(
            &format!("\ndefault_duration = 0\n{ALICE}"),
            2,
            "default_duration",
            "at least 1",
        );
        env.err(
            &format!("window_secs = 0\n{ALICE}"),
            1,
            "window_secs",
            "1-3600",
        );
        env.err(
            &format!("window_secs = 3601\n{ALICE}"),
            1,
            "window_secs",
            "1-3600",
        );
        env.err(
            &format!("replay_capacity = 15\n{ALICE}"),
            1,
            "replay_capacity",
            "at least 16",
        );
        env.err(
            &format!("server_id = \" \"\n{ALICE}"),
            1,
            "server_id",
            "empty",
        );
        env.err(
            &format!("spa_port = 1\n[firewall_options]\nchain = \"a b\"\n{ALICE}"),
            2,
            "firewall_options",
            "chain",
        );
    }

    /// Also-item of issue 16: durations are bounded (default one day,
    /// configurable up to 30 days) and grant caps are checked, each error
    /// naming file, line, field and the limit.
    #[test]
    fn durations_and_grant_caps_are_bounded() {
        let env = Env::new();
        env.err(
            &format!("{ALICE}max_duration = 4294967295\n"),
            5,
            "key.max_duration",
            "above duration_limit (86400 s)",
        );
        env.err(
            &format!("default_duration = 86401\n{ALICE}"),
            1,
            "default_duration",
            "86400",
        );
        env.err(
            &format!("duration_limit = 2592001\n{ALICE}"),
            1,
            "duration_limit",
            "2592000",
        );
        env.err(
            &format!("duration_limit = 60\n{ALICE}max_duration = 61\n"),
            6,
            "key.max_duration",
            "above duration_limit (60 s)",
        );
        env.err(
            &format!("max_grants_total = 0\n{ALICE}"),
            1,
            "max_grants_total",
            "1-65536",
        );
        env.err(
            &format!("max_grants_total = 8\n{ALICE}max_grants = 9\n"),
            6,
            "key.max_grants",
            "above max_grants_total (8)",
        );
        // A door's own duration too.
        env.err(
            &format!(
                "duration_limit = 60\n{ALICE}[legacy]\nenabled = true\n[[legacy.door]]\n\
                 name = \"web\"\nsequence = \"7000,8000\"\nopen = \"tcp/22\"\nduration = 120\n"
            ),
            6,
            "legacy.door.duration",
            "door `web`: 120 s is above duration_limit (60 s)",
        );
        // A raised limit admits what it says; defaults shrink to a lower one.
        let cfg = env
            .load(&format!(
                "duration_limit = 2592000\n{ALICE}max_duration = 2592000\n"
            ))
            .unwrap();
        assert_eq!(cfg.keys[0].max_duration, 2_592_000);
        let cfg = env.load(&format!("duration_limit = 10\n{ALICE}")).unwrap();
        assert_eq!((cfg.default_duration, cfg.keys[0].max_duration), (10, 10));
        // The command line is held to the same bound.
        let ov = Overrides {
            key_max_duration: Some(100_000),
            ..Overrides::default()
        };
        let e = env.load_ov(ALICE, &ov).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("--max-duration"), "{e}");
        let ov = Overrides {
            default_duration: Some(u32::MAX),
            ..Overrides::default()
        };
        let e = env.load_ov(ALICE, &ov).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("--default-duration"), "{e}");
    }

    /// Finding 13: a name that reaches a log line cannot carry a control
    /// character (a newline in `[[key]] name` forged a whole log line).
    #[test]
    fn control_characters_in_names_are_refused() {
        let env = Env::new();
        let forged = "alice\\n2026-11-30T00:00:00Z  INFO accepted open: rule added key=root";
        env.err(
            &format!("spa_port = 1\n\n[[key]]\nname = \"{forged}\"\nfile = \"alice.key\"\nallow = [\"22\"]\n"),
            4,
            "key.name",
            "control characters",
        );
        env.err(
            &format!("server_id = \"gw\\u001b[2J\"\n{ALICE}"),
            1,
            "server_id",
            "control characters",
        );
        env.err(
            &format!("interfaces = [\"eth0\\r\"]\n{ALICE}"),
            1,
            "interfaces",
            "control characters",
        );
        env.err(
            &format!("{ALICE}\n[[legacy.door]]\nname = \"web\\nx\"\nsequence = \"7000\"\nopen = \"tcp/22\"\n[legacy]\nenabled = true\n"),
            6,
            "legacy.door[0].name",
            "control characters",
        );
        let ov = Overrides {
            server_id: Some("gw\n".into()),
            ..Overrides::default()
        };
        let e = env.load_ov(ALICE, &ov).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("--server-id"), "{e}");
    }

    #[test]
    fn key_table_errors_name_line_and_field() {
        let env = Env::new();
        let k = |body: &str| format!("spa_port = 1\n\n[[key]]\n{body}");
        env.err(
            &k("name = \"\"\nfile = \"alice.key\"\nallow = [\"22\"]\n"),
            4,
            "key.name",
            "empty",
        );
        env.err(
            &k("name = \"a\"\nfile = \"alice.key\"\nallow = [\"sctp/22\"]\n"),
            6,
            "key.allow",
            "unknown protocol 'sctp'",
        );
        for bad in ["tcp/0", "tcp/65536", "tcp/x", "tcp/"] {
            env.err(
                &k(&format!(
                    "name = \"a\"\nfile = \"alice.key\"\nallow = [\"{bad}\"]\n"
                )),
                6,
                "key.allow",
                "invalid port",
            );
        }
        env.err(
            &k("name = \"a\"\nfile = \"alice.key\"\nallow = []\n"),
            6,
            "key.allow",
            "allows nothing",
        );
        env.err(
            &k("name = \"a\"\nfile = \"alice.key\"\nallow = [\"22\"]\nmax_duration = 0\n"),
            7,
            "key.max_duration",
            "at least 1",
        );
        env.err(
            &k("name = \"a\"\nfile = \"missing.key\"\nallow = [\"22\"]\n"),
            5,
            "key.file",
            "missing.key",
        );
        env.err(
            &k("name = \"a\"\nfile = \"alice.key\"\nallow = [\"22\"]\nkey_id = \"0011223344556677\"\n"),
            7,
            "key.key_id",
            "wrong key file",
        );
        env.err(
            &k("name = \"a\"\nfile = \"alice.key\"\nallow = [\"22\"]\nkey_id = \"zz\"\n"),
            7,
            "key.key_id",
            "",
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let env = Env::new();
        let p = env.dir.path().join("alice.key");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = env.err(&format!("\n{ALICE}"), 4, "key.file", "alice.key");
        assert!(
            e.msg.contains("permission") || e.msg.contains("0644") || e.msg.contains("mode"),
            "{e}"
        );
        // The same for --key: the error names the file and the option.
        let ov = Overrides {
            keys: vec![p.clone()],
            ..Overrides::default()
        };
        let e = Config::load(None, &ov).unwrap_err();
        assert_eq!(e.file, p);
        assert_eq!(e.field.as_deref(), Some("--key"));
    }

    #[test]
    fn the_same_key_twice_is_refused() {
        let env = Env::new();
        env.key("alice-copy.key", "alice2", 0x11);
        let text = format!(
            "{ALICE}\n[[key]]\nname = \"alice2\"\nfile = \"alice-copy.key\"\nallow = [\"22\"]\n"
        );
        let e = env.load(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("key"));
        assert!(e.msg.contains("same key-id"), "{e}");
        assert!(e.msg.contains("alice-copy.key"), "{e}");
    }

    #[test]
    fn two_keys_with_one_name_are_refused() {
        let env = Env::new();
        let text =
            format!("{ALICE}\n[[key]]\nname = \"alice\"\nfile = \"bob.key\"\nallow = [\"22\"]\n");
        let e = env.load(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("key.name"), "{e}");
        assert!(e.msg.contains("both named `alice`"), "{e}");
        assert!(e.msg.contains("bob.key"), "{e}");
    }

    #[test]
    fn from_and_expires_are_read_and_their_errors_located() {
        let env = Env::new();
        let cfg = env
            .load(&format!(
                "{ALICE}from = [\"203.0.113.0/24\", \"2001:db8:5::/48\"]\nexpires = 2027-01-31\n"
            ))
            .unwrap();
        assert_eq!(
            cfg.keys[0].rules.from_text(),
            "203.0.113.0/24,2001:db8:5::/48"
        );
        assert_eq!(cfg.keys[0].rules.expires, Some(1_801_440_000));
        let cfg = env.load(ALICE).unwrap();
        assert_eq!(cfg.keys[0].rules, crate::policy::KeyRules::default());
        env.err(
            &format!("{ALICE}from = [\"10.0.0.1/8\"]\n"),
            5,
            "key.from",
            "host bits",
        );
        env.err(&format!("{ALICE}from = []\n"), 5, "key.from", "empty list");
        env.err(
            &format!("{ALICE}expires = 12:00:00\n"),
            5,
            "key.expires",
            "without a date",
        );
        let e = env
            .load(&format!("{ALICE}expires = \"2027-01-31\"\n"))
            .unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(5), Some("key.expires")),
            "{e}"
        );
    }

    #[test]
    fn forwards_are_read_allowed_and_one_meaning_per_grant() {
        let env = Env::new();
        let fwd =
            "[key.forward]\n\"tcp/2222\" = \"10.20.0.5:22\"\n\"2223\" = \"[2001:db8:20::5]:22\"\n";
        let cfg = env.load(&format!("{ALICE}{fwd}")).unwrap();
        let k = &cfg.keys[0];
        assert!(k.allow.contains(&tcp(2222)) && k.allow.contains(&tcp(2223)));
        assert_eq!(
            crate::policy::forwards(&cfg.keys).get(&tcp(2223)),
            Some(&"[2001:db8:20::5]:22".parse().unwrap())
        );
        env.err(
            &format!("{ALICE}[key.forward]\n\"tcp/2222\" = \"10.20.0.5\"\n"),
            5,
            "key.forward",
            "not host:port",
        );
        env.err(
            &format!("{ALICE}[key.forward]\n\"tcp/2222\" = \"127.0.0.1:22\"\n"),
            5,
            "key.forward",
            "loopback",
        );
        // bob opens tcp/2222 on the gateway while alice forwards it.
        env.key("bob.key", "bob", 0x22);
        let e = env
            .load(&format!(
                "{ALICE}{fwd}[[key]]\nname = \"bob\"\nfile = \"bob.key\"\nallow = [\"tcp/2222\"]\n"
            ))
            .unwrap_err();
        assert!(e.msg.contains("one thing on the gateway"), "{e}");
        // forward_all: every other allowed grant to one host, same port.
        let cfg = env
            .load(&format!(
                "{ALICE}forward_all = \"10.20.0.7\"\n[key.forward]\n\"tcp/2222\" = \"10.20.0.5:22\"\n"
            ))
            .unwrap();
        let f = crate::policy::forwards(&cfg.keys);
        assert_eq!(f.get(&tcp(22)), Some(&"10.20.0.7:22".parse().unwrap()));
        assert_eq!(f.get(&tcp(2222)), Some(&"10.20.0.5:22".parse().unwrap()));
        env.err(
            &format!("{ALICE}forward_all = \"10.20.0.7:22\"\n"),
            5,
            "key.forward_all",
            "not an address",
        );
    }

    #[test]
    fn no_keys_is_an_error() {
        let env = Env::new();
        let e = env.load("spa_port = 5\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("key"));
        assert!(e.msg.contains("spa-keygen"), "{e}");
    }

    #[test]
    fn syntax_and_type_errors_name_the_line_and_field() {
        let env = Env::new();
        // Syntax: the line is what matters.
        let e = env.load(&format!("{ALICE}spa_port = = 3\n")).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        // Wrong type and unknown field: the line and the field.
        env.err(&format!("\nspa_port = \"x\"\n{ALICE}"), 2, "spa_port", "");
        env.err(&format!("spa_port = 70000\n{ALICE}"), 1, "spa_port", "");
        env.err(
            &format!("{ALICE}colour = \"blue\"\n"),
            5,
            "key.colour",
            "colour",
        );
        env.err(
            &format!("colour = \"blue\"\n{ALICE}"),
            1,
            "colour",
            "colour",
        );
        env.err(
            &format!("{ALICE}max_duration = \"long\"\n"),
            5,
            "key.max_duration",
            "",
        );
        // Inside a multi-line array: the array's key.
        env.err(
            "[[key]]\nname = \"a\"\nfile = \"alice.key\"\nallow = [\n  \"tcp/22\",\n  22,\n]\n",
            6,
            "key.allow",
            "",
        );
        // A table missing a required field names table and field.
        let e = env
            .load("spa_port = 1\n[[key]]\nname = \"a\"\nfile = \"alice.key\"\n")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("key.allow"), "{e}");
        assert!(e.line.is_some(), "{e}");
        // A stray line is not blamed on the key above it.
        let e = env
            .load(&format!("spa_port = 1\nhello\n{ALICE}"))
            .unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert_ne!(e.field.as_deref(), Some("spa_port"), "{e}");
        // Nested tables keep their whole path.
        env.err(
            &format!("{ALICE}[firewall_options]\nchian = \"x\"\n"),
            6,
            "firewall_options.chian",
            "chian",
        );
    }

    #[test]
    fn command_line_values_are_checked_too() {
        let env = Env::new();
        let bad = [
            (
                Overrides {
                    spa_port: Some(0),
                    ..Overrides::default()
                },
                "--port",
            ),
            (
                Overrides {
                    window_secs: Some(0),
                    ..Overrides::default()
                },
                "--window",
            ),
            (
                Overrides {
                    window_secs: Some(3601),
                    ..Overrides::default()
                },
                "--window",
            ),
            (
                Overrides {
                    default_duration: Some(0),
                    ..Overrides::default()
                },
                "--default-duration",
            ),
            (
                Overrides {
                    key_max_duration: Some(0),
                    keys: vec![env.dir.path().join("bob.key")],
                    ..Overrides::default()
                },
                "--max-duration",
            ),
            (
                Overrides {
                    server_id: Some("  ".into()),
                    ..Overrides::default()
                },
                "--server-id",
            ),
        ];
        for (ov, field) in bad {
            let e = match env.load_ov(ALICE, &ov) {
                Ok(_) => panic!("{field} accepted: {ov:?}"),
                Err(e) => e,
            };
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
            assert_eq!(e.line, None, "a command-line value has no line: {e}");
        }
    }

    #[test]
    fn parse_grant_accepts_the_documented_forms() {
        assert_eq!(parse_grant("22"), Ok(tcp(22)));
        assert_eq!(parse_grant(" tcp/22 "), Ok(tcp(22)));
        assert_eq!(
            parse_grant("UDP/53"),
            Grant::new(Proto::Udp, 53).map_err(|_| String::new())
        );
        assert_eq!(parse_grant("tcp/65535"), Ok(tcp(65535)));
        for bad in [
            "", "0", "tcp/0", "65536", "icmp/1", "tcp/-1", "tcp/22/1", "/22", "udp/",
        ] {
            assert!(parse_grant(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn line_of_counts_from_one() {
        let t = "a\nb\nc";
        assert_eq!(line_of(t, 0), 1);
        assert_eq!(line_of(t, 1), 1);
        assert_eq!(line_of(t, 2), 2);
        assert_eq!(line_of(t, 4), 3);
        assert_eq!(line_of(t, 999), 3, "past the end stays on the last line");
    }

    proptest! {
        #[test]
        fn parse_grant_round_trips_and_never_panics(s in ".{0,12}", port in 1u16.., udp: bool) {
            let _ = parse_grant(&s);
            let g = Grant::new(if udp { Proto::Udp } else { Proto::Tcp }, port).unwrap();
            prop_assert_eq!(parse_grant(&g.to_string()), Ok(g));
        }
    }

    /// Finding 16: each key's token bucket is configurable, with a default,
    /// and an out-of-range value names its line and field.
    #[test]
    fn key_rate_limit_defaults_and_bounds() {
        let env = Env::new();
        let cfg = env.load(ALICE).unwrap();
        assert_eq!(cfg.keys[0].rate, crate::ratelimit::Rate::default());
        let cfg = env
            .load(&format!("{ALICE}rate_per_minute = 6\nrate_burst = 2\n"))
            .unwrap();
        assert_eq!(
            cfg.keys[0].rate,
            crate::ratelimit::Rate {
                per_minute: 6,
                burst: 2
            }
        );
        env.err(
            &format!("{ALICE}rate_per_minute = 0\n"),
            5,
            "key.rate_per_minute",
            "must be 1-60000",
        );
        env.err(
            &format!("{ALICE}rate_burst = 10001\n"),
            5,
            "key.rate_burst",
            "must be 1-10000",
        );
    }

    /// Whatever the text, loading never panics, and an error always names
    /// the file (and a line inside the text when it has one). One key folder
    /// for all cases: writing key files per case is what would be slow.
    #[test]
    fn any_text_gives_a_config_or_a_located_error() {
        let env = Env::new();
        proptest!(|(text in "[a-z_\\[\\]=\" 0-9\n./]{0,80}")| {
            let full = format!("{ALICE}{text}");
            if let Err(e) = env.load(&full) {
                prop_assert_eq!(&e.file, &env.conf());
                if let Some(l) = e.line {
                    prop_assert!(l >= 1 && l <= full.lines().count().max(1) + 1, "{}", e);
                }
            }
        });
    }
}
