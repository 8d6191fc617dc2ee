//! Issue 16, finding 11, end to end: no grant for an address that cannot be
//! a remote client, through a datagram or a knock. The real daemon, client
//! and iptables in a pair of network namespaces (id 125, engineer B's range
//! 120..=139). Spoofed knocks are raw SYNs sent by python3 from the client
//! namespace with a source address it does not own; nothing leaves the two
//! namespaces.

use spa_e2e::{run_ok, Testbed};
use std::net::IpAddr;
use std::time::Duration;

const SID: &str = "e2e-addr";

/// One TCP SYN to each of `ports` on `dst`, from `src` (any address: a raw
/// IPv4 packet, as a spoofer sends it), 50 ms apart.
fn spoofed_syns(r: &Testbed, src: IpAddr, dst: IpAddr, ports: &[u16]) {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let script = format!(
        "import socket,struct,time\n\
         def csum(b):\n\
         \x20   s=sum(struct.unpack('!%dH'%(len(b)//2),b))\n\
         \x20   s=(s>>16)+(s&0xffff); s+=s>>16\n\
         \x20   return (~s)&0xffff\n\
         r=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n\
         sa=socket.inet_aton('{src}'); da=socket.inet_aton('{dst}')\n\
         for port in [{}]:\n\
         \x20   tcp=struct.pack('!HHIIBBHHH',40000,port,1,0,5<<4,2,65535,0,0)\n\
         \x20   c=csum(sa+da+struct.pack('!BBH',0,6,len(tcp))+tcp)\n\
         \x20   tcp=tcp[:16]+struct.pack('!H',c)+tcp[18:]\n\
         \x20   ip=struct.pack('!BBHHHBBH4s4s',0x45,0,40,0,0,64,6,0,sa,da)\n\
         \x20   r.sendto(ip+tcp,('{dst}',0))\n\
         \x20   time.sleep(0.05)\n",
        ports.join(",")
    );
    run_ok(&mut r.pair.cli(&["timeout", "20", "python3", "-c", &script]));
}

#[test]
fn no_grant_for_own_loopback_or_broadcast_addresses() {
    let r = Testbed::new(125, "addresses", "iptables", SID, &["alice"]);
    let v4 = r.pair.v4();
    let (cli, srv) = (v4.cli, v4.srv);
    let s = r.server("server.log", &["--allow-other-address", "--legacy-knock"]);

    // Datagrams naming what cannot be a client (the key may name others).
    let subnet_bcast = "198.18.125.255";
    let own = srv.to_string();
    for (n, bad) in [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        own.as_str(),
        subnet_bcast,
    ]
    .iter()
    .enumerate()
    {
        r.send(cli, srv, &["--open", "22", "--allow-ip", bad]);
        s.expect_lines(&["rejected", "reason=\"unusable_address\""], n + 1);
    }
    assert!(r.grant_rules("iptables").is_empty(), "{}", s.log_text());

    // A spoofed default door sequence (7000,8000,9000) from the server's own
    // address and from the subnet's broadcast address.
    for src in [srv, subnet_bcast.parse().unwrap()] {
        spoofed_syns(&r, src, srv, &[7000, 8000, 9000]);
    }
    assert!(
        s.wait_lines(
            &["knock rejected", "reason=\"local\""],
            6,
            Duration::from_secs(5)
        ),
        "each spoofed knock must be refused; log:\n{}",
        s.log_text()
    );
    assert!(
        s.lines_with(&["knock accepted"]).is_empty(),
        "{}",
        s.log_text()
    );
    assert!(r.grant_rules("iptables").is_empty(), "{}", s.log_text());

    // The real client still gets in the same ways.
    r.send(cli, srv, &["--open", "22"]);
    s.expect_lines(&["accepted open"], 1);
    r.expect_connect(cli, srv, true, "after a valid --open", &s);
    r.done("no_grant_for_own_loopback_or_broadcast_addresses");
}
