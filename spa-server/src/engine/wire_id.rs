//! The cleartext key-id of a datagram, as its log lines show it.

/// 16 hex digits (or `-`), on the stack. Every datagram needs it, logged or
/// not (the line is rate-limited, the key-id is decided first), so it is
/// formatted without an allocation or the `fmt` machinery: a `String`
/// through `Display` per datagram was ~8 % of the daemon's time under a
/// forgery flood (docs/benchmarks.md, "Scale", issue 14).
pub(super) struct WireId {
    hex: [u8; 16],
    /// 16, or 1 for `-`.
    len: usize,
}

impl WireId {
    /// v1: the header's key-id when the header parses; v2: the wire id of
    /// this minute (the stable id is in the verdict's key name once
    /// authenticated); `-` otherwise.
    pub(super) fn of(payload: &[u8]) -> WireId {
        let bytes = match spa_proto::version_of(payload) {
            Some(spa_proto::VERSION_V2) => payload.get(5..13),
            _ => spa_proto::parse_header(payload)
                .ok()
                .and(payload.get(5..13)),
        };
        let mut hex = [b'-'; 16];
        let Some(bytes) = bytes else {
            return WireId { hex, len: 1 };
        };
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (pair, b) in hex.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        WireId { hex, len: 16 }
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.hex[..self.len]).unwrap_or("-")
    }
}

#[cfg(test)]
mod tests {
    use super::WireId;
    use spa_proto::{KeyId, DATAGRAM_LEN, MAGIC, VERSION, VERSION_V2};

    #[test]
    fn same_text_as_the_key_ids_display() {
        let id = KeyId([0x00, 0x1f, 0xa0, 0xff, 0x12, 0x34, 0xab, 0xcd]);
        let mut d = [7u8; DATAGRAM_LEN];
        d[..4].copy_from_slice(&MAGIC);
        d[4] = VERSION;
        d[5..13].copy_from_slice(&id.0);
        assert_eq!(WireId::of(&d).as_str(), id.to_string());
        d[4] = VERSION_V2;
        assert_eq!(WireId::of(&d).as_str(), "001fa0ff1234abcd");
        assert_eq!(
            WireId::of(&d[..100]).as_str(),
            "-",
            "v2, short: no id read past the end"
        );
        d[4] = VERSION;
        assert_eq!(
            WireId::of(&d[..100]).as_str(),
            "-",
            "a v1 header that does not parse"
        );
        assert_eq!(WireId::of(b"").as_str(), "-");
    }
}
