//! The parts of the AEAD open a forgery pays (HChaCha20, ring's key set-up,
//! ring's open), and the HChaCha20 variants that were measured against the
//! scalar one and not landed (docs/benchmarks.md, "The forgery's
//! cryptographic check"). Kept so that "slower" stays checkable on another
//! machine.
//!
//!   cargo bench -p spa-proto --bench aead_parts
//!
//! Not criterion: the variants run interleaved, 25 rounds of 200,000 calls
//! each, and the minimum and quartiles are printed, because on a shared
//! machine one criterion run after another compares the load of two moments
//! more than the code. The SIMD code lives only here (spa-proto itself
//! forbids `unsafe`), and every variant is checked against
//! `chacha20::hchacha` before it is timed. An AVX-512VL variant (`vprold`
//! for every rotation, 95 against 108 ns) is not kept: its intrinsics need
//! Rust 1.89, above the workspace's 1.85.

use chacha20::cipher::consts::U10;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use std::hint::black_box;
use std::time::Instant;

/// "expand 32-byte k".
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

#[inline(never)]
fn scalar(key: &[u8; 32], input: &[u8; 16]) -> [u8; 32] {
    chacha20::hchacha::<U10>(key.into(), input.into()).into()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::SIGMA;
    use std::arch::x86_64::*;

    macro_rules! rot {
        ($x:expr, $n:literal) => {
            _mm_or_si128(_mm_slli_epi32::<$n>($x), _mm_srli_epi32::<{ 32 - $n }>($x))
        };
    }

    /// HChaCha20 with one row of the state per register; the diagonal
    /// rounds shuffle rows b, c, d by one, two, three lanes and back.
    /// `$r16` etc. name the rotation macros, the only difference between
    /// the SSE2 and SSSE3 variants. Expands to unsafe code:
    /// call it in an unsafe context.
    macro_rules! by_rows {
        ($key:ident, $input:ident, $r16:ident, $r12:ident, $r8:ident, $r7:ident) => {{
            let mut a = _mm_setr_epi32(
                SIGMA[0] as i32,
                SIGMA[1] as i32,
                SIGMA[2] as i32,
                SIGMA[3] as i32,
            );
            // 16 bytes at offsets 0 and 16 of a 32-byte array and at 0 of a
            // 16-byte one; loadu needs no alignment.
            let mut b = _mm_loadu_si128($key.as_ptr().cast());
            let mut c = _mm_loadu_si128($key.as_ptr().add(16).cast());
            let mut d = _mm_loadu_si128($input.as_ptr().cast());
            macro_rules! quarter {
                () => {
                    a = _mm_add_epi32(a, b);
                    d = $r16!(_mm_xor_si128(d, a));
                    c = _mm_add_epi32(c, d);
                    b = $r12!(_mm_xor_si128(b, c));
                    a = _mm_add_epi32(a, b);
                    d = $r8!(_mm_xor_si128(d, a));
                    c = _mm_add_epi32(c, d);
                    b = $r7!(_mm_xor_si128(b, c));
                };
            }
            for _ in 0..10 {
                quarter!();
                b = _mm_shuffle_epi32::<0x39>(b);
                c = _mm_shuffle_epi32::<0x4e>(c);
                d = _mm_shuffle_epi32::<0x93>(d);
                quarter!();
                b = _mm_shuffle_epi32::<0x93>(b);
                c = _mm_shuffle_epi32::<0x4e>(c);
                d = _mm_shuffle_epi32::<0x39>(d);
            }
            let mut out = [0u8; 32];
            // Two 16-byte stores into a 32-byte array.
            _mm_storeu_si128(out.as_mut_ptr().cast(), a);
            _mm_storeu_si128(out.as_mut_ptr().add(16).cast(), d);
            out
        }};
    }

    macro_rules! r16_words {
        ($x:expr) => {
            _mm_shufflehi_epi16::<0xb1>(_mm_shufflelo_epi16::<0xb1>($x))
        };
    }
    macro_rules! r16_bytes {
        ($x:expr) => {
            _mm_shuffle_epi8(
                $x,
                _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13),
            )
        };
    }
    macro_rules! r8_bytes {
        ($x:expr) => {
            _mm_shuffle_epi8(
                $x,
                _mm_setr_epi8(3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14),
            )
        };
    }
    macro_rules! r12 {
        ($x:expr) => {
            rot!($x, 12)
        };
    }
    macro_rules! r8 {
        ($x:expr) => {
            rot!($x, 8)
        };
    }
    macro_rules! r7 {
        ($x:expr) => {
            rot!($x, 7)
        };
    }
    /// SSE2, the x86_64 baseline: rotation by 16 as two word shuffles,
    /// the others as shift, shift, or.
    #[inline(never)]
    pub fn sse2(key: &[u8; 32], input: &[u8; 16]) -> [u8; 32] {
        // SAFETY: SSE2 is part of x86_64; the loads and stores are in
        // bounds of the arrays (see `by_rows`).
        unsafe { by_rows!(key, input, r16_words, r12, r8, r7) }
    }

    /// SSSE3: rotations by 16 and 8 as one byte shuffle each.
    ///
    /// # Safety
    /// The CPU must have SSSE3.
    #[target_feature(enable = "ssse3")]
    #[inline(never)]
    pub unsafe fn ssse3(key: &[u8; 32], input: &[u8; 16]) -> [u8; 32] {
        by_rows!(key, input, r16_bytes, r12, r8_bytes, r7)
    }

    /// Four HChaCha20 at once (SSE2): register `w` holds state word `w` of
    /// the four inputs, so the rounds need no shuffles and the four
    /// quarter rounds of a round are independent.
    #[inline(never)]
    pub fn four(keys: &[[u8; 32]; 4], inputs: &[[u8; 16]; 4]) -> [[u8; 32]; 4] {
        let mut w = [[0u32; 4]; 16];
        for lane in 0..4 {
            for i in 0..4 {
                w[i][lane] = SIGMA[i];
                w[12 + i][lane] =
                    u32::from_le_bytes(inputs[lane][4 * i..4 * i + 4].try_into().unwrap());
            }
            for i in 0..8 {
                w[4 + i][lane] =
                    u32::from_le_bytes(keys[lane][4 * i..4 * i + 4].try_into().unwrap());
            }
        }
        // SAFETY: SSE2 is part of x86_64; [[u32; 4]; 16] and [__m128i; 16]
        // have the same size and every bit pattern is valid for both.
        let mut s: [__m128i; 16] = unsafe { std::mem::transmute(w) };
        macro_rules! quarter {
            ($a:literal, $b:literal, $c:literal, $d:literal) => {
                s[$a] = _mm_add_epi32(s[$a], s[$b]);
                s[$d] = rot!(_mm_xor_si128(s[$d], s[$a]), 16);
                s[$c] = _mm_add_epi32(s[$c], s[$d]);
                s[$b] = rot!(_mm_xor_si128(s[$b], s[$c]), 12);
                s[$a] = _mm_add_epi32(s[$a], s[$b]);
                s[$d] = rot!(_mm_xor_si128(s[$d], s[$a]), 8);
                s[$c] = _mm_add_epi32(s[$c], s[$d]);
                s[$b] = rot!(_mm_xor_si128(s[$b], s[$c]), 7);
            };
        }
        // SAFETY: SSE2 is part of x86_64; no memory is touched. (The
        // intrinsics are safe to call from Rust 1.87 on, not at the MSRV.)
        #[allow(unused_unsafe)]
        unsafe {
            for _ in 0..10 {
                quarter!(0, 4, 8, 12);
                quarter!(1, 5, 9, 13);
                quarter!(2, 6, 10, 14);
                quarter!(3, 7, 11, 15);
                quarter!(0, 5, 10, 15);
                quarter!(1, 6, 11, 12);
                quarter!(2, 7, 8, 13);
                quarter!(3, 4, 9, 14);
            }
        }
        // SAFETY: as above, the other way.
        let w: [[u32; 4]; 16] = unsafe { std::mem::transmute(s) };
        let mut out = [[0u8; 32]; 4];
        for (lane, o) in out.iter_mut().enumerate() {
            for (i, word) in [0, 1, 2, 3, 12, 13, 14, 15].into_iter().enumerate() {
                o[4 * i..4 * i + 4].copy_from_slice(&w[word][lane].to_le_bytes());
            }
        }
        out
    }
}

