//! spa-client's command line (clap definitions), in the library so that
//! man pages and shell completions are generated from the same definitions
//! the binary parses; `main.rs` only dispatches.

use clap::{CommandFactory, Parser, Subcommand};

/// Single-packet authorization client: ask an SPA server to open ports for
/// you with one authenticated, encrypted UDP datagram.
///
/// Typical use: `spa-client send --open 22 gw1.example.org && ssh gw1.example.org`.
/// Key setup: `spa-client keygen` (same as spa-keygen).
#[derive(Debug, Parser)]
#[command(name = "spa-client", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    Send(crate::SendArgs),
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
    RawSend(crate::RawSendArgs),
    /// Print the current HMAC knock sequence, for a plain knock client:
    /// `knock SERVER $(spa-client knock-seq)`.
    ///
    /// The sequence is derived from your key, the server id and the time
    /// step; the server accepts it once, during this step or the next.
    KnockSeq(crate::KnockArgs),
    /// Send the current HMAC knock sequence to SERVER (TCP SYNs, or UDP
    /// with --udp), like `knock SERVER $(spa-client knock-seq)`.
    Knock(crate::KnockArgs),
}

/// The clap command tree of `spa-client`, for man page and completion
/// generators.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate flags, bad defaults), which
    /// otherwise show only when that subcommand is parsed.
    #[test]
    fn command_tree_is_consistent() {
        super::command().debug_assert();
    }
}
