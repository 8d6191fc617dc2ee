//! Classic BPF programs generated from a [`FilterSpec`].
//!
//! The kernel runs the program on every frame the packet socket would
//! otherwise queue, so traffic that is not for our ports never reaches user
//! space. One program per address family: each socket is bound to a single
//! ethertype (`ETH_P_IP` or `ETH_P_IPV6`), so the program never has to tell
//! the families apart and stays short. Offsets are relative to the network
//! header: a `SOCK_DGRAM` packet socket hands the filter the frame with the
//! link header already pulled.
//!
//! Conditional jumps in classic BPF carry 8-bit offsets. Each block ends in
//! its own `ret`, so no jump ever crosses more than one port list; a list
//! longer than [`EXACT_PORTS_MAX`] is matched as the range `min..=max`
//! instead (user space checks the exact list again in `parse`).

use super::FilterSpec;
use spa_proto::IpFamily;
use std::collections::BTreeSet;
use std::fmt;

/// Bytes of an accepted packet copied to user space. A v1 datagram needs at
/// most 60 (IPv4 with options) + 8 + `DATAGRAM_LEN` bytes; knocks need only
/// the headers. Truncating keeps a flood of large UDP knocks cheap.
pub const SNAPLEN: u32 = 1024;

/// Longest port list matched port by port; longer lists become a range.
pub const EXACT_PORTS_MAX: usize = 200;

/// `BPF_MAXINSNS` in the kernel.
pub const MAX_INSNS: usize = 4096;

// Classic BPF opcodes (linux/bpf_common.h, linux/filter.h).
pub const LD_W_ABS: u16 = 0x20;
pub const LD_W_IND: u16 = 0x40;
pub const LD_H_ABS: u16 = 0x28;
pub const LD_B_ABS: u16 = 0x30;
pub const LD_H_IND: u16 = 0x48;
pub const LD_B_IND: u16 = 0x50;
pub const LDX_B_MSH: u16 = 0xb1;
pub const ALU_AND_K: u16 = 0x54;
pub const JMP_JA: u16 = 0x05;
pub const JMP_JEQ_K: u16 = 0x15;
pub const JMP_JGT_K: u16 = 0x25;
pub const JMP_JGE_K: u16 = 0x35;
pub const JMP_JSET_K: u16 = 0x45;
pub const RET_K: u16 = 0x06;

/// `SKF_AD_OFF`: ancillary data loads start at this (negative) offset.
pub const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
/// `SKF_AD_PKTTYPE`: `skb->pkt_type`.
pub const SKF_AD_PKTTYPE: u32 = 4;
/// `PACKET_HOST`: addressed to this host. Everything else (outgoing copies,
/// other hosts' traffic on a promiscuous interface, broadcast, multicast)
/// is not a knock at us.
pub const PACKET_HOST: u32 = 0;

/// The magic every datagram starts with (payload bytes 0..4), the same in
/// every protocol version.
pub const SPA_MAGIC: [u8; 4] = spa_proto::MAGIC;

/// The version bytes (payload byte 4) the daemon speaks. Both are always
/// passed, whatever versions the configured keys accept: the filter then
/// depends on the ports alone, a reload that changes a key's `protocols`
/// never swaps a filter, and a datagram of a version no key accepts costs
/// one id-map probe in user space (`unknown_key_id`), no AEAD work.
pub const SPA_VERSIONS: [u8; 2] = [spa_proto::VERSION, spa_proto::VERSION_V2];

/// Whether a payload starts like a datagram the daemon speaks: the magic,
/// then one of [`SPA_VERSIONS`]. The one rule the kernel filter and `parse`
/// both apply, so garbage of the right length never wakes the daemon.
pub fn speaks(payload: &[u8]) -> bool {
    payload.get(..SPA_MAGIC.len()) == Some(&SPA_MAGIC[..])
        && payload
            .get(SPA_MAGIC.len())
            .is_some_and(|v| SPA_VERSIONS.contains(v))
}

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const UDP_HEADER_LEN: u32 = 8;
/// Offsets of the magic and the version byte in the UDP payload.
const MAGIC_OFF: u32 = 0;
const VERSION_OFF: u32 = 4;
const TCP_SYN: u32 = 0x02;
const TCP_ACK: u32 = 0x10;

