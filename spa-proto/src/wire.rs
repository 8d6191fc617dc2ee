//! The v1 SPA datagram: one fixed layout, specified byte by byte in
//! docs/protocol.md. Every datagram is [`DATAGRAM_LEN`] bytes whatever it
//! asks for, there is one cipher and one version, and nothing but the header
//! travels unauthenticated.
//!
//! ```text
//! header (cleartext, AEAD associated data)   37 bytes
//!   0..4    magic      8a 53 50 41
//!   4       version    0x01
//!   5..13   key-id     HKDF(master, "spa v1 key id"), 8 bytes
//!   13..37  nonce      XChaCha20 nonce, 24 random bytes
//! ciphertext of the plaintext below          87 bytes
//! Poly1305 tag                               16 bytes
//!
//! plaintext (87 bytes, all integers big-endian)
//!   0       action        1 = open, 2 = close
//!   1       allow kind    0 = source address, 4 = IPv4, 6 = IPv6
//!   2       grant count   1..=8
//!   3..11   timestamp     u64 Unix seconds
//!   11..15  duration      u32 seconds, 0 = the server's default
//!   15..31  server id     SHA-256("spa v1 server id\0" || name)[..16]
//!   31..47  allow addr    IPv4 in 31..35 then zeros, IPv6 in 31..47, or all zero
//!   47..71  grants        8 slots of (protocol u8, port u16); unused slots zero
//!   71..87  random        16 random bytes
//! ```

use crate::aead::AeadKey;
use crate::error::{Malformed, Reject, RequestError};
use crate::grant::{Grant, Proto};
use crate::kdf::{KeyId, KeySet, ServerId, KEY_ID_LEN, SERVER_ID_LEN};
use crate::replay::ReplayRecord;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU16;

/// Identifies a v1 SPA datagram. The first byte is not printable ASCII, so
/// it can never be mistaken for fwknop's base64 text.
pub const MAGIC: [u8; 4] = [0x8a, b'S', b'P', b'A'];
/// The only version this build speaks.
pub const VERSION: u8 = 1;
/// XChaCha20 nonce length: 24 random bytes never repeat in practice.
pub const NONCE_LEN: usize = 24;
/// magic + version + key-id + nonce.
pub const HEADER_LEN: usize = 4 + 1 + KEY_ID_LEN + NONCE_LEN;
/// Most grants one datagram carries.
pub const MAX_GRANTS: usize = 8;
const GRANT_LEN: usize = 3;
pub(crate) const RANDOM_LEN: usize = 16;
const ADDR_LEN: usize = 16;
/// Plaintext size, fixed.
pub const PLAINTEXT_LEN: usize =
    1 + 1 + 1 + 8 + 4 + SERVER_ID_LEN + ADDR_LEN + MAX_GRANTS * GRANT_LEN + RANDOM_LEN;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Every v1 datagram is exactly this long.
pub const DATAGRAM_LEN: usize = HEADER_LEN + PLAINTEXT_LEN + TAG_LEN;

/// What the sender wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Open,
    Close,
}

/// An IP address family: which capture socket, which rule set, which tool.
/// The one such type (the server's capture and iptables backend used to
/// have one each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The family an address is sent in (an IPv4-mapped IPv6 address
    /// travels as IPv4).
    pub fn of(addr: std::net::IpAddr) -> IpFamily {
        match addr.to_canonical() {
            std::net::IpAddr::V4(_) => IpFamily::V4,
            std::net::IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// "IPv4" or "IPv6", for log lines.
    pub fn name(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
}

/// 1..=[`MAX_GRANTS`] grants, stored inline so a request never allocates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    len: u8,
    items: [Grant; MAX_GRANTS],
}

const FILLER: Grant = Grant {
    proto: Proto::Tcp,
    port: NonZeroU16::MIN,
};

impl Grants {
    pub fn new(grants: &[Grant]) -> Result<Self, RequestError> {
        if grants.is_empty() {
            return Err(RequestError::NoGrants);
        }
        if grants.len() > MAX_GRANTS {
            return Err(RequestError::TooManyGrants { got: grants.len() });
        }
        let mut items = [FILLER; MAX_GRANTS];
        items[..grants.len()].copy_from_slice(grants);
        Ok(Grants {
            len: grants.len() as u8,
            items,
        })
    }
    pub fn as_slice(&self) -> &[Grant] {
        &self.items[..self.len as usize]
    }
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Which address the server should allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowAddr {
    /// The source address of the datagram as the server sees it. Works
    /// through NAT without the client knowing its public address; the cost is
    /// that an on-path attacker who rewrites the source could redirect the
    /// grant (but not replay it or open anything the key may not open).
    Source,
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// A decoded, authenticated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub action: Action,
    /// Unix seconds at the sender.
    pub timestamp: u64,
    /// Seconds; 0 asks for the server's default. The server caps it by policy.
    pub duration_secs: u32,
    pub allow: AllowAddr,
    pub server: ServerId,
    pub grants: Grants,
}

/// A datagram that passed every check of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub key_id: KeyId,
    pub nonce: [u8; NONCE_LEN],
    pub request: Request,
}

/// The cleartext header of a datagram of the right length: the boundary where
/// network bytes become typed values.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    key_id: KeyId,
    nonce: [u8; NONCE_LEN],
    aad: &'a [u8; HEADER_LEN],
    body: &'a [u8; PLAINTEXT_LEN + TAG_LEN],
}

