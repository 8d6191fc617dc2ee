//! Arbitrary bytes from a local client against the control socket's
//! request parser (spa_server::control::request). Must never panic; a
//! parsed request re-encodes to a line that parses back to the same
//! request (one spelling per request), no longer than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spa_server::control::request::{parse, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse(data) {
        let line = r.encode();
        assert!(line.len() <= MAX_REQUEST.max(data.len()) + 16, "{line:?}");
        assert_eq!(parse(line.as_bytes()), Ok(r));
    }
});
