//! Reading and writing one key file.

use crate::error::{KeyError, LabelError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use spa_proto::{MasterKey, ServerKey, ServerUid, MASTER_KEY_LEN};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A key file is about 150 bytes; anything past this is not one.
pub const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// The contents of a key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// A label for people and logs ("alice-laptop"); the server matches keys
    /// by key-id, never by this name.
    pub name: String,
    pub key: MasterKey,
    /// The `server_id` of the server this key is meant for, so the client
    /// does not need `--server-id` on every call.
    pub server_id: Option<String>,
    /// Set in a v2 server key file (docs/protocol.md §10.2): then `key` is
    /// not a master key but `K_s`, the key for the server of this uid
    /// alone, made by `spa-client server-key` from the client's master.
    pub server_uid: Option<ServerUid>,
}

/// The on-disk schema. Spans let every value error name its line.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: toml::Spanned<String>,
    key: toml::Spanned<String>,
    server_id: Option<toml::Spanned<String>>,
    server_uid: Option<toml::Spanned<String>>,
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Names and server ids end up in logs and config snippets: refuse the
/// characters that would break a line or a terminal. The one check for
/// every name that reaches a log line (key files, `[[key]] name`, the
/// server id, door names, interface names): a newline in a name forged a
/// whole log line (issue 16, finding 13).
pub fn check_label(s: &str) -> Result<(), LabelError> {
    if s.trim().is_empty() {
        return Err(LabelError::Empty);
    }
    if s.len() > 255 {
        return Err(LabelError::TooLong { len: s.len() });
    }
    if let Some(ch) = s.chars().find(|c| c.is_control()) {
        return Err(LabelError::Control { ch });
    }
    Ok(())
}

