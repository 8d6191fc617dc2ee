//! Any request the API can build seals to 140 bytes that verify back to the
//! same request exactly once.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use spa_proto::{
    seal_with, verify, Action, AllowAddr, Grant, Grants, MasterKey, Proto, Reject, ReplayRecord,
    Request, ServerId, TimeWindow, DATAGRAM_LEN, MAX_GRANTS,
};
use std::net::{Ipv4Addr, Ipv6Addr};

fn build(u: &mut Unstructured<'_>) -> Result<([u8; 32], Request, [u8; 24], [u8; 16])> {
    let master: [u8; 32] = u.arbitrary()?;
    let action = if u.arbitrary::<bool>()? {
        Action::Open
    } else {
        Action::Close
    };
    let allow = match u.int_in_range(0..=2u8)? {
        0 => AllowAddr::Source,
        1 => AllowAddr::V4(Ipv4Addr::from(u.arbitrary::<u32>()?)),
        _ => AllowAddr::V6(Ipv6Addr::from(u.arbitrary::<u128>()?)),
    };
    let n = u.int_in_range(1..=MAX_GRANTS)?;
    let mut grants = Vec::with_capacity(n);
    for _ in 0..n {
        let proto = if u.arbitrary::<bool>()? {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        let port = u.int_in_range(1..=u16::MAX)?;
        // Port is non-zero by construction, so this cannot fail.
        grants.push(
            Grant::new(proto, port)
                .map_err(|_| libfuzzer_sys::arbitrary::Error::IncorrectFormat)?,
        );
    }
    let req = Request {
        action,
        timestamp: u.arbitrary()?,
        duration_secs: u.arbitrary()?,
        allow,
        server: ServerId(u.arbitrary()?),
        grants: Grants::new(&grants)
            .map_err(|_| libfuzzer_sys::arbitrary::Error::IncorrectFormat)?,
    };
    Ok((master, req, u.arbitrary()?, u.arbitrary()?))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((master, req, nonce, random)) = build(&mut u) else {
        return;
    };
    let k = MasterKey::from_bytes(master).derive();
    let d = seal_with(&k, &req, &nonce, &random);
    assert_eq!(d.len(), DATAGRAM_LEN);
    let mut rec = ReplayRecord::new(TimeWindow::default(), 4);
    let by_id = |id: &spa_proto::KeyId| (*id == k.key_id()).then_some(&k);
    let opened = verify(&d, by_id, &req.server, req.timestamp, &mut rec).expect("honest datagram");
    assert_eq!(opened.request, req);
    assert_eq!(opened.nonce, nonce);
    assert_eq!(opened.key_id, k.key_id());
    assert_eq!(
        verify(&d, by_id, &req.server, req.timestamp, &mut rec),
        Err(Reject::Replayed)
    );
});
