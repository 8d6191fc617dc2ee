//! spa-server: the command line over the `spa_server` library.

use clap::{Parser, Subcommand};
use spa_server::config::{self, Config, Overrides};
use spa_server::daemon::{self, ConfigSource, Daemon};
use spa_server::firewall::{BackendKind, FirewallOptions};
use std::path::PathBuf;
use std::process::ExitCode;

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
struct Cli {
    /// Configuration file (TOML). Default: /etc/spa/server.toml if it exists;
    /// without it, --key FILE gives a configuration on the command line alone.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Capture only on this interface (repeatable). Default: every interface.
    #[arg(short, long = "interface", value_name = "IF")]
    interfaces: Vec<String>,
    /// UDP port the SPA datagrams are sent to (nothing listens on it).
    /// Default 62201.
    #[arg(short, long, value_name = "PORT")]
    port: Option<u16>,
    /// Directory for the persisted replay record. Default /var/lib/spa-server.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Keep the replay log on this tmpfs directory (e.g. /run/spa-server)
    /// instead of flushing it to disk per datagram: survives daemon restarts,
    /// and after a reboot a marker in --state-dir refuses one window of
    /// possibly-seen timestamps. Saves a disk flush (ms) per request.
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Firewall backend: iptables (with ip6tables) or nftables.
    #[arg(long, global = true, value_name = "BACKEND")]
    firewall: Option<BackendKind>,
    /// This server's id; clients must seal for the same id. Default: the
    /// host name.
    #[arg(long, value_name = "NAME")]
    server_id: Option<String>,
    /// Accept this key file too (repeatable); it may open --allow.
    #[arg(short, long = "key", value_name = "FILE")]
    keys: Vec<PathBuf>,
    /// What --key keys may open, e.g. tcp/22,udp/53. Default tcp/22.
    #[arg(long, value_name = "GRANTS", value_delimiter = ',')]
    allow: Vec<String>,
    /// Longest grant --key keys may ask for, in seconds. Default 300.
    #[arg(long, value_name = "SECS")]
    max_duration: Option<u32>,
    /// Grant duration when a request does not name one. Default 30.
    #[arg(long, value_name = "SECS")]
    default_duration: Option<u32>,
    /// Accept timestamps this many seconds behind or ahead. Default 30.
    #[arg(long, value_name = "SECS")]
    window: Option<u64>,
    /// Also accept classic knockd sequences (7000,8000,9000 opens tcp/22;
    /// 9000,8000,7000 closes). INSECURE: anyone who sees a knock can replay it.
    #[arg(long)]
    legacy_knock: bool,
    /// Import the doors of an existing knockd.conf (implies --legacy-knock).
    #[arg(long, value_name = "FILE")]
    knockd_conf: Option<PathBuf>,
    /// Log filter (error, warn, info, debug) or a tracing directive.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon in the foreground (the default).
    Run,
    /// Remove every grant and our chain/sets/jump, then exit. For systemd's
    /// ExecStopPost, so nothing outlives the daemon, even after a crash.
    Flush,
    /// Load and check the configuration and key files, then exit.
    CheckConfig,
}

const AFTER_HELP: &str = "\
Examples:
  spa-server --config /etc/spa/server.toml
  spa-server --interface eth0 --key /etc/spa/keys/alice.key --allow tcp/22
  spa-server flush

The admin's own ruleset keeps ports closed (e.g. iptables -A INPUT -p tcp
--dport 22 -j REJECT, after an ESTABLISHED,RELATED accept); spa-server only
adds source-scoped ACCEPT rules in its own chain, jumped to from INPUT.";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spa-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn source(cli: &Cli) -> Result<ConfigSource, String> {
    let mut key_allow = Vec::new();
    for a in &cli.allow {
        key_allow.push(config::parse_grant(a).map_err(|m| format!("--allow: {m}"))?);
    }
    let overrides = Overrides {
        server_id: cli.server_id.clone(),
        interfaces: cli.interfaces.clone(),
        spa_port: cli.port,
        state_dir: cli.state_dir.clone(),
        runtime_dir: cli.runtime_dir.clone(),
        firewall: cli.firewall,
        default_duration: cli.default_duration,
        window_secs: cli.window,
        keys: cli.keys.clone(),
        key_allow,
        key_max_duration: cli.max_duration,
        legacy_knock: cli.legacy_knock || cli.knockd_conf.is_some(),
        knockd_conf: cli.knockd_conf.clone(),
    };
    let default = PathBuf::from(config::DEFAULT_CONFIG);
    let path = match &cli.config {
        Some(p) => Some(p.clone()),
        None if default.exists() => Some(default),
        None if !cli.keys.is_empty() || overrides.legacy_knock => None,
        None => {
            return Err(format!(
                "no configuration: {} does not exist; pass --config FILE, or --key FILE to run from the command line",
                config::DEFAULT_CONFIG
            ))
        }
    };
    Ok(ConfigSource { path, overrides })
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Some(Command::Flush) => {
            // Flush must work even when the configuration no longer loads
            // (that may be why the daemon died): then it uses the defaults,
            // and without --firewall it clears both backends.
            let loaded = source(&cli).and_then(|s| s.load().map_err(|e| e.to_string()));
            let (backends, opts) = match (&loaded, cli.firewall) {
                (Ok(cfg), Some(b)) => (vec![b], cfg.firewall_options.clone()),
                (Ok(cfg), None) => (vec![cfg.firewall], cfg.firewall_options.clone()),
                (Err(_), Some(b)) => (vec![b], FirewallOptions::default()),
                (Err(_), None) => (
                    vec![BackendKind::Iptables, BackendKind::Nftables],
                    FirewallOptions::default(),
                ),
            };
            if let Err(e) = &loaded {
                eprintln!("spa-server: flush: configuration not loaded ({e}); using defaults");
            }
            let mut failed = Vec::new();
            for b in backends {
                match daemon::flush(b, &opts) {
                    Ok(()) => eprintln!("spa-server: flushed every {b} grant and our chain/sets"),
                    Err(e) => failed.push(format!("{b}: {e}")),
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!("flush: {}", failed.join("; ")))
            }
        }
        Some(Command::CheckConfig) => {
            let src = source(&cli)?;
            let cfg: Config = src.load().map_err(|e| e.to_string())?;
            println!(
                "configuration OK: server_id {:?}, port {}, {} key(s), backend {:?}",
                cfg.server_name,
                cfg.spa_port,
                cfg.keys.len(),
                cfg.firewall
            );
            for k in &cfg.keys {
                let allow: Vec<String> = k.allow.iter().map(|g| g.to_string()).collect();
                println!(
                    "  key {} ({}): {} for up to {} s",
                    k.name,
                    k.key_id,
                    allow.join(","),
                    k.max_duration
                );
            }
            Ok(())
        }
        Some(Command::Run) | None => {
            let src = source(&cli)?;
            let d = Daemon::start(src).map_err(|e| e.to_string())?;
            d.run().map_err(|e| e.to_string())
        }
    }
}
