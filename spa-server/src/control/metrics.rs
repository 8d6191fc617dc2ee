//! The Prometheus text exposition format (version 0.0.4) of a snapshot:
//! `spa-server status --prometheus` and the `metrics_file` for
//! node_exporter's textfile collector. Names follow Prometheus' rules:
//! `spa_` prefix, counters end in `_total`, one metric per meaning with the
//! variants as labels. The list is in docs/operations.md; a test runs the
//! real `promtool check metrics` on it. Pure.
//!
//! Per-grant gauges (time left) are left out on purpose: they change every
//! second, so the metrics file would never be "unchanged", and a label per
//! client address is a cardinality trap. `spa_grants` counts them.

use super::status::Snapshot;
use std::fmt::Write;

/// Label values: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, v: u64) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {v}");
    }
    fn labelled(&mut self, name: &str, kind: &str, help: &str, key: &str, rows: &[(&str, u64)]) {
        if rows.is_empty() {
            return;
        }
        self.head(name, kind, help);
        for (l, v) in rows {
            let _ = writeln!(self.0, "{name}{{{key}=\"{}\"}} {v}", label(l));
        }
    }
}

/// The exposition text; every metric has HELP and TYPE lines.
pub fn prometheus(s: &Snapshot) -> String {
    let c = &s.stats;
    let mut o = Out(String::new());
    o.head(
        "spa_build_info",
        "gauge",
        "Always 1; the labels say which spa-server, server id and firewall backend.",
    );
    let _ = writeln!(
        o.0,
        "spa_build_info{{version=\"{}\",server_id=\"{}\",backend=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        label(&s.server_id),
        s.backend
    );
    o.one(
        "spa_start_time_seconds",
        "gauge",
        "When the daemon started, in Unix seconds.",
        s.started_at,
    );
    o.one(
        "spa_grants",
        "gauge",
        "Live grants, one per owner, address and port.",
        s.grants.len() as u64,
    );
    o.one(
        "spa_grant_rules",
        "gauge",
        "Firewall rules for the live grants (one per address and port, whatever its owners).",
        s.rules as u64,
    );
    o.one(
        "spa_capture_frames_total",
        "counter",
        "Frames the kernel filter passed to the daemon (datagrams and knocks).",
        s.capture.frames,
    );
    o.one(
        "spa_capture_kernel_drops_total",
        "counter",
        "Frames the kernel dropped because the daemon's socket queue was full.",
        s.capture.kernel_drops,
    );
    o.labelled(
        "spa_datagrams_total",
        "counter",
        "SPA datagrams by result: accepted (the firewall took the change), rejected (any reason), failed (accepted, the firewall change failed).",
        "result",
        &[
            ("accepted", c.datagrams_accepted),
            ("rejected", c.datagrams_rejected),
            ("failed", c.datagrams_failed),
        ],
    );
    let rejects: Vec<(&str, u64)> = c.rejects.iter().map(|(k, v)| (*k, *v)).collect();
    o.labelled(
        "spa_rejects_total",
        "counter",
        "Rejected SPA datagrams by reason (the log line's reason=).",
        "reason",
        &rejects,
    );
    o.one(
        "spa_policy_denials_total",
        "counter",
        "Of the rejected datagrams, those authenticated but denied by the key's policy.",
        c.datagrams_denied,
    );
    o.labelled(
        "spa_knocks_total",
        "counter",
        "Knock sequences (legacy doors, HMAC knocks) by result.",
        "result",
        &[
            ("accepted", c.knocks_accepted),
            ("rejected", c.knocks_rejected),
        ],
    );
    let knock_rejects: Vec<(&str, u64)> = c.knock_rejects.iter().map(|(k, v)| (*k, *v)).collect();
    o.labelled(
        "spa_knock_rejects_total",
        "counter",
        "Rejected knocks by reason.",
        "reason",
        &knock_rejects,
    );
    o.one(
        "spa_grants_expired_total",
        "counter",
        "Grants removed at the end of their time.",
        c.grants_expired,
    );
    o.one(
        "spa_grants_revoked_total",
        "counter",
        "Grants ended by spa-server revoke.",
        c.grants_revoked,
    );
    o.one(
        "spa_firewall_failures_total",
        "counter",
        "Firewall batches that failed (the grant table kept its state).",
        c.firewall_failures,
    );
    o.one(
        "spa_firewall_repairs_total",
        "counter",
        "Times our chain or sets were found gone (a firewall reload by someone else) and re-installed.",
        c.firewall_repairs,
    );
    o.labelled(
        "spa_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP) by result.",
        "result",
        &[("applied", c.reloads), ("refused", c.reloads_refused)],
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_every_metric_has_help_and_type() {
        let p = prometheus(&super::super::status::tests::sample());
        assert!(
            p.contains("spa_datagrams_total{result=\"accepted\"} 2"),
            "{p}"
        );
        assert!(
            p.contains("spa_rejects_total{reason=\"replayed\"} 1"),
            "{p}"
        );
        assert!(p.contains("server_id=\"gw\\\"1\""), "{p}");
        assert!(p.contains("spa_grants 1\n"), "{p}");
        for l in p.lines().filter(|l| l.starts_with("# TYPE")) {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w[3] == "counter", w[2].ends_with("_total"), "{l}");
            assert!(p.contains(&format!("# HELP {} ", w[2])), "{l}");
        }
    }
}
