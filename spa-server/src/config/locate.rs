//! Where a configuration error is: the file, the line and the dotted field
//! (`key.allow`, `legacy.hmac.ports`), so the admin goes straight to it
//! instead of counting lines. Pure: works on the text already read.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::path::PathBuf;

/// A configuration problem, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(pos.min(text.len()))
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Builds located errors for one configuration text.
pub(super) struct Locator<'a> {
    pub(super) text: &'a str,
    pub(super) file: &'a Path,
}

impl Locator<'_> {
    /// An error at byte range `span` of the text (None: no line, e.g. a
    /// command-line value), about `field` ("" for none).
    pub(super) fn err(&self, span: Option<Range<usize>>, field: &str, msg: String) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: span.map(|s| line_of(self.text, s.start)),
            field: (!field.is_empty()).then(|| field.to_owned()),
            msg,
        }
    }

    /// A TOML syntax or type error, with the field it is about.
    pub(super) fn toml(&self, e: toml::de::Error) -> ConfigError {
        let msg = e.message().to_owned();
        let field = e
            .span()
            .and_then(|s| field_at(self.text, s.start, &msg))
            .unwrap_or_default();
        self.err(e.span(), &field, msg)
    }

    /// Where `[legacy]` errors point: the first `[legacy` header (the
    /// section's settings are read as one table, without spans).
    pub(super) fn legacy_span(&self) -> Option<Range<usize>> {
        let text = self.text;
        text.match_indices("[legacy")
            .find(|(i, _)| {
                text[..*i]
                    .trim_end_matches([' ', '\t', '['])
                    .ends_with('\n')
                    || text[..*i].trim().is_empty()
            })
            .map(|(i, _)| i..i)
    }
}

/// The dotted name of the setting a TOML error at byte `pos` is about
/// (`spa_port`, `key.allow`, `legacy.hmac.ports`): serde's type errors carry
/// only a span, and "line 7" alone makes the reader count lines. Uses the
/// name the message quotes (`unknown field `x``, `missing field `x``) when
/// there is one, else the key on that line (or the nearest line above it
/// that has one, for multi-line arrays), prefixed by the enclosing table.
fn field_at(text: &str, pos: usize, msg: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let pos = pos.min(bytes.len());
    let start = bytes[..pos]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut lines = text.get(..start)?.lines().rev();
    let this = text.get(start..)?.lines().next().unwrap_or("");
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        let inner = l.strip_prefix("[[").and_then(|r| r.split("]]").next());
        let inner = inner.or_else(|| l.strip_prefix('[').and_then(|r| r.split(']').next()))?;
        Some(inner.trim().replace(['"', ' '], ""))
    };
    let key_of = |l: &str| -> Option<String> {
        let (k, _) = l.split_once('=')?;
        let k = k.trim().replace(['"', ' '], "");
        let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
        (!k.is_empty() && k.chars().all(bare)).then_some(k)
    };
    let quoted = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| msg.split(p).nth(1)?.split('`').next().map(str::to_owned));
    // The table the error is in: this line if it is a header, else the
    // nearest header above.
    let (table, key) = if let Some(h) = header(this) {
        (Some(h), None)
    } else {
        let mut key = key_of(this);
        // A line without a key may be inside a multi-line array: walk up
        // the lines that continue it (ending in `[` or `,`) to its key.
        let mut in_array = key.is_none();
        let mut table = None;
        for l in lines.by_ref() {
            if let Some(h) = header(l) {
                table = Some(h);
                break;
            }
            if in_array {
                let t = l.trim_end();
                let continues = t.ends_with('[') || t.ends_with(',');
                if !continues {
                    in_array = false;
                } else if let Some(k) = key_of(l) {
                    key = Some(k);
                    in_array = false;
                }
            }
        }
        (table, key)
    };
    let name = quoted.or(key);
    match (table, name) {
        (Some(t), Some(n)) => Some(format!("{t}.{n}")),
        (None, Some(n)) => Some(n),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}
