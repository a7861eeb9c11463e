//! Statement type of a query text from its first keyword (case-insensitive), skipping
//! whitespace, comments (`--`, `#`, `/* */`) and opening parentheses. `WITH` is a `SELECT`.

const KEYWORDS: &[&str] = &[
    "SELECT", "INSERT", "CREATE", "ALTER", "DROP", "SHOW", "DESCRIBE", "SET", "USE", "SYSTEM",
    "OPTIMIZE", "EXPLAIN", "RENAME", "TRUNCATE", "KILL", "EXISTS", "CHECK", "GRANT", "REVOKE",
    "ATTACH", "DETACH", "WATCH", "BACKUP", "RESTORE", "DELETE", "UPDATE", "UNDROP", "EXCHANGE",
    "MOVE", "BEGIN", "COMMIT", "ROLLBACK", "VALUES",
];

/// `SELECT`, `INSERT`, ... for known first keywords, `OTHER` for any other word, `""` when
/// the text has no word.
pub(crate) fn statement_type(text: &[u8]) -> &'static str {
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b if b.is_ascii_whitespace() || b == b'(' || b == b';' => i += 1,
            b'-' if text.get(i + 1) == Some(&b'-') => i = line_end(text, i),
            b'#' => i = line_end(text, i),
            b'/' if text.get(i + 1) == Some(&b'*') => {
                i = match text[i + 2..].windows(2).position(|w| w == b"*/") {
                    Some(p) => i + 2 + p + 2,
                    None => text.len(),
                }
            }
            _ => break,
        }
    }
    let word_len = text[i..]
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    if word_len == 0 {
        return "";
    }
    let word = &text[i..i + word_len];
    if word.eq_ignore_ascii_case(b"WITH") {
        return "SELECT";
    }
    if word.eq_ignore_ascii_case(b"DESC") {
        return "DESCRIBE";
    }
    KEYWORDS
        .iter()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or("OTHER")
}

fn line_end(text: &[u8], from: usize) -> usize {
    text[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |p| from + p + 1)
}

#[cfg(test)]
mod tests {
    use super::statement_type;

    #[test]
    fn first_keyword_decides() {
        for (text, want) in [
            ("SELECT 1", "SELECT"),
            ("  select 1", "SELECT"),
            ("/* c */ (SELECT 1)", "SELECT"),
            ("-- x\n# y\nWITH 1 AS a SELECT a", "SELECT"),
            ("insert into t values", "INSERT"),
            ("DESC t", "DESCRIBE"),
            ("EXPLAIN SELECT 1", "EXPLAIN"),
            ("SYSTEM FLUSH LOGS", "SYSTEM"),
            ("frobnicate", "OTHER"),
            ("  /* only a comment", ""),
            ("", ""),
        ] {
            assert_eq!(statement_type(text.as_bytes()), want, "{text}");
        }
    }
}
