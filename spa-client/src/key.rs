//! Which key file to use: `--key FILE`, else `$SPA_KEY`, else
//! `~/.config/spa/default.key` (where `spa-keygen` writes by default).

use crate::error::ClientError;
use spa_keys::{KeyError, KeyFile};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the key path came from, for the "no key" message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChoice {
    pub path: PathBuf,
    /// "from --key", "from $SPA_KEY", "the default".
    pub how: &'static str,
}

/// Picks the key path; pure so the order is testable without touching the
/// process environment.
pub fn choose_key(
    explicit: Option<&Path>,
    spa_key_env: Option<OsString>,
    home: Option<OsString>,
) -> Result<KeyChoice, ClientError> {
    if let Some(p) = explicit {
        return Ok(KeyChoice {
            path: p.to_owned(),
            how: "given with --key",
        });
    }
    if let Some(p) = spa_key_env.filter(|p| !p.is_empty()) {
        return Ok(KeyChoice {
            path: PathBuf::from(p),
            how: "named by $SPA_KEY",
        });
    }
    match home.filter(|h| !h.is_empty()) {
        Some(h) => Ok(KeyChoice {
            path: PathBuf::from(h).join(".config/spa/default.key"),
            how: "the default; no --key or $SPA_KEY given",
        }),
        None => Err(ClientError::NoKeyLocation),
    }
}

/// Finds and reads the key (refusing unsafe permissions, see spa-keys).
/// Returns the path used, for messages.
pub fn load_key(explicit: Option<&Path>) -> Result<(KeyFile, PathBuf), ClientError> {
    let choice = choose_key(
        explicit,
        std::env::var_os("SPA_KEY"),
        std::env::var_os("HOME"),
    )?;
    match KeyFile::read(&choice.path) {
        Ok(kf) => Ok((kf, choice.path)),
        Err(KeyError::Missing { path }) => Err(ClientError::NoKey {
            path,
            how: choice.how,
        }),
        Err(e) => Err(ClientError::Key(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_flag_env_home() {
        let c = choose_key(Some(Path::new("/a")), Some("/b".into()), Some("/h".into())).unwrap();
        assert_eq!(c.path, Path::new("/a"));
        let c = choose_key(None, Some("/b".into()), Some("/h".into())).unwrap();
        assert_eq!(c.path, Path::new("/b"));
        let c = choose_key(None, Some("".into()), Some("/h".into())).unwrap();
        assert_eq!(c.path, Path::new("/h/.config/spa/default.key"));
        assert!(matches!(
            choose_key(None, None, None),
            Err(ClientError::NoKeyLocation)
        ));
    }
}
