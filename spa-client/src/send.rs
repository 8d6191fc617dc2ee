//! `spa-client send`: one sealed request per server, one datagram each;
//! with `--wait`, then the check that the ports did open (see wait.rs).
//!
//! SERVER may name a profile or a group of client.toml (profile.rs): the
//! command line overrides the profile, the profile overrides the key file
//! and the built-in defaults.

use crate::error::ClientError;
use crate::grants::{parse_grants, parse_port};
use crate::key::load_key;
use crate::profile::{self, Named, Profile};
use crate::target::{parse_server, resolve, send_datagram, Family, FamilyArgs, DEFAULT_SPA_PORT};
use crate::wait::{self, Sent, WaitReport};
use spa_keys::KeyFile;
use spa_proto::{Action, AllowAddr, Grant, Grants, KeySet, Request, ServerId, DATAGRAM_LEN};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exit status of `send --wait` when the datagram went out but a port did
/// not reach the wanted state in time: distinct from errors (1) and usage
/// mistakes (2), so scripts and ssh's `Match exec` can tell them apart.
pub const EXIT_NOT_OPENED: u8 = 3;

/// How a `send` that raised no error ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent (and, with --wait, every TCP port confirmed).
    Done,
    /// Sent, but --wait saw a port not reach the wanted state.
    NotConfirmed,
}

/// Options of `spa-client send` (the help text is on the subcommand in
/// cli.rs, where clap reads it).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SendArgs {
    /// Ports to open: `22`, `tcp/22`, `udp/53`, or a list `22,443,udp/53`
    /// (TCP unless a protocol is given; at most 8 per datagram). Repeatable.
    /// [default: the profile's `open`]
    #[arg(long, value_name = "PORTS", conflicts_with = "close")]
    pub open: Vec<String>,

    /// Ports to close again before their time runs out (same syntax as
    /// --open).
    #[arg(long, value_name = "PORTS")]
    pub close: Vec<String>,

    /// After sending, check that the ports opened: try a plain TCP connect
    /// to each TCP port until all accept or SECS pass, sending a fresh
    /// datagram once if nothing opened by half time. Exit 3 and print what
    /// was sent and where to look when a port stays closed. With --close,
    /// wait until the ports refuse new connections. UDP ports cannot be
    /// checked (no handshake). Write `--wait=SECS` (with `=`).
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "5",
        value_parser = clap::value_parser!(u64).range(1..=300),
        conflicts_with_all = ["dry_run", "output"]
    )]
    pub wait: Option<u64>,

    /// How long the ports stay open, in seconds. 0 asks for the server's
    /// default_duration; the server caps it at the key's max_duration.
    /// [default: the profile's `duration`, else 0]
    #[arg(long, short = 'd', value_name = "SECS")]
    pub duration: Option<u32>,

    /// Open the ports for this address instead of the datagram's source
    /// address. Default (the source address as the server sees it) works
    /// behind NAT without knowing your public address; its cost is that an
    /// on-path attacker who rewrites the source could redirect the grant to
    /// themself (they still cannot replay it or open other ports). Name your
    /// public address here to rule that out. [default: the profile's
    /// `allow_ip`]
    #[arg(long = "allow-ip", value_name = "IP")]
    pub allow_ip: Option<IpAddr>,

    /// The server's SPA port (when SERVER has no :PORT). [default: the
    /// profile's `port`, else 62201]
    #[arg(long, short = 'p', value_name = "N")]
    pub port: Option<String>,

    #[command(flatten)]
    pub family: FamilyArgs,

    /// The server's `server_id` setting (by default its host name): the
    /// request is only valid for that server. [default: the profile's
    /// `server_id`, else the key file's]
    #[arg(long = "server-id", value_name = "NAME")]
    pub server_id: Option<String>,

    /// The server's uid (32 hex digits; `spa-server check-config` prints
    /// it): send protocol v2, sealed with the key for that server alone
    /// (install it there with `spa-client server-key`). [default: the
    /// profile's `server_uid`; none: protocol v1]
    #[arg(long = "server-uid", value_name = "HEX")]
    pub server_uid: Option<spa_proto::ServerUid>,

    /// Key file. [default: the profile's `key`, else $SPA_KEY, else
    /// ~/.config/spa/default.key]
    #[arg(long, short = 'k', value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Client configuration with the profiles and groups. [default:
    /// $XDG_CONFIG_HOME/spa/client.toml, else ~/.config/spa/client.toml]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Send from this local address (picks the interface and the address
    /// family; mostly for tests and multi-homed hosts). --wait probes from
    /// it too.
    #[arg(long, value_name = "IP")]
    pub source: Option<IpAddr>,

    /// Print the datagram as hex on stdout instead of sending it.
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// Write the raw datagram to FILE instead of sending it (replay it later
    /// with `spa-client raw-send`).
    #[arg(long, short = 'o', value_name = "FILE", conflicts_with = "dry_run")]
    pub output: Option<PathBuf>,

    /// Print nothing on success (a failed --wait still explains itself on
    /// stderr).
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Testing: shift the timestamp by SECS (negative = past), to check the
    /// server's time window.
    #[arg(
        long = "time-offset",
        value_name = "SECS",
        allow_hyphen_values = true,
        default_value_t = 0
    )]
    pub time_offset: i64,

    /// The server: a profile or group name from client.toml (see
    /// `spa-client list`), else HOST, HOST:PORT, IPv4, IPv6 or [IPv6]:PORT.
    /// Not needed with --dry-run or --output.
    #[arg(value_name = "SERVER", required_unless_present_any = ["dry_run", "output"])]
    pub server: Option<String>,
}

