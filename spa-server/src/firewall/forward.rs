//! Forwards through the gateway (issue 15, item 3): what a forwarded grant
//! is in each backend's terms, and the start check that the kernel forwards
//! at all.
//!
//! A forward is two rules that live and die together, in one batch: a DNAT
//! of (requester, gateway port) to the host behind the gateway, before
//! routing, and an ACCEPT of (requester, that host, its port) in the forward
//! path. Both carry the grant's kernel-side expiry, like an input grant, so
//! a `kill -9` of the daemon ends the path at the grant's end.

use super::{Access, FirewallOptions, FwError};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The sysctl that must be 1 for a family to forward.
fn sysctl_of(ip: IpAddr) -> (&'static str, &'static str) {
    match ip {
        IpAddr::V4(_) => ("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
        IpAddr::V6(_) => (
            "net.ipv6.conf.all.forwarding",
            "/proc/sys/net/ipv6/conf/all/forwarding",
        ),
    }
}

/// Start check: each family some forward goes to must have forwarding on,
/// or every forwarded grant would be "accepted" and lead nowhere. `read`
/// reads a /proc path (the daemon passes `fs::read_to_string`).
pub fn check_ip_forwarding(
    forwards: &HashMap<spa_proto::Grant, SocketAddr>,
    read: impl Fn(&str) -> std::io::Result<String>,
) -> Result<(), FwError> {
    let mut seen = Vec::new();
    for (g, to) in forwards {
        let (name, path) = sysctl_of(to.ip());
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let on = read(path).map(|v| v.trim() == "1").unwrap_or(false);
        if !on {
            return Err(FwError::ForwardingOff {
                sysctl: name,
                example: format!("{g} -> {to}"),
            });
        }
    }
    Ok(())
}

/// iptables: our chain in the filter table for the forward path.
pub fn ipt_fwd_chain(opts: &FirewallOptions) -> String {
    format!("{}-FWD", opts.chain)
}

/// iptables: the jump from FORWARD to our forward chain (new connections
/// only, as for INPUT).
pub fn ipt_fwd_jump(opts: &FirewallOptions) -> Vec<String> {
    [
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-m",
        "comment",
        "--comment",
        &opts.comment,
        "-j",
        &ipt_fwd_chain(opts),
    ]
    .map(String::from)
    .to_vec()
}

/// iptables: the jump from the nat table's PREROUTING to our nat chain
/// (the nat table sees only a connection's first packet anyway).
pub fn ipt_nat_jump(opts: &FirewallOptions) -> Vec<String> {
    [
        "-m",
        "comment",
        "--comment",
        &opts.comment,
        "-j",
        &opts.chain,
    ]
    .map(String::from)
    .to_vec()
}

fn host(ip: IpAddr) -> String {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    format!("{ip}/{prefix}")
}

/// iptables: (table, chain, rule) of a forwarded grant, in the order
/// `iptables -S` prints them: the DNAT first (nat), then the ACCEPT
/// (filter). Only packets addressed to the gateway itself are DNATed.
pub fn ipt_rules(
    opts: &FirewallOptions,
    a: &Access,
    to: SocketAddr,
    tail: &[String],
) -> Vec<(&'static str, String, Vec<String>)> {
    let proto = a.grant.proto.name();
    let src = host(a.canonical_addr());
    let mut dnat: Vec<String> = [
        "-s",
        &src,
        "-p",
        proto,
        "-m",
        proto,
        "--dport",
        &a.grant.port.to_string(),
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
    ]
    .map(String::from)
    .to_vec();
    dnat.extend_from_slice(tail);
    dnat.extend(["-j".into(), "DNAT".into(), "--to-destination".into()]);
    dnat.push(to.to_string());
    let mut accept: Vec<String> = [
        "-s",
        &src,
        "-d",
        &host(to.ip()),
        "-p",
        proto,
        "-m",
        proto,
        "--dport",
        &to.port().to_string(),
    ]
    .map(String::from)
    .to_vec();
    accept.extend_from_slice(tail);
    accept.extend(["-j".into(), "ACCEPT".into()]);
    vec![
        ("nat", opts.chain.clone(), dnat),
        ("filter", ipt_fwd_chain(opts), accept),
    ]
}

/// nftables: names of our nat chain and maps/sets in the admin's table.
pub struct NftNames {
    pub nat_chain: String,
    pub dnat4: String,
    pub dnat6: String,
    pub fwd4: String,
    pub fwd6: String,
}

pub fn nft_names(opts: &FirewallOptions) -> NftNames {
    NftNames {
        nat_chain: format!("{}_prerouting", opts.nft_set4),
        dnat4: format!("{}_dnat", opts.nft_set4),
        dnat6: format!("{}_dnat", opts.nft_set6),
        fwd4: format!("{}_fwd", opts.nft_set4),
        fwd6: format!("{}_fwd", opts.nft_set6),
    }
}

/// nftables setup: a nat chain of ours hooked at prerouting (dstnat) in the
/// admin's table, a DNAT map and a forward set per family, all with
/// timeouts, and one rule per family at the top of the admin's forward
/// chain (`nft_forward_chain`).
pub fn nft_setup_script(opts: &FirewallOptions, fwd_chain: &str, v4: bool, v6: bool) -> String {
    let t = format!("{} {}", opts.nft_family, opts.nft_table);
    let n = nft_names(opts);
    let mut s = format!(
        "add chain {t} {} {{ type nat hook prerouting priority dstnat; policy accept; }}\n",
        n.nat_chain
    );
    for (on, ty, fam, map, set) in [
        (v4, "ipv4_addr", "ip", &n.dnat4, &n.fwd4),
        (v6, "ipv6_addr", "ip6", &n.dnat6, &n.fwd6),
    ] {
        if !on {
            continue;
        }
        s.push_str(&format!(
            "add map {t} {map} {{ type {ty} . inet_proto . inet_service : {ty} . inet_service; flags timeout; }}\n"
        ));
        s.push_str(&format!(
            "add set {t} {set} {{ type {ty} . {ty} . inet_proto . inet_service; flags timeout; }}\n"
        ));
        s.push_str(&format!(
            "add rule {t} {} meta nfproto {} fib daddr type local dnat {fam} to {fam} saddr . meta l4proto . th dport map @{map} comment \"{}\"\n",
            n.nat_chain,
            if fam == "ip" { "ipv4" } else { "ipv6" },
            opts.comment
        ));
        s.push_str(&format!(
            "insert rule {t} {fwd_chain} ct state new {fam} saddr . {fam} daddr . meta l4proto . th dport @{set} accept comment \"{}\"\n",
            opts.comment
        ));
    }
    s
}

/// nftables: the map and set elements of a forwarded grant, as
/// (collection, element) pairs.
pub fn nft_elements(opts: &FirewallOptions, a: &Access, to: SocketAddr) -> [(String, String); 2] {
    let n = nft_names(opts);
    let (map, set) = if a.canonical_addr().is_ipv4() {
        (n.dnat4, n.fwd4)
    } else {
        (n.dnat6, n.fwd6)
    };
    let src = a.canonical_addr();
    let proto = a.grant.proto.name();
    [
        (map, format!("{src} . {proto} . {}", a.grant.port)),
        (
            set,
            format!("{src} . {} . {proto} . {}", to.ip(), to.port()),
        ),
    ]
}

/// nftables: the value part of the DNAT map element (`: 10.20.0.5 . 22`).
pub fn nft_map_value(to: SocketAddr) -> String {
    format!(" : {} . {}", to.ip(), to.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::access;
    use spa_proto::{Grant, Proto};

    #[test]
    fn forwarding_off_is_a_clear_error() {
        let to: SocketAddr = "10.20.0.5:22".parse().unwrap();
        let f = HashMap::from([(Grant::tcp(2222).unwrap(), to)]);
        let e = check_ip_forwarding(&f, |_| Ok("0\n".into())).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("net.ipv4.ip_forward") && t.contains("10.20.0.5:22"),
            "{t}"
        );
        assert!(check_ip_forwarding(&f, |_| Ok("1\n".into())).is_ok());
        assert!(check_ip_forwarding(&HashMap::new(), |_| Ok("0".into())).is_ok());
        let to6: SocketAddr = "[2001:db8:20::5]:22".parse().unwrap();
        let f6 = HashMap::from([(Grant::tcp(2222).unwrap(), to6)]);
        let t = check_ip_forwarding(&f6, |p| {
            Ok(if p.contains("ipv6") { "0" } else { "1" }.into())
        })
        .unwrap_err()
        .to_string();
        assert!(t.contains("net.ipv6.conf.all.forwarding"), "{t}");
    }

    #[test]
    fn iptables_rules_of_a_forward() {
        let o = FirewallOptions::default();
        let a = access("198.18.0.2", Proto::Tcp, 2222, 100);
        let to: SocketAddr = "10.20.0.5:22".parse().unwrap();
        let r = ipt_rules(&o, &a, to, &["-j".into()][..0]);
        assert_eq!(r[0].0, "nat");
        assert_eq!(
            r[0].2.join(" "),
            "-s 198.18.0.2/32 -p tcp -m tcp --dport 2222 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.20.0.5:22"
        );
        assert_eq!((r[1].0, r[1].1.as_str()), ("filter", "SPA-FWD"));
        assert_eq!(
            r[1].2.join(" "),
            "-s 198.18.0.2/32 -d 10.20.0.5/32 -p tcp -m tcp --dport 22 -j ACCEPT"
        );
    }

    #[test]
    fn nft_elements_of_a_forward() {
        let o = FirewallOptions::default();
        let a = access("2001:2::2", Proto::Tcp, 2222, 100);
        let to: SocketAddr = "[2001:db8:20::5]:22".parse().unwrap();
        let [m, s] = nft_elements(&o, &a, to);
        assert_eq!(m, ("spa6_dnat".into(), "2001:2::2 . tcp . 2222".into()));
        assert_eq!(
            s,
            (
                "spa6_fwd".into(),
                "2001:2::2 . 2001:db8:20::5 . tcp . 22".into()
            )
        );
        assert_eq!(nft_map_value(to), " : 2001:db8:20::5 . 22");
    }
}
