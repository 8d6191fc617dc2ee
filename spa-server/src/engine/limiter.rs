//! The rate limit on rejection and denial lines (one per decision would let
//! a flood of garbage become a flood of logs).

use std::time::{Duration, Instant};
use tracing::warn;

/// Logs at most `per_sec` rejections and denials a second, then one summary
/// line: a garbage flood, or a key holder's flood of denied requests, must
/// not turn into a log flood (and a CPU flood).
pub(super) struct LogLimiter {
    per_sec: u32,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub(super) fn new(per_sec: u32) -> Self {
        LogLimiter {
            per_sec,
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    pub(super) fn allow(&mut self, now: Instant) -> bool {
        let expired = self
            .window_start
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if expired {
            if self.suppressed > 0 {
                warn!(
                    suppressed = self.suppressed,
                    "rejections and denials not logged in the last second (rate limit)"
                );
            }
            self.window_start = Some(now);
            self.used = 0;
            self.suppressed = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}
