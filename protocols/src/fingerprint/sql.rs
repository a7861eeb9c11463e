//! The SQL normaliser: `--redact` (SQL text with its literals replaced by `?`, so that the
//! `query` column keeps the shape of a query without the data in it) and the ClickHouse
//! fingerprint (the same walk, written through [`FingerprintText`], which also folds lists).
//!
//! Replaced by `?`: numbers (`42`, `-` stays outside: `-?`; `1.5e-3`, `.5`, `0x1F`, `0b101`),
//! single-quoted strings (with `\'` and `''` escapes), hex/binary strings (`x'AB'`, `b'01'`),
//! heredocs (`$$…$$`, `$tag$…$tag$`), and the inline data after `FORMAT <name>` in an `INSERT`.
//! Comments (`--`, `#`, `/* */`) are removed, since they can hold anything. Kept: keywords,
//! identifiers (also those containing digits, like `t1`), quoted identifiers (`"…"`, `` `…` ``)
//! and query parameters (`{name:Type}`).

/// Where the normaliser writes: a `String` (`--redact`) or a [`FingerprintText`].
pub trait NormalizedText {
    fn push(&mut self, c: char);
    fn push_str(&mut self, s: &str);
    /// The last byte written, if any.
    fn last_byte(&self) -> Option<u8>;
}

impl NormalizedText for String {
    fn push(&mut self, c: char) {
        String::push(self, c);
    }

    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }

    fn last_byte(&self) -> Option<u8> {
        self.as_bytes().last().copied()
    }
}

/// The fingerprint's form of normalised SQL: whitespace runs become one space, kept only
/// between two word tokens (`a = ?` and `a=?` are one shape), and lists of placeholders
/// fold into one (`IN (?, ?, ?)` is `IN (?)`, `VALUES (?, ?), (?, ?)` is `VALUES (?)`), so
/// that a query's fingerprint does not depend on how many values it carries.
#[derive(Debug, Default, Clone)]
pub struct FingerprintText {
    text: String,
    pending_space: bool,
}

/// A byte that a space must keep apart from a neighbouring word byte.
fn is_word_byte(byte: u8) -> bool {
    is_identifier_byte(byte) || matches!(byte, b'?' | b'"' | b'`' | b'\'')
}

impl FingerprintText {
    /// Empties the text, keeping its buffer.
    pub fn clear(&mut self) {
        self.text.clear();
        self.pending_space = false;
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn separate_from(&mut self, next: u8) {
        if std::mem::take(&mut self.pending_space)
            && self
                .text
                .as_bytes()
                .last()
                .is_some_and(|&b| is_word_byte(b))
            && is_word_byte(next)
        {
            self.text.push(' ');
        }
    }

    /// Folds a list of placeholders ending the text into one.
    fn fold_lists(&mut self) {
        loop {
            if self.text.ends_with("?,?") {
                self.text.truncate(self.text.len() - 2);
            } else if self.text.ends_with("(?),(?)") {
                self.text.truncate(self.text.len() - 4);
            } else {
                return;
            }
        }
    }
}

impl NormalizedText for FingerprintText {
    fn push(&mut self, c: char) {
        if c.is_ascii_whitespace() {
            self.pending_space = !self.text.is_empty();
            return;
        }
        let mut utf8 = [0; 4];
        self.push_str(c.encode_utf8(&mut utf8));
    }

    fn push_str(&mut self, s: &str) {
        let Some(&first) = s.as_bytes().first() else {
            return;
        };
        self.separate_from(first);
        self.text.push_str(s);
        self.fold_lists();
    }

    fn last_byte(&self) -> Option<u8> {
        self.text.as_bytes().last().copied()
    }
}

/// `query` with literals replaced by `?` and comments removed.
pub fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    redact_query_into(query, &mut out);
    out
}

fn is_identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

fn is_identifier_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte >= 0x80
}

