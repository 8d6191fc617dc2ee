//! Protocol v2 (docs/protocol.md §10): the v1 datagram with two changes.
//!
//! - **Per-server keys.** The server stores `K_s = HKDF(master, "spa v2
//!   server key" ‖ server uid)`, never the master: one master on the client
//!   serves many servers, a leaked key file opens only the server it came
//!   from, and two servers with the same name (a default host name, an HA
//!   pair) do not accept each other's datagrams.
//! - **A rotating key-id.** The id on the wire is
//!   `HMAC(id key, "spa v2 id\0" ‖ epoch)[..8]` with one-minute epochs, so an
//!   observer links a key's datagrams only within a minute or two, and an id
//!   seen on the wire is worthless for a forgery flood once its epoch is past.
//!   The replay record and the logs use the *stable id*, which never travels.
//!
//! Everything else (length, header layout, plaintext, AEAD, window, replay
//! rules) is v1's, so the kernel filter and the replay record are shared.
//! Pure like the rest of the crate: the time comes in as Unix seconds.

use crate::aead::AeadKey;
use crate::error::Reject;
use crate::kdf::{KeyId, ServerId, KEY_ID_LEN, MASTER_KEY_LEN, SERVER_ID_LEN};
use crate::replay::ReplayRecord;
use crate::wire::{
    parse_header_of, seal_parts, Opened, Request, DATAGRAM_LEN, NONCE_LEN, RANDOM_LEN,
};
use crate::MasterKey;
use ring::{hkdf, hmac};
use std::fmt;

pub mod ids;
pub use ids::IdMap;

/// The version byte of a v2 datagram.
pub const VERSION_V2: u8 = 2;
/// Length of one id epoch: the wire id changes every minute.
pub const EPOCH_SECS: u64 = 60;
/// Length of a server uid.
pub const SERVER_UID_LEN: usize = 16;
/// Length of a per-server key.
pub const SERVER_KEY_LEN: usize = 32;

const HKDF_SALT: &[u8] = b"spa v2 hkdf salt";
const INFO_SERVER_KEY: &[u8] = b"spa v2 server key";
const INFO_AEAD: &[u8] = b"spa v2 aead key";
const INFO_ID_KEY: &[u8] = b"spa v2 id key";
const INFO_STABLE_ID: &[u8] = b"spa v2 key id";
const ID_LABEL: &[u8] = b"spa v2 id\0";

/// The epoch a Unix time falls in.
pub fn epoch_of(unix_secs: u64) -> u64 {
    unix_secs / EPOCH_SECS
}

/// A server's random 16-byte identity, created once at install. It enters the
/// key derivation, so it is what makes a key file belong to one server; it is
/// not secret (the client profile records it, `check-config` prints it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerUid(pub [u8; SERVER_UID_LEN]);

impl ServerUid {
    /// A fresh uid from a CSPRNG.
    pub fn generate<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        let mut b = [0u8; SERVER_UID_LEN];
        rng.fill_bytes(&mut b);
        ServerUid(b)
    }

    /// The value carried in the plaintext's 16-byte server id field.
    pub fn server_id(&self) -> ServerId {
        const _: () = assert!(SERVER_UID_LEN == SERVER_ID_LEN);
        ServerId(self.0)
    }
}

impl fmt::Display for ServerUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ServerUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUid({self})")
    }
}

impl std::str::FromStr for ServerUid {
    type Err = &'static str;
    /// Exactly 32 hex digits, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ERR: &str = "a server uid is 32 hex digits";
        let s = s.trim().as_bytes();
        if s.len() != SERVER_UID_LEN * 2 || !s.iter().all(u8::is_ascii_hexdigit) {
            return Err(ERR);
        }
        let mut out = [0u8; SERVER_UID_LEN];
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let hex = std::str::from_utf8(pair).map_err(|_| ERR)?;
            *o = u8::from_str_radix(hex, 16).map_err(|_| ERR)?;
        }
        Ok(ServerUid(out))
    }
}

/// `K_s`: what a v2 server stores for one client. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey([u8; SERVER_KEY_LEN]);

impl ServerKey {
    pub fn from_bytes(bytes: [u8; SERVER_KEY_LEN]) -> Self {
        ServerKey(bytes)
    }

    /// Only the key file writer needs the raw bytes back.
    pub fn as_bytes(&self) -> &[u8; SERVER_KEY_LEN] {
        &self.0
    }

    /// Derives the v2 subkeys once, so the hot path runs no HKDF.
    pub fn derive(&self) -> KeySetV2 {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&self.0);
        let mut aead = [0u8; 32];
        let mut id_key = [0u8; 32];
        let mut stable = [0u8; KEY_ID_LEN];
        expand(&prk, &[INFO_AEAD], &mut aead);
        expand(&prk, &[INFO_ID_KEY], &mut id_key);
        expand(&prk, &[INFO_STABLE_ID], &mut stable);
        let keys = KeySetV2 {
            stable_id: KeyId(stable),
            aead: AeadKey::new(aead),
            id_key: hmac::Key::new(hmac::HMAC_SHA256, &id_key),
        };
        aead = [0; 32];
        id_key = [0; 32];
        std::hint::black_box((&aead, &id_key));
        keys
    }
}

