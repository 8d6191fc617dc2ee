//! `spa-client`: one binary for every client-side job. Each subcommand is
//! one variant of [`spa_client::cli::Command`] and one `run_*` function in
//! the library, so a new one is a variant and a match arm.

use clap::Parser;
use spa_client::cli::{Cli, Command};
use spa_client::send::Outcome;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let done = |r: Result<(), spa_client::ClientError>| r.map(|()| Outcome::Done);
    let result = match &cli.command {
        Command::Send(args) => spa_client::run_send(args, &mut stdout, &mut std::io::stderr()),
        Command::Keygen(opts) => {
            done(spa_keys::run_keygen(opts, &mut stdout).map_err(spa_client::ClientError::Key))
        }
        Command::ServerKey(args) => done(spa_client::run_server_key(args, &mut stdout)),
        Command::RawSend(args) => done(spa_client::run_raw_send(args, &mut stdout)),
        Command::KnockSeq(args) => done(spa_client::run_knock_seq(args, &mut stdout)),
        Command::Knock(args) => done(spa_client::run_knock(args, &mut stdout)),
        Command::List(args) => done(spa_client::profile::run_list(args, &mut stdout)),
        Command::Completions { shell } => done(
            spa_client::cli::write_completions(*shell, &mut stdout).map_err(|source| {
                spa_client::ClientError::File {
                    path: "standard output".into(),
                    action: "write completions to",
                    source,
                }
            }),
        ),
    };
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::NotConfirmed) => ExitCode::from(spa_client::send::EXIT_NOT_OPENED),
        // Nothing to open is a usage mistake, like a missing argument.
        Err(e @ spa_client::ClientError::NothingToOpen { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
