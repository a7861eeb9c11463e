//! Where the credentials are in a client's stream, for `dump --scrub`: the session password
//! of the ConnectRequest, the auth data of AuthPackets (xid -4: type, scheme, auth bytes) and
//! SASL tokens; and in the server's stream, the session password of the ConnectResponse. The
//! parser itself skips them unread (`decoding::request_body`).
use std::ops::Range;

use super::codes::{protocol_version, xid, OpCode};
use super::decoding::{connect_request, connect_response, Detect};
use super::framing::{read_i32_at, LENGTH_PREFIX};

/// Bytes of the session password of the ConnectRequest.
const SESSION_PASSWORD_LEN: usize = 16;

/// The byte ranges of credentials in `client_to_server`, client bytes that start at a frame
/// (the connection's start, or a syscall after a gap). Ranges are cut at the end of the bytes.
pub fn credential_ranges(client_to_server: &[u8]) -> Vec<Range<usize>> {
    let stream = client_to_server;
    let mut ranges = Vec::new();
    let mut push = |start: usize, len: usize| {
        let end = start.saturating_add(len).min(stream.len());
        if start < end {
            ranges.push(start..end);
        }
    };
    let mut xid_bytes = 4;
    let mut pos = 0;
    match connect_request(stream) {
        Detect::Yes(connect) => {
            let xid_64 = connect.protocol_version == protocol_version::KEEPER_XID_64;
            // protocolVersion, [use_compression], lastZxidSeen, timeOut, sessionId, passwd.
            let password = 8 + usize::from(xid_64) + 8 + 4 + 8 + 4;
            push(password, SESSION_PASSWORD_LEN);
            if connect.use_compression {
                // Compression frames follow, not requests.
                return ranges;
            }
            if xid_64 {
                xid_bytes = 8;
            }
            pos = connect.frame_len;
        }
        Detect::NeedMore => {
            // A ConnectRequest cut short: whatever follows its fixed fields may be password.
            push(8 + 8 + 4 + 8 + 4, SESSION_PASSWORD_LEN + 1);
            return ranges;
        }
        Detect::No => {}
    }
    // Request frames: length, xid, type, body.
    while let Some(len) = read_i32_at(stream, pos) {
        let Ok(len) = usize::try_from(len) else { break };
        let header = pos + LENGTH_PREFIX;
        if len < xid_bytes + 4 {
            break;
        }
        let request_xid = match xid_bytes {
            8 => super::framing::read_i64_at(stream, header),
            _ => read_i32_at(stream, header).map(i64::from),
        };
        let (Some(request_xid), Some(op)) = (
            request_xid,
            read_i32_at(stream, header + xid_bytes).map(OpCode),
        ) else {
            break;
        };
        let body = header + xid_bytes + 4;
        if request_xid == xid::AUTH && op == OpCode::AUTH {
            // int type, string scheme, buffer auth.
            if let Some(scheme_len) = read_i32_at(stream, body + 4) {
                let auth = body + 8 + usize::try_from(scheme_len).unwrap_or(0);
                if let Some(auth_len) = read_i32_at(stream, auth) {
                    push(auth + 4, usize::try_from(auth_len).unwrap_or(0));
                }
            }
        } else if op == OpCode::SASL {
            if let Some(token_len) = read_i32_at(stream, body) {
                push(body + 4, usize::try_from(token_len).unwrap_or(0));
            }
        }
        pos = header + len;
    }
    ranges
}

/// The byte range of the session password of the ConnectResponse that starts
/// `server_to_client` (cut at the end of the bytes), if it starts with one.
pub fn server_credential_ranges(server_to_client: &[u8]) -> Vec<Range<usize>> {
    let versions = [
        protocol_version::ZOOKEEPER,
        protocol_version::KEEPER_COMPRESSION,
        protocol_version::KEEPER_XID_64,
        protocol_version::KEEPER_TRACING,
    ];
    match connect_response(server_to_client, &versions) {
        Detect::Yes(_) => {
            // protocolVersion, timeOut, sessionId, passwd.
            let password = LENGTH_PREFIX + 4 + 4 + 8 + 4;
            std::iter::once(password..password + SESSION_PASSWORD_LEN).collect()
        }
        Detect::No | Detect::NeedMore => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::parse_chunks;
    use crate::Direction;

    fn client_stream(fixture: &str) -> Vec<u8> {
        stream(fixture, Direction::ClientToServer)
    }

    fn stream(fixture: &str, direction: Direction) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/zookeeper/{fixture}.chunks",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        parse_chunks(&text)
            .unwrap()
            .into_iter()
            .filter(|c| c.dir == direction)
            .flat_map(|c| c.bytes)
            .collect()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn auth_data_and_the_session_password_of_the_fixture_are_found() {
        let stream = client_stream("auth-1");
        let secret = b"l7tap:zk-secret-auth";
        assert!(contains(&stream, secret));
        let ranges = credential_ranges(&stream);
        // The ConnectRequest's password (zeros for a new session), then the AuthPacket.
        assert_eq!(ranges.len(), 2, "{ranges:?}");
        assert_eq!(ranges[0].len(), SESSION_PASSWORD_LEN);
        assert_eq!(&stream[ranges[1].clone()], secret);
        let mut scrubbed = stream.clone();
        for range in ranges {
            scrubbed[range].fill(b'*');
        }
        assert!(!contains(&scrubbed, secret));
        // Only the credentials changed: the digest scheme and the paths are still there.
        assert!(contains(&scrubbed, b"digest"));
        assert!(contains(&scrubbed, b"/l7tap/auth/secret"));
    }

    #[test]
    fn the_session_password_of_the_connect_response_is_found() {
        let stream = stream("auth-1", Direction::ServerToClient);
        let ranges = server_credential_ranges(&stream);
        assert_eq!(ranges, vec![24..40]);
        // The fixture's server answered with a non-zero password.
        assert!(stream[24..40].iter().any(|&b| b != 0));
        assert_eq!(read_i32_at(&stream, 20), Some(16));
        assert!(server_credential_ranges(b"\x00\x00\x00\x10\xff\xff\xff\xfc").is_empty());
    }

    #[test]
    fn an_auth_packet_without_a_handshake_is_found() {
        let stream = client_stream("zktraffic-auth");
        let ranges = credential_ranges(&stream);
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert_eq!(&stream[ranges[0].clone()], b"tacos:tacos");
        // The scheme precedes the auth bytes.
        assert!(contains(&stream[..ranges[0].start], b"digest"));
    }

    #[test]
    fn plain_requests_have_no_credentials() {
        let stream = client_stream("basic");
        let ranges = credential_ranges(&stream);
        // Only the ConnectRequest's session password.
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert_eq!(ranges[0].len(), SESSION_PASSWORD_LEN);
    }
}
