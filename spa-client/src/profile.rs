//! The client's configuration, `client.toml`: named servers (profiles) and
//! groups of them, so `spa-client send gw1` needs no flags and
//! `spa-client send fleet` reaches every member, each sealed for its own
//! server id.
//!
//! ```toml
//! [server.gw1]
//! host = "gw1.example.org"   # default: the table's name
//! port = 62201               # the server's spa_port
//! key = "~/.config/spa/gw1.key"
//! server_id = "gw1"          # default: the key file's server_id
//! open = ["tcp/22"]          # what `send gw1` opens without --open
//! duration = 120
//! family = "ipv4"            # "ipv4", "ipv6" or "any"
//! allow_ip = "203.0.113.7"
//!
//! [group.fleet]
//! servers = ["gw1", "gw2"]
//! ```
//!
//! Every error names the file, the line and the field (`server.gw1.port`),
//! as the server's configuration errors do. Values are read through
//! `Spanned` so each one keeps its line.

use crate::error::ClientError;
use crate::grants::{parse_grants, parse_port};
use crate::target::Family;
use spa_proto::Grant;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One `[server.NAME]` table, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    pub name: String,
    /// Host name or address to send to.
    pub host: String,
    pub port: Option<u16>,
    /// Absolute (`~/` expanded, relative paths taken from the file's
    /// directory).
    pub key: Option<PathBuf>,
    pub server_id: Option<String>,
    /// The server's uid (`spa-server check-config` prints it): when set,
    /// `send` speaks protocol v2 with the key for that server alone
    /// (docs/protocol.md §10).
    pub server_uid: Option<spa_proto::ServerUid>,
    /// Opened when the command line has no --open / --close. Empty: none.
    pub open: Vec<Grant>,
    pub duration: Option<u32>,
    pub family: Option<Family>,
    pub allow_ip: Option<IpAddr>,
}

/// The whole file, checked. Empty when there is no file.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// The file read (or looked for), for messages and `list`.
    pub path: Option<PathBuf>,
    pub servers: BTreeMap<String, Profile>,
    /// Group name to member names, in the file's order; every member is a
    /// key of `servers`.
    pub groups: BTreeMap<String, Vec<String>>,
}

/// What a SERVER argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named<'a> {
    Server(&'a Profile),
    Group(&'a str, Vec<&'a Profile>),
    /// Not in the file: a host name or address, as before profiles.
    Host,
}

impl ClientConfig {
    pub fn lookup(&self, name: &str) -> Named<'_> {
        if let Some(p) = self.servers.get(name) {
            return Named::Server(p);
        }
        match self.groups.get_key_value(name) {
            Some((g, members)) => Named::Group(
                g,
                members.iter().filter_map(|m| self.servers.get(m)).collect(),
            ),
            None => Named::Host,
        }
    }
}

/// Where the configuration is: `--config FILE`, else
/// `$XDG_CONFIG_HOME/spa/client.toml`, else `~/.config/spa/client.toml`.
/// The bool says whether the user named it (then it must exist). Pure, so
/// the order is testable without touching the environment.
pub fn locate(
    explicit: Option<&Path>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<(PathBuf, bool)> {
    if let Some(p) = explicit {
        return Some((p.to_owned(), true));
    }
    // The XDG spec: a relative $XDG_CONFIG_HOME is invalid and ignored.
    if let Some(x) = xdg_config_home
        .map(PathBuf::from)
        .filter(|x| x.is_absolute())
    {
        return Some((x.join("spa/client.toml"), false));
    }
    home.filter(|h| !h.is_empty())
        .map(|h| (PathBuf::from(h).join(".config/spa/client.toml"), false))
}

/// Reads the configuration (none at the default place is an empty one).
pub fn load(explicit: Option<&Path>) -> Result<ClientConfig, ClientError> {
    let home = std::env::var_os("HOME");
    let Some((path, named)) = locate(explicit, std::env::var_os("XDG_CONFIG_HOME"), home.clone())
    else {
        return Ok(ClientConfig::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path, home.as_deref().map(Path::new)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => Ok(ClientConfig {
            path: Some(path),
            ..Default::default()
        }),
        Err(source) => Err(ClientError::File {
            path,
            action: "read the client configuration",
            source,
        }),
    }
}

type Table = BTreeMap<String, Spanned<toml::Value>>;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    server: BTreeMap<String, Spanned<Table>>,
    #[serde(default)]
    group: BTreeMap<String, Spanned<Table>>,
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len()))
        .unwrap_or(text)
        .matches('\n')
        .count()
        + 1
}

/// Error builder for one file.
struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, at: Option<usize>, field: String, message: impl Into<String>) -> ClientError {
        ClientError::Config {
            path: self.path.to_owned(),
            line: at.map(|a| line_of(self.text, a)),
            field: Some(field),
            message: message.into(),
        }
    }
}

