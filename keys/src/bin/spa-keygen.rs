//! `spa-keygen`: make a new SPA key file and print how to install it. The
//! command line is `spa_keys::KeygenCli` (shared with the man page).

use clap::Parser;
use spa_keys::KeygenCli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = KeygenCli::parse();
    if let Some(shell) = cli.completions {
        return match KeygenCli::write_completions(shell, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write completions to standard output: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match spa_keys::run_keygen(&cli.opts, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
