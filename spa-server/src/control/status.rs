//! One snapshot of a running server (grants, counters, who and where), and
//! its two human and machine forms: the text `spa-server status` prints and
//! the JSON of `status --json`, whose schema is documented in
//! docs/operations.md and only ever grows (new fields; `schema` goes up if
//! a field changes meaning). Prometheus is in metrics.rs. Pure.

use crate::capture::CaptureStats;
use crate::grants::{GrantView, Owner};
use crate::policy::utc_text;
use crate::stats::Stats;
use std::fmt::Write;

/// Bumped only when a field changes meaning or goes away.
pub const SCHEMA: u32 = 1;

/// Everything status shows, read at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub server_id: String,
    pub backend: &'static str,
    /// The configuration file, or empty for a command line alone.
    pub config: String,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    pub now: u64,
    pub grants: Vec<GrantView>,
    /// Firewall rules (one per address and grant, whatever its owners).
    pub rules: usize,
    pub stats: Stats,
    pub capture: CaptureStats,
    /// Each key's policy (issue 15): what it may open, from where, until
    /// when, and where it forwards.
    pub keys: Vec<KeyView>,
}

/// One key as status lists it.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub name: String,
    pub allow: Vec<spa_proto::Grant>,
    pub rules: crate::policy::KeyRules,
}

impl Snapshot {
    /// Reads the engine's grants and counters at `now` (Unix seconds).
    pub fn read(
        engine: &crate::engine::Engine,
        capture: CaptureStats,
        config: String,
        started_at: u64,
        now: u64,
    ) -> Snapshot {
        Snapshot {
            server_id: engine.config().server_name.clone(),
            backend: engine.grants().backend(),
            config,
            pid: std::process::id(),
            started_at,
            now,
            grants: engine.grants().list(now),
            rules: engine.grants().len(),
            stats: engine.stats(),
            capture,
            keys: engine
                .config()
                .keys
                .iter()
                .map(|k| KeyView {
                    name: k.name.clone(),
                    allow: k.allow.clone(),
                    rules: k.rules.clone(),
                })
                .collect(),
        }
    }

    pub fn uptime(&self) -> u64 {
        self.now.saturating_sub(self.started_at)
    }
}

/// `3h 2m 1s`, `5m 0s`, `12s`: for time left and uptime.
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

fn owner_kind(o: &Owner) -> &'static str {
    match o {
        Owner::Key(_) => "key",
        Owner::Doors => "door",
    }
}

fn reasons(m: &std::collections::BTreeMap<&'static str, u64>) -> String {
    if m.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = m.iter().map(|(r, n)| format!("{r} {n}")).collect();
    format!(" ({})", parts.join(", "))
}

