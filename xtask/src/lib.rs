//! Man pages and shell completions for spa's three binaries, generated from
//! the clap definitions the binaries parse (`spa_server::cli`,
//! `spa_client::cli`, `spa_keys::KeygenCli`), so they never drift from
//! `--help`. What clap cannot know (FILES, EXAMPLES, SECURITY, SEE ALSO) is
//! hand-written roff under `man/`, appended to each page; the configuration
//! file's page, spa-server.toml(5), is hand-written whole.
//!
//! Run at package-build time (`scripts/package.sh`), never checked in.

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One generated man page.
pub struct Page {
    /// File name, e.g. `spa-server.8`.
    pub file: &'static str,
    /// The binary it documents; `None` for the configuration file's page.
    pub bin: Option<&'static str>,
    pub roff: Vec<u8>,
}

/// The clap command of each binary, by binary name.
pub fn commands() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("spa-server", spa_server::cli::command()),
        ("spa-client", spa_client::cli::command()),
        ("spa-keygen", spa_keys::KeygenCli::command()),
    ]
}

/// Every man page: spa-server(8), spa-client(1), spa-keygen(1),
/// spa-server.toml(5).
pub fn pages() -> io::Result<Vec<Page>> {
    let hand = [
        (
            "spa-server.8",
            "8",
            "System Administration",
            include_str!("../../man/spa-server.8.roff"),
        ),
        (
            "spa-client.1",
            "1",
            "User Commands",
            include_str!("../../man/spa-client.1.roff"),
        ),
        (
            "spa-keygen.1",
            "1",
            "User Commands",
            include_str!("../../man/spa-keygen.1.roff"),
        ),
    ];
    let mut pages = Vec::new();
    for ((bin, cmd), (file, section, manual, tail)) in commands().into_iter().zip(hand) {
        pages.push(Page {
            file,
            bin: Some(bin),
            roff: command_page(cmd, section, manual, tail)?,
        });
    }
    pages.push(Page {
        file: "spa-server.toml.5",
        bin: None,
        roff: include_str!("../../man/spa-server.toml.5.roff")
            .replace("@VERSION@", VERSION)
            .into_bytes(),
    });
    Ok(pages)
}

/// NAME, SYNOPSIS, DESCRIPTION and OPTIONS from clap; a COMMANDS section with
/// each subcommand's synopsis, description and options; then `tail`, the
/// hand-written sections.
fn command_page(
    cmd: clap::Command,
    section: &str,
    manual: &str,
    tail: &str,
) -> io::Result<Vec<u8>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone())
        .section(section)
        .manual(manual)
        .source(format!("spa {VERSION}"));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !subs.is_empty() {
        writeln!(out, ".SH COMMANDS")?;
        for sub in subs {
            writeln!(out, ".SS {}", sub.get_name())?;
            let m = Man::new(hide_inherited(sub.clone()));
            let mut part = Vec::new();
            m.render_synopsis_section(&mut part)?;
            writeln!(part, ".PP")?;
            m.render_description_section(&mut part)?;
            let mut opts = Vec::new();
            m.render_options_section(&mut opts)?;
            if opts.windows(3).any(|w| w == b".TP") {
                writeln!(part, ".PP\nOptions:")?;
                part.extend(opts);
            }
            out.extend(without_headings(&part));
        }
    }
    out.extend(tail.as_bytes());
    Ok(out)
}

/// A subcommand with the options it inherits (global ones, -h, -V) hidden:
/// the page documents those once, under OPTIONS.
fn hide_inherited(mut sub: clap::Command) -> clap::Command {
    let ids: Vec<String> = sub
        .get_arguments()
        .filter(|a| a.is_global_set() || matches!(a.get_id().as_str(), "help" | "version"))
        .map(|a| a.get_id().as_str().to_owned())
        .collect();
    for id in ids {
        sub = sub.mut_arg(id, |a| a.hide(true));
    }
    sub
}

/// A rendered section without its `.SH` line and roff's per-render preamble,
/// to nest it under a `.SS`.
fn without_headings(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(".SH ")
            || line.starts_with(".ie \\n(.g")
            || line.starts_with(".el .ds Aq")
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

/// Completion scripts: (path under the output directory, contents), in the
/// layout of their Debian install directories.
pub fn completions() -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for (bin, _) in commands() {
        for (shell, path) in [
            (Shell::Bash, format!("bash/{bin}")),
            (Shell::Zsh, format!("zsh/_{bin}")),
            (Shell::Fish, format!("fish/{bin}.fish")),
        ] {
            let mut buf = Vec::new();
            // The binaries' own `completions` code (spa-server's and
            // spa-client's mend clap_complete's bash output for subcommands).
            match bin {
                "spa-server" => spa_server::cli::write_completions(shell, &mut buf)?,
                "spa-client" => spa_client::cli::write_completions(shell, &mut buf)?,
                _ => spa_keys::KeygenCli::write_completions(shell, &mut buf)?,
            }
            files.push((PathBuf::from("completions").join(path), buf));
        }
    }
    Ok(files)
}

/// Writes `man/*` and `completions/{bash,zsh,fish}/*` under `out`; returns
/// the files written.
pub fn write_dist(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = pages()?
        .into_iter()
        .map(|p| (PathBuf::from("man").join(p.file), p.roff))
        .collect();
    files.extend(completions()?);
    let mut written = Vec::new();
    for (rel, data) in files {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", dir.display())))?;
        }
        std::fs::write(&path, data)
            .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}
