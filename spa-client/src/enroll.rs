//! `spa-client server-key`: enrollment for protocol v2 (docs/protocol.md
//! §10.2). Prints the key file one server stores for this client: `K_s`,
//! derived from the client's master key and that server's uid. The master
//! never leaves the client, one master serves any number of servers, and a
//! file taken from one server opens nothing at another.

use crate::error::ClientError;
use crate::key::load_key;
use spa_keys::KeyFile;
use spa_proto::{MasterKey, ServerUid};
use std::io::Write;
use std::path::PathBuf;

/// Options of `spa-client server-key`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerKeyArgs {
    /// The server's uid: 32 hex digits, as `spa-server check-config` prints it.
    #[arg(long = "server-uid", value_name = "HEX")]
    pub server_uid: ServerUid,

    /// Your (master) key file. [default: $SPA_KEY, else
    /// ~/.config/spa/default.key]
    #[arg(long, short = 'k', value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// The name in the printed file (the server's [[key]] name should match).
    /// [default: your key file's name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// The server's key file for `master` and `uid`.
pub fn server_key_file(name: &str, master: &MasterKey, uid: ServerUid) -> KeyFile {
    KeyFile {
        name: name.to_owned(),
        key: MasterKey::from_bytes(*master.server_key(&uid).as_bytes()),
        server_id: None,
        server_uid: Some(uid),
    }
}

/// Prints the server's key file on `out` (install it there with mode 0600).
pub fn run_server_key(args: &ServerKeyArgs, out: &mut dyn Write) -> Result<(), ClientError> {
    let (kf, path) = load_key(args.key.as_deref())?;
    if kf.server_uid.is_some() {
        return Err(ClientError::ServerKeyFile { path });
    }
    let name = args.name.clone().unwrap_or_else(|| kf.name.clone());
    if let Err(m) = spa_keys::check_label(&name) {
        return Err(ClientError::BadServer {
            spec: name,
            reason: format!("--name {m}"),
        });
    }
    let text = server_key_file(&name, &kf.key, args.server_uid).to_toml();
    out.write_all(text.as_bytes())
        .map_err(|source| ClientError::File {
            path: "standard output".into(),
            action: "write the key file to",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use spa_proto::v2::epoch_of;
    use spa_proto::{Action, AllowAddr, Grant, Grants, ReplayRecord, Request, TimeWindow};
    use std::path::Path;

    #[test]
    fn the_printed_file_is_k_s_for_that_uid_only() {
        let master = MasterKey::from_bytes([5; 32]);
        let (a, b) = (ServerUid([0xaa; 16]), ServerUid([0xbb; 16]));
        let text = server_key_file("alice", &master, a).to_toml();
        let back = KeyFile::parse(&text, Path::new("a.key")).unwrap();
        assert_eq!(back.server_uid, Some(a));
        assert_eq!(back.key.as_bytes(), master.server_key(&a).as_bytes());
        assert_ne!(back.key.as_bytes(), master.as_bytes());
        // What the client seals for A opens with A's file, not with B's.
        let now = 1_700_000_000;
        let req = Request {
            action: Action::Open,
            timestamp: now,
            duration_secs: 0,
            allow: AllowAddr::Source,
            server: a.server_id(),
            grants: Grants::new(&[Grant::tcp(22).unwrap()]).unwrap(),
        };
        let d = spa_proto::seal_v2(
            &master.server_key(&a).derive(),
            &req,
            &mut rand::rngs::OsRng,
        );
        let at_a = spa_proto::ServerKey::from_bytes(*back.key.as_bytes()).derive();
        let at_b = spa_proto::ServerKey::from_bytes(*master.server_key(&b).as_bytes()).derive();
        let mut rec = ReplayRecord::new(TimeWindow::default(), 16);
        let e = epoch_of(now);
        assert!(spa_proto::verify_v2(&d, |_| Some((&at_a, e)), &a, now, &mut rec).is_ok());
        let mut rec = ReplayRecord::new(TimeWindow::default(), 16);
        assert_eq!(
            spa_proto::verify_v2(&d, |_| Some((&at_b, e)), &b, now, &mut rec),
            Err(spa_proto::Reject::AuthFailed)
        );
    }
}