impl KeyFile {
    /// Reads a key file, refusing it unless it is a regular file owned by
    /// the reading user (root for the server) that only its owner can
    /// access. The checks run on the opened descriptor, so the file checked
    /// is the file read, symlink or not. Why the owner: a 0600 file of
    /// another user (reached through a symlink, say) is that user's to
    /// change, so its key is not the admin's; OpenSSH refuses it too.
    pub fn read(path: &Path) -> Result<KeyFile, KeyError> {
        let io_err = |action, source: io::Error| {
            if source.kind() == io::ErrorKind::NotFound {
                KeyError::Missing {
                    path: path.to_owned(),
                }
            } else {
                KeyError::Io {
                    path: path.to_owned(),
                    action,
                    source,
                }
            }
        };
        // O_NONBLOCK: opening a FIFO planted at the key path must not hang.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| io_err("open", e))?;
        let meta = file.metadata().map_err(|e| io_err("stat", e))?;
        let ft = meta.file_type();
        if !ft.is_file() {
            let kind = if ft.is_dir() {
                "directory"
            } else if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_block_device() || ft.is_char_device() {
                "device"
            } else {
                "special file"
            };
            return Err(KeyError::NotRegular {
                path: path.to_owned(),
                kind,
            });
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let reader = unsafe { libc::geteuid() };
        if meta.uid() != reader {
            return Err(KeyError::WrongOwner {
                path: path.to_owned(),
                owner: meta.uid(),
                reader,
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::UnsafePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        if meta.len() > MAX_KEY_FILE_LEN {
            return Err(KeyError::TooLarge {
                path: path.to_owned(),
                len: meta.len(),
            });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_err("read", e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
            let (line, column) = line_col(&valid, at);
            KeyError::Parse {
                path: path.to_owned(),
                line: Some(line),
                column: Some(column),
                message: "not UTF-8 text".into(),
            }
        })?;
        KeyFile::parse(&text, path)
    }

    /// Parses key file text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<KeyFile, KeyError> {
        if let Some(looks_like) = crate::sniff::not_a_key_file(text) {
            return Err(KeyError::NotAKeyFile {
                path: path.to_owned(),
                looks_like,
            });
        }
        let raw: Raw = toml::from_str(text).map_err(|e| {
            // A missing field has no line of its own: toml points at the
            // whole document, and "1:1" would send the reader to the wrong place.
            let (line, column) = match e.span() {
                Some(_) if e.message().starts_with("missing field") => (None, None),
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            KeyError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let invalid = |field, span: std::ops::Range<usize>, message: String| KeyError::Invalid {
            path: path.to_owned(),
            line: line_col(text, span.start).0,
            field,
            message,
        };
        check_label(raw.name.get_ref())
            .map_err(|m| invalid("name", raw.name.span(), m.to_string()))?;
        if let Some(sid) = &raw.server_id {
            check_label(sid.get_ref())
                .map_err(|m| invalid("server_id", sid.span(), m.to_string()))?;
        }
        let server_uid = match &raw.server_uid {
            Some(u) => Some(u.get_ref().parse::<ServerUid>().map_err(|m| {
                invalid(
                    "server_uid",
                    u.span(),
                    format!("{m} (spa-server check-config prints the server's)"),
                )
            })?),
            None => None,
        };
        let key_span = raw.key.span();
        let mut decoded = STANDARD.decode(raw.key.get_ref().trim()).map_err(|e| {
            invalid(
                "key",
                key_span.clone(),
                format!("not valid base64 ({e}); a key is 32 bytes in standard base64"),
            )
        })?;
        let result = <[u8; MASTER_KEY_LEN]>::try_from(decoded.as_slice()).map_err(|_| {
            invalid(
                "key",
                key_span.clone(),
                format!(
                    "decodes to {} bytes, a key is {MASTER_KEY_LEN} bytes (make a new one with spa-keygen)",
                    decoded.len()
                ),
            )
        });
        // Best effort: do not leave a decoded copy of the key on the heap.
        decoded.iter_mut().for_each(|b| *b = 0);
        let key = MasterKey::from_bytes(result?);
        Ok(KeyFile {
            name: raw.name.into_inner(),
            key,
            server_id: raw.server_id.map(toml::Spanned::into_inner),
            server_uid,
        })
    }

    /// The file's text. Strings go through the TOML serializer so any name
    /// round-trips, quotes and all.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut out = String::new();
        out.push_str("# spa key: keep this file secret (mode 0600)\n");
        match &self.server_uid {
            Some(uid) => out.push_str(&format!(
                "# v2 server key for server uid {uid}; stable id: {} (the server logs this)\n",
                ServerKey::from_bytes(*self.key.as_bytes())
                    .derive()
                    .stable_id()
            )),
            None => out.push_str(&format!(
                "# key-id: {} (the server logs this, never the key)\n",
                self.key.derive().key_id()
            )),
        }
        out.push_str(&format!("name = {}\n", q(&self.name)));
        out.push_str(&format!(
            "key = \"{}\"\n",
            STANDARD.encode(self.key.as_bytes())
        ));
        if let Some(sid) = &self.server_id {
            out.push_str(&format!(
                "server_id = {}  # the server name this key is meant for\n",
                q(sid)
            ));
        }
        if let Some(uid) = &self.server_uid {
            out.push_str(&format!(
                "server_uid = \"{uid}\"  # key is K_s for this server only (protocol v2)\n"
            ));
        }
        out
    }

    /// Writes a new key file readable only by its owner. Without `force` an
    /// existing file is never touched (O_EXCL); with `force` the new file is
    /// written beside it and renamed over it, so a crash leaves either the
    /// old key or the new one, never half of one. Missing parent directories
    /// are created with mode 0700.
    pub fn write_new(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        let io_err = |action, source| KeyError::Io {
            path: path.to_owned(),
            action,
            source,
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent)
                .map_err(|e| io_err("create the directory of", e))?;
        }
        let text = self.to_toml();
        if !force {
            let file = create_exclusive(path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    KeyError::Exists {
                        path: path.to_owned(),
                    }
                } else {
                    io_err("create", e)
                }
            })?;
            if let Err(e) = fill(file, &text) {
                let _ = fs::remove_file(path);
                return Err(io_err("write", e));
            }
            return Ok(());
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "key".into());
        let tmp = parent.join(format!(
            ".{file_name}.tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = create_exclusive(&tmp).map_err(|e| io_err("create a temporary file for", e))?;
        let done = fill(file, &text).and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = done {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", e));
        }
        // Make the rename durable; a failure here loses nothing already
        // written, so it is not worth failing the whole operation for.
        if let Ok(dir) = File::open(&parent) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn fill(mut file: File, text: &str) -> io::Result<()> {
    // The umask can only remove bits from 0600, but an odd umask (0400)
    // would leave the owner unable to read it back: set the mode explicitly.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod server_key_tests;
