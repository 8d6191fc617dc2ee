//! Key generation and the setup text printed after it. Shared by
//! `spa-keygen` and `spa-client keygen` so both print the same thing.

use crate::error::KeyError;
use crate::file::{check_label, KeyFile};
use spa_proto::MasterKey;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Generate a new SPA key: a 32-byte secret shared by one client and the
/// server. Writes a key file readable only by you (mode 0600), then prints its
/// key-id, the [[key]] table to paste into the server's /etc/spa/server.toml,
/// and the spa-client command that uses it. `--out -` prints the key file's
/// text instead (for a password manager), and the rest on stderr.
// `spa-keygen`'s whole command line: here, not in the binary, so that its man
// page and shell completions are generated from what the binary parses.
#[derive(Debug, clap::Parser)]
#[command(name = "spa-keygen", version)]
pub struct KeygenCli {
    #[command(flatten)]
    pub opts: KeygenOptions,

    /// Print the shell completion script for spa-keygen (bash, zsh, fish,
    /// elvish, powershell) instead of making a key. The Debian packages
    /// install bash, zsh and fish's.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,
}

impl KeygenCli {
    /// Writes the completion script for `shell` (rendered in memory first:
    /// clap_complete panics on a write error).
    pub fn write_completions(
        shell: clap_complete::Shell,
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        write_completions(
            <Self as clap::CommandFactory>::command(),
            "spa-keygen",
            shell,
            out,
        )
    }
}

/// Writes the completion script of `bin` (its clap command tree `cmd`) for
/// `shell`: the one implementation behind `spa-server completions`,
/// `spa-client completions` and `spa-keygen --completions`. Rendered in
/// memory first: clap_complete panics on a write error, and a closed stdout
/// is not a bug.
pub fn write_completions(
    mut cmd: clap::Command,
    bin: &str,
    shell: clap_complete::Shell,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut buf);
    if shell == clap_complete::Shell::Bash {
        if let Some((root, rest)) = bin.split_once('-') {
            // clap_complete 4.6 spells the root of a hyphenated binary
            // `spa__server` where it sets the state but `spa__subcmd__server`
            // in the labels of subcommands, so no subcommand's flags were
            // ever offered (xtask/tests/completions.rs).
            let text = String::from_utf8_lossy(&buf).replace(
                &format!("{root}__subcmd__{rest}__"),
                &format!("{root}__{rest}__"),
            );
            buf = text.into_bytes();
        }
    }
    out.write_all(&buf)
}

/// Options of `spa-keygen` / `spa-client keygen`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeygenOptions {
    /// Where to write the new key file (created with mode 0600; missing
    /// directories are created with mode 0700). `-` writes the key file's
    /// text to stdout instead (for a password manager; nothing is written
    /// to disk) and the setup notes to stderr.
    /// [default: ~/.config/spa/default.key]
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// A label for the key, shown in the server's logs and config.
    /// [default: $USER@<this host's name>]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The `server_id` of the server this key is for, stored in the key file
    /// so the client need not repeat it. It must equal the server's
    /// `server_id` setting (whose default is the server's host name).
    /// [default: this host's name: right when you run keygen on the server]
    #[arg(long = "server-id", value_name = "NAME")]
    pub server_id: Option<String>,

    /// Replace an existing key file (atomically). The old key is gone for
    /// good: the server and clients holding it need the new file.
    #[arg(long)]
    pub force: bool,
}

/// This host's name, as the kernel knows it (the server's default
/// `server_id`). Read from /proc so no unsafe `gethostname` call is needed.
pub fn hostname() -> Option<String> {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string());
    from_proc
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| check_label(s).is_ok())
}

/// `~/.config/spa/default.key`, where the client looks for a key by default.
pub fn default_key_path() -> Result<PathBuf, KeyError> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h).join(".config/spa/default.key")),
        _ => Err(KeyError::NoHome),
    }
}

/// `$USER@host`, so a server operator can tell keys apart at a glance.
pub fn default_name() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| check_label(u).is_ok())
        .unwrap_or_else(|| "spa".to_string());
    match hostname() {
        Some(h) => format!("{user}@{h}"),
        None => user,
    }
}

/// `--out -`: the key file's text goes to stdout, not to a file named `-`.
fn to_stdout(opts: &KeygenOptions) -> bool {
    opts.out.as_deref() == Some(Path::new("-"))
}

