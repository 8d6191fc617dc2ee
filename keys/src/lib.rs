//! spa-keys: the key file, the one secret a client and a server share.
//!
//! A key file is a few lines of TOML so a person can read it, copy it to the
//! server and check which key it is (`# key-id:` comment) without a tool.
//! Because it is a secret, every reader here refuses a file that group or
//! others could read, as OpenSSH does for private keys: a leaked copy cannot
//! be revoked, so it is better to fail loudly than to use it.
//!
//! [`keygen`] and [`setup_snippet`] live here, not in the `spa-keygen`
//! binary, because `spa-client keygen` must behave byte for byte the same.

mod error;
mod file;
mod keygen;
mod sniff;

pub use error::{KeyError, LabelError};
pub use file::{check_label, KeyFile, MAX_KEY_FILE_LEN};
pub use keygen::{
    default_key_path, default_name, hostname, keygen, run_keygen, run_keygen_to, setup_snippet,
    write_completions, KeygenCli, KeygenOptions,
};
