//! What the kernel filter lets through (the SPA port and length, the knock
//! ports), checked before any socket is touched.

use super::error::SpecError;
use super::{bpf, CaptureError};

/// What the kernel lets through. One value describes both families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// UDP port SPA datagrams are sent to.
    pub spa_port: u16,
    /// Exact UDP payload length of a datagram (`spa_proto::DATAGRAM_LEN`);
    /// datagrams of any other size to `spa_port` are dropped in the kernel.
    pub spa_len: usize,
    /// TCP ports whose connection attempts (SYN without ACK) are knocks.
    /// Sorted ascending without duplicates ([`FilterSpec::validate`] checks),
    /// so a knock port lookup is a binary search even for an HMAC range of
    /// tens of thousands of ports.
    pub knock_tcp: Vec<u16>,
    /// UDP ports where any datagram is a knock. Sorted, no duplicates.
    pub knock_udp: Vec<u16>,
}

impl FilterSpec {
    /// SPA v1 on `spa_port`, no legacy knock ports.
    pub fn v1(spa_port: u16) -> Self {
        FilterSpec {
            spa_port,
            spa_len: spa_proto::DATAGRAM_LEN,
            knock_tcp: Vec::new(),
            knock_udp: Vec::new(),
        }
    }

    /// Catches a configuration the filter cannot express before any socket
    /// is touched, so a reload either applies completely or not at all.
    pub fn validate(&self) -> Result<(), CaptureError> {
        if self.spa_port == 0 {
            return Err(CaptureError::Spec(SpecError::ZeroSpaPort));
        }
        // The filter reads the magic and the version byte inside the payload.
        if self.spa_len <= bpf::SPA_MAGIC.len() {
            return Err(CaptureError::Spec(SpecError::SpaLenTooShort {
                spa_len: self.spa_len,
            }));
        }
        if self.spa_len > usize::from(u16::MAX) - 8 {
            return Err(CaptureError::Spec(SpecError::SpaLenTooLong {
                spa_len: self.spa_len,
            }));
        }
        if self
            .knock_tcp
            .iter()
            .chain(&self.knock_udp)
            .any(|p| *p == 0)
        {
            return Err(CaptureError::Spec(SpecError::ZeroKnockPort));
        }
        for (field, list) in [
            ("knock_tcp", &self.knock_tcp),
            ("knock_udp", &self.knock_udp),
        ] {
            if list.windows(2).any(|w| w[0] >= w[1]) {
                return Err(CaptureError::Spec(SpecError::Unsorted { field }));
            }
        }
        Ok(())
    }
}