/// One classic BPF instruction, laid out like `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Which packets a socket receives. Each class has its own sockets, so its
/// own kernel queues: a knock flood (unauthenticated, spoofable) fills only
/// the knock queues and can never push a datagram out of the kernel, and
/// the daemon reads datagrams first (issue 16, finding 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// SPA datagrams: UDP to `spa_port` of exactly the datagram's length,
    /// starting with the magic and a version byte we speak ([`speaks`]).
    Spa,
    /// Knocks: TCP SYNs and UDP to the knock ports (not the datagrams).
    Knock,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Spa, Class::Knock];

    pub fn name(self) -> &'static str {
        match self {
            Class::Spa => "spa",
            Class::Knock => "knock",
        }
    }
}

/// Why a program could not be generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BpfError {
    /// A conditional jump needs more than 255 instructions of offset.
    JumpTooFar { at: usize, distance: usize },
    /// More instructions than the kernel accepts.
    TooLong { insns: usize },
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpfError::JumpTooFar { at, distance } => write!(
                f,
                "BPF jump at instruction {at} spans {distance} instructions (limit 255)"
            ),
            BpfError::TooLong { insns } => {
                write!(
                    f,
                    "BPF program has {insns} instructions (limit {MAX_INSNS})"
                )
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Next,
    Label(usize),
}

enum Op {
    Stmt {
        code: u16,
        k: u32,
    },
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Ja(usize),
    Place(usize),
}