/// The request to seal, from already-parsed parts.
pub fn build_request(
    action: Action,
    grants: &[Grant],
    duration_secs: u32,
    allow: AllowAddr,
    server_id: &str,
    timestamp: u64,
) -> Result<Request, ClientError> {
    Ok(Request {
        action,
        timestamp,
        duration_secs,
        allow,
        server: ServerId::from_name(server_id),
        grants: Grants::new(grants)?,
    })
}

/// Current Unix time shifted by `offset` seconds.
pub fn unix_now(offset: i64) -> Result<u64, ClientError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ClientError::Clock)?
        .as_secs();
    Ok(now.saturating_add_signed(offset))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals with the OS CSPRNG: nonce and random field must never repeat.
pub fn seal(keys: &KeySet, req: &Request) -> [u8; DATAGRAM_LEN] {
    spa_proto::seal(keys, req, &mut rand::rngs::OsRng)
}

/// Everything needed to seal and send to one server, settled before
/// anything is sent (so a bad group member stops the whole command).
struct Plan {
    /// The profile name, or the host as given.
    label: String,
    from_profile: bool,
    /// Host and SPA port; `None` with --dry-run / --output and no SERVER.
    target: Option<(String, u16)>,
    family: Family,
    key: KeyFile,
    key_path: PathBuf,
    server_id: String,
    /// Set: protocol v2 for the server of this uid (docs/protocol.md §10).
    server_uid: Option<spa_proto::ServerUid>,
    action: Action,
    grants: Vec<Grant>,
    duration: u32,
    allow_ip: Option<IpAddr>,
}

/// Command line over profile over key file and defaults.
fn plan(args: &SendArgs, label: &str, p: Option<&Profile>) -> Result<Plan, ClientError> {
    let (action, grants) = if !args.close.is_empty() {
        (
            Action::Close,
            parse_grants(args.close.iter().map(String::as_str))?,
        )
    } else if !args.open.is_empty() {
        (
            Action::Open,
            parse_grants(args.open.iter().map(String::as_str))?,
        )
    } else {
        match p.filter(|p| !p.open.is_empty()) {
            Some(p) => (Action::Open, p.open.clone()),
            None => {
                return Err(ClientError::NothingToOpen {
                    server: args.server.clone(),
                })
            }
        }
    };
    let port = match (&args.port, p.and_then(|p| p.port)) {
        (Some(s), _) => parse_port(s, s)?,
        (None, Some(n)) => n,
        (None, None) => DEFAULT_SPA_PORT,
    };
    let host = p.map(|p| p.host.as_str()).or(args.server.as_deref());
    let target = host.map(|h| parse_server(h, port)).transpose()?;
    let family = match (args.family.family(), p.and_then(|p| p.family)) {
        (Family::Any, Some(f)) => f,
        (f, _) => f,
    };
    let key_file = args.key.as_deref().or(p.and_then(|p| p.key.as_deref()));
    let (key, key_path) = load_key(key_file)?;
    if key.server_uid.is_some() {
        // K_s is what a server stores; sealing with it as a master would
        // make a key for nobody.
        return Err(ClientError::ServerKeyFile { path: key_path });
    }
    let server_uid = args.server_uid.or(p.and_then(|p| p.server_uid));
    let server_id = match (
        &args.server_id,
        p.and_then(|p| p.server_id.as_ref()),
        &key.server_id,
        server_uid,
    ) {
        (Some(s), _, _, _) | (None, Some(s), _, _) | (None, None, Some(s), _) => s.clone(),
        // v2 names the server by its uid alone.
        (None, None, None, Some(uid)) => uid.to_string(),
        (None, None, None, None) => return Err(ClientError::NoServerId { key_path }),
    };
    Ok(Plan {
        label: label.to_owned(),
        from_profile: p.is_some(),
        target,
        family,
        key,
        key_path,
        server_id,
        server_uid,
        action,
        grants,
        duration: args.duration.or(p.and_then(|p| p.duration)).unwrap_or(0),
        allow_ip: args.allow_ip.or(p.and_then(|p| p.allow_ip)),
    })
}

