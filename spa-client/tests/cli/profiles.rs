//! client.toml: profiles and groups fill in a request, flags override them,
//! and its errors name the file, line and field.

use super::*;

/// A client.toml with one profile (its key next to it, named relatively)
/// and a group; returns (config path, key path).
fn profiles(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let key = make_key(dir, Some("gw-key"));
    let cfg = dir.join("client.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server.gw1]\nhost = \"198.18.0.1\"\nkey = \"k.key\"\nserver_id = \"gw-one\"\n\
             open = [\"tcp/22\", \"udp/53\"]\nduration = 77\nallow_ip = \"198.18.0.9\"\n\n\
             [server.gw2]\nkey = \"k.key\"\n\n[group.all]\nservers = [\"gw1\", \"gw2\"]\n{extra}"
        ),
    )
    .unwrap();
    (cfg, key)
}

#[test]
fn a_profile_fills_in_the_request_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, key) = profiles(dir.path(), "");
    let o = run(client()
        .args(["send", "--dry-run", "--config"])
        .arg(&cfg)
        .arg("gw1"));
    assert!(o.status.success(), "{o:?}");
    let r = verify(&unhex(&stdout(&o)), &key, "gw-one").unwrap().request;
    assert_eq!(r.duration_secs, 77);
    assert_eq!(r.allow, AllowAddr::V4("198.18.0.9".parse().unwrap()));
    let g = grants_of(&r);
    assert_eq!(g, vec![(Proto::Tcp, 22), (Proto::Udp, 53)]);

    // Flags win over the profile; $XDG_CONFIG_HOME/spa/client.toml is found.
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("spa")).unwrap();
    std::fs::copy(&cfg, xdg.join("spa/client.toml")).unwrap();
    std::fs::copy(&key, xdg.join("spa/k.key")).unwrap();
    std::fs::set_permissions(
        xdg.join("spa/k.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let o = run(client().env("XDG_CONFIG_HOME", &xdg).args([
        "send",
        "--dry-run",
        "--open",
        "443",
        "-d",
        "5",
        "--server-id",
        "x",
        "gw1",
    ]));
    assert!(o.status.success(), "{o:?}");
    let r = verify(&unhex(&stdout(&o)), &key, "x").unwrap().request;
    assert_eq!(
        (r.duration_secs, r.grants.as_slice()[0].port.get()),
        (5, 443)
    );

    // A group gives one datagram per member, each for its own server id.
    let o = run(client()
        .args(["send", "--dry-run", "--open", "22", "--config"])
        .arg(&cfg)
        .arg("all"));
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(verify(&unhex(lines[0]), &key, "gw-one").is_ok());
    assert!(
        verify(&unhex(lines[1]), &key, "gw-key").is_ok(),
        "gw2 has no server_id: the key file's"
    );

    // `list` shows both and the group.
    let o = run(client().args(["list", "--config"]).arg(&cfg));
    let out = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.contains("server gw1  host=198.18.0.1 port=62201 server_id=gw-one"),
        "{out}"
    );
    assert!(
        out.contains("open=tcp/22,udp/53 duration=77 allow_ip=198.18.0.9"),
        "{out}"
    );
    assert!(out.contains("server gw2  host=gw2"), "{out}");
    assert!(out.contains("group all  servers=gw1,gw2"), "{out}");

    // A profile without `open` and no --open: a usage error (2), not a send.
    let o = run(client()
        .args(["send", "--dry-run", "--config"])
        .arg(&cfg)
        .arg("gw2"));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("nothing to open"), "{}", stderr(&o));
}

#[test]
fn client_toml_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = profiles(dir.path(), "\n[server.gw3]\nport = 99999\n");
    let o = run(client()
        .args(["send", "--dry-run", "--config"])
        .arg(&cfg)
        .arg("gw1"));
    assert_error(
        &o,
        &[&format!(
            "{}:16: field `server.gw3.port`: 99999 is out of range",
            cfg.display()
        )],
    );
    let o = run(client().args(["list", "--config"]).arg(&cfg));
    assert_error(&o, &["field `server.gw3.port`"]);
    // A named file that is missing is an error; the default one is optional.
    let o = run(client().args(["list", "--config", "/nonexistent/c.toml"]));
    assert_error(&o, &["/nonexistent/c.toml", "client configuration"]);
    let o = run(client().args(["list"]));
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("no profiles"), "{}", stdout(&o));
}
