//! `spa-client`: one binary for every client-side job. Each subcommand is
//! one variant of [`Command`] and one `run_*` function in the library, so a
//! new one (knock, knock-seq) is a variant and a match arm.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Single-packet authorization client: ask an SPA server to open ports for
/// you with one authenticated, encrypted UDP datagram.
///
/// Typical use: `spa-client send --open 22 gw1.example.org && ssh gw1.example.org`.
/// Key setup: `spa-client keygen` (same as spa-keygen).
#[derive(Debug, Parser)]
#[command(name = "spa-client", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one SPA request (open or close ports).
    ///
    /// Seals one request with your key and sends it as a single UDP datagram
    /// to SERVER's SPA port (default 62201). The server never replies:
    /// success here means "sent", not "opened"; just try the port you asked
    /// for (e.g. ssh) within the server's time window.
    ///
    /// The key is looked for in this order: --key FILE, $SPA_KEY, then
    /// ~/.config/spa/default.key. Create one with `spa-client keygen` (or
    /// `spa-keygen`). A key file that group or others can read is refused.
    ///
    /// The server id (--server-id, else the key file's server_id) must equal
    /// the server's `server_id` setting, whose default is its host name.
    ///
    /// Exit status: 0 when the datagram was sent (or printed/written with
    /// --dry-run/--output), 1 on any error, 2 on a usage error.
    Send(spa_client::SendArgs),
    /// Generate a key file and print the server config to install it (same as spa-keygen).
    #[command(
        long_about = "Generate a new SPA key: a 32-byte secret shared by one client and the \
        server. Writes a key file readable only by you (mode 0600), then prints its key-id, \
        the [[key]] table to paste into the server's /etc/spa/server.toml, and the spa-client \
        command that uses it. Identical to spa-keygen."
    )]
    Keygen(spa_keys::KeygenOptions),
    /// Testing tool: send a file's bytes unchanged as one UDP datagram.
    ///
    /// Replays a datagram saved with `spa-client send --output FILE`, or
    /// sends arbitrary bytes to check how a server treats them. No key is
    /// involved and nothing is checked: the bytes go out as they are.
    RawSend(spa_client::RawSendArgs),
    /// Print the current HMAC knock sequence, for a plain knock client:
    /// `knock SERVER $(spa-client knock-seq)`.
    ///
    /// The sequence is derived from your key, the server id and the time
    /// step; the server accepts it once, during this step or the next.
    KnockSeq(spa_client::KnockArgs),
    /// Send the current HMAC knock sequence to SERVER (TCP SYNs, or UDP
    /// with --udp), like `knock SERVER $(spa-client knock-seq)`.
    Knock(spa_client::KnockArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let result = match &cli.command {
        Command::Send(args) => spa_client::run_send(args, &mut stdout),
        Command::Keygen(opts) => {
            spa_keys::run_keygen(opts, &mut stdout).map_err(spa_client::ClientError::Key)
        }
        Command::RawSend(args) => spa_client::run_raw_send(args, &mut stdout),
        Command::KnockSeq(args) => spa_client::run_knock_seq(args, &mut stdout),
        Command::Knock(args) => spa_client::run_knock(args, &mut stdout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