impl Drop for ServerKey {
    fn drop(&mut self) {
        self.0 = [0u8; SERVER_KEY_LEN];
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

impl MasterKey {
    /// `K_s = HKDF-Expand(HKDF-Extract("spa v2 hkdf salt", master),
    /// "spa v2 server key" ‖ uid, 32)`: the key one server stores for this
    /// master. Different uids give unrelated keys.
    pub fn server_key(&self, uid: &ServerUid) -> ServerKey {
        let master: &[u8; MASTER_KEY_LEN] = self.as_bytes();
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(master);
        let mut out = [0u8; SERVER_KEY_LEN];
        expand(&prk, &[INFO_SERVER_KEY, &uid.0], &mut out);
        ServerKey(out)
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand with `info` the concatenation of `info`'s parts.
fn expand(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) {
    // Lengths are constants far below HKDF's 255*32 limit: cannot fail.
    #[allow(clippy::expect_used)]
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output length is a small constant");
}

/// The v2 subkeys of one server key.
pub struct KeySetV2 {
    stable_id: KeyId,
    aead: AeadKey,
    id_key: hmac::Key,
}

impl KeySetV2 {
    /// The id that names this key in the replay record and the logs. It
    /// never travels, so it links nothing on the wire.
    pub fn stable_id(&self) -> KeyId {
        self.stable_id
    }

    /// The id on the wire during `epoch`.
    pub fn wire_id(&self, epoch: u64) -> KeyId {
        let mut ctx = hmac::Context::with_key(&self.id_key);
        ctx.update(ID_LABEL);
        ctx.update(&epoch.to_be_bytes());
        let tag = ctx.sign();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&tag.as_ref()[..KEY_ID_LEN]);
        KeyId(id)
    }
}

impl fmt::Debug for KeySetV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySetV2({})", self.stable_id)
    }
}

/// Seals `req` as a v2 datagram; the wire id is that of the epoch of
/// `req.timestamp`. Nonce and random bytes come from `rng` (a CSPRNG).
pub fn seal_v2<R: rand::RngCore + rand::CryptoRng>(
    keys: &KeySetV2,
    req: &Request,
    rng: &mut R,
) -> [u8; DATAGRAM_LEN] {
    let (nonce, random) = crate::wire::draw(rng);
    seal_v2_with(keys, req, &nonce, &random)
}

/// Deterministic core of [`seal_v2`], for tests and test vectors.
pub fn seal_v2_with(
    keys: &KeySetV2,
    req: &Request,
    nonce: &[u8; NONCE_LEN],
    random: &[u8; RANDOM_LEN],
) -> [u8; DATAGRAM_LEN] {
    let id = keys.wire_id(epoch_of(req.timestamp));
    seal_parts(VERSION_V2, &id, &keys.aead, req, nonce, random)
}

/// True when an id of `epoch` may be tried at time `now`: the previous,
/// current or next epoch. Anything else is refused as an unknown id before
/// any AEAD work, whatever the lookup found.
pub fn epoch_is_live(epoch: u64, now: u64) -> bool {
    let current = epoch_of(now);
    epoch.saturating_add(1) >= current && epoch <= current.saturating_add(1)
}

/// The v2 receive-side check, in the order of docs/protocol.md §10.5:
/// length, magic, version, wire id (the lookup returns the key and the epoch
/// the id belongs to; an epoch that is not live is `UnknownKeyId`), AEAD,
/// plaintext, server uid, window and replay (keyed on the stable id), and
/// `admit` last for a new datagram. `Opened::key_id` is the stable id.
pub fn verify_v2_admit<'k>(
    datagram: &[u8],
    lookup: impl FnOnce(&KeyId) -> Option<(&'k KeySetV2, u64)>,
    server: &ServerUid,
    now: u64,
    replay: &mut ReplayRecord,
    admit: impl FnOnce(&KeyId) -> Result<(), Reject>,
) -> Result<Opened, Reject> {
    let opened = open_v2(datagram, lookup, server, now)?;
    replay.check_admit_insert(
        &opened.key_id,
        &opened.nonce,
        opened.request.timestamp,
        now,
        || admit(&opened.key_id),
    )?;
    Ok(opened)
}

/// Steps 1–7 of §10.5 (everything but the window and the replay record,
/// which the caller keeps: the server's is durable). `Opened::key_id` is
/// the stable id.
pub fn open_v2<'k>(
    datagram: &[u8],
    lookup: impl FnOnce(&KeyId) -> Option<(&'k KeySetV2, u64)>,
    server: &ServerUid,
    now: u64,
) -> Result<Opened, Reject> {
    let header = parse_header_of(datagram, VERSION_V2)?;
    let keys = match lookup(&header.key_id()) {
        Some((keys, epoch)) if epoch_is_live(epoch, now) => keys,
        _ => return Err(Reject::UnknownKeyId),
    };
    let mut opened = header.open_with(&keys.aead)?;
    opened.key_id = keys.stable_id;
    if opened.request.server != server.server_id() {
        return Err(Reject::WrongServer);
    }
    Ok(opened)
}

/// [`verify_v2_admit`] with no admission policy.
pub fn verify_v2<'k>(
    datagram: &[u8],
    lookup: impl FnOnce(&KeyId) -> Option<(&'k KeySetV2, u64)>,
    server: &ServerUid,
    now: u64,
    replay: &mut ReplayRecord,
) -> Result<Opened, Reject> {
    verify_v2_admit(datagram, lookup, server, now, replay, |_| Ok(()))
}

#[cfg(test)]
mod tests;
