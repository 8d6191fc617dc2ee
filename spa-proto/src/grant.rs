//! A grant (`tcp/22`): its protocol and port, how it is written and read.
//! One grammar, one `FromStr`, used by the client's `--open`, the server's
//! `[[key]] allow`, `--allow` and the knock doors alike, so a spelling one
//! accepts the others accept too.

use crate::error::RequestError;
use std::num::NonZeroU16;

/// Transport protocol of a grant. IANA protocol numbers on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One port to open: protocol and a non-zero port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    pub proto: Proto,
    pub port: NonZeroU16,
}

impl Grant {
    pub fn new(proto: Proto, port: u16) -> Result<Self, RequestError> {
        Ok(Grant {
            proto,
            port: NonZeroU16::new(port).ok_or(RequestError::PortZero)?,
        })
    }
    pub fn tcp(port: u16) -> Result<Self, RequestError> {
        Grant::new(Proto::Tcp, port)
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.proto.name(), self.port)
    }
}

/// Why a grant's text was refused; the messages are the ones every tool
/// shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSyntax {
    /// Neither `tcp` nor `udp`.
    UnknownProto(String),
    /// Not a decimal number.
    NotANumber,
    /// Port 0.
    Zero,
    /// Over 65535.
    TooLarge,
}

impl std::fmt::Display for GrantSyntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrantSyntax::UnknownProto(p) => {
                write!(f, "unknown protocol '{p}' (use tcp or udp)")
            }
            GrantSyntax::NotANumber => f.write_str("a port is a number from 1 to 65535"),
            GrantSyntax::Zero => f.write_str("port 0 cannot be opened (ports are 1-65535)"),
            GrantSyntax::TooLarge => f.write_str("ports go up to 65535"),
        }
    }
}

impl std::error::Error for GrantSyntax {}

fn port_of(s: &str) -> Result<u16, GrantSyntax> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(GrantSyntax::NotANumber);
    }
    match s.parse::<u32>() {
        Ok(0) => Err(GrantSyntax::Zero),
        Ok(n) => u16::try_from(n).map_err(|_| GrantSyntax::TooLarge),
        Err(_) => Err(GrantSyntax::TooLarge),
    }
}

fn proto_of(s: &str) -> Result<Proto, GrantSyntax> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        other => Err(GrantSyntax::UnknownProto(other.to_owned())),
    }
}

/// The one grammar for a grant, in the client, the configuration and the
/// knock doors alike: `PORT` (tcp), `tcp/PORT`, `udp/PORT`, or `PORT/PROTO`
/// (knockd's order); case-insensitive, spaces around parts ignored.
impl std::str::FromStr for Grant {
    type Err = GrantSyntax;

    fn from_str(s: &str) -> Result<Grant, GrantSyntax> {
        let s = s.trim();
        let (proto, port) = match s.split_once('/') {
            None => (Proto::Tcp, port_of(s)?),
            Some((a, b))
                if !a.trim().is_empty() && a.trim().bytes().all(|c| c.is_ascii_digit()) =>
            {
                (proto_of(b)?, port_of(a)?)
            }
            Some((a, b)) => (proto_of(a)?, port_of(b)?),
        };
        Grant::new(proto, port).map_err(|_| GrantSyntax::Zero)
    }
}

#[cfg(test)]
mod tests;