/// Reads fixed-size fields off a fixed-size buffer. The layout constants
/// above guarantee every read is in bounds; a short read is reported as a
/// wrong length rather than trusted.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
        let (head, tail) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(Reject::WrongLength { got: N })?;
        self.0 = tail;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, Reject> {
        Ok(self.take::<1>()?[0])
    }
}

/// Cleartext checks only: length, magic, version; yields the key-id.
pub fn parse_header(datagram: &[u8]) -> Result<Header<'_>, Reject> {
    parse_header_of(datagram, VERSION)
}

/// The version byte of a datagram of the right length and magic, so a server
/// can dispatch to the version's own key map before any other work. `None`
/// when the length or magic is wrong (the version's own parse then says which).
pub fn version_of(datagram: &[u8]) -> Option<u8> {
    match datagram {
        [m0, m1, m2, m3, v, ..]
            if datagram.len() == DATAGRAM_LEN && [*m0, *m1, *m2, *m3] == MAGIC =>
        {
            Some(*v)
        }
        _ => None,
    }
}

/// [`parse_header`] for one version: v1 and v2 share the 37-byte header
/// layout (magic, version, 8-byte id, nonce) and differ only in what the id
/// means and which key opens the body.
pub(crate) fn parse_header_of(datagram: &[u8], expected: u8) -> Result<Header<'_>, Reject> {
    let whole: &[u8; DATAGRAM_LEN] = datagram.try_into().map_err(|_| Reject::WrongLength {
        got: datagram.len(),
    })?;
    let (aad, body) = whole.split_at(HEADER_LEN);
    let aad: &[u8; HEADER_LEN] = aad.try_into().map_err(|_| Reject::WrongLength {
        got: datagram.len(),
    })?;
    let body: &[u8; PLAINTEXT_LEN + TAG_LEN] =
        body.try_into().map_err(|_| Reject::WrongLength {
            got: datagram.len(),
        })?;
    let mut r = Reader(aad);
    if r.take::<4>()? != MAGIC {
        return Err(Reject::BadMagic);
    }
    let version = r.u8()?;
    if version != expected {
        return Err(Reject::UnknownVersion(version));
    }
    let key_id = KeyId(r.take::<KEY_ID_LEN>()?);
    let nonce = r.take::<NONCE_LEN>()?;
    Ok(Header {
        key_id,
        nonce,
        aad,
        body,
    })
}

impl Header<'_> {
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// One AEAD open, then the plaintext rules. Does not look at time,
    /// server id or replay: see [`verify`].
    pub fn open(&self, keys: &KeySet) -> Result<Opened, Reject> {
        self.open_with(&keys.aead)
    }

    /// The AEAD open and plaintext rules with a given AEAD key; the returned
    /// `key_id` is the header's id (v2 replaces it by the stable id).
    pub(crate) fn open_with(&self, aead: &AeadKey) -> Result<Opened, Reject> {
        let (ct, tag) = self.body.split_at(PLAINTEXT_LEN);
        let mut pt = [0u8; PLAINTEXT_LEN];
        pt.copy_from_slice(ct);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Reject::AuthFailed)?;
        aead.open(&self.nonce, self.aad, &mut pt, tag)
            .map_err(|_| Reject::AuthFailed)?;
        let request = decode_plaintext(&pt).map_err(Reject::Malformed)?;
        Ok(Opened {
            key_id: self.key_id,
            nonce: self.nonce,
            request,
        })
    }
}

