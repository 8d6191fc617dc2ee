//! The text nft reads: the setup script, the silent ports' drops, one
//! batch's transaction with per-element timeouts, and which removes a batch
//! needs at all. Pure: no tool is run here.

use crate::firewall::silence::{self, Silence};
use crate::firewall::{split_family, Access, FirewallOptions};
use tracing::{debug, warn};

/// Which removes need a `delete element`: not those already expired (the
/// kernel no longer matches them and garbage-collects them itself; deleting
/// one races that and fails with ENOENT), and, when the kernel refreshes
/// timeouts in place, not those an add of the same key replaces.
pub fn plan(
    add: &[Access],
    remove: &[Access],
    now_ms: u64,
    timeout_update: bool,
) -> (Vec<Access>, Vec<Access>) {
    let (a4, a6) = split_family(add);
    let (r4, r6) = split_family(remove);
    let adds: Vec<Access> = a4.into_iter().chain(a6).collect();
    let add_keys: std::collections::HashSet<_> =
        adds.iter().map(|a| (a.canonical_addr(), a.grant)).collect();
    let removes: Vec<Access> = r4
        .into_iter()
        .chain(r6)
        .filter(|r| {
            if timeout_ms(r.expires_at, now_ms).is_none() {
                debug!(grant = %r, "already expired; the kernel removes it");
                return false;
            }
            !(timeout_update && add_keys.contains(&(r.canonical_addr(), r.grant)))
        })
        .collect();
    (adds, removes)
}

pub(super) fn set_for<'a>(opts: &'a FirewallOptions, a: &Access) -> &'a str {
    if a.canonical_addr().is_ipv4() {
        &opts.nft_set4
    } else {
        &opts.nft_set6
    }
}

/// `198.18.10.2 . tcp . 22`: a set element key.
pub fn element(a: &Access) -> String {
    format!(
        "{} . {} . {}",
        a.canonical_addr(),
        a.grant.proto.name(),
        a.grant.port
    )
}

/// Sets and the two rules. Rules go to the top of the admin's chain
/// (`insert` without a position) so nothing of theirs drops first. They
/// match only new connections (`ct state new`): established traffic goes
/// on to the admin's `ct state established,related accept` without a set
/// lookup (issue 16, finding 1).
pub fn setup_script(opts: &FirewallOptions, v4: bool, v6: bool) -> String {
    let t = format!("{} {}", opts.nft_family, opts.nft_table);
    let mut s = String::new();
    for (on, addr_type, family, set) in [
        (v4, "ipv4_addr", "ip", &opts.nft_set4),
        (v6, "ipv6_addr", "ip6", &opts.nft_set6),
    ] {
        if !on {
            continue;
        }
        s.push_str(&format!(
            "add set {t} {set} {{ type {addr_type} . inet_proto . inet_service; flags timeout; }}\n"
        ));
        s.push_str(&format!(
            "insert rule {t} {} ct state new {family} saddr . meta l4proto . th dport @{set} accept comment \"{}\"\n",
            opts.nft_chain, opts.comment
        ));
    }
    s
}

/// The drop rules for the silent ports, inserted at the top of the admin's
/// chain. Any connection state: a stray non-SYN to a knock port gets no RST
/// either.
pub fn drop_script(opts: &FirewallOptions, s: &Silence) -> String {
    let t = format!("{} {}", opts.nft_family, opts.nft_table);
    s.ranges
        .iter()
        .map(|&(proto, lo, hi)| {
            format!(
                "insert rule {t} {} meta l4proto {} th dport {} drop comment \"{}\"\n",
                opts.nft_chain,
                proto.name(),
                silence::range_text(lo, hi, '-'),
                silence::comment(&opts.comment)
            )
        })
        .collect()
}

/// The longest element timeout we write: nft 1.0.6 rejects a seconds
/// component above about 2^32 / 1000 ("value too large"), so ~49.7 days.
/// Grants are capped far below this by policy.
pub const MAX_TIMEOUT_MS: u64 = 4_294_967_000;

/// Milliseconds left for a grant at `now_ms`, capped at [`MAX_TIMEOUT_MS`];
/// None when already expired (an element with `timeout 0` would never
/// expire, so it must not be added).
pub fn timeout_ms(expires_at: u64, now_ms: u64) -> Option<u64> {
    let end = expires_at.saturating_mul(1000);
    (end > now_ms).then(|| (end - now_ms).min(MAX_TIMEOUT_MS))
}

/// `30s500ms`: nft 1.0.6 refuses a bare millisecond count above 2^32/1000,
/// so seconds and milliseconds go in separate components.
pub fn timeout_text(ms: u64) -> String {
    match (ms / 1000, ms % 1000) {
        (0, m) => format!("{m}ms"),
        (s, 0) => format!("{s}s"),
        (s, m) => format!("{s}s{m}ms"),
    }
}

/// One transaction: deletes first, then adds, so a refresh (same key, later
/// expiry) replaces the element and its timeout.
pub fn apply_script(
    opts: &FirewallOptions,
    add: &[Access],
    remove: &[Access],
    now_ms: u64,
) -> String {
    let t = format!("{} {}", opts.nft_family, opts.nft_table);
    let mut s = String::new();
    // (collection, key, map value) of every element one grant is.
    let elements = |a: &Access| -> Vec<(String, String, String)> {
        match a.forward {
            None => vec![(set_for(opts, a).to_owned(), element(a), String::new())],
            Some(to) => {
                let [(m, k), (f, e)] = crate::firewall::forward::nft_elements(opts, a, to);
                vec![
                    (m, k, crate::firewall::forward::nft_map_value(to)),
                    (f, e, String::new()),
                ]
            }
        }
    };
    for r in remove {
        for (set, key, _) in elements(r) {
            s.push_str(&format!("delete element {t} {set} {{ {key} }}\n"));
        }
    }
    for a in add {
        match timeout_ms(a.expires_at, now_ms) {
            Some(ms) => {
                for (set, key, value) in elements(a) {
                    s.push_str(&format!(
                        "add element {t} {set} {{ {key} timeout {}{value} }}\n",
                        timeout_text(ms)
                    ));
                }
            }
            None => warn!(grant = %a, "grant already expired; not adding it"),
        }
    }
    s
}
