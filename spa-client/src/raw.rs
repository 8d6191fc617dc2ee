//! `spa-client raw-send`: a testing tool that sends a file's bytes, unchanged,
//! as one UDP datagram. Used to replay a datagram saved with
//! `send --output`, or to throw garbage at a server to check it stays shut.

use crate::error::ClientError;
use crate::grants::parse_port;
use crate::target::{parse_server, resolve, send_datagram, FamilyArgs, DEFAULT_SPA_PORT};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;

/// The largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: u64 = 65_507;

/// Options of `spa-client raw-send`.
#[derive(Debug, Clone, clap::Args)]
pub struct RawSendArgs {
    /// The bytes to send; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The server: HOST, HOST:PORT, IPv4, IPv6 or [IPv6]:PORT.
    #[arg(value_name = "SERVER")]
    pub server: String,

    /// The server's SPA port (when SERVER has no :PORT).
    #[arg(long, short = 'p', value_name = "N", default_value_t = DEFAULT_SPA_PORT.to_string())]
    pub port: String,

    #[command(flatten)]
    pub family: FamilyArgs,

    /// Send from this local address.
    #[arg(long, value_name = "IP")]
    pub source: Option<IpAddr>,

    /// Print nothing on success.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The whole `raw-send` command.
pub fn run_raw_send(args: &RawSendArgs, out: &mut dyn Write) -> Result<(), ClientError> {
    let default_port = parse_port(&args.port, &args.port)?;
    let (host, port) = parse_server(&args.server, default_port)?;
    let read_err = |source| ClientError::File {
        path: args.file.clone(),
        action: "read",
        source,
    };
    let mut bytes = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_UDP_PAYLOAD + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
    } else {
        std::fs::File::open(&args.file)
            .and_then(|f| f.take(MAX_UDP_PAYLOAD + 1).read_to_end(&mut bytes))
            .map_err(read_err)?;
    }
    if bytes.len() as u64 > MAX_UDP_PAYLOAD {
        return Err(ClientError::TooBig {
            path: args.file.clone(),
            len: bytes.len() as u64,
        });
    }
    let family = args.family.family();
    let dest = resolve(&host, port, family, args.source)?;
    send_datagram(&bytes, dest, args.source)?;
    if !args.quiet {
        writeln!(out, "sent {} bytes to {dest}", bytes.len()).map_err(|source| {
            ClientError::File {
                path: PathBuf::from("<stdout>"),
                action: "write to",
                source,
            }
        })?;
    }
    Ok(())
}
