//! `spa-client knock-seq` and `spa-client knock`: HMAC knock sequences for
//! hosts where only a plain port-knock client is available (the sequence is
//! derived in docs/protocol.md, "HMAC knock sequences").

use crate::error::ClientError;
use crate::knock::{format_ports, knock_seq_at_step, send_knocks};
use crate::target::{parse_server, resolve, FamilyArgs};
use spa_proto::{KnockParams, Proto};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Options shared by `knock-seq` and `knock`; they must match the server's
/// `[legacy.hmac]` section.
#[derive(Debug, clap::Args)]
pub struct KnockArgs {
    /// The server: HOST or IP (a port given as HOST:PORT is ignored). `knock-seq`
    /// only prints, so it does not need it.
    pub server: Option<String>,
    /// Key file. [default: $SPA_KEY, else ~/.config/spa/default.key]
    #[arg(short, long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The server's `server_id`. [default: server_id from the key file]
    #[arg(long, value_name = "NAME")]
    pub server_id: Option<String>,
    /// Knocks per sequence (server's legacy.hmac.ports).
    #[arg(long, default_value_t = KnockParams::default().ports, value_name = "N")]
    pub ports: usize,
    /// Length of one time step in seconds (server's legacy.hmac.step_secs).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub step_secs: u64,
    /// Port range the sequence is drawn from (server's legacy.hmac.range).
    #[arg(long, default_value = "10000-60000", value_name = "LO-HI")]
    pub range: String,
    /// Knock with UDP datagrams instead of TCP SYNs (server's protocol = "udp").
    #[arg(long)]
    pub udp: bool,
    /// Use the next time step's sequence: each sequence opens once, so a
    /// second knock within the same step needs the next one.
    #[arg(long)]
    pub next: bool,
    /// Send from this local address.
    #[arg(long, value_name = "IP")]
    pub source: Option<IpAddr>,
    /// Pause between knocks, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub delay_ms: u64,
    #[command(flatten)]
    pub family: FamilyArgs,
}

fn parse_range(s: &str) -> Result<(u16, u16), ClientError> {
    let bad = |reason: &str| ClientError::BadPort {
        spec: s.to_owned(),
        reason: reason.to_owned(),
    };
    let (lo, hi) = s.split_once('-').ok_or_else(|| bad("expected LO-HI"))?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad("LO is not a port"))?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad("HI is not a port"))?;
    Ok((lo, hi))
}

/// The ports and protocol for the current (or next) step.
pub fn sequence(args: &KnockArgs) -> Result<(Vec<u16>, Proto), ClientError> {
    let params = KnockParams {
        ports: args.ports,
        step_secs: args.step_secs,
        range: parse_range(&args.range)?,
    };
    params.validate().map_err(|m| ClientError::BadPort {
        spec: format!(
            "--ports {} --step-secs {} --range {}",
            args.ports, args.step_secs, args.range
        ),
        reason: m.to_owned(),
    })?;
    let (kf, key_path) = crate::load_key(args.key.as_deref())?;
    let server_id = match (&args.server_id, &kf.server_id) {
        (Some(s), _) | (None, Some(s)) => s.clone(),
        (None, None) => return Err(ClientError::NoServerId { key_path }),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ClientError::Clock)?
        .as_secs();
    let step = params.step_at(now) + u64::from(args.next);
    let proto = if args.udp { Proto::Udp } else { Proto::Tcp };
    Ok((
        knock_seq_at_step(&kf.key.derive(), &server_id, &params, step),
        proto,
    ))
}

/// `knock-seq`: prints the ports so `knock SERVER $(spa-client knock-seq)`
/// works with the stock knock client.
pub fn run_knock_seq(args: &KnockArgs, out: &mut dyn Write) -> Result<(), ClientError> {
    let (ports, proto) = sequence(args)?;
    let _ = writeln!(out, "{}", format_ports(&ports, proto));
    Ok(())
}

/// `knock`: sends the sequence itself.
pub fn run_knock(args: &KnockArgs, out: &mut dyn Write) -> Result<(), ClientError> {
    let server = args
        .server
        .as_deref()
        .ok_or_else(|| ClientError::BadServer {
            spec: String::new(),
            reason: "knock needs SERVER".into(),
        })?;
    let (ports, proto) = sequence(args)?;
    let (host, _) = parse_server(server, 1)?;
    let family = args.family.family();
    let addr = resolve(&host, 1, family, args.source)?.ip();
    send_knocks(
        addr,
        &ports,
        proto,
        args.source,
        Duration::from_millis(args.delay_ms),
    )
    .map_err(|source| ClientError::Send {
        addr: std::net::SocketAddr::new(addr, ports.first().copied().unwrap_or(0)),
        source,
    })?;
    let _ = writeln!(out, "knocked {addr}: {}", format_ports(&ports, proto));
    Ok(())
}
