//! `spa-client send`: one sealed request, one datagram.

use crate::error::ClientError;
use crate::grants::{parse_grants, parse_port};
use crate::key::load_key;
use crate::target::{parse_server, resolve, send_datagram, FamilyArgs, DEFAULT_SPA_PORT};
use spa_proto::{Action, AllowAddr, Grant, Grants, KeySet, Request, ServerId, DATAGRAM_LEN};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Options of `spa-client send` (the help text is on the subcommand in
/// main.rs, where clap reads it).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["open", "close"])))]
pub struct SendArgs {
    /// Ports to open: `22`, `tcp/22`, `udp/53`, or a list `22,443,udp/53`
    /// (TCP unless a protocol is given; at most 8 per datagram). Repeatable.
    #[arg(long, value_name = "PORTS", conflicts_with = "close")]
    pub open: Vec<String>,

    /// Ports to close again before their time runs out (same syntax as
    /// --open).
    #[arg(long, value_name = "PORTS")]
    pub close: Vec<String>,

    /// How long the ports stay open, in seconds. 0 asks for the server's
    /// default_duration; the server caps it at the key's max_duration.
    #[arg(long, short = 'd', value_name = "SECS", default_value_t = 0)]
    pub duration: u32,

    /// Open the ports for this address instead of the datagram's source
    /// address. Default (the source address as the server sees it) works
    /// behind NAT without knowing your public address; its cost is that an
    /// on-path attacker who rewrites the source could redirect the grant to
    /// themself (they still cannot replay it or open other ports). Name your
    /// public address here to rule that out.
    #[arg(long = "allow-ip", value_name = "IP")]
    pub allow_ip: Option<IpAddr>,

    /// The server's SPA port (when SERVER has no :PORT).
    #[arg(long, short = 'p', value_name = "N", default_value_t = DEFAULT_SPA_PORT.to_string())]
    pub port: String,

    #[command(flatten)]
    pub family: FamilyArgs,

    /// The server's `server_id` setting (by default its host name): the
    /// request is only valid for that server. [default: server_id from the
    /// key file]
    #[arg(long = "server-id", value_name = "NAME")]
    pub server_id: Option<String>,

    /// Key file. [default: $SPA_KEY, else ~/.config/spa/default.key]
    #[arg(long, short = 'k', value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Send from this local address (picks the interface and the address
    /// family; mostly for tests and multi-homed hosts).
    #[arg(long, value_name = "IP")]
    pub source: Option<IpAddr>,

    /// Print the datagram as hex on stdout instead of sending it.
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// Write the raw datagram to FILE instead of sending it (replay it later
    /// with `spa-client raw-send`).
    #[arg(long, short = 'o', value_name = "FILE", conflicts_with = "dry_run")]
    pub output: Option<PathBuf>,

    /// Print nothing on success.
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

    /// The server: HOST, HOST:PORT, IPv4, IPv6 or [IPv6]:PORT. Not needed
    /// with --dry-run or --output.
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

/// The whole `send` command.
pub fn run_send(args: &SendArgs, out: &mut dyn Write) -> Result<(), ClientError> {
    // Cheap, local mistakes first, so nothing is read or resolved in vain.
    let (action, specs) = if args.close.is_empty() {
        (Action::Open, &args.open)
    } else {
        (Action::Close, &args.close)
    };
    let grants = parse_grants(specs.iter().map(String::as_str))?;
    let default_port = parse_port(&args.port, &args.port)?;
    let target = args
        .server
        .as_deref()
        .map(|s| parse_server(s, default_port))
        .transpose()?;
    let family = args.family.family();

    let (kf, key_path) = load_key(args.key.as_deref())?;
    let server_id = match (&args.server_id, &kf.server_id) {
        (Some(s), _) | (None, Some(s)) => s.clone(),
        (None, None) => return Err(ClientError::NoServerId { key_path }),
    };
    let allow = match args.allow_ip {
        None => AllowAddr::Source,
        Some(IpAddr::V4(a)) => AllowAddr::V4(a),
        Some(IpAddr::V6(a)) => AllowAddr::V6(a),
    };
    let now = unix_now(args.time_offset)?;
    let req = build_request(action, &grants, args.duration, allow, &server_id, now)?;
    let keys = kf.key.derive();
    let datagram = seal(&keys, &req);

    let io_out = |source| ClientError::File {
        path: PathBuf::from("<stdout>"),
        action: "write to",
        source,
    };
    if args.dry_run {
        writeln!(out, "{}", hex(&datagram)).map_err(io_out)?;
        return Ok(());
    }
    if let Some(path) = &args.output {
        write_datagram(path, &datagram)?;
        if !args.quiet {
            writeln!(
                out,
                "wrote {DATAGRAM_LEN}-byte datagram to {} (key-id {}, server id {server_id:?})",
                path.display(),
                keys.key_id()
            )
            .map_err(io_out)?;
        }
        return Ok(());
    }
    let Some((host, port)) = target else {
        // clap requires SERVER unless --dry-run or --output; reaching here
        // means the caller built SendArgs by hand.
        return Err(ClientError::BadServer {
            spec: String::new(),
            reason: "no SERVER given".into(),
        });
    };
    let dest = resolve(&host, port, family, args.source)?;
    send_datagram(&datagram, dest, args.source)?;
    if !args.quiet {
        let what: Vec<String> = grants.iter().map(Grant::to_string).collect();
        let verb = match action {
            Action::Open => "open",
            Action::Close => "close",
        };
        let whom = match args.allow_ip {
            Some(ip) => ip.to_string(),
            None => "this host's address as the server sees it".to_string(),
        };
        writeln!(
            out,
            "sent SPA request to {dest}: {verb} {} for {whom} (key-id {}, server id {server_id:?})",
            what.join(","),
            keys.key_id()
        )
        .map_err(io_out)?;
    }
    Ok(())
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