const SERVER_FIELDS: &str =
    "host, port, key, server_id, server_uid, open, duration, family, allow_ip";

/// Parses `client.toml` text; `path` names it in errors and anchors
/// relative key paths; `home` expands `~/`.
pub fn parse(text: &str, path: &Path, home: Option<&Path>) -> Result<ClientConfig, ClientError> {
    let raw: Raw = toml::from_str(text).map_err(|e| ClientError::Config {
        path: path.to_owned(),
        line: e.span().map(|s| line_of(text, s.start)),
        field: None,
        message: format!(
            "{} (the file has [server.NAME] and [group.NAME] tables; see docs/client.md)",
            e.message().trim()
        ),
    })?;
    let cx = Ctx { text, path };
    let mut servers = BTreeMap::new();
    for (name, table) in &raw.server {
        let p = server(&cx, name, table, path, home)?;
        servers.insert(name.clone(), p);
    }
    let mut groups = BTreeMap::new();
    for (name, table) in &raw.group {
        let field = format!("group.{name}");
        if servers.contains_key(name) {
            return Err(cx.err(
                Some(table.span().start),
                field,
                "is also the name of a [server] table; give the group another name",
            ));
        }
        let mut members = Vec::new();
        for (key, value) in table.get_ref() {
            let f = format!("{field}.{key}");
            if key != "servers" {
                return Err(cx.err(
                    Some(value.span().start),
                    f,
                    "unknown field; a group has only `servers = [\"NAME\", ...]`",
                ));
            }
            let list = strings(&cx, value, &f)?;
            for (m, at) in list {
                if !servers.contains_key(&m) {
                    return Err(cx.err(
                        Some(at),
                        f.clone(),
                        format!("\"{m}\" is not a [server.{m}] table in this file"),
                    ));
                }
                if !members.contains(&m) {
                    members.push(m);
                }
            }
        }
        if members.is_empty() {
            return Err(cx.err(
                Some(table.span().start),
                format!("{field}.servers"),
                "a group needs `servers = [\"NAME\", ...]` with at least one server",
            ));
        }
        groups.insert(name.clone(), members);
    }
    Ok(ClientConfig {
        path: Some(path.to_owned()),
        servers,
        groups,
    })
}

/// A list of strings with the offset of each, or one string.
fn strings(
    cx: &Ctx<'_>,
    value: &Spanned<toml::Value>,
    field: &str,
) -> Result<Vec<(String, usize)>, ClientError> {
    let at = value.span().start;
    match value.get_ref() {
        toml::Value::String(s) => Ok(vec![(s.clone(), at)]),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok((s.clone(), at)),
                other => Err(cx.err(
                    Some(at),
                    field.to_owned(),
                    format!("expected a list of strings, found a {}", other.type_str()),
                )),
            })
            .collect(),
        other => Err(cx.err(
            Some(at),
            field.to_owned(),
            format!("expected a list of strings, found a {}", other.type_str()),
        )),
    }
}

fn server(
    cx: &Ctx<'_>,
    name: &str,
    table: &Spanned<Table>,
    path: &Path,
    home: Option<&Path>,
) -> Result<Profile, ClientError> {
    let mut p = Profile {
        name: name.to_owned(),
        host: name.to_owned(),
        ..Default::default()
    };
    for (key, value) in table.get_ref() {
        let field = format!("server.{name}.{key}");
        let at = Some(value.span().start);
        let err = |m: String| cx.err(at, field.clone(), m);
        let string = || match value.get_ref() {
            toml::Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            toml::Value::String(_) => Err(err("must not be empty".into())),
            other => Err(err(format!(
                "expected a string, found a {}",
                other.type_str()
            ))),
        };
        let integer = |max: i64| match value.get_ref() {
            toml::Value::Integer(n) if (1..=max).contains(n) => Ok(*n),
            toml::Value::Integer(n) => Err(err(format!("{n} is out of range (1-{max})"))),
            other => Err(err(format!(
                "expected a number, found a {}",
                other.type_str()
            ))),
        };
        // Errors of the shared parsers (ports) carry no position: add it.
        let located = |e: ClientError| err(e.to_string());
        match key.as_str() {
            "host" => p.host = string()?,
            "port" => {
                p.port = Some(parse_port(key, &integer(65535)?.to_string()).map_err(located)?)
            }
            "key" => p.key = Some(expand(&string()?, path, home).map_err(|e| err(e.to_string()))?),
            "server_id" => p.server_id = Some(string()?),
            "server_uid" => {
                p.server_uid = Some(string()?.parse().map_err(|m: &str| err(m.to_owned()))?)
            }
            "open" => {
                let specs = strings(cx, value, &field)?;
                p.open = parse_grants(specs.iter().map(|(s, _)| s.as_str())).map_err(located)?;
            }
            "duration" => p.duration = Some(integer(i64::from(u32::MAX))? as u32),
            "family" => {
                p.family = Some(match string()?.as_str() {
                    "ipv4" | "4" => Family::V4,
                    "ipv6" | "6" => Family::V6,
                    "any" => Family::Any,
                    other => {
                        return Err(err(format!(
                            "\"{other}\" is not a family; use \"ipv4\", \"ipv6\" or \"any\""
                        )))
                    }
                })
            }
            "allow_ip" => {
                let s = string()?;
                p.allow_ip = Some(
                    s.parse()
                        .map_err(|_| err(format!("\"{s}\" is not an IPv4 or IPv6 address")))?,
                )
            }
            _ => {
                return Err(err(format!(
                    "unknown field; a [server.NAME] table has {SERVER_FIELDS}"
                )))
            }
        }
    }
    Ok(p)
}

