//! Protocol v2 at the server (docs/protocol.md §10): the server uid, each
//! key's protocols and v2 key, and the judging of a v2 datagram up to the
//! point where it joins v1's path (replay record, token bucket, policy).
//!
//! Why a module of its own: v1 stays untouched, and everything v2 adds to
//! the configuration lives in one field ([`V2Config`]) rather than in every
//! key's table.

use spa_proto::v2::{open_v2, IdMap, KeySetV2, ServerUid};
use spa_proto::{KeyId, MasterKey, Opened, Reject, ServerKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The server uid's file in the state directory: 32 hex digits and a newline.
pub const UID_FILE: &str = "server_uid";

/// Why the server uid could not be read, created or attached. Each names
/// the file and what to do; typed so the daemon's error keeps the cause.
#[derive(Debug)]
pub enum UidError {
    /// The uid file holds something else than a uid.
    NotAUid { path: PathBuf },
    /// The uid file is larger than any uid file.
    TooLarge { path: PathBuf },
    /// The uid file exists and cannot be read.
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The uid file was missing and could not be written.
    Create {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Key `name`'s server key file was made for another server's uid.
    OtherServer {
        name: String,
        file: PathBuf,
        made_for: ServerUid,
        uid: ServerUid,
    },
}

impl std::fmt::Display for UidError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UidError::NotAUid { path } => write!(
                f,
                "{}: not a server uid (32 hex digits); restore it from a backup (clients' \
                 server key files are made for it) or remove it to make a new one",
                path.display()
            ),
            UidError::TooLarge { path } => {
                write!(f, "{}: too large for a server uid", path.display())
            }
            UidError::Read { path, error } => {
                write!(f, "{}: cannot read: {error}", path.display())
            }
            UidError::Create { path, error } => write!(
                f,
                "{}: cannot create the server uid: {error}",
                path.display()
            ),
            UidError::OtherServer {
                name,
                file,
                made_for,
                uid,
            } => write!(
                f,
                "key `{name}`: {} was made for server uid {made_for}, this server's is \
                 {uid}: ask its owner for `spa-client server-key --server-uid {uid}`",
                file.display()
            ),
        }
    }
}

impl std::error::Error for UidError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UidError::Read { error, .. } | UidError::Create { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Which versions one key accepts (`[[key]] protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub v1: bool,
    pub v2: bool,
}

impl Protocols {
    /// `["v1"]`, `["v2"]` or both; anything else names what is allowed.
    pub fn parse(list: &[String]) -> Result<Protocols, ProtocolsError> {
        let mut p = Protocols {
            v1: false,
            v2: false,
        };
        for s in list {
            match s.trim() {
                "v1" => p.v1 = true,
                "v2" => p.v2 = true,
                other => {
                    return Err(ProtocolsError::Unknown {
                        entry: other.to_owned(),
                    })
                }
            }
        }
        if !(p.v1 || p.v2) {
            return Err(ProtocolsError::Empty);
        }
        Ok(p)
    }

    pub fn names(&self) -> &'static str {
        match (self.v1, self.v2) {
            (true, true) => "v1, v2",
            (false, true) => "v2",
            _ => "v1",
        }
    }
}

/// Why `[[key]] protocols` was refused; config/ puts `file:line:
/// key.protocols:` in front of the text made here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolsError {
    /// An entry that is neither "v1" nor "v2", trimmed as written.
    Unknown { entry: String },
    /// `protocols = []`: the key could never be used.
    Empty,
}

impl std::fmt::Display for ProtocolsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolsError::Unknown { entry } => {
                write!(f, "{entry:?} is not a protocol: use \"v1\", \"v2\" or both")
            }
            ProtocolsError::Empty => f.write_str("must name at least one of \"v1\", \"v2\""),
        }
    }
}

impl std::error::Error for ProtocolsError {}

/// Where a key's v2 key comes from.
#[derive(Clone)]
pub enum V2Source {
    /// A master key file with "v2" in its protocols (a rollout): K_s is
    /// derived here from the master and this server's uid.
    Master(Arc<MasterKey>),
    /// A server key file (`spa-client server-key`): K_s itself, for `uid`.
    ServerKey { key: Arc<ServerKey>, uid: ServerUid },
}

