//! Text l7tap did not write (process names, which any process sets for itself; query text;
//! anything read from a file) made safe before it reaches a terminal or becomes a file name.
//!
//! A terminal acts on control characters (an escape sequence can move the cursor, rewrite
//! earlier lines or set the window title), and bidirectional overrides make text display in
//! another order than it reads. Every print of such text goes through [`for_terminal`] (one
//! line) or [`for_json`] (a JSON document); every file name built from it through
//! [`for_file_name`].
use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether a character must not reach a terminal as it is: C0 and C1 controls, DEL, and the
/// invisible format characters that reorder or hide text.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// `text` with every unsafe character escaped: `\xNN` below U+0100, `\u{NNNN}` above, and a
/// backslash doubled so that an escape in the output is always one l7tap wrote.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_unsafe(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether a character of a serialized JSON document must be escaped: an unsafe one other
/// than the whitespace between tokens (inside strings, serde_json escapes all of C0).
fn is_unsafe_in_json(c: char) -> bool {
    is_unsafe(c) && !matches!(c, '\n' | '\r' | '\t')
}

/// A serialized JSON document with the unsafe characters that JSON lets through (DEL, C1
/// controls, format characters) written as `\uNNNN` escapes, which mean the same to a JSON
/// reader. Outside strings a JSON document holds none of them.
pub fn for_json(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_unsafe_in_json(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Longest file name part made by [`for_file_name`], in bytes.
const MAX_FILE_NAME_PART: usize = 64;

/// `text` as part of a file name: ASCII letters, digits, `-` and `_` kept, anything else
/// (`/`, `.`, spaces, controls, non-ASCII) replaced by `_`, cut to 64 bytes; never empty.
pub fn for_file_name(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_FILE_NAME_PART)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_reach_the_terminal_as_text() {
        assert_eq!(for_terminal("clickhouse-serv"), "clickhouse-serv");
        assert_eq!(for_terminal("\u{1b}]0;owned\u{7}x"), "\\x1b]0;owned\\x07x");
        assert_eq!(for_terminal("a\nb\r\tc\u{7f}"), "a\\x0ab\\x0d\\x09c\\x7f");
        assert_eq!(for_terminal("\u{9b}31m"), "\\x9b31m");
        assert_eq!(for_terminal("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(for_terminal("C:\\x1b"), "C:\\\\x1b");
        assert_eq!(for_terminal("日本語 ok"), "日本語 ok");
    }

    #[test]
    fn json_keeps_its_meaning_without_raw_controls() {
        let value = serde_json::json!({"comm": "a\u{1b}[2J\u{9b}b\u{202e}", "n": 1});
        let json = serde_json::to_string_pretty(&value).unwrap();
        let safe = for_json(&json);
        assert!(!safe.chars().any(is_unsafe_in_json), "{safe}");
        assert!(safe.contains('\n'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["comm"], "a\u{1b}[2J\u{9b}b\u{202e}");
    }

    #[test]
    fn file_names_keep_a_safe_character_set() {
        assert_eq!(for_file_name("clickhouse-serv"), "clickhouse-serv");
        assert_eq!(for_file_name("../../etc/passwd"), "______etc_passwd");
        assert_eq!(for_file_name("a/b\u{1b}c d"), "a_b_c_d");
        assert_eq!(for_file_name(""), "_");
        assert_eq!(for_file_name(&"x".repeat(200)).len(), 64);
    }
}