/// `~/x` under `home`; a relative path from the configuration's directory,
/// so a file and its keys can move together.
fn expand(s: &str, config: &Path, home: Option<&Path>) -> Result<PathBuf, NoHome> {
    if let Some(rest) = s.strip_prefix("~/") {
        return home
            .map(|h| h.join(rest))
            .ok_or_else(|| NoHome { path: s.to_owned() });
    }
    let p = PathBuf::from(s);
    if p.is_absolute() {
        return Ok(p);
    }
    Ok(config.parent().unwrap_or(Path::new(".")).join(p))
}

/// A `~/` path (`path`, as written) with no `$HOME` to put in front of it;
/// the caller puts the file:line: field in front of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NoHome {
    path: String,
}

impl std::fmt::Display for NoHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("starts with ~/ but $HOME is not set; write the full path")
    }
}

/// Options of `spa-client list`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListArgs {
    /// Client configuration to read. [default:
    /// $XDG_CONFIG_HOME/spa/client.toml, else ~/.config/spa/client.toml]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// One line per profile and group, after the file's name.
pub fn render(cfg: &ClientConfig) -> String {
    let mut s = match &cfg.path {
        Some(p) if cfg.servers.is_empty() => format!(
            "# {}: no profiles (see docs/client.md for [server.NAME] tables)\n",
            p.display()
        ),
        Some(p) => format!("# {}\n", p.display()),
        None => "# no client configuration ($HOME and $XDG_CONFIG_HOME unset)\n".into(),
    };
    for p in cfg.servers.values() {
        let open: Vec<String> = p.open.iter().map(Grant::to_string).collect();
        s.push_str(&format!(
            "server {}  host={} port={} server_id={} key={} open={}",
            p.name,
            p.host,
            p.port.unwrap_or(crate::target::DEFAULT_SPA_PORT),
            p.server_id.as_deref().unwrap_or("(from the key file)"),
            p.key
                .as_deref()
                .map_or("(default)".into(), |k| k.display().to_string()),
            if open.is_empty() {
                "(none: give --open)".into()
            } else {
                open.join(",")
            },
        ));
        if let Some(u) = p.server_uid {
            s.push_str(&format!(" server_uid={u} (protocol v2)"));
        }
        if let Some(d) = p.duration {
            s.push_str(&format!(" duration={d}"));
        }
        if let Some(f) = p.family {
            s.push_str(match f {
                Family::V4 => " family=ipv4",
                Family::V6 => " family=ipv6",
                Family::Any => " family=any",
            });
        }
        if let Some(a) = p.allow_ip {
            s.push_str(&format!(" allow_ip={a}"));
        }
        s.push('\n');
    }
    for (g, members) in &cfg.groups {
        s.push_str(&format!("group {g}  servers={}\n", members.join(",")));
    }
    s
}

