//! Glue between the capture's knock packets and the legacy/HMAC knock
//! logic in `legacy`: turns completed sequences into grant changes.

use crate::config::Config;
use spa_proto::{Grant, Proto};
use std::net::IpAddr;
use std::time::Duration;

/// What a knock did, for the daemon to apply and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Open {
        addr: IpAddr,
        grants: Vec<Grant>,
        duration_secs: u32,
        via: String,
    },
    Close {
        addr: IpAddr,
        grants: Vec<Grant>,
        via: String,
    },
    Rejected {
        addr: IpAddr,
        via: String,
        reason: String,
    },
}

/// Ports the capture filter must let through for knocks: (tcp, udp).
pub fn knock_ports(_cfg: &Config) -> (Vec<u16>, Vec<u16>) {
    (Vec::new(), Vec::new())
}

pub struct Runtime {}

impl Runtime {
    pub fn new(_cfg: &Config) -> Runtime {
        Runtime {}
    }
    pub fn enabled(&self) -> bool {
        false
    }
    pub fn next_deadline(&self) -> Option<Duration> {
        None
    }
    pub fn observe(
        &mut self,
        _cfg: &Config,
        _src: IpAddr,
        _proto: Proto,
        _dport: u16,
        _flags: u8,
    ) -> Vec<Outcome> {
        Vec::new()
    }
}