fn decode_plaintext(pt: &[u8; PLAINTEXT_LEN]) -> Result<Request, Malformed> {
    // A short read cannot happen on a PLAINTEXT_LEN buffer; map it to
    // padding rather than panic should the layout ever be edited wrongly.
    let mut r = Reader(pt);
    let bad = |_| Malformed::NonZeroPadding;
    let action = match r.u8().map_err(bad)? {
        1 => Action::Open,
        2 => Action::Close,
        v => return Err(Malformed::Action(v)),
    };
    let allow_kind = r.u8().map_err(bad)?;
    let count = r.u8().map_err(bad)?;
    if count == 0 || count as usize > MAX_GRANTS {
        return Err(Malformed::GrantCount(count));
    }
    let timestamp = u64::from_be_bytes(r.take::<8>().map_err(bad)?);
    let duration_secs = u32::from_be_bytes(r.take::<4>().map_err(bad)?);
    let server = ServerId(r.take::<SERVER_ID_LEN>().map_err(bad)?);
    let addr = r.take::<ADDR_LEN>().map_err(bad)?;
    let allow = match allow_kind {
        0 if addr == [0; ADDR_LEN] => AllowAddr::Source,
        4 if addr[4..] == [0; ADDR_LEN - 4] => {
            AllowAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
        }
        6 => AllowAddr::V6(Ipv6Addr::from(addr)),
        0 | 4 => return Err(Malformed::NonZeroPadding),
        k => return Err(Malformed::AllowKind(k)),
    };
    let mut items = [FILLER; MAX_GRANTS];
    for (i, item) in items.iter_mut().enumerate() {
        let proto = r.u8().map_err(bad)?;
        let port = u16::from_be_bytes(r.take::<2>().map_err(bad)?);
        if i >= count as usize {
            if proto != 0 || port != 0 {
                return Err(Malformed::NonZeroPadding);
            }
            continue;
        }
        let proto = match proto {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            p => return Err(Malformed::Protocol(p)),
        };
        let port = NonZeroU16::new(port).ok_or(Malformed::PortZero)?;
        *item = Grant { proto, port };
    }
    // The 16 random bytes carry no meaning; they only need to be read past.
    let _random = r.take::<RANDOM_LEN>().map_err(bad)?;
    Ok(Request {
        action,
        timestamp,
        duration_secs,
        allow,
        server,
        grants: Grants { len: count, items },
    })
}

fn encode_plaintext(req: &Request, random: &[u8; RANDOM_LEN]) -> [u8; PLAINTEXT_LEN] {
    let mut pt = [0u8; PLAINTEXT_LEN];
    let (action, rest) = pt.split_at_mut(1);
    let (allow_kind, rest) = rest.split_at_mut(1);
    let (count, rest) = rest.split_at_mut(1);
    let (timestamp, rest) = rest.split_at_mut(8);
    let (duration, rest) = rest.split_at_mut(4);
    let (server, rest) = rest.split_at_mut(SERVER_ID_LEN);
    let (addr, rest) = rest.split_at_mut(ADDR_LEN);
    let (grants, rand_out) = rest.split_at_mut(MAX_GRANTS * GRANT_LEN);
    action[0] = match req.action {
        Action::Open => 1,
        Action::Close => 2,
    };
    match req.allow {
        AllowAddr::Source => allow_kind[0] = 0,
        AllowAddr::V4(a) => {
            allow_kind[0] = 4;
            addr[..4].copy_from_slice(&a.octets());
        }
        AllowAddr::V6(a) => {
            allow_kind[0] = 6;
            addr.copy_from_slice(&a.octets());
        }
    }
    count[0] = req.grants.len;
    timestamp.copy_from_slice(&req.timestamp.to_be_bytes());
    duration.copy_from_slice(&req.duration_secs.to_be_bytes());
    server.copy_from_slice(&req.server.0);
    for (slot, g) in grants
        .chunks_exact_mut(GRANT_LEN)
        .zip(req.grants.as_slice())
    {
        slot[0] = g.proto.number();
        slot[1..].copy_from_slice(&g.port.get().to_be_bytes());
    }
    rand_out.copy_from_slice(random);
    pt
}

/// Encrypts and authenticates one request. The nonce and the random field
/// come from `rng`, which must be a CSPRNG.
pub fn seal<R: rand::RngCore + rand::CryptoRng>(
    keys: &KeySet,
    req: &Request,
    rng: &mut R,
) -> [u8; DATAGRAM_LEN] {
    let (nonce, random) = draw(rng);
    seal_with(keys, req, &nonce, &random)
}

/// The fresh nonce and random field of one datagram, in this order, for
/// both versions' `seal`: one place draws what the layout needs.
pub(crate) fn draw<R: rand::RngCore + rand::CryptoRng>(
    rng: &mut R,
) -> ([u8; NONCE_LEN], [u8; RANDOM_LEN]) {
    let mut nonce = [0u8; NONCE_LEN];
    let mut random = [0u8; RANDOM_LEN];
    rng.fill_bytes(&mut nonce);
    rng.fill_bytes(&mut random);
    (nonce, random)
}

