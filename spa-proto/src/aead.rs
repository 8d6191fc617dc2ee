//! XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03) as HChaCha20 plus ring's
//! ChaCha20-Poly1305.
//!
//! Why not RustCrypto's `XChaCha20Poly1305` type: on an 87-byte message its
//! runtime-detected AVX2 backends spend most of their time in SIMD intrinsics
//! that are not inlined, and it opened one datagram in about 1.8 µs on the
//! reference machine, against about 0.3 µs here (see docs/benchmarks.md).
//! The construction and therefore every byte on the wire are the same:
//! XChaCha20-Poly1305 *is* ChaCha20-Poly1305 (RFC 8439) keyed with
//! `HChaCha20(key, nonce[0..16])` and the nonce `00000000 || nonce[16..24]`.
//! HChaCha20 comes from RustCrypto's `chacha20` crate (the function its own
//! XChaCha uses), the AEAD from ring, so no cryptographic code lives here.
//! The RustCrypto AEAD stays a dev-dependency, as an oracle in the tests.

use chacha20::cipher::consts::U10;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

/// Length of the AEAD key.
pub(crate) const KEY_LEN: usize = 32;
/// Length of the XChaCha20 nonce.
pub(crate) const XNONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;

/// The AEAD subkey of one master key. Zeroed on drop, best effort.
#[derive(Clone)]
pub(crate) struct AeadKey([u8; KEY_LEN]);

impl AeadKey {
    pub(crate) fn new(bytes: [u8; KEY_LEN]) -> Self {
        AeadKey(bytes)
    }

    /// The ChaCha20-Poly1305 key and 96-bit nonce for one XChaCha nonce.
    ///
    /// Always inlined: ring's key is a 544-byte value (its key type has room
    /// for AES-GCM's tables), and returned from a call it was copied once
    /// more per datagram, a forgery included (docs/benchmarks.md, "The
    /// forgery's cryptographic check").
    #[inline(always)]
    fn derive(&self, xnonce: &[u8; XNONCE_LEN]) -> (LessSafeKey, Nonce) {
        let (head, tail) = xnonce.split_at(16);
        let mut input = [0u8; 16];
        input.copy_from_slice(head);
        let mut sub = hchacha20(&self.0, &input);
        // A 32-byte key is exactly what CHACHA20_POLY1305 takes, so `new`
        // cannot fail; a failure would be a bug in this file.
        #[allow(clippy::expect_used)]
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &sub).expect("32-byte ChaCha20 key"),
        );
        sub = [0; KEY_LEN];
        std::hint::black_box(&sub);
        let mut n = [0u8; NONCE_LEN];
        n[4..].copy_from_slice(tail);
        (key, Nonce::assume_unique_for_key(n))
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub(crate) fn seal(
        &self,
        xnonce: &[u8; XNONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let (key, nonce) = self.derive(xnonce);
        // ring refuses only messages longer than ChaCha20's 256 GiB limit;
        // ours are 87 bytes.
        #[allow(clippy::expect_used)]
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), in_out)
            .expect("87-byte plaintext is within ChaCha20-Poly1305 limits");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Verifies the tag and decrypts `in_out` in place. On failure the
    /// contents of `in_out` are unspecified and must not be used.
    pub(crate) fn open(
        &self,
        xnonce: &[u8; XNONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), ()> {
        let (key, nonce) = self.derive(xnonce);
        key.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), in_out, 0..)
            .map(|_| ())
            .map_err(|_| ())
    }
}

/// HChaCha20 (draft-irtf-cfrg-xchacha-03 §2.2): the ChaCha20 key of one
/// datagram, from the AEAD key and the nonce's first 16 bytes.
///
/// RustCrypto's scalar function on every architecture. Single-block SIMD
/// versions were measured and are slower or not worth their `unsafe`: SSE2
/// (one register per row, diagonals by shuffles) and SSSE3 are latency-bound
/// and lose to the scalar code, which keeps four independent quarter rounds
/// in flight; only AVX-512VL's rotate wins, by 12 % of this function, 3 % of
/// a forgery (docs/benchmarks.md, "The forgery's cryptographic check").
#[inline(always)]
fn hchacha20(key: &[u8; KEY_LEN], input: &[u8; 16]) -> [u8; KEY_LEN] {
    chacha20::hchacha::<U10>(key.into(), input.into()).into()
}

impl Drop for AeadKey {
    fn drop(&mut self) {
        self.0 = [0u8; KEY_LEN];
        std::hint::black_box(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
    use proptest::prelude::*;

    proptest! {
        /// Byte-identical to RustCrypto's XChaCha20-Poly1305, both ways.
        #[test]
        fn matches_rustcrypto_xchacha(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            msg in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let ours = AeadKey::new(key);
            let theirs = XChaCha20Poly1305::new(&key.into());
            let mut a = msg.clone();
            let tag_a = ours.seal(&nonce, &aad, &mut a);
            let mut b = msg.clone();
            let tag_b = theirs
                .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut b)
                .unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&tag_a[..], &tag_b[..]);
            // Each opens what the other sealed.
            let mut c = b.clone();
            prop_assert!(ours.open(&nonce, &aad, &mut c, &tag_a).is_ok());
            prop_assert_eq!(&c, &msg);
            prop_assert!(theirs
                .decrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut a, &tag_b)
                .is_ok());
            prop_assert_eq!(&a, &msg);
        }

        #[test]
        fn any_tampering_fails(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            bit in 0..(37 + 87 + 16) * 8usize,
        ) {
            let k = AeadKey::new(key);
            let mut aad = [7u8; 37];
            let mut msg = [9u8; 87];
            let mut tag = k.seal(&nonce, &aad, &mut msg);
            let byte = bit / 8;
            let flip = 1u8 << (bit % 8);
            if byte < 37 {
                aad[byte] ^= flip;
            } else if byte < 37 + 87 {
                msg[byte - 37] ^= flip;
            } else {
                tag[byte - 37 - 87] ^= flip;
            }
            prop_assert!(k.open(&nonce, &aad, &mut msg, &tag).is_err());
        }
    }

    #[test]
    fn draft_hchacha20_test_vector() {
        // draft-irtf-cfrg-xchacha-03, section 2.2.1.
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let input = [
            0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x4a, 0x00, 0x00, 0x00, 0x00, 0x31, 0x41,
            0x59, 0x27,
        ];
        let want = [
            0x82, 0x41, 0x3b, 0x42, 0x27, 0xb2, 0x7b, 0xfe, 0xd3, 0x0e, 0x42, 0x50, 0x8a, 0x87,
            0x7d, 0x73, 0xa0, 0xf9, 0xe4, 0xd5, 0x8a, 0x74, 0xa8, 0x53, 0xc1, 0x2e, 0xc4, 0x13,
            0x26, 0xd3, 0xec, 0xdc,
        ];
        assert_eq!(hchacha20(&key, &input), want);
    }

    #[test]
    fn draft_xchacha_test_vector() {
        // draft-irtf-cfrg-xchacha-03, appendix A.3.1.
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let key: [u8; 32] = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .unwrap();
        let nonce: [u8; 24] = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let mut msg = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
        let tag = AeadKey::new(key).seal(&nonce, &aad, &mut msg);
        assert_eq!(
            msg,
            hex(concat!(
                "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb",
                "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452",
                "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9",
                "21f9664c97637da9768812f615c68b13b52e"
            ))
        );
        assert_eq!(tag.to_vec(), hex("c0875924c1c7987947deafd8780acf49"));
    }
}
