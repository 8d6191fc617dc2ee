#!/usr/bin/env python3
"""Independent reference implementation of the spa v1 and v2 datagrams and the HMAC
knock sequence, written from docs/protocol.md alone (no Rust code shared).

It recomputes the test vectors of docs/protocol.md with Python's hashlib/hmac,
the `cryptography` package's HKDF and ChaCha20-Poly1305, and a pure-Python
HChaCha20 (XChaCha20-Poly1305 = HChaCha20 subkey + ChaCha20-Poly1305 with the
nonce's last 8 bytes). It prints every intermediate value, then checks that
each value also appears in docs/protocol.md, and exits non-zero on a mismatch.

    python3 spa-proto/tests/reference.py            # from the repository root
"""
import hashlib
import hmac
import ipaddress
import os
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = bytes([0x8A, 0x53, 0x50, 0x41])
VERSION = 1


def hkdf(master: bytes, info: bytes, n: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=b"spa v1 hkdf salt", info=info).derive(master)


def server_id(name: str) -> bytes:
    return hashlib.sha256(b"spa v1 server id\x00" + name.encode()).digest()[:16]


def _rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def _qr(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 7)


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    s = list(struct.unpack("<4I", b"expand 32-byte k")) + list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        _qr(s, 0, 4, 8, 12); _qr(s, 1, 5, 9, 13); _qr(s, 2, 6, 10, 14); _qr(s, 3, 7, 11, 15)
        _qr(s, 0, 5, 10, 15); _qr(s, 1, 6, 11, 12); _qr(s, 2, 7, 8, 13); _qr(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def xchacha20poly1305_seal(key: bytes, nonce24: bytes, pt: bytes, aad: bytes) -> bytes:
    sub = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).encrypt(b"\x00" * 4 + nonce24[16:], pt, aad)


def plaintext(action, allow, ts, duration, sid, grants, random) -> bytes:
    if allow == "source":
        kind, addr = 0, bytes(16)
    else:
        ip = ipaddress.ip_address(allow)
        kind = 4 if ip.version == 4 else 6
        addr = ip.packed + bytes(16 - len(ip.packed))
    slots = b"".join(struct.pack(">BH", {"tcp": 6, "udp": 17}[p], port) for p, port in grants)
    slots += bytes(24 - len(slots))
    pt = struct.pack(">BBBQI", {"open": 1, "close": 2}[action], kind, len(grants), ts, duration)
    pt += sid + addr + slots + random
    assert len(pt) == 87
    return pt


def datagram(keys, sid, nonce, random, **req) -> tuple:
    pt = plaintext(req["action"], req["allow"], req["ts"], req["duration"], sid, req["grants"], random)
    header = MAGIC + bytes([VERSION]) + keys["key_id"] + nonce
    return pt, header + xchacha20poly1305_seal(keys["aead"], nonce, pt, header)


def v2_server_key(master: bytes, uid: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"spa v2 hkdf salt",
                info=b"spa v2 server key" + uid).derive(master)


def v2_keys(server_key: bytes) -> dict:
    def sub(info: bytes, n: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=n, salt=b"spa v2 hkdf salt", info=info).derive(server_key)
    return {"aead": sub(b"spa v2 aead key", 32), "id_key": sub(b"spa v2 id key", 32), "stable": sub(b"spa v2 key id", 8)}


def v2_wire_id(id_key: bytes, epoch: int) -> bytes:
    return hmac.new(id_key, b"spa v2 id\x00" + struct.pack(">Q", epoch), hashlib.sha256).digest()[:8]


def v2_datagram(keys, uid, nonce, random, **req) -> tuple:
    pt = plaintext(req["action"], req["allow"], req["ts"], req["duration"], uid, req["grants"], random)
    header = MAGIC + bytes([2]) + v2_wire_id(keys["id_key"], req["ts"] // 60) + nonce
    return pt, header + xchacha20poly1305_seal(keys["aead"], nonce, pt, header)


def knock(knock_key: bytes, sid: bytes, unix: int, ports=5, step_secs=30, lo=10000, hi=60000):
    step = unix // step_secs
    mac = hmac.new(knock_key, b"spa v1 knock\x00" + sid + struct.pack(">Q", step), hashlib.sha256).digest()
    span = hi - lo + 1
    return step, mac, [lo + struct.unpack(">I", mac[4 * i:4 * i + 4])[0] % span for i in range(ports)]


def main() -> int:
    master = bytes(range(32))
    keys = {
        "aead": hkdf(master, b"spa v1 aead key", 32),
        "key_id": hkdf(master, b"spa v1 key id", 8),
        "knock": hkdf(master, b"spa v1 knock key", 32),
    }
    sid = server_id("gw.example.net")
    nonce = bytes(range(0x40, 0x58))
    random = bytes(range(0x80, 0x90))
    out = {
        "master key": master.hex(),
        "aead key": keys["aead"].hex(),
        "key-id": keys["key_id"].hex(),
        "knock key": keys["knock"].hex(),
        "server id": sid.hex(),
        "nonce": nonce.hex(),
        "random": random.hex(),
    }
    vectors = [
        dict(action="open", allow="198.51.100.7", ts=1_700_000_000, duration=600, grants=[("tcp", 22), ("udp", 51820)]),
        dict(action="close", allow="2001:db8::1", ts=1_700_000_000, duration=0, grants=[("tcp", 443)]),
        dict(action="open", allow="source", ts=1_700_000_000, duration=30, grants=[("tcp", 22)]),
    ]
    for i, v in enumerate(vectors, 1):
        pt, d = datagram(keys, sid, nonce, random, **v)
        out[f"vector {i} plaintext"] = pt.hex()
        out[f"vector {i} datagram"] = d.hex()
    step, mac, seq = knock(keys["knock"], sid, 1_700_000_000)
    out["knock step"] = str(step)
    out["knock hmac"] = mac.hex()
    out["knock ports"] = ", ".join(map(str, seq))

    # Protocol v2 (section 10): per-server key, rotating wire id.
    uid = bytes(range(0xA0, 0xB0))
    ks = v2_server_key(master, uid)
    k2 = v2_keys(ks)
    epoch = 1_700_000_000 // 60
    out["v2 server uid"] = uid.hex()
    out["v2 server key"] = ks.hex()
    out["v2 aead key"] = k2["aead"].hex()
    out["v2 id key"] = k2["id_key"].hex()
    out["v2 stable id"] = k2["stable"].hex()
    out["v2 epoch"] = str(epoch)
    for e in (epoch - 1, epoch, epoch + 1, epoch + 2):
        out[f"v2 wire id {e}"] = v2_wire_id(k2["id_key"], e).hex()
    out["v2 other uid key"] = v2_server_key(master, bytes(range(0xB0, 0xC0))).hex()
    pt, d = v2_datagram(k2, uid, nonce, random, **vectors[0])
    out["v2 vector plaintext"] = pt.hex()
    out["v2 vector datagram"] = d.hex()
    pt, d = v2_datagram(k2, uid, nonce, random, **dict(vectors[0], ts=1_700_000_000 + 60))
    out["v2 vector 2 datagram"] = d.hex()

    doc_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "protocol.md")
    doc = open(doc_path).read() if os.path.exists(doc_path) else ""
    flat = "".join(doc.split())
    bad = 0
    for k, v in out.items():
        found = "".join(v.split()) in flat
        bad += not found
        print(f"{k:22} {v}{'' if found else '   <-- NOT IN docs/protocol.md'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
