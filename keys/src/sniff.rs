//! Telling a file that is not a spa key file at all (a WireGuard key, an
//! SSH key, an empty file) from a spa key file with a mistake in it: the
//! first deserves "this is not a spa key file, here is what one looks like
//! and how to make one", not a TOML parser position that sends the reader
//! hunting for a typo.

/// What a spa key file looks like and how to make one; ends every
/// "not a spa key file" message.
pub const WHAT_A_KEY_FILE_IS: &str = "a spa key file is TOML text with the lines \
    `name = \"...\"`, `key = \"<32 bytes in base64>\"` and `server_id = \"...\"`; \
    make one with `spa-keygen --out FILE` (or `spa-client keygen`)";

/// `Some(what it looks like)` when `text` has neither a `name =` nor a
/// `key =` line, i.e. it was never meant to be a spa key file.
pub(crate) fn not_a_key_file(text: &str) -> Option<&'static str> {
    let assigns = |field: &str| {
        text.lines().any(|l| {
            l.trim_start()
                .strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    if assigns("name") || assigns("key") {
        return None;
    }
    let t = text.trim();
    let lines: Vec<&str> = t.lines().collect();
    let base64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    Some(if t.is_empty() {
        "it is empty"
    } else if t.starts_with("-----BEGIN") {
        "it is a PEM file, such as an SSH or TLS private key"
    } else if t.starts_with("ssh-") || t.starts_with("ecdsa-") {
        "it is an SSH public key"
    } else if lines.len() == 1 && base64(t) && t.len() == 44 {
        "it is one line of base64 of 32 bytes, such as a WireGuard key"
    } else if lines.len() == 1 && base64(t) {
        "it is one line of base64"
    } else {
        "it has no `name =` or `key =` line"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_files_are_recognised() {
        for (text, want) in [
            ("", "empty"),
            ("\n \n", "empty"),
            (
                "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n",
                "WireGuard",
            ),
            ("aGVsbG8=\n", "one line of base64"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n",
                "PEM",
            ),
            ("ssh-ed25519 AAAAC3Nz a@b\n", "SSH public key"),
            ("[[[", "no `name =`"),
        ] {
            let got = not_a_key_file(text).unwrap_or_else(|| panic!("{text:?}"));
            assert!(got.contains(want), "{text:?}: {got}");
        }
    }

    #[test]
    fn a_broken_key_file_is_still_a_key_file() {
        for text in ["name = \"a\"\n", "  key=\"AAAA\"\n", "name = 5\nkey = \n"] {
            assert_eq!(not_a_key_file(text), None, "{text:?}");
        }
    }
}