/// Nanoseconds per call of `f` over `n` calls.
fn per_call(n: u64, f: &mut dyn FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i)
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

type Case<'a> = (&'static str, u64, Box<dyn FnMut(u64) + 'a>);

fn main() {
    let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(1));
    let keys: [[u8; 32]; 4] = std::array::from_fn(|l| std::array::from_fn(|i| (i + l) as u8));
    let aad = [7u8; 37];
    let ct = [9u8; 87];
    let tag = [1u8; 16];
    let ring_key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap());

    // Each variant equals the scalar function before it is timed.
    for i in 0..1000u32 {
        let mut input = [0u8; 16];
        input[..4].copy_from_slice(&i.to_le_bytes());
        let want = scalar(&key, &input);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(x86::sse2(&key, &input), want);
            if is_x86_feature_detected!("ssse3") {
                assert_eq!(unsafe { x86::ssse3(&key, &input) }, want);
            }
            let inputs: [[u8; 16]; 4] = std::array::from_fn(|l| {
                let mut x = input;
                x[15] = l as u8;
                x
            });
            let got = x86::four(&keys, &inputs);
            for lane in 0..4 {
                assert_eq!(got[lane], scalar(&keys[lane], &inputs[lane]));
            }
        }
        let _ = want;
    }

    let mut input = [0u8; 16];
    let mut inputs = [[0u8; 16]; 4];
    let mut sub = key;
    let mut cases: Vec<Case> = vec![(
        "hchacha20 scalar (chacha20::hchacha, in use)",
        1,
        Box::new(|i| {
            input[0] = i as u8;
            black_box(scalar(black_box(&key), black_box(&input)));
        }),
    )];
    #[cfg(target_arch = "x86_64")]
    {
        cases.push((
            "hchacha20 SSE2, one block",
            1,
            Box::new(|i| {
                let mut x = [0u8; 16];
                x[0] = i as u8;
                black_box(x86::sse2(black_box(&key), black_box(&x)));
            }),
        ));
        if is_x86_feature_detected!("ssse3") {
            cases.push((
                "hchacha20 SSSE3, one block",
                1,
                Box::new(|i| {
                    let mut x = [0u8; 16];
                    x[0] = i as u8;
                    black_box(unsafe { x86::ssse3(black_box(&key), black_box(&x)) });
                }),
            ));
        }
        cases.push((
            "hchacha20 SSE2, four at once, per block",
            4,
            Box::new(|i| {
                inputs[0][0] = i as u8;
                black_box(x86::four(black_box(&keys), black_box(&inputs)));
            }),
        ));
    }
    cases.push((
        "ring LessSafeKey::new (ChaCha20-Poly1305)",
        1,
        Box::new(|i| {
            sub[0] = i as u8;
            let k = UnboundKey::new(&CHACHA20_POLY1305, black_box(&sub)).unwrap();
            black_box(LessSafeKey::new(k));
        }),
    ));
    cases.push((
        "ring open, 37 + 87 bytes, wrong tag",
        1,
        Box::new(|i| {
            let mut n = [0u8; 12];
            n[4] = i as u8;
            let mut body = ct;
            let r = ring_key.open_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(&aad[..]),
                Tag::from(tag),
                black_box(&mut body),
                0..,
            );
            black_box(r.is_err());
        }),
    ));

    // `cargo bench` passes --bench; `cargo test --all-targets` does not,
    // and then the equality checks above are the whole run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    const ROUNDS: usize = 25;
    const CALLS: u64 = 200_000;
    let mut times = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for _ in 0..ROUNDS {
        for ((_, per, f), t) in cases.iter_mut().zip(&mut times) {
            t.push(per_call(CALLS, f.as_mut()) / *per as f64);
        }
    }
    println!(
        "{:46} {:>8} {:>8} {:>8}",
        "ns per call", "min", "p25", "median"
    );
    for ((name, _, _), mut t) in cases.into_iter().zip(times) {
        t.sort_by(f64::total_cmp);
        println!(
            "{name:46} {:8.1} {:8.1} {:8.1}",
            t[0],
            t[ROUNDS / 4],
            t[ROUNDS / 2]
        );
    }
}
