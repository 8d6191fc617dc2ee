//! Issue 16, also-item d: the daemon runs its firewall tools by absolute
//! path, resolved once at start in fixed directories (never `$PATH`), with
//! a minimal environment. The real daemon and iptables, in namespaces.
//!
//! Namespace id 140 (engineer C's range 140..=159).

use spa_e2e::{bin, spawn_logged, wait_for, Guard, Testbed};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn script(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `$PATH` that leads to impostor `iptables*`/`nft` (each would leave a
/// marker and fail) and an extra variable in the daemon's environment: the
/// daemon starts, opens a grant with the real tools, no impostor ran, and
/// the tool it runs (an absolute-path wrapper that records its environment
/// and execs the real iptables-restore) saw only PATH and LC_ALL.
#[test]
fn tools_run_by_absolute_path_with_a_minimal_environment() {
    let r = Testbed::new(140, "tools", "iptables", "e2e-tools", &["alice"]);
    let dir = &r.dir.path;
    let evil = dir.join("evil");
    std::fs::create_dir(&evil).unwrap();
    let marker = dir.join("impostor-ran");
    for t in [
        "iptables",
        "ip6tables",
        "iptables-restore",
        "ip6tables-restore",
        "nft",
    ] {
        script(
            &evil.join(t),
            &format!("#!/bin/sh\necho {t} >> {}\nexit 1\n", marker.display()),
        );
    }
    let env_log = dir.join("tool-env.txt");
    let wrap = dir.join("wrap-restore");
    script(
        &wrap,
        &format!(
            "#!/bin/sh\nenv > {}\nexec /usr/sbin/iptables-restore \"$@\"\n",
            env_log.display()
        ),
    );
    let conf = dir.join("server.toml");
    std::fs::write(
        &conf,
        format!(
            "[firewall_options]\niptables_restore = \"{}\"\n",
            wrap.display()
        ),
    )
    .unwrap();

    let server = bin("spa-server");
    let path = format!("PATH={}:/usr/sbin:/usr/bin:/sbin:/bin", evil.display());
    let args = r.server_args_with_key();
    let mut argv = vec![
        "env",
        &path,
        "SPA_E2E_LEAK=do-not-pass-on",
        "NO_COLOR=1",
        server.to_str().unwrap(),
        "--config",
        conf.to_str().unwrap(),
    ];
    argv.extend(args.iter().map(String::as_str));
    let log = dir.join("server.log");
    let _daemon = Guard(spawn_logged(r.pair.srv(&argv), &log, false));
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let ready = wait_for(Duration::from_secs(10), || {
        text()
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("ready"))
    });
    let impostors = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(
        impostors.is_empty(),
        "tools found through $PATH ran: {impostors}\nlog:\n{}",
        text()
    );
    assert!(ready, "spa-server did not get ready:\n{}", text());

    let (cli, srv) = (r.pair.v4().cli, r.pair.v4().srv);
    r.send(cli, srv, &["--open", "22"]);
    assert!(
        wait_for(Duration::from_secs(5), || text().contains("accepted open")),
        "no accepted open:\n{}",
        text()
    );
    r.assert_one_grant(cli);

    let env = std::fs::read_to_string(&env_log).expect("the wrapper ran");
    let mut vars: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .collect();
    vars.sort_unstable();
    assert_eq!(
        vars,
        vec!["LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "the tool's whole environment:\n{env}"
    );
    assert!(std::fs::read_to_string(&marker).is_err(), "no impostor ran");
    r.done("tools_env");
}
