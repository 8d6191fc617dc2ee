//! Reading: the configuration file's text, the host name and the key
//! files are the only I/O of `config/`, and each read is a function here
//! (merge.rs and the rest work on what was read). Key files go through a
//! reader the loaders in mod.rs pass in: from disk, recording the bytes
//! (the privileged side), or replaying them (the network side,
//! `Config::load_from`). A key file becomes a [`KeyPolicy`] here, with its
//! v1/v2 identity, because this is where its content is first known.
use super::locate::{ConfigError, Locator};
use super::schema::{parse_grant, Overrides, RawKey, DEFAULT_MAX_DURATION};
use super::KeyPolicy;
use crate::limits;
use spa_keys::{check_label, KeyFile};
use spa_proto::{Grant, KeyId};
use std::path::{Path, PathBuf};

/// Reads one key file (the caller decides from where: disk, or bytes the
/// privileged side read).
pub(super) type ReadKey<'a> = dyn FnMut(&Path) -> Result<KeyFile, spa_keys::KeyError> + 'a;

/// The configuration file's text; an error names the file.
pub(super) fn read_text(p: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(p).map_err(|e| ConfigError {
        file: p.to_owned(),
        line: None,
        field: None,
        msg: format!("cannot read: {e}"),
    })
}

/// This host's name, the default server id on both sides.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Key file paths in the config are relative to the config file's folder.
pub(super) fn resolve(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    config
        .parent()
        .map(|d| d.join(p))
        .unwrap_or_else(|| p.to_owned())
}

/// One `[[key]]` table: its policy and its protocol v2 side, its key file
/// read through `read_key`. `duration_limit` and `max_grants_total` are the
/// file's, already checked.
pub(super) fn file_key(
    k: &toml::Spanned<RawKey>,
    loc: &Locator,
    duration_limit: u32,
    max_grants_total: usize,
    read_key: &mut ReadKey,
) -> Result<(KeyPolicy, crate::v2::V2Key), ConfigError> {
    let err = |span, field: &str, msg| loc.err(span, field, msg);
    let file = loc.file;
    let k = k.get_ref();
    let name = k.name.get_ref().trim().to_owned();
    // Names reach log lines: a newline in one forged a whole line.
    check_label(&name).map_err(|m| err(Some(k.name.span()), "key.name", m.to_string()))?;
    let mut allow = Vec::new();
    for g in k.allow.get_ref() {
        allow.push(
            parse_grant(g).map_err(|m| err(Some(k.allow.span()), "key.allow", m.to_string()))?,
        );
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
            m.to_string(),
        )
    })?;
    let max_grants = match &k.max_grants {
        Some(n) => {
            limits::check_key_grants(*n.get_ref(), max_grants_total)
                .map_err(|m| err(Some(n.span()), "key.max_grants", m.to_string()))?;
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
    let kf = read_key(&path).map_err(|e| err(Some(k.file.span()), "key.file", e.to_string()))?;
    // Protocol v2 (v2.rs): a server key file speaks v2 only, a
    // master key file v1 unless `protocols` says more.
    let protocols = match &k.protocols {
        Some(p) => crate::v2::Protocols::parse(p.get_ref())
            .map_err(|m| err(Some(p.span()), "key.protocols", m.to_string()))?,
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
    let v2key = crate::v2::V2Key {
        protocols,
        source,
        set: None,
    };
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
    let mut rules = crate::policy::KeyRules {
        from: match &k.from {
            Some(f) => crate::policy::parse_from(f.get_ref())
                .map_err(|m| err(Some(f.span()), "key.from", m.to_string()))?,
            None => Vec::new(),
        },
        expires: match &k.expires {
            Some(e) => Some(
                crate::policy::parse_expires(e.get_ref())
                    .map_err(|m| err(Some(e.span()), "key.expires", m.to_string()))?,
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
                .map_err(|m| err(Some(h.span()), "key.forward_all", m.to_string()))?;
                rules.forward.push((*g, to));
            }
        }
    }
    let policy = KeyPolicy {
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
    };
    Ok((policy, v2key))
}

/// One `--key FILE`: a master key file, allowed the command line's
/// `--allow` (tcp/22 without one) for its `--max-duration`.
pub(super) fn cli_key(
    path: &Path,
    ov: &Overrides,
    loc: &Locator,
    duration_limit: u32,
    max_grants_total: usize,
    read_key: &mut ReadKey,
) -> Result<(KeyPolicy, crate::v2::V2Key), ConfigError> {
    let err = |span, field: &str, msg| loc.err(span, field, msg);
    let kf = read_key(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: None,
        field: Some("--key".into()),
        msg: e.to_string(),
    })?;
    if let Some(uid) = kf.server_uid {
        return Err(ConfigError {
            file: path.to_owned(),
            line: None,
            field: Some("--key".into()),
            msg: format!(
                "a protocol v2 server key (server_uid {uid}): name it in a [[key]] \
                 table of the configuration file (--key takes master key files)"
            ),
        });
    }
    let v2key = crate::v2::V2Key {
        protocols: crate::v2::Protocols {
            v1: true,
            v2: false,
        },
        source: None,
        set: None,
    };
    let allow = if ov.key_allow.is_empty() {
        vec![Grant::tcp(22).map_err(|e| err(None, "--allow", e.to_string()))?]
    } else {
        ov.key_allow.clone()
    };
    let keys_derived = kf.key.derive();
    let policy = KeyPolicy {
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
        file: path.to_owned(),
    };
    Ok((policy, v2key))
}