/// A two-pass assembler with labels, so the generator never counts offsets.
#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, label: usize) {
        self.ops.push(Op::Place(label));
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.ops.push(Op::Stmt { code, k });
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.ops.push(Op::Jump { code, k, jt, jf });
    }
    fn ja(&mut self, label: usize) {
        self.ops.push(Op::Ja(label));
    }

    fn finish(self) -> Result<Vec<Insn>, BpfError> {
        let mut at = vec![usize::MAX; self.labels];
        let mut n = 0;
        for op in &self.ops {
            match op {
                Op::Place(l) => at[*l] = n,
                _ => n += 1,
            }
        }
        if n > MAX_INSNS {
            return Err(BpfError::TooLong { insns: n });
        }
        let mut out = Vec::with_capacity(n);
        for op in &self.ops {
            let here = out.len();
            let offset = |t: Target| -> Result<u8, BpfError> {
                match t {
                    Target::Next => Ok(0),
                    Target::Label(l) => {
                        // Every label is placed after its jumps (forward only).
                        let distance = at[l].saturating_sub(here + 1);
                        u8::try_from(distance)
                            .map_err(|_| BpfError::JumpTooFar { at: here, distance })
                    }
                }
            };
            match *op {
                Op::Place(_) => {}
                Op::Stmt { code, k } => out.push(Insn {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Op::Jump { code, k, jt, jf } => out.push(Insn {
                    code,
                    jt: offset(jt)?,
                    jf: offset(jf)?,
                    k,
                }),
                Op::Ja(l) => out.push(Insn {
                    code: JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: at[l].saturating_sub(here + 1) as u32,
                }),
            }
        }
        Ok(out)
    }
}

/// Load sizes of classic BPF.
#[derive(Clone, Copy)]
enum Size {
    B,
    H,
    W,
}

/// Loads relative to the transport header: IPv4 uses the index register
/// (set from the IHL: `ldxb 4*([0]&0xf)`), IPv6 a fixed 40-byte header.
fn load_l4(a: &mut Asm, family: IpFamily, size: Size, off: u32) {
    let (ind, abs) = match size {
        Size::B => (LD_B_IND, LD_B_ABS),
        Size::H => (LD_H_IND, LD_H_ABS),
        Size::W => (LD_W_IND, LD_W_ABS),
    };
    match family {
        IpFamily::V4 => a.stmt(ind, off),
        IpFamily::V6 => a.stmt(abs, 40 + off),
    }
}

/// Jumps to `hit` when A (a port) is in `ports`, else to `miss`.
fn port_list(a: &mut Asm, ports: &BTreeSet<u16>, hit: usize, miss: usize) {
    let (Some(&min), Some(&max)) = (ports.first(), ports.last()) else {
        a.ja(miss);
        return;
    };
    if ports.len() > EXACT_PORTS_MAX {
        a.jump(JMP_JGE_K, u32::from(min), Target::Next, Target::Label(miss));
        a.jump(
            JMP_JGT_K,
            u32::from(max),
            Target::Label(miss),
            Target::Label(hit),
        );
        return;
    }
    let last = ports.len() - 1;
    for (i, &p) in ports.iter().enumerate() {
        let jf = if i == last {
            Target::Label(miss)
        } else {
            Target::Next
        };
        a.jump(JMP_JEQ_K, u32::from(p), Target::Label(hit), jf);
    }
}

/// The filter for one address family: everything `spec` names (both
/// classes; what the tests check `parse` against).
pub fn program(spec: &FilterSpec, family: IpFamily) -> Result<Vec<Insn>, BpfError> {
    generate(spec, family, true, true)
}

/// The filter for the sockets of one class: [`program`] restricted to
/// datagrams or to knocks. A datagram to a port that is also a UDP knock
/// port goes to the SPA sockets only.
pub fn program_for(
    spec: &FilterSpec,
    family: IpFamily,
    class: Class,
) -> Result<Vec<Insn>, BpfError> {
    match class {
        Class::Spa => generate(spec, family, true, false),
        Class::Knock if spec.knock_tcp.is_empty() && spec.knock_udp.is_empty() => Ok(drop_all()),
        Class::Knock => generate(spec, family, false, true),
    }
}

fn generate(
    spec: &FilterSpec,
    family: IpFamily,
    spa: bool,
    knocks: bool,
) -> Result<Vec<Insn>, BpfError> {
    let ports = |list: &[u16]| -> BTreeSet<u16> {
        if knocks {
            list.iter().copied().collect()
        } else {
            BTreeSet::new()
        }
    };
    let knock_tcp = ports(&spec.knock_tcp);
    let knock_udp = ports(&spec.knock_udp);
    // Saturate rather than wrap: FilterSpec::validate rejects it before here.
    let udp_len = u32::try_from(spec.spa_len.saturating_add(8)).unwrap_or(u32::MAX);

    let mut a = Asm::default();
    let drop0 = a.label();
    let udp = a.label();
    let tcp = a.label();

    // Prelude: only frames addressed to this host, of the right IP version.
    a.stmt(LD_W_ABS, SKF_AD_OFF.wrapping_add(SKF_AD_PKTTYPE));
    a.jump(JMP_JEQ_K, PACKET_HOST, Target::Next, Target::Label(drop0));
    a.stmt(LD_B_ABS, 0);
    a.stmt(ALU_AND_K, 0xf0);
    let version = match family {
        IpFamily::V4 => 0x40,
        IpFamily::V6 => 0x60,
    };
    a.jump(JMP_JEQ_K, version, Target::Next, Target::Label(drop0));
    match family {
        IpFamily::V4 => {
            // Any fragment offset or More Fragments: not a whole datagram.
            a.stmt(LD_H_ABS, 6);
            a.jump(JMP_JSET_K, 0x3fff, Target::Label(drop0), Target::Next);
            a.stmt(LDX_B_MSH, 0);
            a.stmt(LD_B_ABS, 9);
        }
        IpFamily::V6 => {
            // Next header directly UDP/TCP; extension headers are not walked.
            a.stmt(LD_B_ABS, 6);
        }
    }
    a.jump(JMP_JEQ_K, IPPROTO_UDP, Target::Label(udp), Target::Next);
    if knock_tcp.is_empty() {
        a.place(drop0);
        a.stmt(RET_K, 0);
    } else {
        a.jump(JMP_JEQ_K, IPPROTO_TCP, Target::Label(tcp), Target::Next);
        a.place(drop0);
        a.stmt(RET_K, 0);
    }

    // UDP: the SPA port with the exact datagram length, magic and a version
    // we speak, or else a UDP knock port.
    a.place(udp);
    {
        let accept = a.label();
        let drop = a.label();
        let knock = a.label();
        let reload = a.label();
        load_l4(&mut a, family, Size::H, 2);
        a.jump(
            JMP_JEQ_K,
            u32::from(spec.spa_port),
            Target::Next,
            Target::Label(knock),
        );
        load_l4(&mut a, family, Size::H, 4);
        a.jump(JMP_JEQ_K, udp_len, Target::Next, Target::Label(reload));
        // The payload starts with the magic and a version we speak
        // ([`speaks`]): garbage of the right length stays in the kernel.
        load_l4(&mut a, family, Size::W, UDP_HEADER_LEN + MAGIC_OFF);
        a.jump(
            JMP_JEQ_K,
            u32::from_be_bytes(SPA_MAGIC),
            Target::Next,
            Target::Label(reload),
        );
        load_l4(&mut a, family, Size::B, UDP_HEADER_LEN + VERSION_OFF);
        // A datagram: ours on the SPA sockets, dropped on the knock ones.
        let datagram = if spa { accept } else { drop };
        let last = SPA_VERSIONS.len() - 1;
        for (i, &v) in SPA_VERSIONS.iter().enumerate() {
            let jf = if i == last {
                Target::Label(reload)
            } else {
                Target::Next
            };
            a.jump(JMP_JEQ_K, u32::from(v), Target::Label(datagram), jf);
        }
        a.place(reload);
        if knock_udp.is_empty() {
            a.place(knock);
            a.ja(drop);
        } else {
            load_l4(&mut a, family, Size::H, 2);
            a.place(knock);
            port_list(&mut a, &knock_udp, accept, drop);
        }
        a.place(accept);
        a.stmt(RET_K, SNAPLEN);
        a.place(drop);
        a.stmt(RET_K, 0);
    }

    // TCP: a knock port, SYN set and ACK clear (a connection attempt).
    if !knock_tcp.is_empty() {
        a.place(tcp);
        let accept = a.label();
        let drop = a.label();
        let flags = a.label();
        load_l4(&mut a, family, Size::H, 2);
        port_list(&mut a, &knock_tcp, flags, drop);
        a.place(flags);
        load_l4(&mut a, family, Size::B, 13);
        a.stmt(ALU_AND_K, TCP_SYN | TCP_ACK);
        a.jump(
            JMP_JEQ_K,
            TCP_SYN,
            Target::Label(accept),
            Target::Label(drop),
        );
        a.place(accept);
        a.stmt(RET_K, SNAPLEN);
        a.place(drop);
        a.stmt(RET_K, 0);
    }
    a.finish()
}

/// A filter that accepts nothing: installed before a socket is bound so no
/// unfiltered frame is ever queued.
pub fn drop_all() -> Vec<Insn> {
    vec![Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: 0,
    }]
}