/// Everything v2 adds to a configuration; `keys[i]` belongs to
/// `Config::keys[i]`.
#[derive(Clone, Default)]
pub struct V2Config {
    /// `None` until the uid file exists (the daemon creates it at its first
    /// start, then calls [`V2Config::attach`]).
    pub uid: Option<ServerUid>,
    pub uid_file: PathBuf,
    pub keys: Vec<V2Key>,
}

#[derive(Clone)]
pub struct V2Key {
    pub protocols: Protocols,
    pub source: Option<V2Source>,
    /// Derived by [`V2Config::attach`].
    pub set: Option<Arc<KeySetV2>>,
}

impl std::fmt::Debug for V2Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V2Config")
            .field("uid", &self.uid)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl V2Config {
    /// Derives every v2 key for `uid`. A server key file made for another
    /// uid is refused, naming both uids: it was made for another server.
    pub fn attach(&mut self, uid: ServerUid, names: &[(&str, &Path)]) -> Result<(), UidError> {
        for (k, (name, file)) in self.keys.iter_mut().zip(names) {
            k.set = match &k.source {
                None => None,
                Some(V2Source::Master(m)) => Some(Arc::new(m.server_key(&uid).derive())),
                Some(V2Source::ServerKey { key, uid: made_for }) if *made_for == uid => {
                    Some(Arc::new(key.derive()))
                }
                Some(V2Source::ServerKey { uid: made_for, .. }) => {
                    return Err(UidError::OtherServer {
                        name: (*name).to_owned(),
                        file: file.to_path_buf(),
                        made_for: *made_for,
                        uid,
                    })
                }
            };
        }
        self.uid = Some(uid);
        Ok(())
    }

    /// The v2 key set of key `i`, if it speaks v2 and is attached.
    pub fn set(&self, i: usize) -> Option<&KeySetV2> {
        self.keys.get(i).and_then(|k| k.set.as_deref())
    }

    pub fn any_v2(&self) -> bool {
        self.keys.iter().any(|k| k.protocols.v2)
    }
}

/// Reads the uid file; `Ok(None)` when there is none yet.
pub fn read_uid(path: &Path) -> Result<Option<ServerUid>, UidError> {
    let path_buf = || path.to_path_buf();
    match crate::safefile::read_capped(path, 256) {
        Ok(crate::safefile::Contents::Missing) => Ok(None),
        Ok(crate::safefile::Contents::Bytes(b)) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| UidError::NotAUid { path: path_buf() }),
        Ok(crate::safefile::Contents::TooLarge) => Err(UidError::TooLarge { path: path_buf() }),
        Err(error) => Err(UidError::Read {
            path: path_buf(),
            error,
        }),
    }
}

/// The uid, created (random, written durably, mode 0644: it is public) when
/// the file is missing. Called by the daemon after the replay state is read,
/// so a new state directory still counts as empty for it.
pub fn load_or_create_uid(path: &Path) -> Result<(ServerUid, bool), UidError> {
    if let Some(uid) = read_uid(path)? {
        return Ok((uid, false));
    }
    let uid = ServerUid::generate(&mut rand::rngs::OsRng);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        f.write_all(format!("{uid}\n").as_bytes())?;
        f.sync_all()?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|error| UidError::Create {
        path: path.to_path_buf(),
        error,
    })?;
    Ok((uid, true))
}

