//! The text iptables reads: our jump, the silent ports' drops, a forward's
//! rules with their kernel-side expiry (`--datestop`), and the
//! `iptables-restore --noflush` input of one batch. Pure: no tool is run here.

use crate::firewall::silence::{self, Silence};
use crate::firewall::{Access, FirewallOptions};
use spa_proto::IpFamily;

/// The largest `--datestop` xt_time accepts (its field is 32-bit).
pub(super) const MAX_DATESTOP: u64 = i32::MAX as u64;

/// Match and target of our jump, as `iptables` arguments. Only new
/// connections (`--ctstate NEW`) enter our chain: a grant admits the first
/// packet, the admin's ESTABLISHED,RELATED accept carries the rest, and
/// established traffic never walks the grant rules (issue 16, finding 1:
/// 6000 rules took every packet's cost from 17 µs to over 260 µs).
pub fn jump_spec(opts: &FirewallOptions) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "-m".into(),
        "conntrack".into(),
        "--ctstate".into(),
        "NEW".into(),
    ];
    v.extend(old_jump_spec(opts));
    v
}

/// The jump earlier versions installed (every state): removed at setup and
/// teardown, never installed.
pub(super) fn old_jump_spec(opts: &FirewallOptions) -> Vec<String> {
    vec![
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        opts.comment.clone(),
        "-j".into(),
        opts.chain.clone(),
    ]
}

/// The DROP rules that keep the SPA and knock ports silent, as `iptables`
/// arguments (after `-A CHAIN`).
pub fn drop_specs(opts: &FirewallOptions, s: &Silence) -> Vec<Vec<String>> {
    s.ranges
        .iter()
        .map(|&(proto, lo, hi)| {
            let p = proto.name();
            vec![
                "-p".into(),
                p.into(),
                "-m".into(),
                p.into(),
                "--dport".into(),
                silence::range_text(lo, hi, ':'),
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                silence::comment(&opts.comment),
                "-j".into(),
                "DROP".into(),
            ]
        })
        .collect()
}

pub(super) fn restore_tool(opts: &FirewallOptions, fam: IpFamily) -> &str {
    match fam {
        IpFamily::V4 => &opts.iptables_restore,
        IpFamily::V6 => &opts.ip6tables_restore,
    }
}

/// `[prefix..] iptables-restore -w N --noflush`, for a warm spare.
pub(super) fn restore_argv(opts: &FirewallOptions, fam: IpFamily) -> Vec<String> {
    let mut argv: Vec<String> = opts.exec_prefix.clone();
    argv.extend([
        restore_tool(opts, fam).to_owned(),
        "-w".into(),
        opts.lock_wait_secs.to_string(),
        "--noflush".into(),
    ]);
    argv
}

/// The kernel-side expiry and our comment, shared by every rule of a grant.
pub(super) fn expiry_spec(opts: &FirewallOptions, a: &Access) -> Vec<String> {
    vec![
        "-m".into(),
        "time".into(),
        "--datestop".into(),
        datestop(a.expires_at),
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        grant_comment(opts, a),
    ]
}

/// (table, chain, rule) of every rule one grant is: for a forward the DNAT
/// and the forward ACCEPT (forward.rs); none for an input grant, which is
/// an entry of the grant set (ipset.rs).
pub fn rule_lines(opts: &FirewallOptions, a: &Access) -> Vec<(&'static str, String, Vec<String>)> {
    match a.forward {
        None => Vec::new(),
        Some(to) => crate::firewall::forward::ipt_rules(opts, a, to, &expiry_spec(opts, a)),
    }
}

/// `spa-server exp=<secs>`: marks the rule or set entry as ours and says
/// when it lapses in the unit the daemon thinks in.
pub fn grant_comment(opts: &FirewallOptions, a: &Access) -> String {
    format!("{} exp={}", opts.comment, a.expires_at)
}

/// The last second (UTC) the rule matches. xt_time matches while
/// `now <= datestop` at one-second resolution, and a grant is open while
/// `now < expires_at`, so the last matching second is `expires_at - 1`.
/// iptables reads the value as UTC (only `--kerneltz` would change that).
pub fn datestop(expires_at: u64) -> String {
    let t = expires_at.saturating_sub(1).min(MAX_DATESTOP);
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm), so we need no date crate for one format.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Arguments as one `iptables-restore` line: words with spaces quoted.
pub(super) fn restore_args(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `iptables-restore --noflush` input for one family's forward rules:
/// removes first, so a refresh (remove old, add new) never has two rules
/// for one grant. Input grants write nothing here (set entries).
pub fn batch(opts: &FirewallOptions, add: &[Access], remove: &[Access]) -> String {
    let mut tables: Vec<(&str, String)> = vec![("filter", String::new())];
    for (op, list) in [("-D", remove), ("-A", add)] {
        for a in list {
            for (table, chain, spec) in rule_lines(opts, a) {
                let line = format!("{op} {chain} {}\n", restore_args(&spec));
                match tables.iter_mut().find(|(t, _)| *t == table) {
                    Some((_, body)) => body.push_str(&line),
                    None => tables.push((table, line)),
                }
            }
        }
    }
    tables
        .into_iter()
        .filter(|(t, body)| *t == "filter" || !body.is_empty())
        .map(|(t, body)| format!("*{t}\n{body}COMMIT\n"))
        .collect()
}