/// Generates a key from the OS CSPRNG and writes it. Returns the key and
/// the path written (absolute when the current directory is known).
pub fn keygen(opts: &KeygenOptions) -> Result<(KeyFile, PathBuf), KeyError> {
    let path = match &opts.out {
        Some(p) => p.clone(),
        None => default_key_path()?,
    };
    let path = if path.is_relative() {
        std::env::current_dir()
            .map(|d| d.join(&path))
            .unwrap_or(path)
    } else {
        path
    };
    let kf = generate(opts)?;
    kf.write_new(&path, opts.force)?;
    Ok((kf, path))
}

/// A new key with the options' name and server id, not yet written.
fn generate(opts: &KeygenOptions) -> Result<KeyFile, KeyError> {
    let name = opts.name.clone().unwrap_or_else(default_name);
    check_label(&name).map_err(|error| KeyError::BadOption {
        option: "--name",
        error,
    })?;
    let server_id = match &opts.server_id {
        Some(s) => {
            check_label(s).map_err(|error| KeyError::BadOption {
                option: "--server-id",
                error,
            })?;
            Some(s.clone())
        }
        None => hostname(),
    };
    Ok(KeyFile {
        name,
        key: MasterKey::generate(&mut rand::rngs::OsRng),
        server_id,
        server_uid: None,
    })
}

/// A file name derived from the key name, safe to paste into a shell and a
/// config file.
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.trim_start_matches('.') {
        "" => "client".to_string(),
        t => t.to_string(),
    }
}

/// Quotes a string for a POSIX shell only when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-@+:,=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What to do next with a new key: the server's `[[key]]` table and the
/// client command, ready to paste. Every non-config line is a `#` comment,
/// so pasting the whole block into server.toml is harmless.
pub fn setup_snippet(kf: &KeyFile, path: &Path) -> String {
    snippet(kf, Some(path))
}

/// The snippet; `path` is `None` when the key file went to stdout.
fn snippet(kf: &KeyFile, path: Option<&Path>) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let server_file = format!("/etc/spa/keys/{}.key", file_stem(&kf.name));
    let mut out = String::new();
    out.push_str(&format!("key-id: {}\n", kf.key.derive().key_id()));
    match path {
        Some(path) => out.push_str(&format!(
            "# Wrote {} (mode 0600). Keep it secret: it is the whole credential.\n",
            path.display()
        )),
        None => out.push_str(
            "# The key file's text went to stdout; nothing was written to disk. Keep it \
             secret: it is the whole credential. Save it as a file only you can read \
             (chmod 600) to use it with spa-client --key FILE.\n",
        ),
    }
    out.push_str(&format!(
        "# Server (/etc/spa/server.toml): copy the key file to the server as {server_file} \
         (mode 0600), then add:\n"
    ));
    out.push_str("[[key]]\n");
    out.push_str(&format!("name = {}\n", q(&kf.name)));
    out.push_str(&format!("file = {}\n", q(&server_file)));
    out.push_str("allow = [\"tcp/22\"]\n");
    out.push_str("max_duration = 300\n");
    match &kf.server_id {
        Some(sid) => out.push_str(&format!(
            "# The server's server_id must be {} (set server_id in server.toml; \
             its default is the server's host name).\n",
            q(sid)
        )),
        None => out.push_str(
            "# This key names no server: the client needs --server-id NAME, \
             NAME being the server's server_id.\n",
        ),
    }
    out.push_str("# Client (SERVER = the server's host name or address):\n");
    let sid_arg = if kf.server_id.is_some() {
        String::new()
    } else {
        " --server-id NAME".to_string()
    };
    out.push_str(&format!(
        "spa-client send --key {}{sid_arg} --open 22 SERVER\n",
        path.map_or("FILE".into(), |p| shell_quote(&p.display().to_string()))
    ));
    out
}

/// The whole keygen command: generate, write, print the setup text; with
/// `--out -`, the key file's text on `out` and the setup text on stderr.
pub fn run_keygen(opts: &KeygenOptions, out: &mut dyn Write) -> Result<(), KeyError> {
    run_keygen_to(opts, out, &mut std::io::stderr())
}

