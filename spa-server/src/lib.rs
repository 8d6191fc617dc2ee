//! spa-server as a library: the binary in `main.rs` is a thin shell over
//! these modules, so each part can be tested on its own.
//!
//! Pure parts: `verdict`, `legacy`, `config`, `cli` (the clap definitions,
//! shared with the man page and completion generator). I/O parts: `capture`,
//! `firewall`, `state`, `notify`, `daemon`.

pub mod address;
pub mod capture;
pub mod checkconfig;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod exit;
pub mod explain;
pub mod firewall;
pub mod fwwatch;
pub mod grants;
pub mod knocks;
pub mod legacy;
pub mod limits;
pub mod lock;
pub mod logging;
pub mod notify;
pub mod policy;
pub mod privsep;
pub mod ratelimit;
pub mod safefile;
pub mod state;
pub mod stats;
pub mod v2;
pub mod verdict;
