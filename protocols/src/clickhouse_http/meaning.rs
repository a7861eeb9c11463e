//! What ClickHouse's HTTP interface means by a request and a response: URL parameters
//! (percent-decoded), the user of `Authorization: Basic`, the `X-ClickHouse-Summary`
//! figures, the exception text of an error body, and where an INSERT's data begins.
//!
//! Credentials (`password=`, `X-ClickHouse-Key`, the password of `Authorization`) are read
//! past and never returned.

/// `(name, raw value)` of each parameter of a request target's query string.
pub(super) fn url_parameters(target: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let query = match target.iter().position(|&b| b == b'?') {
        Some(q) => &target[q + 1..],
        None => &[][..],
    };
    let query = &query[..query.iter().position(|&b| b == b'#').unwrap_or(query.len())];
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(eq) => (&p[..eq], &p[eq + 1..]),
            None => (p, &[][..]),
        })
}

/// The path of a request target (before `?`).
pub(super) fn target_path(target: &[u8]) -> &[u8] {
    &target[..target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len())]
}

/// Appends the percent-decoding of `raw` (`+` as a space) to `out`, at most `max` bytes of
/// it in all; returns whether the value was longer. A `%` not followed by two hex digits is
/// kept as is.
pub(super) fn percent_decode_into(raw: &[u8], out: &mut Vec<u8>, max: usize) -> bool {
    let mut i = 0;
    while i < raw.len() {
        if out.len() >= max {
            return true;
        }
        let byte = match raw[i] {
            b'+' => b' ',
            b'%' => match (
                raw.get(i + 1).and_then(|&h| hex_value(h)),
                raw.get(i + 2).and_then(|&l| hex_value(l)),
            ) {
                (Some(h), Some(l)) => {
                    i += 2;
                    h << 4 | l
                }
                _ => b'%',
            },
            b => b,
        };
        out.push(byte);
        i += 1;
    }
    false
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decoded bytes kept of an `Authorization: Basic` credential (`user:password`).
const MAX_BASIC_DECODED: usize = 256;

/// The user of an `Authorization: Basic <base64(user:password)>` value, decoded into
/// `scratch`; the password is decoded only as far as the stack buffer goes and is dropped.
pub(super) fn basic_auth_user<'s>(
    value: &[u8],
    scratch: &'s mut [u8; MAX_BASIC_DECODED],
) -> Option<&'s [u8]> {
    let (scheme, encoded) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"Basic") {
        return None;
    }
    let decoded = base64_decode(super::http::trim(encoded), scratch)?;
    let colon = scratch[..decoded].iter().position(|&b| b == b':')?;
    // The password after the colon is overwritten before the scratch is handed out.
    scratch[colon..decoded].fill(0);
    Some(&scratch[..colon])
}

/// Standard base64 (with or without padding) into `out`; `None` if invalid or too long.
fn base64_decode(s: &[u8], out: &mut [u8]) -> Option<usize> {
    let s = s.strip_suffix(b"==").or(s.strip_suffix(b"=")).unwrap_or(s);
    let mut acc = 0u32;
    let mut bits = 0;
    let mut n = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
        }
    }
    Some(n)
}

/// Figures of an `X-ClickHouse-Summary` (or `-Progress`) header:
/// `{"read_rows":"1","read_bytes":"1","written_rows":"0","written_bytes":"0",...}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Summary {
    pub read_rows: u64,
    pub read_bytes: u64,
    pub written_rows: u64,
    pub written_bytes: u64,
}

pub(super) fn summary(value: &[u8]) -> Summary {
    Summary {
        read_rows: json_number(value, b"\"read_rows\"").unwrap_or(0),
        read_bytes: json_number(value, b"\"read_bytes\"").unwrap_or(0),
        written_rows: json_number(value, b"\"written_rows\"").unwrap_or(0),
        written_bytes: json_number(value, b"\"written_bytes\"").unwrap_or(0),
    }
}

