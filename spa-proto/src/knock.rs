//! HMAC knock sequences: port-knock sequences that change every time step
//! and that only the key holder can compute, for clients that can only send
//! a plain `knock`. Specified in docs/protocol.md ("HMAC knock sequences").
//!
//! ports = for i in 0..n: lo + (be_u32(mac[4i..4i+4]) mod (hi - lo + 1))
//! where mac = HMAC-SHA256(knock subkey, "spa v1 knock\0" || server id (16) || be_u64(step))
//! and step = floor(unix_seconds / step_secs).

use crate::kdf::{KeySet, ServerId};
use ring::hmac;

const LABEL: &[u8] = b"spa v1 knock\0";
/// One HMAC-SHA256 output gives 8 ports of 4 bytes each.
pub const MAX_KNOCK_PORTS: usize = 8;

/// Parameters both sides must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnockParams {
    /// Number of ports in a sequence, 1..=8.
    pub ports: usize,
    /// Length of one time step in seconds (> 0).
    pub step_secs: u64,
    /// Inclusive port range the sequence is drawn from (lo <= hi, lo > 0).
    pub range: (u16, u16),
}

impl Default for KnockParams {
    fn default() -> Self {
        // 5: with the default range, at least 64 bits against a guesser
        // for up to ~6000 keys (docs/legacy.md, "Guessing"); 4 gave 60.9.
        KnockParams {
            ports: 5,
            step_secs: 30,
            range: (10_000, 60_000),
        }
    }
}

impl KnockParams {
    /// Why not: a parameter set that cannot yield a sequence.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.ports == 0 || self.ports > MAX_KNOCK_PORTS {
            return Err("knock sequence length must be 1..=8");
        }
        if self.step_secs == 0 {
            return Err("knock time step must be at least 1 s");
        }
        if self.range.0 == 0 || self.range.0 > self.range.1 {
            return Err("knock port range must be lo..=hi with 0 < lo <= hi");
        }
        Ok(())
    }

    pub fn step_at(&self, unix_secs: u64) -> u64 {
        unix_secs / self.step_secs.max(1)
    }
}

/// The sequence for one key, server and time step. `params` must satisfy
/// [`KnockParams::validate`]; out-of-range values are clamped, never panic.
pub fn sequence(keys: &KeySet, server: &ServerId, step: u64, params: &KnockParams) -> Vec<u16> {
    let mut ctx = hmac::Context::with_key(&keys.knock);
    ctx.update(LABEL);
    ctx.update(&server.0);
    ctx.update(&step.to_be_bytes());
    let tag = ctx.sign();
    let (lo, hi) = (
        params.range.0.max(1),
        params.range.1.max(params.range.0.max(1)),
    );
    let span = u32::from(hi - lo) + 1;
    tag.as_ref()
        .chunks_exact(4)
        .take(params.ports.clamp(1, MAX_KNOCK_PORTS))
        .map(|c| {
            let v = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            // span <= 65535 and lo + (v % span) <= hi <= u16::MAX.
            lo + (v % span) as u16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::MasterKey;

    #[test]
    fn sequences_are_in_range_and_change_with_step() {
        let k = MasterKey::from_bytes([3; 32]).derive();
        let s = ServerId::from_name("srv");
        let p = KnockParams::default();
        let a = sequence(&k, &s, 100, &p);
        let b = sequence(&k, &s, 101, &p);
        assert_eq!(a.len(), 5);
        assert!(a.iter().all(|&x| (10_000..=60_000).contains(&x)));
        assert_ne!(a, b);
        assert_eq!(a, sequence(&k, &s, 100, &p));
        assert_ne!(a, sequence(&k, &ServerId::from_name("other"), 100, &p));
    }

    #[test]
    fn degenerate_params_do_not_panic() {
        let k = MasterKey::from_bytes([3; 32]).derive();
        let s = ServerId::from_name("srv");
        let p = KnockParams {
            ports: 99,
            step_secs: 0,
            range: (0, 0),
        };
        assert!(p.validate().is_err());
        let seq = sequence(&k, &s, p.step_at(5), &p);
        assert_eq!(seq.len(), MAX_KNOCK_PORTS);
        let full = KnockParams {
            ports: 8,
            step_secs: 1,
            range: (1, u16::MAX),
        };
        assert!(full.validate().is_ok());
        assert_eq!(sequence(&k, &s, 1, &full).len(), 8);
    }
}
