//! The control socket's request grammar, and its one parser: a single line
//! of UTF-8 words without control characters, at most [`MAX_REQUEST`] bytes with its newline.
//!
//! ```text
//! status text | status json | status prometheus
//! revoke all | revoke address <IP> | revoke key <NAME>
//! ```
//!
//! Why a line of words and not JSON: the set is closed and tiny, a line is
//! what `socat` or `nc -U` can send by hand, and the parser is small enough
//! to fuzz (fuzz/fuzz_targets/control_request.rs). Pure: no I/O.

pub use crate::engine::Selector;
use std::fmt;
use std::net::IpAddr;

/// The longest request accepted, newline included. Longer ones get an
/// error reply: a key name is at most a few dozen bytes.
pub const MAX_REQUEST: usize = 512;

/// What `status` is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Prometheus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status(Format),
    Revoke(Selector),
}

impl Request {
    /// The request line, newline included: what the client sends and
    /// `parse` reads back.
    pub fn encode(&self) -> String {
        match self {
            Request::Status(Format::Text) => "status text\n".into(),
            Request::Status(Format::Json) => "status json\n".into(),
            Request::Status(Format::Prometheus) => "status prometheus\n".into(),
            Request::Revoke(sel) => format!("revoke {sel}\n"),
        }
    }
}

/// Why a request was refused; the text goes back in the error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    TooLong,
    NotText,
    Empty,
    Unknown(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            RequestError::NotText => {
                f.write_str("request is not UTF-8 text without control characters")
            }
            RequestError::Empty => f.write_str("empty request"),
            RequestError::Unknown(why) => write!(
                f,
                "{why}; expected one of: status text|json|prometheus, revoke all, \
                 revoke address IP, revoke key NAME"
            ),
        }
    }
}

impl std::error::Error for RequestError {}

/// Parses one request: the bytes up to the first newline (or all of them
/// when there is none, as when the peer shut its side down after the line).
pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
    if bytes.len() > MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    let line = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => &bytes[..i],
        None => bytes,
    };
    // The limit counts the newline, also when the peer sent none: a
    // 512-byte line without one would re-encode to 513 bytes, over the
    // limit (found by fuzz/fuzz_targets/control_request.rs).
    if line.len() >= MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // UTF-8 without control characters: a key name may be any label
    // spa_keys::check_label accepts.
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotText)?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(RequestError::NotText);
    }
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let unknown = |w: &str| RequestError::Unknown(w.to_owned());
    match words.as_slice() {
        [] => Err(RequestError::Empty),
        ["status"] | ["status", "text"] => Ok(Request::Status(Format::Text)),
        ["status", "json"] => Ok(Request::Status(Format::Json)),
        ["status", "prometheus"] => Ok(Request::Status(Format::Prometheus)),
        ["status", other, ..] => Err(unknown(&format!("unknown status format `{other}`"))),
        ["revoke", "all"] => Ok(Request::Revoke(Selector::All)),
        ["revoke", "address", a] => a
            .parse::<IpAddr>()
            .map(|a| Request::Revoke(Selector::Address(a.to_canonical())))
            .map_err(|_| unknown(&format!("`{a}` is not an IP address"))),
        // A key name may hold single spaces (check_label allows them).
        ["revoke", "key", name @ ..] if !name.is_empty() => {
            Ok(Request::Revoke(Selector::Key(name.join(" "))))
        }
        ["revoke", ..] => Err(unknown("revoke takes `all`, `address IP` or `key NAME`")),
        [w, ..] => Err(unknown(&format!("unknown request `{w}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The limit counts the newline whether or not it was sent, so every
    /// request accepted re-encodes within the limit (a fuzzer's find: 512
    /// bytes without a newline were accepted and encoded to 513).
    #[test]
    fn the_limit_counts_the_newline_even_when_none_was_sent() {
        let name = "k".repeat(MAX_REQUEST - "revoke key ".len());
        let line = format!("revoke key {name}");
        assert_eq!(line.len(), MAX_REQUEST);
        assert_eq!(parse(line.as_bytes()), Err(RequestError::TooLong));
        let shorter = &line[..MAX_REQUEST - 1];
        let r = parse(shorter.as_bytes()).expect("511 bytes and the newline fit");
        assert_eq!(r.encode().len(), MAX_REQUEST);
        assert_eq!(parse(r.encode().as_bytes()), Ok(r));
    }

    #[test]
    fn every_request_round_trips() {
        for r in [
            Request::Status(Format::Text),
            Request::Status(Format::Json),
            Request::Status(Format::Prometheus),
            Request::Revoke(Selector::All),
            Request::Revoke(Selector::Address("198.18.0.2".parse().unwrap())),
            Request::Revoke(Selector::Address("2001:db8::2".parse().unwrap())),
            Request::Revoke(Selector::Key("alice-laptop".into())),
            Request::Revoke(Selector::Key("alice laptop".into())),
        ] {
            assert_eq!(parse(r.encode().as_bytes()), Ok(r));
        }
    }

    #[test]
    fn malformed_requests_are_named() {
        assert_eq!(parse(b""), Err(RequestError::Empty));
        assert_eq!(parse(b"  \n"), Err(RequestError::Empty));
        assert_eq!(parse(&[b'a'; 600]), Err(RequestError::TooLong));
        assert_eq!(parse(b"status \xff\n"), Err(RequestError::NotText));
        assert_eq!(parse(b"status\0\n"), Err(RequestError::NotText));
        assert!(
            matches!(parse(b"revoke address 1.2.3\n"), Err(RequestError::Unknown(w)) if w.contains("1.2.3"))
        );
        assert!(matches!(parse(b"revoke\n"), Err(RequestError::Unknown(_))));
        assert!(
            matches!(parse(b"status xml\n"), Err(RequestError::Unknown(w)) if w.contains("xml"))
        );
        assert!(matches!(
            parse(b"GET / HTTP/1.0\r\n"),
            Err(RequestError::Unknown(_))
        ));
        // The mapped form is the IPv4 address, as grants are.
        assert_eq!(
            parse(b"revoke address ::ffff:198.18.0.2\r\n"),
            Ok(Request::Revoke(Selector::Address(
                "198.18.0.2".parse().unwrap()
            )))
        );
        // Only the first line counts.
        assert_eq!(
            parse(b"status\nrevoke all\n"),
            Ok(Request::Status(Format::Text))
        );
    }

    proptest! {
        #[test]
        fn no_input_panics_and_a_parsed_request_reencodes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(r) = parse(&bytes) {
                prop_assert_eq!(parse(r.encode().as_bytes()), Ok(r));
            }
        }
    }
}
