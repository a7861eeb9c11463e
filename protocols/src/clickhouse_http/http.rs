//! HTTP/1.x message framing: request and response heads (start line and header fields,
//! checked as they arrive and bounded), and message bodies by `Content-Length` or the chunked
//! transfer coding. Nothing here knows ClickHouse.
//!
//! Only what HTTP/1.1 clients send is accepted: CRLF line ends, no obsolete line folding, a
//! method from a fixed list, an `HTTP/1.0` or `HTTP/1.1` version. Anything else is
//! [`FramingError::Malformed`], so bytes that are not HTTP are rejected within their first
//! line instead of being buffered up to the head limit.

/// Bytes a head (start line and header fields) may take; a longer one is not followed.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Bytes a chunk-size line (size and extensions) or a trailer line may take.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest chunk or body length taken as plausible (1 TiB).
pub(super) const MAX_BODY: u64 = 1 << 40;

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH", "TRACE", "CONNECT",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FramingError {
    /// The bytes are not the HTTP/1.x element expected here.
    Malformed(&'static str),
    /// A head or length beyond the limits above.
    TooLarge { len: u64, limit: u64 },
}

type Framed<T> = Result<Option<T>, FramingError>;

fn malformed<T>(what: &'static str) -> Result<T, FramingError> {
    Err(FramingError::Malformed(what))
}

/// A whole request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RequestHead<'a> {
    pub method: &'static str,
    /// The request target as sent (`/?query=...`).
    pub target: &'a [u8],
    /// The header field lines, each ending in CRLF (see [`fields`]).
    pub fields: &'a [u8],
    /// Bytes of the head, through the empty line.
    pub len: usize,
}

/// A whole response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ResponseHead<'a> {
    pub status: u16,
    pub fields: &'a [u8],
    pub len: usize,
}

/// A request head at the front of `buf`: `None` while it is a valid prefix of one.
pub(super) fn request_head(buf: &[u8]) -> Framed<RequestHead<'_>> {
    let Some((line_end, fields, len)) = head(buf, request_line)? else {
        return Ok(None);
    };
    let line = &buf[..line_end];
    let sp1 = line.iter().position(|&b| b == b' ').unwrap_or(0);
    let sp2 = line.iter().rposition(|&b| b == b' ').unwrap_or(0);
    let method = METHODS
        .iter()
        .find(|m| m.as_bytes() == &line[..sp1])
        .copied()
        .unwrap_or("");
    Ok(Some(RequestHead {
        method,
        target: &line[sp1 + 1..sp2],
        fields,
        len,
    }))
}

/// A response head at the front of `buf`: `None` while it is a valid prefix of one.
pub(super) fn response_head(buf: &[u8]) -> Framed<ResponseHead<'_>> {
    let Some((_, fields, len)) = head(buf, status_line)? else {
        return Ok(None);
    };
    let status = buf[9..12]
        .iter()
        .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    Ok(Some(ResponseHead {
        status,
        fields,
        len,
    }))
}

/// Whether `buf` may start a request head (its first bytes are a valid prefix of one).
pub(super) fn may_start_request(buf: &[u8]) -> bool {
    let line = &buf[..buf.len().min(MAX_HEAD)];
    let end = line.iter().position(|&b| b == b'\r').unwrap_or(line.len());
    !buf.is_empty() && request_line(&line[..end], end < line.len()).is_ok()
}

/// Whether `buf` may start a response head.
pub(super) fn may_start_response(buf: &[u8]) -> bool {
    let line = &buf[..buf.len().min(MAX_HEAD)];
    let end = line.iter().position(|&b| b == b'\r').unwrap_or(line.len());
    !buf.is_empty() && status_line(&line[..end], end < line.len()).is_ok()
}