/// The text `spa-server status` prints.
pub fn text(s: &Snapshot) -> String {
    let c = &s.stats;
    let mut o = String::new();
    let config = if s.config.is_empty() {
        "command line"
    } else {
        &s.config
    };
    let _ = writeln!(
        o,
        "spa-server {} (pid {}), server id {}, backend {}, config {}",
        env!("CARGO_PKG_VERSION"),
        s.pid,
        s.server_id,
        s.backend,
        config
    );
    let _ = writeln!(
        o,
        "up {} (since {})",
        span(s.uptime()),
        utc_text(s.started_at)
    );
    let _ = writeln!(
        o,
        "\ngrants: {} ({} firewall rules)",
        s.grants.len(),
        s.rules
    );
    if !s.grants.is_empty() {
        let rows: Vec<[String; 6]> = s
            .grants
            .iter()
            .map(|g| {
                [
                    format!("{} {}", owner_kind(&g.owner), g.owner_name),
                    g.addr.to_string(),
                    match g.forward {
                        Some(to) => format!("{} -> {to}", g.grant),
                        None => g.grant.to_string(),
                    },
                    utc_text(g.opened_at),
                    span(g.expires_at.saturating_sub(s.now)),
                    g.via.code().to_owned(),
                ]
            })
            .collect();
        let head = ["OWNER", "ADDRESS", "GRANT", "OPENED", "LEFT", "VIA"];
        let mut w = head.map(str::len);
        for r in &rows {
            for (i, f) in r.iter().enumerate() {
                w[i] = w[i].max(f.chars().count());
            }
        }
        for r in std::iter::once(head.map(str::to_owned)).chain(rows) {
            let mut line = String::from(" ");
            for (i, f) in r.iter().enumerate() {
                let _ = write!(line, " {f:<width$}", width = w[i]);
            }
            let _ = writeln!(o, "{}", line.trim_end());
        }
    }
    let _ = writeln!(o, "\nkeys: {}", s.keys.len());
    for k in &s.keys {
        let allow: Vec<String> = k.allow.iter().map(|g| g.to_string()).collect();
        let expires = match k.rules.expires {
            None => "never".to_owned(),
            Some(at) if at <= s.now => format!("{} (expired)", utc_text(at)),
            Some(at) => format!("{} (in {})", utc_text(at), span(at - s.now)),
        };
        let mut line = format!(
            "  {}: allow {}; from {}; expires {}",
            k.name,
            allow.join(","),
            k.rules.from_text(),
            expires
        );
        for (g, to) in &k.rules.forward {
            let _ = write!(line, "; {g} forwarded to {to}");
        }
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(o, "\ncounters since start:");
    let _ = writeln!(
        o,
        "  capture:   {} frames seen, {} kernel drops",
        s.capture.frames, s.capture.kernel_drops
    );
    let _ = writeln!(
        o,
        "  datagrams: {} accepted, {} rejected{}, of which {} denied by policy; {} firewall failures",
        c.datagrams_accepted,
        c.datagrams_rejected,
        reasons(&c.rejects),
        c.datagrams_denied,
        c.datagrams_failed
    );
    let _ = writeln!(
        o,
        "  knocks:    {} accepted, {} rejected{}",
        c.knocks_accepted,
        c.knocks_rejected,
        reasons(&c.knock_rejects)
    );
    let _ = writeln!(
        o,
        "  grants:    {} expired, {} revoked by hand",
        c.grants_expired, c.grants_revoked
    );
    let _ = writeln!(
        o,
        "  firewall:  {} failed batches, {} reloads by others recovered",
        c.firewall_failures, c.firewall_repairs
    );
    let _ = writeln!(
        o,
        "  config:    {} reloads, {} refused",
        c.reloads, c.reloads_refused
    );
    o
}

/// `status` in the requested form.
pub fn render(format: super::Format, s: &Snapshot) -> String {
    match format {
        super::Format::Text => text(s),
        super::Format::Json => json(s),
        super::Format::Prometheus => super::metrics::prometheus(s),
    }
}

/// The reply to `revoke`: one line per grant ended.
pub fn revoked(list: &[crate::grants::Revoked]) -> String {
    let mut o = format!("revoked {} grant(s)\n", list.len());
    for r in list {
        let _ = writeln!(o, "  {} {} {}", r.owner, r.addr, r.grant);
    }
    o
}

/// A JSON string literal (quotes, backslash, control characters escaped).
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_map(m: &std::collections::BTreeMap<&'static str, u64>) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_str(k)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// `status --json`: one object, the schema in docs/operations.md.
pub fn json(s: &Snapshot) -> String {
    let c = &s.stats;
    let grants: Vec<String> = s
        .grants
        .iter()
        .map(|g| {
            format!(
                "{{\"owner_kind\":\"{}\",\"owner\":{},\"address\":\"{}\",\"proto\":\"{}\",\
                 \"port\":{},\"opened_at\":{},\"expires_at\":{},\"time_left_secs\":{},\"via\":\"{}\",\
                 \"forward\":{}}}",
                owner_kind(&g.owner),
                json_str(&g.owner_name),
                g.addr,
                g.grant.proto.name(),
                g.grant.port,
                g.opened_at,
                g.expires_at,
                g.expires_at.saturating_sub(s.now),
                g.via.code(),
                g.forward
                    .map_or("null".to_owned(), |t| json_str(&t.to_string()))
            )
        })
        .collect();
    let counters = format!(
        "{{\"frames\":{},\"kernel_drops\":{},\"datagrams_accepted\":{},\"datagrams_rejected\":{},\
         \"datagrams_denied\":{},\"datagrams_rate_limited\":{},\"datagrams_not_persisted\":{},\
         \"datagrams_failed\":{},\"rejects\":{},\"knocks_accepted\":{},\"knocks_rejected\":{},\
         \"knock_rejects\":{},\"grants_expired\":{},\"grants_revoked\":{},\"firewall_failures\":{},\
         \"firewall_repairs\":{},\"reloads\":{},\"reloads_refused\":{}}}",
        s.capture.frames,
        s.capture.kernel_drops,
        c.datagrams_accepted,
        c.datagrams_rejected,
        c.datagrams_denied,
        c.datagrams_rate_limited,
        c.datagrams_not_persisted,
        c.datagrams_failed,
        json_map(&c.rejects),
        c.knocks_accepted,
        c.knocks_rejected,
        json_map(&c.knock_rejects),
        c.grants_expired,
        c.grants_revoked,
        c.firewall_failures,
        c.firewall_repairs,
        c.reloads,
        c.reloads_refused
    );
    format!(
        "{{\"schema\":{SCHEMA},\"version\":\"{}\",\"server_id\":{},\"config\":{},\"backend\":\"{}\",\
         \"pid\":{},\"started_at\":{},\"now\":{},\"uptime_secs\":{},\"rules\":{},\"grants\":[{}],\
         \"counters\":{counters},\"keys\":[{}]}}\n",
        env!("CARGO_PKG_VERSION"),
        json_str(&s.server_id),
        json_str(&s.config),
        s.backend,
        s.pid,
        s.started_at,
        s.now,
        s.uptime(),
        s.rules,
        grants.join(","),
        keys_json(s)
    )
}

/// `keys` of `status --json`: each key's allow list and policy.
fn keys_json(s: &Snapshot) -> String {
    let list = |v: Vec<String>| v.iter().map(|x| json_str(x)).collect::<Vec<_>>().join(",");
    s.keys
        .iter()
        .map(|k| {
            let forwards: Vec<String> = k
                .rules
                .forward
                .iter()
                .map(|(g, to)| format!("{}:{}", json_str(&g.to_string()), json_str(&to.to_string())))
                .collect();
            format!(
                "{{\"name\":{},\"allow\":[{}],\"from\":[{}],\"expires_at\":{},\"forwards\":{{{}}}}}",
                json_str(&k.name),
                list(k.allow.iter().map(|g| g.to_string()).collect()),
                list(k.rules.from.iter().map(|n| n.to_string()).collect()),
                k.rules.expires.map_or("null".to_owned(), |t| t.to_string()),
                forwards.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::grants::Via;
    use spa_proto::Grant;

    pub(crate) fn sample() -> Snapshot {
        let mut stats = Stats {
            datagrams_accepted: 2,
            knocks_accepted: 1,
            ..Stats::default()
        };
        stats.reject("replayed");
        Snapshot {
            server_id: "gw\"1".into(),
            backend: "iptables",
            config: "/etc/spa/server.toml".into(),
            pid: 42,
            started_at: 1_000,
            now: 1_100,
            grants: vec![GrantView {
                owner: Owner::Key("alice".into()),
                owner_name: "alice".into(),
                addr: "198.18.0.2".parse().unwrap(),
                grant: Grant::tcp(22).unwrap(),
                opened_at: 1_090,
                expires_at: 1_130,
                via: Via::Datagram,
                forward: None,
            }],
            rules: 1,
            stats,
            capture: CaptureStats::default(),
            keys: vec![KeyView {
                name: "alice".into(),
                allow: vec![Grant::tcp(22).unwrap()],
                rules: crate::policy::KeyRules::default(),
            }],
        }
    }

    #[test]
    fn text_names_owner_time_left_and_counters() {
        let t = text(&sample());
        assert!(t.contains("key alice"), "{t}");
        assert!(t.contains("30s") && t.contains("datagram"), "{t}");
        assert!(t.contains("2 accepted, 1 rejected (replayed 1)"), "{t}");
        assert!(t.contains("up 1m 40s"), "{t}");
    }

    #[test]
    fn json_escapes_and_carries_the_schema() {
        let j = json(&sample());
        assert!(j.starts_with("{\"schema\":1,"), "{j}");
        assert!(j.contains("\"server_id\":\"gw\\\"1\""), "{j}");
        assert!(j.contains("\"time_left_secs\":30"), "{j}");
        assert!(j.contains("\"rejects\":{\"replayed\":1}"), "{j}");
        assert_eq!(json_str("a\nb\u{1}"), "\"a\\u000ab\\u0001\"");
        // A real parser reads it back.
        let v: serde_json::Value = serde_json::from_str(&j).expect("valid JSON");
        assert_eq!(v["grants"][0]["owner"], "alice");
        assert_eq!(v["counters"]["rejects"]["replayed"], 1);
    }

    /// Issue 15: status names each key's source networks, expiry and
    /// forwards, and a forwarded grant's target.
    #[test]
    fn keys_policies_and_forward_targets_are_shown() {
        let mut s = sample();
        s.keys[0].rules = crate::policy::KeyRules {
            from: crate::policy::parse_from(&["203.0.113.0/24".into()]).unwrap(),
            expires: Some(1_100 + 3 * 86_400),
            forward: vec![(Grant::tcp(2222).unwrap(), "10.20.0.5:22".parse().unwrap())],
        };
        s.grants[0].grant = Grant::tcp(2222).unwrap();
        s.grants[0].forward = Some("10.20.0.5:22".parse().unwrap());
        let t = text(&s);
        assert!(t.contains("tcp/2222 -> 10.20.0.5:22"), "{t}");
        assert!(
            t.contains("alice: allow tcp/22; from 203.0.113.0/24; expires 1970-01-04T00:18:20Z (in 3d 0h 0m); tcp/2222 forwarded to 10.20.0.5:22"),
            "{t}"
        );
        let v: serde_json::Value = serde_json::from_str(&json(&s)).expect("valid JSON");
        assert_eq!(v["grants"][0]["forward"], "10.20.0.5:22");
        assert_eq!(v["keys"][0]["from"][0], "203.0.113.0/24");
        assert_eq!(v["keys"][0]["expires_at"], 1_100 + 3 * 86_400);
        assert_eq!(v["keys"][0]["forwards"]["tcp/2222"], "10.20.0.5:22");
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert!(v["grants"][0]["forward"].is_null() && v["keys"][0]["expires_at"].is_null());
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(300), "5m 0s");
        assert_eq!(span(3_725), "1h 2m 5s");
        assert_eq!(span(90_000), "1d 1h 0m");
    }
}
