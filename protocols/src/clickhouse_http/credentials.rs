//! Where credentials sit in the client's bytes of a ClickHouse HTTP connection, for
//! `l7tap dump --scrub`: the value of a `password=` parameter (in the request target or a
//! form body), and the values of the `X-ClickHouse-Key` and `Authorization` headers.
use std::ops::Range;

/// The byte ranges of credential values in `bytes` (client → server), sorted, not
/// overlapping.
pub fn credential_ranges(bytes: &[u8]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    // A parameter value ends at the next parameter, the end of the target or of the line.
    let mut at = 0;
    while let Some(found) = find(&bytes[at..], b"password=") {
        let start = at + found + b"password=".len();
        let preceded_by_separator =
            at + found == 0 || matches!(bytes[at + found - 1], b'?' | b'&' | b'\n');
        let end = start
            + bytes[start..]
                .iter()
                .position(|b| matches!(b, b'&' | b' ' | b'\r' | b'\n' | b'#'))
                .unwrap_or(bytes.len() - start);
        if preceded_by_separator && end > start {
            ranges.push(start..end);
        }
        at = end.max(start);
    }
    // A header value runs from after `Name:` and its spaces to the end of the line.
    for line_start in line_starts(bytes) {
        let line = &bytes[line_start..];
        for name in [&b"x-clickhouse-key:"[..], &b"authorization:"[..]] {
            if line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name) {
                let mut start = line_start + name.len();
                while bytes.get(start).is_some_and(|b| *b == b' ' || *b == b'\t') {
                    start += 1;
                }
                let end = start
                    + bytes[start..]
                        .iter()
                        .position(|b| matches!(b, b'\r' | b'\n'))
                        .unwrap_or(bytes.len() - start);
                if end > start {
                    ranges.push(start..end);
                }
            }
        }
    }
    ranges.sort_by_key(|r| r.start);
    ranges
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Offsets where a line starts (after each `\n`).
fn line_starts(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .filter(move |&i| i < bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubbed(request: &[u8]) -> String {
        let mut bytes = request.to_vec();
        for r in credential_ranges(&bytes) {
            bytes[r].fill(b'*');
        }
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn parameters_and_headers_lose_their_values_and_keep_their_lengths() {
        let request = b"GET /?user=l7tap&password=s3cret&query=SELECT%201 HTTP/1.1\r\n\
            Host: x\r\nX-ClickHouse-Key: hunter2\r\nauthorization: Basic bDd0YXA6czNjcmV0\r\n\r\n";
        let out = scrubbed(request);
        assert_eq!(out.len(), request.len());
        assert!(out.contains("password=******&query=SELECT%201"), "{out}");
        assert!(out.contains("X-ClickHouse-Key: *******\r\n"), "{out}");
        // The whole value, its scheme included.
        let basic = "*".repeat("Basic bDd0YXA6czNjcmV0".len());
        assert!(
            out.contains(&format!("authorization: {basic}\r\n")),
            "{out}"
        );
        assert!(!out.contains("s3cret") && !out.contains("hunter2"));
    }

    #[test]
    fn a_form_body_parameter_is_scrubbed_and_lookalikes_are_not() {
        let request = b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nuser=a&password=pw\r\n\
            SELECT 'mypassword=x'";
        let out = scrubbed(request);
        assert!(out.contains("&password=**\r\n"), "{out}");
        assert!(out.contains("'mypassword=x'"), "{out}");
    }
}
