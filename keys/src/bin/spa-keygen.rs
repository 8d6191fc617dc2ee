//! `spa-keygen`: make a new SPA key file and print how to install it.

use clap::Parser;
use std::process::ExitCode;

/// Generate a new SPA key: a 32-byte secret shared by one client and the
/// server. Writes a key file readable only by you (mode 0600), then prints its
/// key-id, the [[key]] table to paste into the server's /etc/spa/server.toml,
/// and the spa-client command that uses it. `--out -` prints the key file's
/// text instead (for a password manager), and the rest on stderr.
#[derive(Debug, Parser)]
#[command(name = "spa-keygen", version)]
struct Cli {
    #[command(flatten)]
    opts: spa_keys::KeygenOptions,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match spa_keys::run_keygen(&cli.opts, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
