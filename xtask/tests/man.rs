//! The generated man pages against what the binaries say and read: every
//! subcommand and flag of `--help` is in the page, every configuration key is
//! an entry of spa-server.toml(5), and man(1) renders each page without a
//! warning. Needs man-db (scripts/prereqs.sh installs it for `test`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `man -l` of `roff` as plain text: ASCII, no hyphenation or justification,
/// so a flag is never split across lines.
fn render(roff: &[u8], width: &str, warnings: bool) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("page.man");
    std::fs::write(&file, roff).expect("write page");
    let mut cmd = Command::new("man");
    if warnings {
        cmd.arg("--warnings");
    }
    let out = cmd
        .args(["--nh", "--nj", "-l"])
        .arg(&file)
        .env("MANWIDTH", width)
        .env("LC_ALL", "C")
        .env("MANPAGER", "cat")
        .output()
        .expect("run man(1): apt-get install man-db (scripts/prereqs.sh test)");
    assert!(
        out.status.success(),
        "man -l failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flags (`-k`, `--key`) of the option lines of one `--help`, and the
/// subcommand names of its "Commands:" list (clap's own `help` aside).
fn help_items(help: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut flags, mut subs) = (BTreeSet::new(), BTreeSet::new());
    let mut in_commands = false;
    for line in help.lines() {
        if !line.starts_with(' ') {
            in_commands = line.trim_end() == "Commands:";
            continue;
        }
        let t = line.trim_start();
        if in_commands {
            if let Some(name) = t.split_whitespace().next() {
                if name != "help" {
                    subs.insert(name.to_owned());
                }
            }
        } else if t.starts_with('-') {
            // "-k, --key <FILE>  text": the words before the description.
            for word in t.split_whitespace().take_while(|w| w.starts_with('-')) {
                flags.insert(word.trim_end_matches(',').to_owned());
            }
        }
    }
    (flags, subs)
}

#[test]
fn every_subcommand_and_flag_in_help_is_in_the_man_page() {
    let pages = xtask::pages().expect("render pages");
    for (bin, cmd) in xtask::commands() {
        let page = pages
            .iter()
            .find(|p| p.bin == Some(bin))
            .expect("a page per binary");
        let (text, _) = render(&page.roff, "1000", false);
        let mut cmd = cmd;
        cmd.build();
        let mut todo = vec![(bin.to_owned(), cmd)];
        let mut checked = 0;
        while let Some((name, mut c)) = todo.pop() {
            let help = c.render_long_help().to_string();
            let (flags, subs) = help_items(&help);
            for f in &flags {
                let found = text.match_indices(f.as_str()).any(|(i, _)| {
                    !text[i + f.len()..]
                        .starts_with(|ch: char| ch.is_ascii_alphanumeric() || ch == '-')
                });
                assert!(
                    found,
                    "{name} --help lists {f}, the {} page does not:\n{text}",
                    page.file
                );
                checked += 1;
            }
            for s in &subs {
                let full = format!("{name} {s}");
                assert!(
                    text.contains(&full),
                    "{name} --help lists the subcommand {s}, the {} page has no `{full}`",
                    page.file
                );
                let sub = c
                    .find_subcommand(s)
                    .expect("listed subcommand exists")
                    .clone();
                todo.push((full, sub));
            }
        }
        assert!(
            checked > 3,
            "{bin}: too few flags found in --help ({checked}): is the parser right?"
        );
    }
}

#[test]
fn man_pages_render_without_warnings() {
    for page in xtask::pages().expect("render pages") {
        let (text, warnings) = render(&page.roff, "80", true);
        assert!(
            warnings.trim().is_empty(),
            "{}: man --warnings:\n{warnings}",
            page.file
        );
        assert!(
            text.contains("SEE ALSO"),
            "{}: no SEE ALSO section",
            page.file
        );
    }
}

/// Field names of the serde structs that make up the configuration file.
fn config_keys() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spa-server/src");
    let structs: [(&str, &[&str]); 3] = [
        ("config/schema.rs", &["RawConfig", "RawKey"]),
        ("firewall/mod.rs", &["FirewallOptions"]),
        (
            "legacy/config.rs",
            &["LegacyConfig", "DoorConfig", "HmacConfig"],
        ),
    ];
    let mut keys = BTreeSet::new();
    for (file, names) in structs {
        let path: PathBuf = src.join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for name in names {
            let start = text
                .find(&format!("struct {name} {{"))
                .unwrap_or_else(|| panic!("struct {name} not in {}", path.display()));
            let body = &text[start..];
            let body = &body[..body.find("\n}").expect("struct end")];
            let mut rename = None;
            for line in body.lines().skip(1) {
                let t = line.trim();
                if let Some(r) = t.split("rename = \"").nth(1) {
                    rename = r.split('"').next().map(str::to_owned);
                }
                let t = t.strip_prefix("pub(super) ").unwrap_or(t);
                let t = t.strip_prefix("pub ").unwrap_or(t);
                if let Some((field, _)) = t.split_once(": ") {
                    if !t.starts_with("//")
                        && field
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    {
                        keys.insert(rename.take().unwrap_or_else(|| field.to_owned()));
                    }
                }
            }
        }
    }
    keys
}

#[test]
fn config_page_has_an_entry_for_every_key() {
    let pages = xtask::pages().expect("render pages");
    let page = pages
        .iter()
        .find(|p| p.file == "spa-server.toml.5")
        .expect("config page");
    let roff = String::from_utf8_lossy(&page.roff);
    // Entries are `.TP` tags, and section headings name the tables.
    let mut entries = BTreeSet::new();
    let mut lines = roff.lines().peekable();
    while let Some(line) = lines.next() {
        let tag = if line == ".TP" {
            lines.next()
        } else if line.starts_with(".SH ") {
            Some(line)
        } else {
            None
        };
        if let Some(tag) = tag {
            let words = tag.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            entries.extend(words.filter(|w| !w.is_empty()).map(str::to_owned));
        }
    }
    let keys = config_keys();
    assert!(keys.len() > 30, "too few keys parsed: {keys:?}");
    let missing: Vec<&String> = keys.iter().filter(|k| !entries.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "spa-server.toml(5) has no entry for {missing:?}: add one to man/spa-server.toml.5.roff"
    );
}
