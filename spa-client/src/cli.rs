//! spa-client's command line (clap definitions), in the library so that
//! man pages and shell completions are generated from the same definitions
//! the binary parses; `main.rs` only dispatches.

use clap::{CommandFactory, Parser, Subcommand};

/// Single-packet authorization client: ask an SPA server to open ports for
/// you with one authenticated, encrypted UDP datagram.
///
/// Typical use: `spa-client send --open 22 --wait gw1.example.org && ssh gw1.example.org`.
/// Key setup: `spa-client keygen` (same as spa-keygen).
#[derive(Debug, Parser)]
#[command(name = "spa-client", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one SPA request (open or close ports), and with --wait check
    /// that they opened.
    ///
    /// Seals one request with your key and sends it as a single UDP datagram
    /// to SERVER's SPA port (default 62201). The server never replies, so
    /// without --wait success means "sent", not "opened". With --wait the
    /// client tries the TCP ports itself and, when one stays closed, prints
    /// what it sent (key-id, server id, clock, SPA port) and the one command
    /// that finds the server's log line for it.
    ///
    /// SERVER may be a profile of client.toml (`spa-client send gw1` opens
    /// its `open` ports with its key, port and server id; flags override
    /// it) or a group (one datagram per member, each sealed for its own
    /// server id; --wait waits for all and reports each). `spa-client list`
    /// shows them. Any other SERVER is a host name or address.
    ///
    /// The key is looked for in this order: --key FILE, the profile's key,
    /// $SPA_KEY, then ~/.config/spa/default.key. Create one with
    /// `spa-client keygen` (or `spa-keygen`). A key file that group or
    /// others can read is refused.
    ///
    /// The server id (--server-id, else the profile's, else the key file's
    /// server_id) must equal the server's `server_id` setting, whose default
    /// is its host name.
    ///
    /// Exit status: 0 when sent (with --wait: and every TCP port opened, or
    /// closed with --close; UDP ports cannot be checked), 1 on any error
    /// (local mistakes are found before anything is sent), 2 on a usage
    /// error, 3 when --wait saw a port not open (or not close) in time: the
    /// diagnosis is on stderr.
    Send(crate::SendArgs),
    /// Generate a key file and print the server config to install it (same as spa-keygen).
    #[command(
        long_about = "Generate a new SPA key: a 32-byte secret shared by one client and the \
        server. Writes a key file readable only by you (mode 0600), then prints its key-id, \
        the [[key]] table to paste into the server's /etc/spa/server.toml, and the spa-client \
        command that uses it. `--out -` prints the key file's text instead (for a password \
        manager), and the rest on stderr. Identical to spa-keygen."
    )]
    Keygen(spa_keys::KeygenOptions),
    /// Print the key file a server stores for you under protocol v2.
    ///
    /// Derives the server's key from your key and the server's uid
    /// (`spa-server check-config` prints it) and prints the key file on
    /// stdout: install it on that server (mode 0600) as a [[key]]'s file.
    /// Your own key never leaves this machine, and the printed file opens
    /// nothing at any other server. Then send with --server-uid HEX (or
    /// `server_uid` in the profile).
    ServerKey(crate::ServerKeyArgs),
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
    /// Print the profiles and groups of client.toml.
    ///
    /// One line per server profile (host, SPA port, server id, key, what
    /// `send NAME` opens) and per group (its members), and the file they
    /// came from. The file is --config FILE, else
    /// $XDG_CONFIG_HOME/spa/client.toml, else ~/.config/spa/client.toml;
    /// docs/client.md describes its tables.
    List(crate::profile::ListArgs),
    /// Print the shell completion script for spa-client (bash, zsh, fish,
    /// elvish, powershell), to save where the shell looks, e.g. for bash
    /// ~/.local/share/bash-completion/completions/spa-client. The Debian
    /// packages install them for bash, zsh and fish already.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// The clap command tree of `spa-client`, for man page and completion
/// generators.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Writes the completion script for `shell` (spa_keys::write_completions).
pub fn write_completions(
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    spa_keys::write_completions(command(), "spa-client", shell, out)
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