/// Steps 1–7 of a v2 datagram (§10.5): the key index and the opened
/// datagram (its `key_id` the stable id), through `ids`, one probe.
pub fn open(
    payload: &[u8],
    v2: &V2Config,
    ids: &mut IdMap,
    now: u64,
) -> Result<(usize, Opened), Reject> {
    let uid = v2
        .uid
        .ok_or(Reject::UnknownVersion(spa_proto::VERSION_V2))?;
    let id = payload
        .get(5..13)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(KeyId);
    let found = id.and_then(|id| ids.lookup(&id, now, &v2.keys, |k| k.set.as_deref()));
    let opened = open_v2(
        payload,
        |_| found.and_then(|(i, e)| v2.set(i).map(|s| (s, e))),
        &uid,
        now,
    )?;
    let (i, _) = found.ok_or(Reject::UnknownKeyId)?;
    Ok((i, opened))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{Config, KeyPolicy};
    use crate::state::DurableReplay;
    use crate::verdict::{judge, JudgeState, Verdict};
    use spa_proto::v2::{epoch_of, seal_v2, EPOCH_SECS};
    use spa_proto::{
        Action, AllowAddr, Grant, Grants, ReplayRecord, Request, ServerId, TimeWindow,
    };
    use std::net::{IpAddr, Ipv4Addr};

    const NOW: u64 = 1_700_000_000;
    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const UID: ServerUid = ServerUid([0xaa; 16]);

    fn master() -> MasterKey {
        MasterKey::from_bytes([0x11; 32])
    }

    /// One key, alice, for tcp/22: a master key file with `protocols`.
    fn config(protocols: Protocols) -> Config {
        let policy = KeyPolicy::for_tests("alice", 0x11, &[Grant::tcp(22).unwrap()], 60);
        let mut cfg = Config::for_tests(vec![policy], 30);
        if !protocols.v1 {
            cfg.by_id.clear();
        }
        cfg.v2.keys.push(V2Key {
            protocols,
            source: protocols.v2.then(|| V2Source::Master(Arc::new(master()))),
            set: None,
        });
        cfg.v2
            .attach(UID, &[("alice", Path::new("/etc/spa/alice.key"))])
            .unwrap();
        cfg
    }

    fn request(ts: u64, server: ServerId) -> Request {
        Request {
            action: Action::Open,
            timestamp: ts,
            duration_secs: 0,
            allow: AllowAddr::Source,
            server,
            grants: Grants::new(&[Grant::tcp(22).unwrap()]).unwrap(),
        }
    }

    fn v2_datagram(uid: ServerUid, ts: u64) -> [u8; spa_proto::DATAGRAM_LEN] {
        let k = master().server_key(&uid).derive();
        seal_v2(&k, &request(ts, uid.server_id()), &mut rand::rngs::OsRng)
    }

    fn state() -> JudgeState {
        JudgeState::new(DurableReplay::in_memory(ReplayRecord::new(
            TimeWindow::default(),
            64,
        )))
    }

    fn run(d: &[u8], now: u64, cfg: &Config, st: &mut JudgeState) -> Verdict {
        judge(d, SRC, now, cfg, st, |_| false).unwrap()
    }

    #[test]
    fn a_v2_datagram_opens_once_keyed_on_the_stable_id() {
        let both = Protocols { v1: true, v2: true };
        let cfg = config(both);
        let mut st = state();
        let d = v2_datagram(UID, NOW);
        match run(&d, NOW, &cfg, &mut st) {
            Verdict::Accept(dec) => assert_eq!(dec.key_name, "alice"),
            other => panic!("{other:?}"),
        }
        let stable = master().server_key(&UID).derive().stable_id();
        assert!(st.replay.record().entries().any(|s| s.key_id == stable));
        assert_eq!(
            run(&d, NOW, &cfg, &mut st),
            Verdict::Reject(Reject::Replayed)
        );
        // v1 still works for the same key.
        let v1 = spa_proto::seal(
            &master().derive(),
            &request(NOW, ServerId::from_name("gw")),
            &mut rand::rngs::OsRng,
        );
        assert!(matches!(run(&v1, NOW, &cfg, &mut st), Verdict::Accept(_)));
    }

    #[test]
    fn a_stale_id_is_unknown_and_v1_off_means_v1_unknown() {
        let cfg = config(Protocols {
            v1: false,
            v2: true,
        });
        let mut st = state();
        // Captured two minutes ago: unknown now, before any AEAD work.
        let old = v2_datagram(UID, NOW - 2 * EPOCH_SECS);
        assert_eq!(
            run(&old, NOW, &cfg, &mut st),
            Verdict::Reject(Reject::UnknownKeyId)
        );
        // One minute either way is still known (the clock skew the window allows).
        let prev = v2_datagram(UID, NOW - 25);
        assert_eq!(epoch_of(NOW - 25) + 1, epoch_of(NOW));
        assert!(matches!(run(&prev, NOW, &cfg, &mut st), Verdict::Accept(_)));
        let v1 = spa_proto::seal(
            &master().derive(),
            &request(NOW, ServerId::from_name("gw")),
            &mut rand::rngs::OsRng,
        );
        assert_eq!(
            run(&v1, NOW, &cfg, &mut st),
            Verdict::Reject(Reject::UnknownKeyId)
        );
    }

    #[test]
    fn a_datagram_for_another_uid_or_a_v1_only_key_is_unknown() {
        let mut st = state();
        let cfg = config(Protocols {
            v1: false,
            v2: true,
        });
        let other = v2_datagram(ServerUid([0xbb; 16]), NOW);
        assert_eq!(
            run(&other, NOW, &cfg, &mut st),
            Verdict::Reject(Reject::UnknownKeyId)
        );
        let cfg = config(Protocols {
            v1: true,
            v2: false,
        });
        assert_eq!(
            run(&v2_datagram(UID, NOW), NOW, &cfg, &mut st),
            Verdict::Reject(Reject::UnknownKeyId)
        );
    }

    #[test]
    fn a_server_key_file_for_another_uid_is_refused_at_attach() {
        let mut v = V2Config::default();
        v.keys.push(V2Key {
            protocols: Protocols {
                v1: false,
                v2: true,
            },
            source: Some(V2Source::ServerKey {
                key: Arc::new(master().server_key(&UID)),
                uid: UID,
            }),
            set: None,
        });
        let e = v
            .attach(ServerUid([0xbb; 16]), &[("alice", Path::new("/k"))])
            .unwrap_err();
        assert!(matches!(e, UidError::OtherServer { made_for, .. } if made_for == UID));
        let e = e.to_string();
        assert!(
            e.contains("made for server uid aaaa") && e.contains("server-key"),
            "{e}"
        );
        v.attach(UID, &[("alice", Path::new("/k"))]).unwrap();
        assert!(v.set(0).is_some());
    }

    #[test]
    fn protocols_parse() {
        let p = |v: &[&str]| Protocols::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&["v1", "v2"]).unwrap().names(), "v1, v2");
        assert_eq!(
            p(&["v2"]).unwrap(),
            Protocols {
                v1: false,
                v2: true
            }
        );
        assert_eq!(p(&[]), Err(ProtocolsError::Empty));
        assert_eq!(
            p(&["v1", " v3 "]),
            Err(ProtocolsError::Unknown { entry: "v3".into() })
        );
    }

    /// `[[key]] protocols` refusals, byte for byte (config/ prints them
    /// behind `file:line: key.protocols:`).
    #[test]
    fn protocols_messages_are_pinned() {
        let text = |v: &[&str]| {
            Protocols::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(text(&[]), "must name at least one of \"v1\", \"v2\"");
        assert_eq!(
            text(&["v1", " V2 "]),
            "\"V2\" is not a protocol: use \"v1\", \"v2\" or both"
        );
        assert_eq!(
            text(&["v3", "v1"]),
            "\"v3\" is not a protocol: use \"v1\", \"v2\" or both"
        );
        assert_eq!(
            text(&["\"v2\""]),
            "\"\\\"v2\\\"\" is not a protocol: use \"v1\", \"v2\" or both"
        );
    }

    #[test]
    fn uid_file_is_created_once_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join(UID_FILE);
        assert!(matches!(read_uid(&f), Ok(None)));
        let (a, new) = load_or_create_uid(&f).unwrap();
        assert!(new);
        let (b, new) = load_or_create_uid(&f).unwrap();
        assert!(!new);
        assert_eq!(a, b);
        std::fs::write(&f, "nonsense").unwrap();
        let e = read_uid(&f).unwrap_err();
        assert!(matches!(e, UidError::NotAUid { ref path } if path == &f));
        assert_eq!(
            e.to_string(),
            format!(
                "{}: not a server uid (32 hex digits); restore it from a backup (clients' \
                 server key files are made for it) or remove it to make a new one",
                f.display()
            )
        );
        // A directory where the file should be: cannot read, the cause kept.
        let e = read_uid(d.path()).unwrap_err();
        assert!(
            matches!(e, UidError::Read { .. }) && std::error::Error::source(&e).is_some(),
            "{e}"
        );
    }
}
