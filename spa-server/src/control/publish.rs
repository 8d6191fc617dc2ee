//! What the daemon publishes without being asked: systemd's `STATUS=` line
//! (`systemctl status spa-server`) and the optional `metrics_file` for
//! node_exporter's textfile collector. Both follow one rule, [`Throttle`]:
//! sent when what they show changed, at most once per interval, and a
//! change inside the interval is sent when it ends. Nothing changes while
//! idle, so nothing wakes an idle daemon.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `STATUS=` at most once a second.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// The metrics file at most every 5 s (node_exporter scrapes every 15 s or
/// more; a flood must not turn into a disk write per packet).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// "Publish on change, at most once per interval" for a value `K` that
/// stands for what is shown.
#[derive(Debug)]
pub struct Throttle<K> {
    interval: Duration,
    shown: Option<K>,
    last_at: Option<Instant>,
    /// A change not yet shown (it came inside the interval).
    waiting: bool,
}

impl<K: PartialEq> Throttle<K> {
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            shown: None,
            last_at: None,
            waiting: false,
        }
    }

    /// `true` when `current` should be shown now (it is then taken as
    /// shown); otherwise it may be waiting for the interval to end.
    pub fn due(&mut self, current: K, now: Instant) -> bool {
        if self.shown.as_ref() == Some(&current) {
            self.waiting = false;
            return false;
        }
        let free = self
            .last_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if free {
            self.shown = Some(current);
            self.last_at = Some(now);
            self.waiting = false;
            true
        } else {
            self.waiting = true;
            false
        }
    }

    /// How long until a waiting change may be shown; `None` when nothing
    /// waits (so the loop may sleep as long as it likes).
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.waiting {
            return None;
        }
        let t = self.last_at?;
        Some(
            self.interval
                .saturating_sub(now.saturating_duration_since(t)),
        )
    }

    /// Show the next value whatever it is (after something else overwrote
    /// what was shown, e.g. a reload's `STATUS=`).
    pub fn forget(&mut self) {
        self.shown = None;
    }
}

/// What the metrics file shows changes with these; the per-grant times
/// are not in it (metrics.rs), so an idle daemon's file stays unchanged.
type MetricsKey = (crate::stats::Stats, usize, usize, u64, u64);

/// The daemon's publishing: `STATUS=` when systemd listens, the metrics
/// file when configured.
pub struct Publisher {
    status: Throttle<String>,
    metrics: Option<(MetricsFile, Throttle<MetricsKey>)>,
}

impl Publisher {
    pub fn new(metrics_file: Option<&Path>) -> Self {
        let mut p = Publisher {
            status: Throttle::new(STATUS_INTERVAL),
            metrics: None,
        };
        p.reconfigure(metrics_file);
        p
    }

    /// A reload may set, move or drop the metrics file.
    pub fn reconfigure(&mut self, metrics_file: Option<&Path>) {
        if self.metrics.as_ref().map(|(f, _)| f.path()) != metrics_file {
            self.metrics = metrics_file.map(|p| {
                (
                    MetricsFile::new(p.to_owned()),
                    Throttle::new(METRICS_INTERVAL),
                )
            });
        }
        // Whatever systemd shows was just overwritten (RELOADING, ...).
        self.status.forget();
    }

    /// Sends what changed and is due. `snapshot` is called only when the
    /// metrics file is written.
    pub fn publish(
        &mut self,
        engine: &crate::engine::Engine,
        capture: crate::capture::CaptureStats,
        notifier: &crate::notify::Notifier,
        now: &crate::engine::Now,
        snapshot: impl FnOnce() -> super::status::Snapshot,
    ) {
        let grants = engine.grants().count(now.secs());
        if notifier.is_active() {
            let line = status_line(grants, engine.stats_ref());
            if self.status.due(line.clone(), now.mono) {
                notifier.status(&line);
            }
        }
        if let Some((file, throttle)) = &mut self.metrics {
            let key = (
                engine.stats(),
                grants,
                engine.grants().len(),
                capture.frames,
                capture.kernel_drops,
            );
            if throttle.due(key, now.mono) {
                file.write(&super::metrics::prometheus(&snapshot()));
            }
        }
    }

    /// Until a change waiting for its interval may be sent; `None` when
    /// nothing waits.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        let m = self.metrics.as_ref().and_then(|(_, t)| t.timeout(now));
        match (self.status.timeout(now), m) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The `STATUS=` text: `3 grants; 120 accepted, 4 rejected since start`.
pub fn status_line(grants: usize, s: &crate::stats::Stats) -> String {
    let accepted = s.datagrams_accepted + s.knocks_accepted;
    let rejected = s.datagrams_rejected + s.knocks_rejected;
    format!(
        "{grants} grant{}; {accepted} accepted, {rejected} rejected since start",
        if grants == 1 { "" } else { "s" }
    )
}

/// The metrics file and the last error writing it (logged once per
/// distinct error, and once when writing works again).
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
    failing: Option<String>,
}

impl MetricsFile {
    pub fn new(path: PathBuf) -> Self {
        MetricsFile {
            path,
            failing: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `text` atomically: a temporary file beside
    /// it (a dot name, which the textfile collector skips), then rename,
    /// so a scrape never reads half a file.
    pub fn write(&mut self, text: &str) {
        let res = write_atomic(&self.path, text);
        match (res, &self.failing) {
            (Ok(()), None) => {}
            (Ok(()), Some(_)) => {
                tracing::info!(path = %self.path.display(), "metrics file written again");
                self.failing = None;
            }
            (Err(e), prev) => {
                let e = e.to_string();
                if prev.as_ref() != Some(&e) {
                    tracing::warn!(
                        path = %self.path.display(),
                        "cannot write the metrics file (retried at the next change): {e}"
                    );
                }
                self.failing = Some(e);
            }
        }
    }
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("metrics_file names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_shown_at_once_then_at_most_once_per_interval() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = Throttle::new(Duration::from_secs(1));
        assert!(t.due(1, at(0)), "first value at once");
        assert!(!t.due(1, at(10)), "unchanged: nothing");
        assert_eq!(t.timeout(at(10)), None, "idle: no wake-up");
        assert!(!t.due(2, at(300)), "inside the interval: waits");
        assert_eq!(t.timeout(at(300)), Some(Duration::from_millis(700)));
        assert!(t.due(2, at(1000)), "shown when the interval ends");
        assert_eq!(t.timeout(at(1000)), None);
        // A change that went back before its turn needs no showing.
        assert!(!t.due(3, at(1100)));
        assert!(!t.due(2, at(1200)));
        assert_eq!(t.timeout(at(1200)), None);
        t.forget();
        assert!(t.due(2, at(2500)));
    }

    #[test]
    fn the_status_line_reads_as_the_issue_asks() {
        let s = crate::stats::Stats {
            datagrams_accepted: 118,
            knocks_accepted: 2,
            datagrams_rejected: 4,
            ..Default::default()
        };
        assert_eq!(
            status_line(3, &s),
            "3 grants; 120 accepted, 4 rejected since start"
        );
        assert!(status_line(1, &s).starts_with("1 grant;"));
    }

    #[test]
    fn the_metrics_file_is_replaced_whole_and_errors_do_not_panic() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("spa.prom");
        let mut m = MetricsFile::new(p.clone());
        m.write("a 1\n");
        m.write("a 2\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        let mut bad = MetricsFile::new(d.path().join("missing/dir/spa.prom"));
        bad.write("a 1\n");
        assert!(bad.failing.is_some());
    }
}
