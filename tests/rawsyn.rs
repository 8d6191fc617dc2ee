//! Raw TCP SYNs from spoofed IPv4 sources, sent by a Python 3 program in a
//! test's client namespace (the knock floods of legacy.rs and
//! knock_flood.rs). One packet builder and one paced send loop, so the
//! floods differ only in which packets they send.

use std::net::Ipv4Addr;

/// A flood: `packets` is Python that sets `pkts`, a list of packets built
/// with `syn(src, dport)` (a seeded `rnd = random.Random(seed)` is in
/// scope for sources, ports and sequence numbers).
pub struct SynFlood<'a> {
    pub dst: Ipv4Addr,
    pub seed: u32,
    pub packets: &'a str,
    /// Packets a second: a veth's receive backlog (netdev_max_backlog)
    /// holds 1000, so a faster flood is dropped before the capture.
    pub pps: u32,
    /// Print `start` (flushed) before the first packet, for a test that
    /// acts mid-flood.
    pub announce_start: bool,
    /// The send loop stops after this many seconds, whatever is left.
    pub max_secs: u32,
}

impl SynFlood<'_> {
    /// The program (for `python3 -c`): builds every packet first, then sends
    /// them at about `pps`, each retried (at most 100 times, 1 ms apart)
    /// while the socket's buffer is full; prints `sent N in T s` at the end.
    pub fn script(&self) -> String {
        let SynFlood {
            dst,
            seed,
            packets,
            pps,
            max_secs,
            ..
        } = self;
        let start = if self.announce_start {
            "print('start',flush=True)"
        } else {
            ""
        };
        format!(
            r#"
import random,socket,struct,time
def csum(d):
    if len(d)%2: d+=b'\0'
    s=sum(struct.unpack('!%dH'%(len(d)//2),d))
    while s>>16: s=(s&0xffff)+(s>>16)
    return (~s)&0xffff
dst='{dst}'; rnd=random.Random({seed})
def syn(src,dport):
    tcp=struct.pack('!HHIIBBHHH',rnd.randrange(1024,65535),dport,rnd.getrandbits(32),0,5<<4,0x02,64240,0,0)
    ph=socket.inet_aton(src)+socket.inet_aton(dst)+struct.pack('!BBH',0,6,len(tcp))
    tcp=tcp[:16]+struct.pack('!H',csum(ph+tcp))+tcp[18:]
    ip=struct.pack('!BBHHHBBH4s4s',0x45,0,40,rnd.getrandbits(16),0,64,6,0,socket.inet_aton(src),socket.inet_aton(dst))
    return ip[:10]+struct.pack('!H',csum(ip))+ip[12:]+tcp
{packets}
s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP,socket.IP_HDRINCL,1)
{start}
t0=time.monotonic(); sent=0
for p in pkts:
    if time.monotonic()-t0>={max_secs}: break
    for _ in range(100):
        try: s.sendto(p,(dst,0)); sent+=1; break
        except OSError: time.sleep(0.001)
    if sent%100==0:
        ahead=sent/{pps}-(time.monotonic()-t0)
        if ahead>0: time.sleep(ahead)
print('sent %d in %.2f s'%(sent,time.monotonic()-t0),flush=True)
"#
        )
    }
}
