use super::*;
use proptest::prelude::*;

fn acc(addr: &str, port: u16, exp: u64) -> Access {
    Access {
        addr: addr.parse().unwrap(),
        grant: Grant::tcp(port).unwrap(),
        expires_at: exp,
        forward: None,
    }
}

fn body(frame: &[u8]) -> &[u8] {
    &frame[4..]
}

#[test]
fn every_request_round_trips() {
    let reqs = [
        Request::Apply {
            add: vec![acc("198.18.0.2", 22, 5), acc("2001:db8::1", 443, 9)],
            remove: vec![acc("198.18.0.3", 80, 1)],
        },
        Request::Intact,
        Request::Setup,
        Request::Reload,
        Request::Settle { commit: true },
        Request::Settle { commit: false },
        Request::LocalAddrs,
        Request::Teardown,
        Request::OpenCapture {
            interface: Some("eth0".into()),
            family: IpFamily::V4,
            class: Class::Spa,
        },
        Request::OpenCapture {
            interface: None,
            family: IpFamily::V6,
            class: Class::Knock,
        },
    ];
    for r in reqs {
        let f = r.encode();
        assert_eq!(Request::decode(body(&f)), Ok(r));
    }
}

#[test]
fn every_reply_round_trips() {
    let replies = [
        Reply::Done,
        Reply::Refused("tcp/25 is no key's".into()),
        Reply::Intact(true),
        Reply::Files(vec![("/etc/spa/server.toml".into(), b"x = 1".to_vec())]),
        Reply::Addrs(vec!["198.18.0.1".parse().unwrap(), "::1".parse().unwrap()]),
        Reply::Capture { ifindex: 7 },
    ];
    for r in replies {
        let f = r.encode();
        assert_eq!(Reply::decode(body(&f)), Ok(r));
    }
}

#[test]
fn a_bundle_of_ten_thousand_key_files_round_trips() {
    // A reload with 10,000 keys (issue 14): each file as spa-keygen
    // writes it, about 200 bytes.
    let files: Vec<(PathBuf, Vec<u8>)> = (0..10_001)
        .map(|i| (format!("/etc/spa/keys/k{i:05}.key").into(), vec![b'k'; 200]))
        .collect();
    let r = Reply::Files(files);
    let f = r.encode();
    assert!(f.len() < MAX_FRAME);
    assert_eq!(Reply::decode(body(&f)), Ok(r));
}

#[test]
fn malformed_requests_are_refused() {
    let good = Request::Apply {
        add: vec![acc("198.18.0.2", 22, 5)],
        remove: vec![],
    }
    .encode();
    let b = body(&good);
    assert_eq!(Request::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(Request::decode(&[9]), Err(DecodeError::UnknownTag(9)));
    assert_eq!(
        Request::decode(&b[..b.len() - 1]),
        Err(DecodeError::Truncated)
    );
    let mut long = b.to_vec();
    long.push(0);
    assert_eq!(Request::decode(&long), Err(DecodeError::Truncated));
    let mut fam = b.to_vec();
    fam[9] = 5;
    assert_eq!(Request::decode(&fam), Err(DecodeError::BadFamily(5)));
    let mut unmapped = b.to_vec();
    unmapped[10] = 0x20;
    assert_eq!(Request::decode(&unmapped), Err(DecodeError::BadFamily(4)));
    let mut proto = b.to_vec();
    proto[26] = 1;
    assert_eq!(Request::decode(&proto), Err(DecodeError::BadProto(1)));
    let mut port = b.to_vec();
    port[27] = 0;
    port[28] = 0;
    assert_eq!(Request::decode(&port), Err(DecodeError::ZeroPort));
    let mut huge = vec![T_APPLY];
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    huge.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(
        Request::decode(&huge),
        Err(DecodeError::TooLarge(u32::MAX as usize))
    );
    assert_eq!(
        Request::decode(&[T_INTACT, 0]),
        Err(DecodeError::TrailingBytes)
    );
    assert_eq!(
        Request::decode(&[T_SETTLE, 2]),
        Err(DecodeError::BadFlag(2))
    );
    assert_eq!(Request::decode(&[T_SETTLE]), Err(DecodeError::Truncated));
}

#[test]
fn malformed_capture_requests_are_refused() {
    let good = Request::OpenCapture {
        interface: Some("eth0".into()),
        family: IpFamily::V6,
        class: Class::Knock,
    }
    .encode();
    let b = body(&good);
    assert_eq!(b, [T_CAPTURE, 6, 2, 4, b'e', b't', b'h', b'0']);
    let mut fam = b.to_vec();
    fam[1] = 5;
    assert_eq!(Request::decode(&fam), Err(DecodeError::BadFamily(5)));
    let mut class = b.to_vec();
    class[2] = 0;
    assert_eq!(Request::decode(&class), Err(DecodeError::BadClass(0)));
    let mut long = vec![T_CAPTURE, 4, 1, 16];
    long.extend_from_slice(&[b'a'; 16]);
    assert_eq!(Request::decode(&long), Err(DecodeError::TooLarge(16)));
    assert_eq!(
        Request::decode(&b[..b.len() - 1]),
        Err(DecodeError::Truncated)
    );
    let mut trailing = b.to_vec();
    trailing.push(b'x');
    assert_eq!(Request::decode(&trailing), Err(DecodeError::TrailingBytes));
    let mut text = b.to_vec();
    text[4] = 0xff;
    assert_eq!(Request::decode(&text), Err(DecodeError::BadText));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Request::decode(&bytes);
        let _ = Reply::decode(&bytes);
    }
}
