//! Where the password is in a client's stream: the client Hello, the first packet a client
//! sends (client name, version, revision, database, user, password). For `dump --scrub`;
//! the parser itself reads past the password (`packets::client_hello`).
use std::ops::Range;

use super::codes::ClientPacket;
use super::wire::{is_printable, Cursor, WireError, WireResult, MAX_HELLO_STRING};

/// The byte range of the Hello password in `client_to_server`, the client's bytes from the
/// start of the connection (cut at the end of the bytes when they end inside it). `None`
/// when the stream does not start with a client Hello, or when its password is empty.
pub fn hello_password_range(client_to_server: &[u8]) -> Option<Range<usize>> {
    let (&code, body) = client_to_server.split_first()?;
    if u64::from(code) != ClientPacket::HELLO.0 {
        return None;
    }
    let range = password_range(&mut Cursor::new(body)).ok()?;
    // Offsets in the stream: the packet code comes first.
    let start = range.start + 1;
    let end = (range.end + 1).min(client_to_server.len());
    (start < end).then_some(start..end)
}

/// The password's range in the Hello body (after the packet code); its end may lie beyond
/// the bytes.
fn password_range(c: &mut Cursor<'_>) -> WireResult<Range<usize>> {
    let client_name = c.string(MAX_HELLO_STRING)?;
    c.varuint()?; // version major
    c.varuint()?; // version minor
    c.varuint()?; // revision
    let database = c.string(MAX_HELLO_STRING)?;
    let user = c.string(MAX_HELLO_STRING)?;
    // The parser's checks: anything else is not a Hello.
    if client_name.is_empty() || !is_printable(client_name) {
        return Err(WireError::Bad("client name is not printable"));
    }
    if !is_printable(database) || !is_printable(user) {
        return Err(WireError::Bad("database or user is not printable"));
    }
    let len = c.varuint()?;
    let start = c.pos;
    let len = usize::try_from(len.min(MAX_HELLO_STRING)).unwrap_or(0);
    Ok(start..start + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::parse_chunks;
    use crate::Direction;

    fn client_stream(fixture: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/clickhouse/{fixture}.chunks",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        parse_chunks(&text)
            .unwrap()
            .into_iter()
            .filter(|c| c.dir == Direction::ClientToServer)
            .flat_map(|c| c.bytes)
            .collect()
    }

    #[test]
    fn the_hello_password_of_the_fixtures_is_found() {
        // cli_password-2 is the run with a wrong password, `wrong-ch-secret-pw`.
        for fixture in [
            "py_password-1",
            "py_password-2",
            "cli_password-1",
            "cli_password-2",
        ] {
            let stream = client_stream(fixture);
            let range = hello_password_range(&stream).unwrap();
            assert!(
                stream[range.clone()].ends_with(b"ch-secret-pw"),
                "{fixture}"
            );
            let mut scrubbed = stream.clone();
            scrubbed[range].fill(b'*');
            let secret: &[u8] = b"ch-secret-pw";
            assert!(
                !scrubbed.windows(secret.len()).any(|w| w == secret),
                "{fixture}"
            );
        }
    }

    #[test]
    fn an_empty_password_or_no_hello_has_no_range() {
        // cli_select1: user default, no password.
        assert_eq!(hello_password_range(&client_stream("cli_select1")), None);
        assert_eq!(hello_password_range(b"\x01\x00garbage"), None);
        assert_eq!(hello_password_range(b""), None);
    }

    #[test]
    fn a_hello_cut_inside_the_password_covers_what_is_there() {
        let stream = client_stream("py_password-1");
        let full = hello_password_range(&stream).unwrap();
        let cut = &stream[..full.start + 4];
        assert_eq!(hello_password_range(cut), Some(full.start..full.start + 4));
    }
}
