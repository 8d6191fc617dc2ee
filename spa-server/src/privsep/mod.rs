//! Privilege separation: the process that reads the network holds no
//! privilege. The network side (capture, parsing, the engine) runs as an
//! unprivileged user with no capabilities, `NoNewPrivs` and a seccomp
//! allow-list; the privileged side never reads a packet and answers only
//! the closed set of requests in [`proto`], each checked by [`check`]
//! against the configuration it read itself. See docs/design.md.

pub mod check;
pub mod proto;
