//! The bash completions the packages install, run by a real bash: after
//! `spa-client ` they offer the subcommands, after `spa-client send --`
//! its flags, after `spa-server ` its subcommands. (zsh and fish are not
//! installed here; their scripts come from the same generator.)

use std::process::Command;

/// COMPREPLY of bash completing `line` (its last word is the one completed)
/// with the script generated for `bin`.
fn complete(bin: &str, line: &str) -> Vec<String> {
    let (_, script) = xtask::completions()
        .expect("completions")
        .into_iter()
        .find(|(p, _)| p.ends_with(format!("bash/{bin}")))
        .expect("a bash script per binary");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(bin);
    std::fs::write(&file, script).expect("write script");
    let words: Vec<&str> = line.split(' ').collect();
    let prog = format!(
        r#"source "$1"
f=$(complete -p {bin} | sed -n 's/.*-F \([^ ]*\).*/\1/p')
COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}
"$f" {bin} "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["-c", &prog, "bash"])
        .arg(&file)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    let subs = complete("spa-client", "spa-client ");
    for s in ["send", "keygen", "knock", "completions"] {
        assert!(
            subs.iter().any(|c| c == s),
            "spa-client <TAB> offers {s}: {subs:?}"
        );
    }
    let flags = complete("spa-client", "spa-client send --");
    for f in ["--open", "--close", "--key", "--duration"] {
        assert!(
            flags.iter().any(|c| c == f),
            "spa-client send --<TAB> offers {f}: {flags:?}"
        );
    }
    let server = complete("spa-server", "spa-server ");
    for s in ["flush", "check-config", "run"] {
        assert!(
            server.iter().any(|c| c == s),
            "spa-server <TAB> offers {s}: {server:?}"
        );
    }
    let keygen = complete("spa-keygen", "spa-keygen --");
    for f in ["--out", "--name", "--server-id", "--force", "--completions"] {
        assert!(
            keygen.iter().any(|c| c == f),
            "spa-keygen --<TAB> offers {f}: {keygen:?}"
        );
    }
}
