//! The shapes the configuration arrives in: the TOML file's tables as serde
//! reads them (every value `Spanned`, so an error can name its line), the
//! command-line overrides, and the documented defaults. No checks here:
//! merge.rs turns these into a valid [`Config`](super::Config).

use crate::firewall::BackendKind;
use serde::Deserialize;
use spa_proto::Grant;
use std::path::PathBuf;
use toml::Spanned;

/// Where the configuration lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/spa/server.toml";
/// fwknop's well-known SPA port; any UDP port works.
pub const DEFAULT_SPA_PORT: u16 = 62201;
/// Where the replay record is persisted.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/spa-server";
/// The network side's user when `user` is not set (created by the Debian package).
pub const DEFAULT_USER: &str = "spa";
/// How long a grant lasts when the request does not say (seconds).
pub const DEFAULT_DURATION: u32 = 30;
/// Longest grant a key may ask for unless its policy says otherwise.
pub const DEFAULT_MAX_DURATION: u32 = 300;

/// The file's top level, as written (`deny_unknown_fields`: a misspelt
/// setting is an error, not silently ignored).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server_id: Option<Spanned<String>>,
    pub(super) interfaces: Option<Spanned<Vec<String>>>,
    pub(super) spa_port: Option<Spanned<u16>>,
    pub(super) state_dir: Option<Spanned<PathBuf>>,
    pub(super) runtime_dir: Option<Spanned<PathBuf>>,
    pub(super) firewall: Option<Spanned<String>>,
    pub(super) default_duration: Option<Spanned<u32>>,
    pub(super) duration_limit: Option<Spanned<u32>>,
    pub(super) max_grants_total: Option<Spanned<usize>>,
    pub(super) window_secs: Option<Spanned<u64>>,
    pub(super) replay_capacity: Option<Spanned<usize>>,
    #[serde(default)]
    pub(super) key: Vec<Spanned<RawKey>>,
    /// Not `Spanned`: toml 0.8 fails on a `Spanned` table that only exists
    /// through dotted headers (`[legacy.hmac]` without `[legacy]`).
    pub(super) legacy: Option<crate::legacy::LegacyConfig>,
    pub(super) firewall_options: Option<Spanned<crate::firewall::FirewallOptions>>,
    pub(super) silent: Option<bool>,
    pub(super) user: Option<String>,
    pub(super) metrics_file: Option<Spanned<PathBuf>>,
}

/// One `[[key]]` table, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) name: Spanned<String>,
    pub(super) file: Spanned<PathBuf>,
    pub(super) allow: Spanned<Vec<String>>,
    pub(super) max_duration: Option<Spanned<u32>>,
    pub(super) allow_other_address: Option<bool>,
    pub(super) require_explicit_address: Option<bool>,
    pub(super) max_grants: Option<Spanned<usize>>,
    pub(super) rate_per_minute: Option<Spanned<u32>>,
    pub(super) rate_burst: Option<Spanned<u32>>,
    /// Networks the key may be used from (policy.rs).
    pub(super) from: Option<Spanned<Vec<String>>>,
    /// When the key stops working: a TOML date or date-time, UTC.
    pub(super) expires: Option<Spanned<toml::value::Datetime>>,
    /// `[key.forward]`: "tcp/2222" = "10.20.0.5:22" (policy.rs).
    pub(super) forward: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// Every other allowed grant forwarded to this host, same port.
    pub(super) forward_all: Option<Spanned<String>>,
    /// Informational copy of the key-id (spa-keygen prints it); checked
    /// against the key file when present.
    pub(super) key_id: Option<Spanned<String>>,
    /// `["v1"]`, `["v2"]` or both (crate::v2::Protocols).
    pub(super) protocols: Option<Spanned<Vec<String>>>,
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
pub fn parse_grant(s: &str) -> Result<Grant, GrantError> {
    s.parse::<Grant>().map_err(|error| GrantError {
        text: s.trim().to_owned(),
        error,
    })
}

/// Why `[[key]] allow`, `[key.forward]` or `--allow` refused a grant: the
/// text as written (trimmed) and the grammar's reason, kept as its type so
/// a caller can match on it; config/ and main put the field or option in
/// front of the text made here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantError {
    pub text: String,
    pub error: spa_proto::GrantSyntax,
}

impl std::fmt::Display for GrantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let GrantError { text, error } = self;
        match error {
            spa_proto::GrantSyntax::UnknownProto(_) => write!(f, "{error} in `{text}`"),
            _ => write!(f, "invalid port `{text}`: {error}"),
        }
    }
}

impl std::error::Error for GrantError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