/// [`run_keygen`] with the stream for the `--out -` setup notes given.
pub fn run_keygen_to(
    opts: &KeygenOptions,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: PathBuf::from("<stdout>"),
        action: "print the setup for",
        source,
    };
    if to_stdout(opts) {
        let kf = generate(opts)?;
        out.write_all(kf.to_toml().as_bytes())
            .and_then(|()| out.flush())
            .map_err(io)?;
        return notes.write_all(snippet(&kf, None).as_bytes()).map_err(io);
    }
    let (kf, path) = keygen(opts)?;
    out.write_all(setup_snippet(&kf, &path).as_bytes())
        .and_then(|()| out.flush())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_0600_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b.key");
        let opts = KeygenOptions {
            out: Some(out.clone()),
            name: Some("alice".into()),
            server_id: Some("gw1".into()),
            force: false,
        };
        let (kf, path) = keygen(&opts).unwrap();
        assert_eq!(path, out);
        assert_eq!(KeyFile::read(&out).unwrap(), kf);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(keygen(&opts), Err(KeyError::Exists { .. })));
        let (kf2, _) = keygen(&KeygenOptions {
            force: true,
            ..opts.clone()
        })
        .unwrap();
        assert_ne!(kf2.key, kf.key);
        assert_eq!(KeyFile::read(&out).unwrap(), kf2);
    }

    #[test]
    fn bad_name_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = keygen(&KeygenOptions {
            out: Some(dir.path().join("k")),
            name: Some("a\nb".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("--name:"), "{e}");
        assert!(!dir.path().join("k").exists());
    }

    #[test]
    fn snippet_is_valid_toml_and_names_key() {
        let kf = KeyFile {
            name: "bob's \"pc\"".into(),
            key: MasterKey::from_bytes([3; 32]),
            server_id: Some("gw1".into()),
            server_uid: None,
        };
        let s = setup_snippet(&kf, Path::new("/home/b/my keys/x.key"));
        let id = kf.key.derive().key_id().to_string();
        assert!(s.starts_with(&format!("key-id: {id}\n")), "{s}");
        // Everything but the key-id line pastes into server.toml.
        let body: String = s.lines().skip(1).map(|l| format!("{l}\n")).collect();
        let body: String = body
            .lines()
            .filter(|l| !l.starts_with("spa-client"))
            .map(|l| format!("{l}\n"))
            .collect();
        let v: toml::Value = toml::from_str(&body).unwrap();
        let key = &v["key"][0];
        assert_eq!(key["name"].as_str(), Some("bob's \"pc\""));
        assert_eq!(key["file"].as_str(), Some("/etc/spa/keys/bob_s__pc_.key"));
        assert_eq!(key["max_duration"].as_integer(), Some(300));
        assert!(
            s.contains("spa-client send --key '/home/b/my keys/x.key' --open 22 SERVER"),
            "{s}"
        );
    }

    #[test]
    fn snippet_without_server_id_asks_for_one() {
        let kf = KeyFile {
            name: "a".into(),
            key: MasterKey::from_bytes([3; 32]),
            server_id: None,
            server_uid: None,
        };
        let s = setup_snippet(&kf, Path::new("/k"));
        assert!(s.contains("--server-id NAME"), "{s}");
    }

    #[test]
    fn out_dash_prints_the_key_file_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cwd_dash = dir.path().join("-");
        let opts = KeygenOptions {
            out: Some(PathBuf::from("-")),
            name: Some("alice".into()),
            server_id: Some("gw1".into()),
            force: false,
        };
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        run_keygen_to(&opts, &mut out, &mut notes).unwrap();
        let text = String::from_utf8(out).unwrap();
        let kf = KeyFile::parse(&text, Path::new("<stdout>")).unwrap();
        assert_eq!(kf.server_id.as_deref(), Some("gw1"));
        let notes = String::from_utf8(notes).unwrap();
        assert!(notes.starts_with(&format!("key-id: {}\n", kf.key.derive().key_id())));
        assert!(notes.contains("nothing was written to disk"), "{notes}");
        assert!(notes.contains("--key FILE"), "{notes}");
        assert!(!cwd_dash.exists() && !Path::new("-").exists());
    }

    #[test]
    fn shell_quote_cases() {
        assert_eq!(shell_quote("/a/b.key"), "/a/b.key");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