/// Checks a head's lines as far as they go: `(start line end, field lines, head length)`
/// once the empty line is there.
fn head(
    buf: &[u8],
    start_line: fn(&[u8], bool) -> Result<(), FramingError>,
) -> Framed<(usize, &[u8], usize)> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut pos = 0;
    let mut first_end = None;
    loop {
        let rest = &window[pos..];
        let Some(cr) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            // A partial line: check what there is of it.
            match first_end {
                None => start_line(rest, false)?,
                Some(_) => field_line(rest, false)?,
            }
            break;
        };
        if rest[cr] == b'\n' {
            return malformed("bare LF in a head");
        }
        match rest.get(cr + 1) {
            None => {
                match first_end {
                    None => start_line(&rest[..cr], false)?,
                    Some(_) => field_line(&rest[..cr], false)?,
                }
                break;
            }
            Some(b'\n') => {}
            Some(_) => return malformed("CR without LF in a head"),
        }
        let line = &rest[..cr];
        match first_end {
            None => {
                start_line(line, true)?;
                first_end = Some(cr);
            }
            Some(line_end) if line.is_empty() => {
                let len = pos + cr + 2;
                return Ok(Some((line_end, &buf[line_end + 2..pos], len)));
            }
            Some(_) => field_line(line, true)?,
        }
        pos += cr + 2;
    }
    if buf.len() >= MAX_HEAD {
        return Err(FramingError::TooLarge {
            len: buf.len() as u64,
            limit: MAX_HEAD as u64,
        });
    }
    Ok(None)
}

/// `METHOD SP target SP HTTP/1.x`, or a prefix of it when not `whole`.
fn request_line(line: &[u8], whole: bool) -> Result<(), FramingError> {
    let sp1 = line.iter().position(|&b| b == b' ');
    let method = &line[..sp1.unwrap_or(line.len())];
    let known = |m: &&str| match sp1 {
        Some(_) => m.as_bytes() == method,
        None => m.as_bytes().starts_with(method),
    };
    if !METHODS.iter().any(known) {
        return malformed("not a request method");
    }
    let Some(sp1) = sp1 else {
        return if whole {
            malformed("request line without a target")
        } else {
            Ok(())
        };
    };
    let rest = &line[sp1 + 1..];
    let sp2 = rest.iter().position(|&b| b == b' ');
    let target = &rest[..sp2.unwrap_or(rest.len())];
    if !target.iter().all(|&b| b > b' ' && b != 0x7f) {
        return malformed("bad byte in a request target");
    }
    if target
        .first()
        .is_some_and(|&b| b != b'/' && b != b'*' && !b.is_ascii_alphabetic())
    {
        return malformed("request target is not a path or URL");
    }
    let Some(sp2) = sp2 else {
        return if whole {
            malformed("request line without a version")
        } else {
            Ok(())
        };
    };
    if target.is_empty() {
        return malformed("empty request target");
    }
    version(&rest[sp2 + 1..], whole)
}

/// `HTTP/1.0` or `HTTP/1.1`, or a prefix of one when not `whole`.
fn version(v: &[u8], whole: bool) -> Result<(), FramingError> {
    let ok = |full: &[u8]| {
        if whole {
            v == full
        } else {
            full.starts_with(v)
        }
    };
    if ok(b"HTTP/1.1") || ok(b"HTTP/1.0") {
        Ok(())
    } else {
        malformed("not HTTP/1.0 or HTTP/1.1")
    }
}

/// `HTTP/1.x SP 3DIGIT [SP reason]`, or a prefix of it when not `whole`.
fn status_line(line: &[u8], whole: bool) -> Result<(), FramingError> {
    version(&line[..line.len().min(8)], whole || line.len() > 8)?;
    let rest = line.get(8..).unwrap_or(b"");
    let pattern = b" ddd";
    for (i, &b) in rest.iter().take(pattern.len()).enumerate() {
        let fits = match pattern[i] {
            b'd' => b.is_ascii_digit(),
            p => b == p,
        };
        if !fits {
            return malformed("bad status code");
        }
    }
    if rest.len() < pattern.len() {
        return if whole {
            malformed("status line too short")
        } else {
            Ok(())
        };
    }
    if rest[1] == b'0' {
        return malformed("status code below 100");
    }
    match rest.get(4) {
        None | Some(b' ') => {}
        Some(_) => return malformed("status code not followed by a space"),
    }
    if rest.iter().skip(5).all(|&b| is_field_byte(b)) {
        Ok(())
    } else {
        malformed("bad byte in a reason phrase")
    }
}

/// `name: value`, or a prefix of it when not `whole`.
fn field_line(line: &[u8], whole: bool) -> Result<(), FramingError> {
    let colon = line.iter().position(|&b| b == b':');
    let name = &line[..colon.unwrap_or(line.len())];
    if !name.iter().all(|&b| is_token_byte(b)) {
        return malformed("bad byte in a field name");
    }
    let Some(colon) = colon else {
        return if whole {
            malformed("field line without a colon")
        } else {
            Ok(())
        };
    };
    if name.is_empty() {
        return malformed("empty field name");
    }
    if line[colon + 1..].iter().all(|&b| is_field_byte(b)) {
        Ok(())
    } else {
        malformed("bad byte in a field value")
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

/// The fields of a head's field lines: `(name, value)` with the value's surrounding spaces
/// trimmed. Names are compared case-insensitively by the caller.
pub(super) fn fields(lines: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    lines
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_suffix(b"\r"))
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], trim(&line[colon + 1..])))
        })
}

