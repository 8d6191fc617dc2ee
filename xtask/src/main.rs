//! `cargo run -p xtask -- dist [DIR]`: writes the man pages and shell
//! completions into DIR (default target/dist), where the Debian packages
//! (docs/packaging.md) and scripts/install.sh take them from.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.as_slice() {
        [cmd] if cmd == "dist" => PathBuf::from("target/dist"),
        [cmd, dir] if cmd == "dist" => PathBuf::from(dir),
        _ => {
            eprintln!("usage: cargo run -p xtask -- dist [DIR]   (man pages and completions into DIR, default target/dist)");
            return ExitCode::from(2);
        }
    };
    match xtask::write_dist(&out) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask dist: {e}");
            ExitCode::FAILURE
        }
    }
}