/// Index just past the quoted run starting at `start` (which holds `quote`); backslash escapes
/// and doubled quotes stay inside. An unterminated run ends at the end of the text.
fn skip_quoted(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            byte if byte == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Index just past a number literal starting at `start`.
fn skip_number(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    let prefixed = bytes[i] == b'0'
        && matches!(bytes.get(i + 1), Some(b'x' | b'X' | b'b' | b'B'))
        && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
    if prefixed {
        i += 2;
        while i < bytes.len() && (bytes[i].is_ascii_hexdigit() || bytes[i] == b'_') {
            i += 1;
        }
        return i;
    }
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
        i += 1;
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    // `1st`, `2d`: digits glued to letters are part of one token; swallow the rest.
    while i < bytes.len() && is_identifier_byte(bytes[i]) {
        i += 1;
    }
    i
}

/// If a heredoc starts at `start` (`$$` or `$tag$`), the index just past its end.
fn skip_heredoc(query: &str, start: usize) -> Option<usize> {
    let bytes = query.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    if bytes.get(i) != Some(&b'$') {
        return None;
    }
    let tag = &query[start..=i];
    let body = i + 1;
    Some(
        query[body..]
            .find(tag)
            .map_or(bytes.len(), |offset| body + offset + tag.len()),
    )
}

/// [`redact_query`] into a reused buffer (cleared first).
pub fn redact_query_into(query: &str, out: &mut String) {
    out.clear();
    normalize_sql(query, out);
}

/// The ClickHouse fingerprint text of `query` into a reused buffer (cleared first).
pub fn fingerprint_sql_into(query: &str, out: &mut FingerprintText) {
    out.clear();
    normalize_sql(query, out);
}

/// The one walk over SQL text both forms share: literals become `?`, comments go.
fn normalize_sql(query: &str, out: &mut impl NormalizedText) {
    let bytes = query.as_bytes();
    let mut i = 0;
    let mut first_word: Option<&str> = None;
    let mut after_format_keyword = false;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'\'' => {
                i = skip_quoted(bytes, i, b'\'');
                out.push('?');
            }
            b'"' | b'`' => {
                let end = skip_quoted(bytes, i, byte);
                out.push_str(&query[i..end]);
                i = end;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = query[i..]
                    .find('\n')
                    .map_or(bytes.len(), |offset| i + offset);
            }
            b'#' => {
                i = query[i..]
                    .find('\n')
                    .map_or(bytes.len(), |offset| i + offset);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = query[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |offset| i + 2 + offset + 2);
                out.push(' ');
            }
            b'$' => match skip_heredoc(query, i) {
                Some(end) => {
                    out.push('?');
                    i = end;
                }
                None => {
                    out.push('$');
                    i += 1;
                }
            },
            b'0'..=b'9' => {
                i = skip_number(bytes, i);
                out.push('?');
            }
            b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !out.last_byte().is_some_and(|last| {
                    is_identifier_byte(last) || matches!(last, b')' | b']' | b'`' | b'"' | b'?')
                }) =>
            {
                i = skip_number(bytes, i + 1);
                out.push('?');
            }
            _ if is_identifier_start(byte) => {
                let start = i;
                while i < bytes.len() && is_identifier_byte(bytes[i]) {
                    i += 1;
                }
                let word = &query[start..i];
                if word.len() == 1
                    && matches!(byte, b'x' | b'X' | b'b' | b'B')
                    && bytes.get(i) == Some(&b'\'')
                {
                    i = skip_quoted(bytes, i, b'\'');
                    out.push('?');
                    continue;
                }
                out.push_str(word);
                if after_format_keyword {
                    // `INSERT ... FORMAT <name> <inline data>`: the data is all literals.
                    let is_insert = first_word.is_some_and(|w| w.eq_ignore_ascii_case("INSERT"));
                    if is_insert && !query[i..].trim().is_empty() {
                        out.push(' ');
                        out.push('?');
                        return;
                    }
                }
                after_format_keyword = word.eq_ignore_ascii_case("FORMAT");
                first_word.get_or_insert(word);
            }
            _ => {
                out.push(byte as char);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_query;

    #[test]
    fn numbers_strings_and_hex_become_placeholders() {
        assert_eq!(
            redact_query("SELECT * FROM t WHERE id = 42 AND name = 'bob' AND h = 0x1F"),
            "SELECT * FROM t WHERE id = ? AND name = ? AND h = ?"
        );
        assert_eq!(
            redact_query("SELECT 1.5e-3, .5, -7, 1_000, 0b101, 3e10"),
            "SELECT ?, ?, -?, ?, ?, ?"
        );
        assert_eq!(
            redact_query("SELECT x'DEADBEEF', X'00', b'0101'"),
            "SELECT ?, ?, ?"
        );
    }

    #[test]
    fn escaped_quotes_stay_inside_the_literal() {
        assert_eq!(
            redact_query(r"SELECT 'it\'s', 'a''b', 'x' || 'y'"),
            "SELECT ?, ?, ? || ?"
        );
        assert_eq!(redact_query("SELECT 'unterminated"), "SELECT ?");
    }

    #[test]
    fn identifiers_with_digits_and_quoted_identifiers_are_kept() {
        assert_eq!(
            redact_query("SELECT col_2, t1.x3 FROM db1.`table 9` AS \"a 7\" WHERE c5 IN (1, 2, 3)"),
            "SELECT col_2, t1.x3 FROM db1.`table 9` AS \"a 7\" WHERE c5 IN (?, ?, ?)"
        );
        assert_eq!(
            redact_query("SELECT tupleElement(t, 1), arr[2] FROM t"),
            "SELECT tupleElement(t, ?), arr[?] FROM t"
        );
        assert_eq!(
            redact_query("SELECT * FROM t WHERE x = {p1:UInt32}"),
            "SELECT * FROM t WHERE x = {p1:UInt32}"
        );
        assert_eq!(redact_query("SELECT имя1 FROM т"), "SELECT имя1 FROM т");
    }

    #[test]
    fn comments_are_removed() {
        assert_eq!(
            redact_query("SELECT 1 -- secret 123\nFROM t /* password 'x' */ WHERE a # more\n"),
            "SELECT ? \nFROM t   WHERE a \n"
        );
    }

    #[test]
    fn heredocs_are_literals() {
        assert_eq!(
            redact_query("SELECT $$raw 'text' 5$$, $tag$ a $$ b $tag$, $1"),
            "SELECT ?, ?, $?"
        );
    }

    #[test]
    fn insert_inline_data_is_removed_but_select_format_kept() {
        assert_eq!(
            redact_query("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')"),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            redact_query("INSERT INTO t FORMAT JSONEachRow {\"a\": \"secret\"}"),
            "INSERT INTO t FORMAT JSONEachRow ?"
        );
        assert_eq!(
            redact_query("INSERT INTO t FORMAT Native"),
            "INSERT INTO t FORMAT Native"
        );
        assert_eq!(redact_query("SELECT 1 FORMAT JSON"), "SELECT ? FORMAT JSON");
    }

    #[test]
    fn equal_shapes_give_equal_text() {
        assert_eq!(
            redact_query("SELECT * FROM t WHERE id = 1"),
            redact_query("SELECT * FROM t WHERE id = 999999")
        );
    }
}