pub(super) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    /// A response without a length: its body ends when the connection closes.
    UntilClose,
}

/// The body framing the fields declare (RFC 9112 section 6.3): chunked when the last
/// transfer coding is chunked, else `Content-Length`, else none (a request) or until close
/// (a response; the caller handles statuses and methods without a body).
pub(super) fn body_framing(lines: &[u8], request: bool) -> Result<BodyFraming, FramingError> {
    let mut length: Option<u64> = None;
    let mut transfer_coding: Option<&[u8]> = None;
    for (name, value) in fields(lines) {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or(FramingError::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return malformed("conflicting Content-Length fields");
            }
            if n > MAX_BODY {
                return Err(FramingError::TooLarge {
                    len: n,
                    limit: MAX_BODY,
                });
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_coding = value.rsplit(|&b| b == b',').next().map(trim);
        }
    }
    Ok(match (transfer_coding, length) {
        (Some(coding), _) if coding.eq_ignore_ascii_case(b"chunked") => BodyFraming::Chunked,
        // A request whose body length cannot be known cannot be followed (RFC 9112 6.3.4).
        (Some(_), _) if request => return malformed("request transfer coding is not chunked"),
        (Some(_), _) => BodyFraming::UntilClose,
        (None, Some(0)) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
        (None, None) if request => BodyFraming::None,
        (None, None) => BodyFraming::UntilClose,
    })
}

/// A decimal number of at most 15 digits (larger lengths are refused anyway).
pub(super) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// A chunk-size line at the front of `buf`: `(size, line length)`.
pub(super) fn chunk_line(buf: &[u8]) -> Framed<(u64, usize)> {
    let window = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    let digits = window.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > 10 {
        return Err(FramingError::TooLarge {
            len: u64::MAX,
            limit: MAX_BODY,
        });
    }
    let rest = &window[digits..];
    if rest.is_empty() {
        return Ok(None);
    }
    if digits == 0 {
        return malformed("chunk size is not hexadecimal");
    }
    let size = window[..digits].iter().fold(0u64, |n, &d| {
        n * 16 + u64::from((d as char).to_digit(16).unwrap_or(0))
    });
    if size > MAX_BODY {
        return Err(FramingError::TooLarge {
            len: size,
            limit: MAX_BODY,
        });
    }
    match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(cr) if rest[cr] == b'\r' => {
            let ext = &rest[..cr];
            if !matches!(ext.first(), None | Some(b';' | b' ' | b'\t'))
                || !ext.iter().all(|&b| is_field_byte(b))
            {
                return malformed("bad chunk extension");
            }
            match rest.get(cr + 1) {
                Some(b'\n') => Ok(Some((size, digits + cr + 2))),
                Some(_) => malformed("CR without LF after a chunk size"),
                None => Ok(None),
            }
        }
        Some(_) => malformed("bare LF after a chunk size"),
        None if buf.len() >= MAX_CHUNK_LINE => Err(FramingError::TooLarge {
            len: buf.len() as u64,
            limit: MAX_CHUNK_LINE as u64,
        }),
        None if rest.iter().all(|&b| is_field_byte(b)) => Ok(None),
        None => malformed("bad byte after a chunk size"),
    }
}

/// A trailer field line or the empty line that ends a chunked body: `(line length, last)`.
pub(super) fn trailer_line(buf: &[u8]) -> Framed<(usize, bool)> {
    let window = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(cr) if window[cr] == b'\r' => match window.get(cr + 1) {
            Some(b'\n') if cr == 0 => Ok(Some((2, true))),
            Some(b'\n') => field_line(&window[..cr], true).map(|()| Some((cr + 2, false))),
            Some(_) => malformed("CR without LF in a trailer"),
            None => field_line(&window[..cr], false).map(|()| None),
        },
        Some(_) => malformed("bare LF in a trailer"),
        None if buf.len() >= MAX_CHUNK_LINE => Err(FramingError::TooLarge {
            len: buf.len() as u64,
            limit: MAX_CHUNK_LINE as u64,
        }),
        None => field_line(window, false).map(|()| None),
    }
}

