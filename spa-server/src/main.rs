//! spa-server: the command line over the `spa_server` library.

use clap::Parser;
use spa_server::cli::{Cli, Command};
use spa_server::config::{self, Config, Overrides};
use spa_server::daemon::{self, ConfigSource, Daemon};
use spa_server::exit::ExitError;
use spa_server::firewall::{BackendKind, FirewallOptions};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match spa_server::logging::parse_filter(&cli.log_level) {
        Ok(filter) => spa_server::logging::init(filter),
        Err(e) => return fail(&ExitError::LogLevel(e)),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `e` on one line and returns its exit status. Under systemd with
/// the `<3>` priority, so `journalctl -p err` shows why the daemon did not
/// start.
fn fail(e: &ExitError) -> ExitCode {
    let prio = if spa_server::logging::stderr_is_journal() {
        "<3>"
    } else {
        ""
    };
    eprintln!(
        "{prio}spa-server: error: {}",
        spa_server::logging::one_line(&e.to_string())
    );
    ExitCode::from(e.exit_code())
}

fn source(cli: &Cli) -> Result<ConfigSource, ExitError> {
    let mut key_allow = Vec::new();
    for a in &cli.allow {
        key_allow.push(config::parse_grant(a).map_err(ExitError::Allow)?);
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
        key_allow_other_address: cli.allow_other_address,
        legacy_knock: cli.legacy_knock || cli.knockd_conf.is_some(),
        knockd_conf: cli.knockd_conf.clone(),
    };
    let default = PathBuf::from(config::DEFAULT_CONFIG);
    let path = match &cli.config {
        Some(p) => Some(p.clone()),
        None if default.exists() => Some(default),
        None if !cli.keys.is_empty() || overrides.legacy_knock => None,
        None => return Err(ExitError::NoConfiguration),
    };
    Ok(ConfigSource { path, overrides })
}

/// Loads the configuration `cli` names.
fn load(cli: &Cli) -> Result<Config, ExitError> {
    Ok(source(cli)?.load()?)
}

fn run(cli: Cli) -> Result<(), ExitError> {
    match cli.command {
        Some(Command::Flush { force }) => {
            // Flush must work even when the configuration no longer loads
            // (that may be why the daemon died): then it uses the defaults,
            // and without --firewall it clears both backends.
            let loaded = load(&cli);
            let (backends, opts) = match (&loaded, cli.firewall) {
                (Ok(cfg), Some(b)) => (vec![b], cfg.firewall_options.clone()),
                (Ok(cfg), None) => (vec![cfg.firewall], cfg.firewall_options.clone()),
                (Err(_), Some(b)) => (vec![b], FirewallOptions::default()),
                (Err(_), None) => (BackendKind::all().collect(), FirewallOptions::default()),
            };
            if let Err(e) = &loaded {
                eprintln!("spa-server: flush: configuration not loaded ({e}); using defaults");
            }
            // A running daemon's chain is not ours to take away: held for
            // the flush, so none starts half-way through it either.
            let state_dir = match (&loaded, &cli.state_dir) {
                (_, Some(d)) => d.clone(),
                (Ok(cfg), None) => cfg.state_dir.clone(),
                (Err(_), None) => PathBuf::from(config::DEFAULT_STATE_DIR),
            };
            let _lock = match spa_server::lock::acquire_if_exists(&state_dir) {
                Ok(l) => l,
                Err(e @ spa_server::lock::LockError::Held { .. }) if !force => {
                    return Err(ExitError::FlushRefused(e))
                }
                Err(e) => {
                    eprintln!("spa-server: flush: {e}; flushing anyway");
                    None
                }
            };
            let mut failed = Vec::new();
            for b in backends {
                match daemon::flush(b, &opts) {
                    Ok(()) => eprintln!("spa-server: flushed every {b} grant and our chain/sets"),
                    Err(e) => failed.push((b, e)),
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(ExitError::Flush(failed))
            }
        }
        Some(Command::CheckConfig) => {
            let mut cfg = load(&cli)?;
            let report = spa_server::checkconfig::check(&mut cfg);
            for l in &report.lines {
                println!("{l}");
            }
            for e in &report.errors {
                eprintln!("spa-server: check-config: error: {e}");
            }
            if report.errors.is_empty() {
                println!("configuration OK");
                Ok(())
            } else {
                Err(ExitError::CheckConfig {
                    errors: report.errors.len(),
                })
            }
        }
        Some(Command::Status {
            json,
            prometheus,
            ref socket,
        }) => {
            use spa_server::control::{Format, Request};
            let format = match (json, prometheus) {
                (true, _) => Format::Json,
                (_, true) => Format::Prometheus,
                _ => Format::Text,
            };
            let path = control_socket(&cli, socket.as_ref())?;
            let body = spa_server::control::client::call(&path, &Request::Status(format))?;
            print!("{body}");
            Ok(())
        }
        Some(Command::Revoke {
            address,
            ref key,
            all,
            ref socket,
        }) => {
            use spa_server::control::{Request, Selector};
            let sel = match (address, key, all) {
                (Some(a), _, _) => Selector::Address(a.to_canonical()),
                (_, Some(k), _) => Selector::Key(k.clone()),
                _ => Selector::All,
            };
            let path = control_socket(&cli, socket.as_ref())?;
            let body = spa_server::control::client::call(&path, &Request::Revoke(sel))?;
            print!("{body}");
            Ok(())
        }
        Some(Command::Completions { shell }) => {
            spa_server::cli::write_completions(shell, &mut std::io::stdout().lock())
                .map_err(ExitError::Completions)
        }
        Some(Command::Run) | None => {
            let src = source(&cli)?;
            Ok(Daemon::start(src)?.run()?)
        }
    }
}

/// Where the running daemon's control socket is: `--socket`, else from the
/// configuration (its runtime_dir, else its state_dir), else from
/// `--runtime-dir`/`--state-dir` when the configuration does not load.
fn control_socket(cli: &Cli, socket: Option<&PathBuf>) -> Result<PathBuf, ExitError> {
    if let Some(p) = socket {
        return Ok(p.clone());
    }
    match load(cli) {
        Ok(cfg) => Ok(spa_server::control::socket_path(&cfg)),
        Err(e) => match cli.runtime_dir.as_ref().or(cli.state_dir.as_ref()) {
            Some(d) => Ok(d.join(spa_server::control::SOCKET_NAME)),
            None => Err(ExitError::NoSocket(Box::new(e))),
        },
    }
}