/// The whole `list` command.
pub fn run_list(args: &ListArgs, out: &mut dyn std::io::Write) -> Result<(), ClientError> {
    let cfg = load(args.config.as_deref())?;
    out.write_all(render(&cfg).as_bytes())
        .map_err(|source| ClientError::File {
            path: PathBuf::from("<stdout>"),
            action: "write to",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> ClientConfig {
        parse(
            text,
            Path::new("/h/.config/spa/client.toml"),
            Some(Path::new("/h")),
        )
        .unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("/c.toml"), Some(Path::new("/h")))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn full_profile_and_group() {
        let c = parse_ok(
            "[server.gw1]\nhost = \"198.18.0.1\"\nport = 62202\nkey = \"~/k/gw1.key\"\n\
             server_id = \"gw-one\"\nopen = [\"tcp/22\", \"443\"]\nduration = 120\n\
             server_uid = \"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\"\n\
             family = \"ipv4\"\nallow_ip = \"203.0.113.7\"\n\
             [server.gw2]\nkey = \"gw2.key\"\n\
             [group.fleet]\nservers = [\"gw1\", \"gw2\", \"gw1\"]\n",
        );
        let g = &c.servers["gw1"];
        assert_eq!(g.host, "198.18.0.1");
        assert_eq!(g.port, Some(62202));
        assert_eq!(g.key.as_deref(), Some(Path::new("/h/k/gw1.key")));
        assert_eq!(g.server_id.as_deref(), Some("gw-one"));
        assert_eq!(
            g.server_uid.map(|u| u.to_string()).as_deref(),
            Some("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
        );
        assert_eq!(g.open.len(), 2);
        assert_eq!(g.duration, Some(120));
        assert_eq!(g.family, Some(Family::V4));
        assert_eq!(g.allow_ip, Some("203.0.113.7".parse().unwrap()));
        let g2 = &c.servers["gw2"];
        assert_eq!(g2.host, "gw2", "host defaults to the table's name");
        assert_eq!(g2.key.as_deref(), Some(Path::new("/h/.config/spa/gw2.key")));
        assert_eq!(c.groups["fleet"], vec!["gw1", "gw2"]);
        assert!(matches!(c.lookup("fleet"), Named::Group("fleet", m) if m.len() == 2));
        assert!(matches!(c.lookup("gw2"), Named::Server(p) if p.name == "gw2"));
        assert_eq!(c.lookup("gw9.example.org"), Named::Host);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        for (text, want) in [
            (
                "[server.gw1]\nport = 0\n",
                "/c.toml:2: field `server.gw1.port`: 0 is out of range",
            ),
            (
                "[server.gw1]\n\nport = \"x\"\n",
                "/c.toml:3: field `server.gw1.port`: expected a number",
            ),
            (
                "[server.gw1]\nhots = \"a\"\n",
                "/c.toml:2: field `server.gw1.hots`: unknown field",
            ),
            (
                "[server.gw1]\nopen = [\"tcp/99999\"]\n",
                "/c.toml:2: field `server.gw1.open`: invalid port",
            ),
            (
                "[server.gw1]\nfamily = \"v5\"\n",
                "/c.toml:2: field `server.gw1.family`",
            ),
            (
                "[server.gw1]\nallow_ip = \"gw\"\n",
                "/c.toml:2: field `server.gw1.allow_ip`",
            ),
            (
                "[server.a]\n[group.g]\nservers = [\"b\"]\n",
                "/c.toml:3: field `group.g.servers`: \"b\" is not",
            ),
            (
                "[server.a]\n[group.a]\nservers = [\"a\"]\n",
                "field `group.a`: is also the name",
            ),
            (
                "[server.a]\n[group.g]\nmembers = [\"a\"]\n",
                "/c.toml:3: field `group.g.members`",
            ),
            ("[servers.a]\n", "/c.toml:1: unknown field `servers`"),
            ("[server.a\n", "/c.toml:1:"),
        ] {
            let e = parse_err(text);
            assert!(e.contains(want), "{text:?}:\n got  {e}\n want {want}");
        }
    }

    /// `key = "~/..."` without $HOME, byte for byte.
    #[test]
    fn tilde_without_home_message_is_pinned() {
        let e = parse("[server.a]\nkey = \"~/k\"\n", Path::new("/c.toml"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/c.toml:2: field `server.a.key`: starts with ~/ but $HOME is not set; write the \
             full path"
        );
    }

    #[test]
    fn expand_keeps_the_path_it_could_not_expand() {
        let c = Path::new("/etc/spa/client.toml");
        assert_eq!(expand("~/k", c, None), Err(NoHome { path: "~/k".into() }));
        assert_eq!(expand("~/k", c, Some(Path::new("/h"))), Ok("/h/k".into()));
        assert_eq!(expand("k", c, None), Ok("/etc/spa/k".into()));
    }

    #[test]
    fn location_order() {
        let f = Path::new("/f.toml");
        assert_eq!(locate(Some(f), None, None), Some((f.to_owned(), true)));
        assert_eq!(
            locate(None, Some("/x".into()), Some("/h".into())),
            Some((PathBuf::from("/x/spa/client.toml"), false))
        );
        assert_eq!(
            locate(None, Some("rel".into()), Some("/h".into())),
            Some((PathBuf::from("/h/.config/spa/client.toml"), false))
        );
        assert_eq!(locate(None, None, None), None);
    }

    #[test]
    fn empty_file_is_no_profiles() {
        let c = parse_ok("");
        assert!(c.servers.is_empty() && c.groups.is_empty());
    }
}