/// The last bytes of a chunked body: the last chunk (`0` and no extensions) and the empty
/// line, right after the CRLF that ends the last data chunk.
pub(super) const CHUNKED_END: &[u8] = b"\r\n0\r\n\r\n";

/// Whether `bytes` end a chunked body (without trailers): they end with [`CHUNKED_END`], or
/// are only its last chunk.
pub(super) fn ends_chunked_body(bytes: &[u8]) -> bool {
    bytes.ends_with(CHUNKED_END) || bytes == &CHUNKED_END[2..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_parses_and_every_prefix_is_partial() {
        let head = b"POST /?query_id=a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
        let parsed = request_head(head).unwrap().unwrap();
        assert_eq!(parsed.method, "POST");
        assert_eq!(parsed.target, b"/?query_id=a");
        assert_eq!(parsed.len, head.len() - 3);
        assert_eq!(
            body_framing(parsed.fields, true).unwrap(),
            BodyFraming::Length(3)
        );
        let fields: Vec<_> = fields(parsed.fields).collect();
        assert_eq!(fields[0], (&b"Host"[..], &b"h"[..]));
        for n in 0..parsed.len {
            assert_eq!(request_head(&head[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn a_response_head_parses() {
        let head = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n";
        let parsed = response_head(head).unwrap().unwrap();
        assert_eq!(parsed.status, 404);
        assert_eq!(parsed.len, head.len());
        assert_eq!(
            body_framing(parsed.fields, false).unwrap(),
            BodyFraming::Chunked
        );
        for n in 0..head.len() {
            assert_eq!(response_head(&head[..n]), Ok(None), "prefix {n}");
        }
        assert_eq!(
            response_head(b"HTTP/1.0 200\r\n\r\n")
                .unwrap()
                .unwrap()
                .status,
            200
        );
    }

    #[test]
    fn garbage_is_rejected_on_its_first_line() {
        for bad in [
            &b"\x00\x01\x02"[..],
            b"GETX / HTTP/1.1\r\n",
            b"GET /\x01 HTTP/1.1",
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n",
        ] {
            assert!(request_head(bad).is_err(), "{bad:?}");
        }
        for bad in [&b"HTTP/1.1 2x0 OK\r\n"[..], b"HTTP/1.1 099 x\r\n", b"HTTX"] {
            assert!(response_head(bad).is_err(), "{bad:?}");
        }
        let endless = [b'a'; MAX_HEAD + 1];
        let mut long = b"GET /".to_vec();
        long.extend_from_slice(&endless);
        assert!(matches!(
            request_head(&long),
            Err(FramingError::TooLarge { .. })
        ));
    }

    #[test]
    fn chunk_lines_and_trailers() {
        assert_eq!(chunk_line(b"1A\r\nxx"), Ok(Some((26, 4))));
        assert_eq!(chunk_line(b"1a;ext=1\r\n"), Ok(Some((26, 10))));
        assert_eq!(chunk_line(b"1A"), Ok(None));
        assert_eq!(chunk_line(b"1A\r"), Ok(None));
        assert!(chunk_line(b"xyz\r\n").is_err());
        assert!(chunk_line(b"ffffffffffff\r\n").is_err());
        assert_eq!(trailer_line(b"\r\n"), Ok(Some((2, true))));
        assert_eq!(trailer_line(b"X-A: b\r\n\r\n"), Ok(Some((8, false))));
        assert_eq!(trailer_line(b"X-A: b"), Ok(None));
        assert!(ends_chunked_body(b"abc\r\n0\r\n\r\n"));
        assert!(ends_chunked_body(b"0\r\n\r\n"));
        assert!(!ends_chunked_body(b"10\r\n\r\n"));
    }

    #[test]
    fn framing_rules() {
        let f = |s: &[u8], req| body_framing(s, req);
        assert_eq!(f(b"", true), Ok(BodyFraming::None));
        assert_eq!(f(b"", false), Ok(BodyFraming::UntilClose));
        assert_eq!(f(b"Content-Length: 0\r\n", false), Ok(BodyFraming::None));
        assert_eq!(
            f(
                b"Transfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n",
                true
            ),
            Ok(BodyFraming::Chunked)
        );
        assert!(f(b"Transfer-Encoding: gzip\r\n", true).is_err());
        assert!(f(b"Content-Length: 1\r\nContent-Length: 2\r\n", true).is_err());
        assert!(f(b"Content-Length: -1\r\n", true).is_err());
    }
}
