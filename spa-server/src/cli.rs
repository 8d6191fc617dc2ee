//! spa-server's command line (clap definitions), in the library so that the
//! man page and shell completions are generated from the same definitions as
//! `--help` (see `xtask`), and so `main.rs` stays a thin dispatcher.

use crate::firewall::BackendKind;
use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

/// Single-packet-authorization server: opens a firewall port for the source of
/// one authenticated, encrypted UDP datagram, and for nobody else.
///
/// It captures datagrams on the SPA port with a kernel-filtered packet socket:
/// no port is listening and it never answers. Each accepted request adds a
/// source-scoped ACCEPT rule to its own firewall chain; the rule is removed on
/// close, when its duration ends (also in the kernel, even if this process
/// dies), and on stop.
#[derive(Parser, Debug)]
#[command(name = "spa-server", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Configuration file (TOML). Default: /etc/spa/server.toml if it exists;
    /// without it, --key FILE gives a configuration on the command line alone.
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Capture only on this interface (repeatable). Default: every interface.
    #[arg(short, long = "interface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// UDP port the SPA datagrams are sent to (nothing listens on it).
    /// Default 62201.
    #[arg(short, long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Directory for the persisted replay record. Default /var/lib/spa-server.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Keep the replay log on this tmpfs directory (e.g. /run/spa-server)
    /// instead of flushing it to disk per datagram: survives daemon restarts,
    /// and after a reboot a marker in --state-dir refuses one window of
    /// possibly-seen timestamps. Saves a disk flush (ms) per request.
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Firewall backend: iptables (with ip6tables) or nftables.
    #[arg(long, global = true, value_name = "BACKEND")]
    pub firewall: Option<BackendKind>,
    /// This server's id; clients must seal for the same id. Default: the
    /// host name.
    #[arg(long, value_name = "NAME")]
    pub server_id: Option<String>,
    /// Accept this key file too (repeatable); it may open --allow.
    #[arg(short, long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// What --key keys may open, e.g. tcp/22,udp/53. Default tcp/22.
    #[arg(long, value_name = "GRANTS", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Longest grant --key keys may ask for, in seconds. Default 300.
    #[arg(long, value_name = "SECS")]
    pub max_duration: Option<u32>,
    /// --key keys may name an address other than the datagram's source
    /// (`spa-client send --allow-ip`). Default: they may not.
    #[arg(long)]
    pub allow_other_address: bool,
    /// Grant duration when a request does not name one. Default 30.
    #[arg(long, value_name = "SECS")]
    pub default_duration: Option<u32>,
    /// Accept timestamps this many seconds behind or ahead. Default 30.
    #[arg(long, value_name = "SECS")]
    pub window: Option<u64>,
    /// Also accept classic knockd sequences (7000,8000,9000 opens tcp/22;
    /// 9000,8000,7000 closes). INSECURE: anyone who sees a knock can replay it.
    #[arg(long)]
    pub legacy_knock: bool,
    /// Import the doors of an existing knockd.conf (implies --legacy-knock).
    #[arg(long, value_name = "FILE")]
    pub knockd_conf: Option<PathBuf>,
    /// Log filter (error, warn, info, debug) or a tracing directive.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground (the default).
    Run,
    /// Remove every grant and our chain/sets/jump, then exit. For systemd's
    /// ExecStopPost, so nothing outlives the daemon, even after a crash.
    /// Refused while a daemon runs with the same state directory.
    Flush {
        /// Flush even though a daemon holds the state directory's lock (it
        /// keeps running, without its chain, until restarted).
        #[arg(long)]
        force: bool,
    },
    /// Load and check the configuration and key files, then exit.
    CheckConfig,
    /// Show what the running daemon is doing: live grants (owner, address,
    /// port, opened at, time left, how), the counters since start, uptime,
    /// configuration, server id and backend. Asks the daemon on its control
    /// socket; exits 1 when no daemon answers.
    Status {
        /// JSON, in the stable schema of docs/operations.md.
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// The Prometheus text exposition format (for a cron job or an
        /// exporter; see also metrics_file).
        #[arg(long)]
        prometheus: bool,
        /// The control socket. Default: control.sock in the configuration's
        /// runtime_dir, else in its state_dir.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// End live grants now: those of one address, of one key, or all. The
    /// daemon logs each one. A key's later datagrams still open (remove the
    /// key from the configuration and reload to stop those).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["address", "key", "all"])))]
    Revoke {
        /// Every grant of this client address (all owners).
        #[arg(long, value_name = "IP")]
        address: Option<std::net::IpAddr>,
        /// Every grant this key holds (datagrams and HMAC knocks).
        #[arg(long, value_name = "NAME")]
        key: Option<String>,
        /// Every live grant.
        #[arg(long)]
        all: bool,
        /// The control socket (as for status).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Print the shell completion script for spa-server (bash, zsh, fish,
    /// elvish, powershell). The Debian package installs bash, zsh and fish's.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

pub const AFTER_HELP: &str = "\
Examples:
  spa-server --config /etc/spa/server.toml
  spa-server --interface eth0 --key /etc/spa/keys/alice.key --allow tcp/22
  spa-server status
  spa-server revoke --address 198.51.100.7
  spa-server flush

The admin's own ruleset keeps ports closed (e.g. iptables -A INPUT -p tcp
--dport 22 -j REJECT, after an ESTABLISHED,RELATED accept); spa-server only
adds source-scoped ACCEPT rules in its own chain, jumped to from INPUT.";

/// The clap command tree of `spa-server`, for man page and completion
/// generators.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Writes the completion script for `shell` (spa_keys::write_completions).
pub fn write_completions(
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    spa_keys::write_completions(command(), "spa-server", shell, out)
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate flags, bad defaults).
    #[test]
    fn command_tree_is_consistent() {
        super::command().debug_assert();
    }
}
