//! The HMAC knock record (`hmac-used`): the (key-id, step) pairs accepted
//! recently, so a restart cannot make a used knock sequence usable again.
//! Lost state is treated as the replay log's is (issue 16, finding 10).

use crate::safefile::{self, Contents, StateError};
use spa_proto::KeyId;
use std::path::Path;

const HMAC_NAME: &str = "hmac-used";
const HMAC_HEADER: &str = "spa-hmac-used 1";
/// The record holds a few lines per key.
const MAX_HMAC_BYTES: u64 = 1 << 20;

/// The HMAC knock sequences accepted recently, one `key-id step` line each
/// after a header line, so a restart cannot make a used sequence usable
/// again. Rewritten whole (temp file, fsync, rename) at start and on each
/// HMAC open: rare, and tiny.
pub fn save_hmac_used(dir: &Path, used: &[(KeyId, u64)]) -> Result<(), StateError> {
    let mut text = format!("{HMAC_HEADER}\n");
    for (id, step) in used {
        text.push_str(&format!("{id} {step}\n"));
    }
    safefile::replace_durably(dir, HMAC_NAME, text.as_bytes())
}

/// What [`load_hmac_used`] read: the entries it could parse, and why the
/// record must be treated as lost (refuse the steps that could have been
/// used: see `HmacKnocks::after_loss`), if it must.
#[derive(Debug, PartialEq, Eq)]
pub struct HmacUsed {
    pub used: Vec<(KeyId, u64)>,
    pub lost: Option<&'static str>,
}

/// Reads what [`save_hmac_used`] wrote. A missing file is "nothing used"
/// only on a `first_start`; missing otherwise, empty, unreadable, without
/// the header, too large, or with a line that does not parse, it is lost
/// state (issue 16, finding 10), never "nothing used".
pub fn load_hmac_used(dir: &Path, first_start: bool) -> HmacUsed {
    let lost = |why| HmacUsed {
        used: Vec::new(),
        lost: Some(why),
    };
    let bytes = match safefile::read_capped(&dir.join(HMAC_NAME), MAX_HMAC_BYTES) {
        Ok(Contents::Bytes(b)) => b,
        Ok(Contents::Missing) if first_start => {
            return HmacUsed {
                used: Vec::new(),
                lost: None,
            }
        }
        Ok(Contents::Missing) => return lost("missing from a state directory used before"),
        Ok(Contents::TooLarge) => return lost("too large"),
        Err(_) => return lost("unreadable"),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return lost("not text");
    };
    let mut lines = text.lines();
    if lines.next() != Some(HMAC_HEADER) {
        return lost("empty, or without its header line");
    }
    let mut out = HmacUsed {
        used: Vec::new(),
        lost: None,
    };
    for l in lines {
        let parsed = l
            .split_once(' ')
            .and_then(|(id, step)| Some((id.parse().ok()?, step.trim().parse().ok()?)));
        match parsed {
            Some(e) => out.used.push(e),
            None => out.lost = Some("a line does not parse"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_used_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let used = vec![(KeyId([1; 8]), 100), (KeyId([2; 8]), 101)];
        save_hmac_used(dir.path(), &used).unwrap();
        assert_eq!(
            load_hmac_used(dir.path(), false),
            HmacUsed { used, lost: None }
        );
        save_hmac_used(dir.path(), &[]).unwrap();
        assert_eq!(load_hmac_used(dir.path(), false).lost, None);
    }

    /// Finding 10: an HMAC record that is empty, unreadable or missing from
    /// a used state directory is lost state, never "nothing used".
    #[test]
    fn a_lost_hmac_record_is_not_read_as_nothing_used() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_hmac_used(dir.path(), true).lost, None, "first start");
        assert!(load_hmac_used(dir.path(), false).lost.is_some(), "missing");
        let path = dir.path().join(HMAC_NAME);
        for bad in [
            &b""[..],
            b"garbage\n",
            b"spa-hmac-used 1\nnot a line\n",
            &[0xff; 4],
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                load_hmac_used(dir.path(), false).lost.is_some(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