impl Plan {
    /// A freshly sealed datagram (new nonce, current time) and its time.
    fn seal(&self, keys: &KeySet, offset: i64) -> Result<([u8; DATAGRAM_LEN], u64), ClientError> {
        let allow = match self.allow_ip {
            None => AllowAddr::Source,
            Some(IpAddr::V4(a)) => AllowAddr::V4(a),
            Some(IpAddr::V6(a)) => AllowAddr::V6(a),
        };
        let now = unix_now(offset)?;
        let mut req = build_request(
            self.action,
            &self.grants,
            self.duration,
            allow,
            &self.server_id,
            now,
        )?;
        match self.server_uid {
            None => Ok((seal(keys, &req), now)),
            Some(uid) => {
                req.server = uid.server_id();
                let k = self.key.key.server_key(&uid).derive();
                Ok((spa_proto::seal_v2(&k, &req, &mut rand::rngs::OsRng), now))
            }
        }
    }

    /// The id the server logs on this datagram's line: v1's key-id, or
    /// v2's wire id of the minute it was sealed in (bytes 5..13), so the
    /// `--wait` diagnosis's grep finds the line either way.
    fn log_id(&self, keys: &KeySet, datagram: &[u8; DATAGRAM_LEN]) -> spa_proto::KeyId {
        match (
            self.server_uid,
            datagram.get(5..13).map(<[u8; 8]>::try_from),
        ) {
            (Some(_), Some(Ok(id))) => spa_proto::KeyId(id),
            _ => keys.key_id(),
        }
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Open => "open",
        Action::Close => "close",
    }
}

