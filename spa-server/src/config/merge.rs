//! The configuration file and the command line merged into one typed
//! [`Config`], every value checked: ranges (`limits`), names that reach log
//! lines, the keys together (one key-id, one name each), `[legacy]` and the
//! forwards. Pure apart from keys.rs's readers (key files, the host name).

use super::keys::{self, ReadKey};
use super::locate::{ConfigError, Locator};
use super::schema::{
    Overrides, RawConfig, DEFAULT_DURATION, DEFAULT_SPA_PORT, DEFAULT_STATE_DIR, DEFAULT_USER,
};
use super::{Config, KeyPolicy};
use crate::firewall::BackendKind;
use crate::limits;
use spa_keys::check_label;
use spa_proto::{ServerId, TimeWindow};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

impl Config {
    /// Parses `text` (read from `file`), applies `ov` and checks every
    /// field; each key file is read through `read_key`.
    pub(super) fn from_text_with(
        text: &str,
        file: &Path,
        ov: &Overrides,
        read_key: &mut ReadKey,
    ) -> Result<Config, ConfigError> {
        let loc = Locator { text, file };
        let err = |span, field: &str, msg| loc.err(span, field, msg);
        let raw: RawConfig = toml::from_str(text).map_err(|e| loc.toml(e))?;
        check_overrides(ov).map_err(|(field, msg)| err(None, field, msg))?;

        let server_name = match (&ov.server_id, &raw.server_id) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => {
                // Reaches every `ready` line: no control characters.
                check_label(s.get_ref())
                    .map_err(|m| err(Some(s.span()), "server_id", m.to_string()))?;
                s.get_ref().clone()
            }
            (None, None) => keys::hostname(),
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
                    .map_err(|m| err(Some(l.span()), "duration_limit", m.to_string()))?;
                *l.get_ref()
            }
            None => limits::DEFAULT_DURATION_LIMIT,
        };
        let max_grants_total = match &raw.max_grants_total {
            Some(t) => {
                limits::check_total(*t.get_ref())
                    .map_err(|m| err(Some(t.span()), "max_grants_total", m.to_string()))?;
                *t.get_ref()
            }
            None => limits::DEFAULT_MAX_GRANTS_TOTAL,
        };
        let default_duration = match (ov.default_duration, &raw.default_duration) {
            (Some(d), _) => {
                limits::check_duration(d, duration_limit)
                    .map_err(|m| err(None, "--default-duration", m.to_string()))?;
                d
            }
            (None, Some(d)) => {
                limits::check_duration(*d.get_ref(), duration_limit)
                    .map_err(|m| err(Some(d.span()), "default_duration", m.to_string()))?;
                *d.get_ref()
            }
            (None, None) => DEFAULT_DURATION.min(duration_limit),
        };
        if let Some(d) = ov.key_max_duration {
            limits::check_duration(d, duration_limit)
                .map_err(|m| err(None, "--max-duration", m.to_string()))?;
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
            let (policy, v2key) =
                keys::file_key(k, &loc, duration_limit, max_grants_total, read_key)?;
            keys.push(policy);
            v2.keys.push(v2key);
        }
        for path in &ov.keys {
            let (policy, v2key) =
                keys::cli_key(path, ov, &loc, duration_limit, max_grants_total, read_key)?;
            keys.push(policy);
            v2.keys.push(v2key);
        }
        // The first `[legacy` header locates errors in the section.
        let legacy_span = loc.legacy_span();
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
                legacy.knockd_conf = Some(keys::resolve(file, p));
            }
        }
        let legacy_err = |e: crate::legacy::LegacyConfigError| match e {
            crate::legacy::LegacyConfigError::Field { field, problem } => {
                err(legacy_span.clone(), &field, problem.to_string())
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
        crate::policy::check_forwards(&keys)
            .map_err(|m| err(None, "key.forward", m.to_string()))?;
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
        check_label(s).map_err(|m| ("--server-id", m.to_string()))?;
    }
    for name in &ov.interfaces {
        check_label(name).map_err(|m| ("--interface", format!("{name:?} {m}")))?;
    }
    Ok(())
}
