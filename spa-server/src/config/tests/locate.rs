//! Every error names file, line and field (locate.rs).

use super::*;

#[test]
fn syntax_and_type_errors_name_the_line_and_field() {
    let env = Env::new();
    // Syntax: the line is what matters.
    let e = env.load(&format!("{ALICE}spa_port = = 3\n")).unwrap_err();
    assert_eq!(e.line, Some(5), "{e}");
    // Wrong type and unknown field: the line and the field.
    env.err(&format!("\nspa_port = \"x\"\n{ALICE}"), 2, "spa_port", "");
    env.err(&format!("spa_port = 70000\n{ALICE}"), 1, "spa_port", "");
    env.err(
        &format!("{ALICE}colour = \"blue\"\n"),
        5,
        "key.colour",
        "colour",
    );
    env.err(
        &format!("colour = \"blue\"\n{ALICE}"),
        1,
        "colour",
        "colour",
    );
    env.err(
        &format!("{ALICE}max_duration = \"long\"\n"),
        5,
        "key.max_duration",
        "",
    );
    // Inside a multi-line array: the array's key.
    env.err(
        "[[key]]\nname = \"a\"\nfile = \"alice.key\"\nallow = [\n  \"tcp/22\",\n  22,\n]\n",
        6,
        "key.allow",
        "",
    );
    // A table missing a required field names table and field.
    let e = env
        .load("spa_port = 1\n[[key]]\nname = \"a\"\nfile = \"alice.key\"\n")
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("key.allow"), "{e}");
    assert!(e.line.is_some(), "{e}");
    // A stray line is not blamed on the key above it.
    let e = env
        .load(&format!("spa_port = 1\nhello\n{ALICE}"))
        .unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert_ne!(e.field.as_deref(), Some("spa_port"), "{e}");
    // Nested tables keep their whole path.
    env.err(
        &format!("{ALICE}[firewall_options]\nchian = \"x\"\n"),
        6,
        "firewall_options.chian",
        "chian",
    );
}

#[test]
fn line_of_counts_from_one() {
    let t = "a\nb\nc";
    assert_eq!(line_of(t, 0), 1);
    assert_eq!(line_of(t, 1), 1);
    assert_eq!(line_of(t, 2), 2);
    assert_eq!(line_of(t, 4), 3);
    assert_eq!(line_of(t, 999), 3, "past the end stays on the last line");
}

/// Whatever the text, loading never panics, and an error always names
/// the file (and a line inside the text when it has one). One key folder
/// for all cases: writing key files per case is what would be slow.
#[test]
fn any_text_gives_a_config_or_a_located_error() {
    let env = Env::new();
    proptest!(|(text in "[a-z_\\[\\]=\" 0-9\n./]{0,80}")| {
        let full = format!("{ALICE}{text}");
        if let Err(e) = env.load(&full) {
            prop_assert_eq!(&e.file, &env.conf());
            if let Some(l) = e.line {
                prop_assert!(l >= 1 && l <= full.lines().count().max(1) + 1, "{}", e);
            }
        }
    });
}