/// The whole `send` command. Progress goes to `out`, the --wait diagnosis
/// to `err`.
pub fn run_send(
    args: &SendArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, ClientError> {
    let cfg = profile::load(args.config.as_deref())?;
    let name = args.server.as_deref().unwrap_or_default();
    let members: Vec<Option<&Profile>> = match args.server.as_deref().map(|s| cfg.lookup(s)) {
        Some(Named::Server(p)) => vec![Some(p)],
        Some(Named::Group(_, ps)) => ps.into_iter().map(Some).collect(),
        Some(Named::Host) | None => vec![None],
    };
    if members.len() > 1 && args.output.is_some() {
        return Err(ClientError::BadServer {
            spec: name.to_owned(),
            reason: "is a group; --output writes one datagram, so name one server".into(),
        });
    }
    // Every local mistake, for every member, before anything is sent.
    let plans = members
        .iter()
        .map(|p| plan(args, p.map_or(name, |p| p.name.as_str()), *p))
        .collect::<Result<Vec<_>, _>>()?;
    let io_out = |source| ClientError::File {
        path: PathBuf::from("<stdout>"),
        action: "write to",
        source,
    };

    if args.dry_run || args.output.is_some() {
        for plan in &plans {
            let keys = plan.key.key.derive();
            let (datagram, _) = plan.seal(&keys, args.time_offset)?;
            match &args.output {
                None => writeln!(out, "{}", hex(&datagram)).map_err(io_out)?,
                Some(path) => {
                    write_datagram(path, &datagram)?;
                    if !args.quiet {
                        writeln!(
                            out,
                            "wrote {DATAGRAM_LEN}-byte datagram to {} (key-id {}, server id {:?})",
                            path.display(),
                            plan.log_id(&keys, &datagram),
                            plan.server_id
                        )
                        .map_err(io_out)?;
                    }
                }
            }
        }
        return Ok(Outcome::Done);
    }

    let mut dests = Vec::with_capacity(plans.len());
    for plan in &plans {
        let Some((host, port)) = &plan.target else {
            // clap requires SERVER unless --dry-run or --output.
            return Err(ClientError::BadServer {
                spec: String::new(),
                reason: "no SERVER given".into(),
            });
        };
        dests.push(resolve(host, *port, plan.family, args.source)?);
    }
    let mut sent = Vec::with_capacity(plans.len());
    for (plan, &dest) in plans.iter().zip(&dests) {
        let keys = plan.key.key.derive();
        let (datagram, timestamp) = plan.seal(&keys, args.time_offset)?;
        send_datagram(&datagram, dest, args.source)?;
        if !args.quiet {
            let what: Vec<String> = plan.grants.iter().map(Grant::to_string).collect();
            let whom = match plan.allow_ip {
                Some(ip) => ip.to_string(),
                None => "this host's address as the server sees it".to_string(),
            };
            let profile = match plan.from_profile {
                true => format!(" ({})", plan.label),
                false => String::new(),
            };
            writeln!(
                out,
                "sent SPA request to {dest}{profile}: {} {} for {whom} (key-id {}, server id {:?})",
                verb(plan.action),
                what.join(","),
                plan.log_id(&keys, &datagram),
                plan.server_id
            )
            .map_err(io_out)?;
        }
        sent.push(Sent {
            label: plan.label.clone(),
            dest,
            key_id: plan.log_id(&keys, &datagram),
            key_path: plan.key_path.display().to_string(),
            server_id: plan.server_id.clone(),
            action: plan.action,
            timestamp,
            time_offset: args.time_offset,
            allow_ip: plan.allow_ip,
        });
    }
    let Some(secs) = args.wait else {
        return Ok(Outcome::Done);
    };
    wait_all(args, &plans, &sent, Duration::from_secs(secs), out, err)
}

/// `--wait` for every server at once (one thread each, so a group waits
/// as long as its slowest member, not the sum), then one report each.
fn wait_all(
    args: &SendArgs,
    plans: &[Plan],
    sent: &[Sent],
    limit: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, ClientError> {
    let reports: Vec<WaitReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .iter()
            .zip(sent)
            .map(|(plan, s)| {
                scope.spawn(move || {
                    let keys = plan.key.key.derive();
                    let resend = || {
                        let (d, _) = plan
                            .seal(&keys, args.time_offset)
                            .map_err(|e| e.to_string())?;
                        send_datagram(&d, s.dest, args.source).map_err(|e| e.to_string())
                    };
                    let ports = wait::tcp_ports(&plan.grants);
                    wait::wait_ports(s.dest.ip(), &ports, plan.action, args.source, limit, resend)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| WaitReport {
                    ports: Vec::new(),
                    resent_at: None,
                    resend_error: Some("the wait thread failed".into()),
                })
            })
            .collect()
    });
    let io = |path: &'static str| {
        move |source| ClientError::File {
            path: PathBuf::from(path),
            action: "write to",
            source,
        }
    };
    let mut outcome = Outcome::Done;
    for ((plan, s), r) in plans.iter().zip(sent).zip(&reports) {
        let udp: Vec<String> = plan
            .grants
            .iter()
            .filter(|g| g.proto == spa_proto::Proto::Udp)
            .map(Grant::to_string)
            .collect();
        if !udp.is_empty() && !args.quiet {
            writeln!(
                out,
                "{}: {} not checked: UDP has no handshake to probe (sent, not confirmed)",
                s.label,
                udp.join(",")
            )
            .map_err(io("<stdout>"))?;
        }
        if r.all_reached() {
            if !args.quiet {
                for p in &r.ports {
                    let when = p.reached.unwrap_or_default().as_secs_f64();
                    let state = match plan.action {
                        Action::Open => "open",
                        Action::Close => "closed to new connections",
                    };
                    writeln!(out, "{}: tcp/{} {state} after {when:.1} s", s.label, p.port)
                        .map_err(io("<stdout>"))?;
                }
            }
            continue;
        }
        outcome = Outcome::NotConfirmed;
        write!(err, "{}", wait::diagnosis(s, r, limit)).map_err(io("<stderr>"))?;
    }
    Ok(outcome)
}

fn write_datagram(path: &std::path::Path, datagram: &[u8]) -> Result<(), ClientError> {
    // 0600: until its timestamp expires, the datagram is a usable credential.
    let err = |source| ClientError::File {
        path: path.to_owned(),
        action: "write the datagram to",
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(datagram).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spa_proto::{MasterKey, ReplayRecord, TimeWindow};

    #[test]
    fn built_request_verifies() {
        let keys = MasterKey::from_bytes([5; 32]).derive();
        let grants = crate::parse_grants(["22,udp/53"]).unwrap();
        let now = unix_now(0).unwrap();
        let req = build_request(Action::Open, &grants, 60, AllowAddr::Source, "gw1", now).unwrap();
        let d = seal(&keys, &req);
        let mut replay = ReplayRecord::new(TimeWindow::default(), 16);
        let opened = spa_proto::verify(
            &d,
            |id| (*id == keys.key_id()).then_some(&keys),
            &ServerId::from_name("gw1"),
            now,
            &mut replay,
        )
        .unwrap();
        assert_eq!(opened.request, req);
        // Two seals of one request differ (fresh nonce).
        assert_ne!(seal(&keys, &req)[..], d[..]);
    }

    #[test]
    fn time_offset_applies() {
        let a = unix_now(0).unwrap();
        let b = unix_now(-100).unwrap();
        assert!(a - b >= 99 && a - b <= 101);
    }

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
