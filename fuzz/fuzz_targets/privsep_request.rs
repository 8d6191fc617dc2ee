//! Arbitrary bytes from a (compromised) network side against the privileged
//! side's request decoder and its check. Must never panic; a decoded request
//! re-encodes to the same bytes (one spelling per request); and no `Apply`
//! the check passes adds anything outside the configuration: only tcp/22
//! (the one key's grant, also the default doors'), ending within the key's
//! max_duration, for a usable unicast address; and no `OpenCapture` it
//! passes names an interface other than the configured `eth0`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spa_proto::Grant;
use spa_server::config::{Config, KeyPolicy};
use spa_server::privsep::{check, proto::Request};
use std::sync::OnceLock;

const NOW: u64 = 1_700_000_000;

fn cfg() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let mut c = Config::for_tests(
            vec![KeyPolicy::for_tests(
                "alice",
                7,
                &[Grant::tcp(22).expect("port")],
                300,
            )],
            30,
        );
        c.doors = spa_server::legacy::default_doors(5);
        c.interfaces = vec!["eth0".into()];
        c
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = Request::decode(data) else {
        return;
    };
    assert_eq!(&req.encode()[4..], data, "one spelling per request");
    if let Request::OpenCapture { interface, .. } = &req {
        if check::open_capture(cfg(), interface.as_deref()).is_ok() {
            assert_eq!(interface.as_deref(), Some("eth0"));
        }
    }
    if let Request::Apply { add, .. } = req {
        if check::apply(cfg(), &add, NOW, |_| false).is_ok() {
            for a in &add {
                assert_eq!(a.grant, Grant::tcp(22).expect("port"), "{a}");
                assert!(a.expires_at <= NOW + 301, "{a}");
                assert!(
                    spa_server::address::usable(a.addr, |_| false).is_ok(),
                    "{a}"
                );
            }
        }
    }
});
