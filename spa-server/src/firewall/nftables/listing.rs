//! Reading `nft -a list table` output: which rules (by comment) and sets
//! of ours exist.

/// What `nft -a list table` shows of ours.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// (chain, handle) of every rule carrying exactly our comment.
    pub rules: Vec<(String, u64)>,
    /// Every set name in the table.
    pub sets: Vec<String>,
}

/// Parses `nft -a list table` text. Only two shapes matter: `chain NAME {`
/// / `set NAME {` headers, and rule lines ending in
/// `comment "<ours>" # handle N`.
pub fn parse_listing(text: &str, comment: &str) -> Listing {
    let mut out = Listing::default();
    let mut chain: Option<String> = None;
    let tail = format!("comment \"{comment}\" # handle ");
    for line in text.lines() {
        let l = line.trim();
        let mut words = l.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("chain"), Some(name), Some("{")) => {
                chain = Some(name.to_owned());
                continue;
            }
            (Some("set"), Some(name), Some("{")) => {
                out.sets.push(name.to_owned());
                continue;
            }
            _ => {}
        }
        if let (Some(c), Some(pos)) = (&chain, l.rfind(&tail)) {
            if let Ok(h) = l[pos + tail.len()..].trim().parse::<u64>() {
                out.rules.push((c.clone(), h));
            }
        }
    }
    out
}