/// Deterministic core of [`seal`], for tests and test vectors.
pub fn seal_with(
    keys: &KeySet,
    req: &Request,
    nonce: &[u8; NONCE_LEN],
    random: &[u8; RANDOM_LEN],
) -> [u8; DATAGRAM_LEN] {
    seal_parts(VERSION, &keys.key_id(), &keys.aead, req, nonce, random)
}

/// The one sealing routine of both versions: header (magic, `version`, `id`,
/// nonce) as AAD, the plaintext of §3.4, the tag.
pub(crate) fn seal_parts(
    version_byte: u8,
    id: &KeyId,
    aead: &AeadKey,
    req: &Request,
    nonce: &[u8; NONCE_LEN],
    random: &[u8; RANDOM_LEN],
) -> [u8; DATAGRAM_LEN] {
    let mut out = [0u8; DATAGRAM_LEN];
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let (magic, rest) = header.split_at_mut(4);
    let (version, rest) = rest.split_at_mut(1);
    let (key_id, nonce_out) = rest.split_at_mut(KEY_ID_LEN);
    magic.copy_from_slice(&MAGIC);
    version[0] = version_byte;
    key_id.copy_from_slice(&id.0);
    nonce_out.copy_from_slice(nonce);
    let (ct, tag_out) = body.split_at_mut(PLAINTEXT_LEN);
    ct.copy_from_slice(&encode_plaintext(req, random));
    tag_out.copy_from_slice(&aead.seal(nonce, header, ct));
    out
}

/// Seals arbitrary plaintext bytes, bypassing the [`Request`] type. Exists
/// only so tests and fuzzers can reach the plaintext rules with authentic
/// datagrams that no honest sender could build; never enabled in a release
/// build of the daemon or client.
#[cfg(any(test, feature = "test-util"))]
#[doc(hidden)]
pub fn seal_raw_plaintext(
    keys: &KeySet,
    plaintext: &[u8; PLAINTEXT_LEN],
    nonce: &[u8; NONCE_LEN],
) -> [u8; DATAGRAM_LEN] {
    let mut out = seal_with(keys, &RAW_TEMPLATE, nonce, &[0u8; RANDOM_LEN]);
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let (ct, tag_out) = body.split_at_mut(PLAINTEXT_LEN);
    ct.copy_from_slice(plaintext);
    tag_out.copy_from_slice(&keys.aead.seal(nonce, header, ct));
    out
}

#[cfg(any(test, feature = "test-util"))]
const RAW_TEMPLATE: Request = Request {
    action: Action::Open,
    timestamp: 0,
    duration_secs: 0,
    allow: AllowAddr::Source,
    server: ServerId([0; SERVER_ID_LEN]),
    grants: Grants {
        len: 1,
        items: [FILLER; MAX_GRANTS],
    },
};

/// The whole receive-side check, in the order docs/protocol.md gives:
/// length, magic, version, key-id, AEAD, plaintext, server id, time window,
/// replay. On success the datagram is recorded in `replay`, so a second
/// identical datagram is [`Reject::Replayed`].
pub fn verify<'k>(
    datagram: &[u8],
    lookup: impl FnOnce(&KeyId) -> Option<&'k KeySet>,
    server: &ServerId,
    now: u64,
    replay: &mut ReplayRecord,
) -> Result<Opened, Reject> {
    verify_admit(datagram, lookup, server, now, replay, |_| Ok(()))
}

/// [`verify`] with `admit` asked, for a new authentic datagram only, just
/// before it is recorded (see [`ReplayRecord::check_admit_insert`]): the
/// server's per-key rate limit goes there.
pub fn verify_admit<'k>(
    datagram: &[u8],
    lookup: impl FnOnce(&KeyId) -> Option<&'k KeySet>,
    server: &ServerId,
    now: u64,
    replay: &mut ReplayRecord,
    admit: impl FnOnce(&KeyId) -> Result<(), Reject>,
) -> Result<Opened, Reject> {
    let header = parse_header(datagram)?;
    let keys = lookup(&header.key_id()).ok_or(Reject::UnknownKeyId)?;
    let opened = header.open(keys)?;
    if opened.request.server != *server {
        return Err(Reject::WrongServer);
    }
    replay.check_admit_insert(
        &opened.key_id,
        &opened.nonce,
        opened.request.timestamp,
        now,
        || admit(&opened.key_id),
    )?;
    Ok(opened)
}

#[cfg(test)]
mod tests;
