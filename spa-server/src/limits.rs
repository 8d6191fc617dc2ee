//! Bounds on what the configuration may grant: how long one grant may last
//! and how many may be live, per key and in all.
//!
//! Why: a grant is a firewall rule every new connection walks past, so an
//! unbounded count slows the whole host (issue 16, finding 1); and a duration
//! the kernel cannot represent is silently cut or wrapped by the backend
//! (nftables caps element timeouts near 49.7 days, iptables' `--datestop`
//! ends in 2038), leaving the daemon and the kernel disagreeing about when a
//! grant ends. The checks return a [`LimitError`] holding the numbers;
//! config/ adds file, line and field in front of its text.

/// Longest grant unless `duration_limit` says otherwise: one day.
pub const DEFAULT_DURATION_LIMIT: u32 = 86_400;
/// The most `duration_limit` may be raised to: 30 days, which both backends
/// represent exactly (nftables' element timeout limit is ~49.7 days).
pub const DURATION_CEILING: u32 = 30 * 86_400;
/// Live grants one key may hold unless its `max_grants` says otherwise.
pub const DEFAULT_KEY_MAX_GRANTS: usize = 16;
/// Live grants (firewall rules) in all unless `max_grants_total` says
/// otherwise. Doors share half of it (see `grants::Caps`).
pub const DEFAULT_MAX_GRANTS_TOTAL: usize = 4096;
/// The most `max_grants_total` may be raised to.
pub const MAX_GRANTS_CEILING: usize = 65_536;

/// Live grants all legacy doors together may hold: half the total. Door
/// sequences are public and their knocks may carry any spoofed source, so a
/// knock flood fills at most this share and keys keep the other half.
pub fn door_share(total: usize) -> usize {
    (total / 2).max(1)
}

/// A bound refused, with the numbers that broke it. The text is made here
/// only; config/ puts `file:line: field:` in front of it (and a door's
/// name, for `legacy.door.duration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    /// `duration_limit` is 0 or above [`DURATION_CEILING`].
    DurationLimit { limit: u32 },
    /// A duration of 0 seconds.
    ZeroDuration,
    /// A duration above `duration_limit`.
    AboveDurationLimit { secs: u32, limit: u32 },
    /// `max_grants_total` is 0 or above [`MAX_GRANTS_CEILING`].
    Total { total: usize },
    /// A key's `max_grants` of 0.
    ZeroKeyGrants,
    /// A key's `max_grants` above `max_grants_total`.
    AboveTotal { max_grants: usize, total: usize },
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            LimitError::DurationLimit { limit } => write!(
                f,
                "{limit} s: must be 1-{DURATION_CEILING} s (30 days, the most both firewall \
                 backends represent exactly)"
            ),
            LimitError::ZeroDuration => f.write_str("must be at least 1 second"),
            LimitError::AboveDurationLimit { secs, limit } => write!(
                f,
                "{secs} s is above duration_limit ({limit} s); lower it, or raise \
                 duration_limit (at most {DURATION_CEILING} s)"
            ),
            LimitError::Total { total } => write!(f, "{total}: must be 1-{MAX_GRANTS_CEILING}"),
            LimitError::ZeroKeyGrants => f.write_str("must be at least 1"),
            LimitError::AboveTotal { max_grants, total } => write!(
                f,
                "{max_grants} is above max_grants_total ({total}); lower it or raise \
                 max_grants_total"
            ),
        }
    }
}

impl std::error::Error for LimitError {}

/// `duration_limit` itself: 1 ..= [`DURATION_CEILING`].
pub fn check_duration_limit(limit: u32) -> Result<(), LimitError> {
    if limit == 0 || limit > DURATION_CEILING {
        return Err(LimitError::DurationLimit { limit });
    }
    Ok(())
}

/// A duration setting (`default_duration`, `max_duration`): 1 ..= `limit`.
pub fn check_duration(secs: u32, limit: u32) -> Result<(), LimitError> {
    if secs == 0 {
        return Err(LimitError::ZeroDuration);
    }
    if secs > limit {
        return Err(LimitError::AboveDurationLimit { secs, limit });
    }
    Ok(())
}

/// `max_grants_total`: 1 ..= [`MAX_GRANTS_CEILING`].
pub fn check_total(total: usize) -> Result<(), LimitError> {
    if total == 0 || total > MAX_GRANTS_CEILING {
        return Err(LimitError::Total { total });
    }
    Ok(())
}

/// A key's `max_grants`: 1 ..= `total`.
pub fn check_key_grants(max_grants: usize, total: usize) -> Result<(), LimitError> {
    if max_grants == 0 {
        return Err(LimitError::ZeroKeyGrants);
    }
    if max_grants > total {
        return Err(LimitError::AboveTotal { max_grants, total });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_at_their_edges() {
        assert!(check_duration_limit(DURATION_CEILING).is_ok());
        assert!(check_duration_limit(DURATION_CEILING + 1).is_err());
        assert!(check_duration_limit(0).is_err());
        assert!(check_duration(86_400, DEFAULT_DURATION_LIMIT).is_ok());
        assert_eq!(
            check_duration(86_401, DEFAULT_DURATION_LIMIT),
            Err(LimitError::AboveDurationLimit {
                secs: 86_401,
                limit: 86_400
            })
        );
        assert!(check_duration(u32::MAX, DURATION_CEILING).is_err());
        assert!(check_duration(0, 10).is_err());
        assert!(check_total(MAX_GRANTS_CEILING).is_ok() && check_total(0).is_err());
        assert!(check_key_grants(16, 4096).is_ok());
        assert!(check_key_grants(4097, 4096).is_err() && check_key_grants(0, 9).is_err());
    }

    /// Every refusal, byte for byte: config/ prints it behind
    /// `file:line: field:`, so a change here changes what admins read.
    #[test]
    fn messages_are_pinned() {
        fn text<E: std::fmt::Display>(r: Result<(), E>) -> String {
            r.err().map(|e| e.to_string()).unwrap_or_default()
        }
        let backends =
            "must be 1-2592000 s (30 days, the most both firewall backends represent exactly)";
        assert_eq!(text(check_duration_limit(0)), format!("0 s: {backends}"));
        assert_eq!(
            text(check_duration_limit(DURATION_CEILING + 1)),
            format!("2592001 s: {backends}")
        );
        assert_eq!(text(check_duration(0, 10)), "must be at least 1 second");
        assert_eq!(
            text(check_duration(86_401, DEFAULT_DURATION_LIMIT)),
            "86401 s is above duration_limit (86400 s); lower it, or raise duration_limit \
             (at most 2592000 s)"
        );
        assert_eq!(text(check_total(0)), "0: must be 1-65536");
        assert_eq!(text(check_total(65_537)), "65537: must be 1-65536");
        assert_eq!(text(check_key_grants(0, 9)), "must be at least 1");
        assert_eq!(
            text(check_key_grants(4097, 4096)),
            "4097 is above max_grants_total (4096); lower it or raise max_grants_total"
        );
    }

    #[test]
    fn the_ceiling_fits_both_backends() {
        // nftables: the timeout in ms must stay under its limit.
        let ms = u64::from(DURATION_CEILING) * 1000;
        assert!(ms <= crate::firewall::nftables::MAX_TIMEOUT_MS);
    }
}
