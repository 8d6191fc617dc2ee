//! `spa-client`: one binary for every client-side job. Each subcommand is
//! one variant of [`spa_client::cli::Command`] and one `run_*` function in
//! the library, so a new one is a variant and a match arm.

use clap::Parser;
use spa_client::cli::{Cli, Command};
use std::process::ExitCode;

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