/// The number after `key:` in a flat JSON object, quoted or not.
fn json_number(json: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(json, key)? + key.len();
    let rest = super::http::trim(&json[at..]).strip_prefix(b":")?;
    let rest = super::http::trim(rest);
    let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    super::http::parse_decimal(&rest[..digits.min(19)])
        .or_else(|| (digits > 15).then_some(u64::MAX))
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An exception as ClickHouse writes it into an HTTP body: `Code: 60, e.displayText() =
/// DB::Exception: Table x doesn't exist., e.what() = DB::Exception` (18.x), or `Code: 60.
/// DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE) (version 23.8.1.1)` (newer).
/// Returns the code and the message's first line (the display text for 18.x).
pub(super) fn exception(text: &[u8]) -> Option<(i32, &[u8])> {
    let rest = text.strip_prefix(b"Code: ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 6 {
        return None;
    }
    let code = rest[..digits]
        .iter()
        .fold(0i32, |n, &d| n * 10 + i32::from(d - b'0'));
    let rest = &rest[digits..];
    let message = if let Some(m) = rest.strip_prefix(b", e.displayText() = ") {
        let line = first_line(m);
        match find(line, b", e.what() = ") {
            Some(end) => &line[..end],
            None => line,
        }
    } else if let Some(m) = rest.strip_prefix(b". ") {
        first_line(m)
    } else {
        return None;
    };
    Some((code, message))
}

fn first_line(s: &[u8]) -> &[u8] {
    &s[..s.iter().position(|&b| b == b'\n').unwrap_or(s.len())]
}

/// Whether `line` (a line of a result body) is an exception ClickHouse appended after data
/// it had already sent: `Code: <n>, e.displayText() = ` or `Code: <n>. DB::Exception`.
pub(super) fn is_appended_exception(line: &[u8]) -> bool {
    match exception(line) {
        Some((_, message)) => {
            message.starts_with(b"DB::Exception") || find(line, b"e.displayText()").is_some()
        }
        None => false,
    }
}

/// Where the data of an INSERT's text begins, as ClickHouse cuts the query it logs: after
/// `FORMAT <name>` (the rest of that line and what follows is data) or after `VALUES`.
/// `None` if neither keyword is there (the data has not started in `text`).
pub(super) fn insert_data_start(text: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < text.len() {
        let word_start = i;
        if !(text[i].is_ascii_alphabetic() || text[i] == b'_') {
            i += match text[i] {
                // Skip quoted names and strings whole: a keyword inside them does not count.
                q @ (b'\'' | b'"' | b'`') => text[i + 1..]
                    .iter()
                    .position(|&b| b == q)
                    .map_or(text.len() - i, |p| p + 2),
                _ => 1,
            };
            continue;
        }
        while i < text.len() && (text[i].is_ascii_alphanumeric() || text[i] == b'_') {
            i += 1;
        }
        let word = &text[word_start..i];
        if word.eq_ignore_ascii_case(b"VALUES") {
            return Some(i);
        }
        if word.eq_ignore_ascii_case(b"FORMAT") {
            let name_start = i + text[i..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            let name_len = text[name_start..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
            return (name_len > 0).then_some(name_start + name_len);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_decode() {
        let target = b"/?query=SELECT+%2A+FROM+t&query_id=a%2Fb&password=x&flag#frag";
        let params: Vec<_> = url_parameters(target).collect();
        assert_eq!(params.len(), 4);
        assert_eq!(params[3], (&b"flag"[..], &b""[..]));
        let mut out = Vec::new();
        assert!(!percent_decode_into(params[0].1, &mut out, 100));
        assert_eq!(out, b"SELECT * FROM t");
        out.clear();
        assert!(percent_decode_into(params[0].1, &mut out, 6));
        assert_eq!(out, b"SELECT");
        out.clear();
        percent_decode_into(b"100%+%zz%4", &mut out, 100);
        assert_eq!(out, b"100% %zz%4");
        assert_eq!(target_path(b"/ping?x=1"), b"/ping");
    }

    #[test]
    fn basic_auth_gives_the_user_only() {
        let mut scratch = [0u8; MAX_BASIC_DECODED];
        // base64("l7tap:fixture-fake-pw")
        let user = basic_auth_user(b"Basic bDd0YXA6Zml4dHVyZS1mYWtlLXB3", &mut scratch);
        assert_eq!(user, Some(&b"l7tap"[..]));
        assert!(!scratch.windows(4).any(|w| w == b"fake"));
        assert_eq!(basic_auth_user(b"Bearer abc", &mut scratch), None);
        assert_eq!(basic_auth_user(b"Basic !!!", &mut scratch), None);
        // base64("nocolon")
        assert_eq!(basic_auth_user(b"Basic bm9jb2xvbg==", &mut scratch), None);
    }

    #[test]
    fn summary_figures() {
        let s = summary(
            br#"{"read_rows":"10","read_bytes":"80","written_rows":"2","written_bytes":"16","total_rows_to_read":"0"}"#,
        );
        assert_eq!(
            s,
            Summary {
                read_rows: 10,
                read_bytes: 80,
                written_rows: 2,
                written_bytes: 16
            }
        );
        assert_eq!(summary(br#"{"read_rows": 7}"#).read_rows, 7);
        assert_eq!(summary(b"garbage"), Summary::default());
    }

    #[test]
    fn exceptions_of_both_generations() {
        let old = b"Code: 60, e.displayText() = DB::Exception: Table default.t doesn't exist., e.what() = DB::Exception\n";
        assert_eq!(
            exception(old),
            Some((60, &b"DB::Exception: Table default.t doesn't exist."[..]))
        );
        let new = b"Code: 60. DB::Exception: Table default.t does not exist. (UNKNOWN_TABLE) (version 23.8.1)\n";
        assert_eq!(
            exception(new),
            Some((
                60,
                &b"DB::Exception: Table default.t does not exist. (UNKNOWN_TABLE) (version 23.8.1)"
                    [..]
            ))
        );
        let multiline = b"Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position 1: SELEC\n. Expected one of";
        assert_eq!(exception(multiline).unwrap().0, 62);
        assert_eq!(exception(b"Code: x"), None);
        assert_eq!(exception(b"1\t2\n"), None);
        assert!(is_appended_exception(old));
        assert!(!is_appended_exception(b"Code: 5. hello"));
    }

    #[test]
    fn insert_data_starts_after_format_or_values() {
        fn at(s: &str) -> Option<&str> {
            insert_data_start(s.as_bytes()).map(|n| &s[..n])
        }
        assert_eq!(
            at("INSERT INTO t FORMAT TSV\n1\t2\n"),
            Some("INSERT INTO t FORMAT TSV")
        );
        assert_eq!(
            at("INSERT INTO t VALUES (1, 'FORMAT x')"),
            Some("INSERT INTO t VALUES")
        );
        assert_eq!(
            at("INSERT INTO `values` (a) format JSONEachRow {}"),
            Some("INSERT INTO `values` (a) format JSONEachRow")
        );
        assert_eq!(at("INSERT INTO t SELECT 1"), None);
    }
}
