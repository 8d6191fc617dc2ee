//! Key material: one 32-byte master key per client, and the purpose-separated
//! subkeys HKDF derives from it.
//!
//! Why subkeys: the AEAD key, the public key-id and the knock-sequence key
//! must never be the same bytes, so that publishing the key-id (it travels in
//! clear) or a knock sequence (it is visible on the wire) says nothing about
//! the encryption key. HKDF-SHA256 from `ring` (RFC 5869) with a fixed salt and one
//! `info` label per purpose gives that separation.

use crate::aead::AeadKey;
use ring::{digest, hkdf, hmac};
use std::fmt;

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;
/// Length of the cleartext key-id in bytes.
pub const KEY_ID_LEN: usize = 8;
/// Length of the server id tag carried inside the ciphertext.
pub const SERVER_ID_LEN: usize = 16;

const HKDF_SALT: &[u8] = b"spa v1 hkdf salt";
const INFO_AEAD: &[u8] = b"spa v1 aead key";
const INFO_KEY_ID: &[u8] = b"spa v1 key id";
const INFO_KNOCK: &[u8] = b"spa v1 knock key";
const SERVER_ID_LABEL: &[u8] = b"spa v1 server id\0";

/// A client's secret. `Debug` never prints the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl MasterKey {
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        MasterKey(bytes)
    }

    /// Only the key file writer needs the raw bytes back.
    pub fn as_bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    /// A fresh key from a cryptographic RNG.
    pub fn generate<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        let mut k = [0u8; MASTER_KEY_LEN];
        rng.fill_bytes(&mut k);
        MasterKey(k)
    }

    /// Derives every subkey once, so the hot path never runs HKDF.
    pub fn derive(&self) -> KeySet {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&self.0);
        let mut aead = [0u8; 32];
        let mut id = [0u8; KEY_ID_LEN];
        let mut knock = [0u8; 32];
        expand(&prk, INFO_AEAD, &mut aead);
        expand(&prk, INFO_KEY_ID, &mut id);
        expand(&prk, INFO_KNOCK, &mut knock);
        let keys = KeySet {
            key_id: KeyId(id),
            aead: AeadKey::new(aead),
            knock: hmac::Key::new(hmac::HMAC_SHA256, &knock),
        };
        aead = [0; 32];
        knock = [0; 32];
        std::hint::black_box((&aead, &knock));
        keys
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        // Best effort: the optimiser may keep copies, but do not leave the
        // obvious one behind.
        self.0 = [0u8; MASTER_KEY_LEN];
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8], out: &mut [u8]) {
    let infos = [info];
    // Lengths here are constants far below HKDF's 255*32 byte limit, so
    // neither call can fail; a failure would be a bug in this file.
    #[allow(clippy::expect_used)]
    prk.expand(&infos, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output length is a small constant");
}

/// Public, cleartext name of a key: lets the server find the one key to try
/// in O(1) instead of trial-decrypting with every key (as fwknop does).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl std::str::FromStr for KeyId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != KEY_ID_LEN * 2 {
            return Err("a key-id is 16 hex digits");
        }
        let mut out = [0u8; KEY_ID_LEN];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or("a key-id is 16 hex digits")?;
            let lo = hex_val(pair[1]).ok_or("a key-id is 16 hex digits")?;
            out[i] = hi << 4 | lo;
        }
        Ok(KeyId(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The subkeys of one master key, ready for the hot path.
pub struct KeySet {
    key_id: KeyId,
    pub(crate) aead: AeadKey,
    pub(crate) knock: hmac::Key,
}

impl KeySet {
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySet({})", self.key_id)
    }
}

/// Binds a datagram to one server. Derived from the server's configured name
/// (any string, e.g. its host name), so both sides can agree on it without
/// exchanging bytes. Travels only inside the ciphertext.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerId(pub [u8; SERVER_ID_LEN]);

impl ServerId {
    /// SHA-256("spa v1 server id\0" || name), first 16 bytes.
    pub fn from_name(name: &str) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(SERVER_ID_LABEL);
        ctx.update(name.as_bytes());
        let d = ctx.finish();
        let mut out = [0u8; SERVER_ID_LEN];
        out.copy_from_slice(&d.as_ref()[..SERVER_ID_LEN]);
        ServerId(out)
    }
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_are_separated_and_stable() {
        let k = MasterKey::from_bytes([7u8; 32]);
        let a = k.derive();
        let b = k.derive();
        assert_eq!(a.key_id(), b.key_id());
        let other = MasterKey::from_bytes([8u8; 32]).derive();
        assert_ne!(a.key_id(), other.key_id());
    }

    #[test]
    fn key_id_hex_round_trip() {
        let id = MasterKey::from_bytes([1u8; 32]).derive().key_id();
        let s = id.to_string();
        assert_eq!(s.len(), 16);
        assert_eq!(s.parse::<KeyId>(), Ok(id));
        assert!("zz".parse::<KeyId>().is_err());
        assert!("0123456789abcdeg".parse::<KeyId>().is_err());
    }

    #[test]
    fn debug_redacts_key() {
        let k = MasterKey::from_bytes([0x41u8; 32]);
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn server_ids_differ() {
        assert_ne!(ServerId::from_name("a"), ServerId::from_name("b"));
        assert_eq!(ServerId::from_name("a"), ServerId::from_name("a"));
    }
}