#[cfg(test)]
pub(crate) mod interp {
    //! A tiny classic BPF interpreter for exactly the subset [`program`]
    //! emits, with the kernel's rule that an out-of-bounds load drops.
    use super::*;

    pub fn run(prog: &[Insn], pkt: &[u8], pkttype: u32) -> u32 {
        let (mut a, mut x): (u32, u32) = (0, 0);
        let mut pc = 0usize;
        let ld = |off: u32, size: usize| -> Option<u32> {
            let off = off as usize;
            let b = pkt.get(off..off.checked_add(size)?)?;
            Some(b.iter().fold(0u32, |acc, &v| (acc << 8) | u32::from(v)))
        };
        for _ in 0..=prog.len() {
            let Some(i) = prog.get(pc) else { return 0 };
            pc += 1;
            let cond = |taken: bool, pc: &mut usize| {
                *pc += usize::from(if taken { i.jt } else { i.jf });
            };
            match i.code {
                LD_W_ABS if i.k == SKF_AD_OFF.wrapping_add(SKF_AD_PKTTYPE) => a = pkttype,
                LD_W_ABS => match ld(i.k, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_W_IND => match ld(x.wrapping_add(i.k), 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_ABS => match ld(i.k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_ABS => match ld(i.k, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_IND => match ld(x.wrapping_add(i.k), 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_IND => match ld(x.wrapping_add(i.k), 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDX_B_MSH => match ld(i.k, 1) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                ALU_AND_K => a &= i.k,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K => cond(a == i.k, &mut pc),
                JMP_JGT_K => cond(a > i.k, &mut pc),
                JMP_JGE_K => cond(a >= i.k, &mut pc),
                JMP_JSET_K => cond(a & i.k != 0, &mut pc),
                RET_K => return i.k,
                other => panic!("interpreter: opcode {other:#x} not emitted by program()"),
            }
        }
        0
    }
}
