//! The credentials in a connection's bytes, by protocol and direction, and their scrubbing: `l7tap dump
//! --scrub` writes fixtures that can be shared, with each credential replaced by filler of
//! the same length (so every length prefix, and the parse, stay as they were).
use std::ops::Range;

use crate::{Direction, Protocol};

/// The byte that replaces credentials.
pub const FILLER: u8 = b'*';

/// The byte ranges of credentials in `bytes`, one direction of one connection that starts
/// where a message starts (the connection's start, or a syscall after a gap). Ranges are
/// sorted and end within the bytes.
pub fn credential_ranges(
    protocol: Protocol,
    direction: Direction,
    bytes: &[u8],
) -> Vec<Range<usize>> {
    match (protocol, direction) {
        (Protocol::ClickHouse, Direction::ClientToServer) => {
            crate::clickhouse::hello_password_range(bytes)
                .into_iter()
                .collect()
        }
        (Protocol::ClickHouse, Direction::ServerToClient) => Vec::new(),
        (Protocol::ClickHouseHttp, Direction::ClientToServer) => {
            crate::clickhouse_http::credential_ranges(bytes)
        }
        (Protocol::ClickHouseHttp, Direction::ServerToClient) => Vec::new(),
        (Protocol::ZooKeeper, Direction::ClientToServer) => {
            crate::zookeeper::credential_ranges(bytes)
        }
        (Protocol::ZooKeeper, Direction::ServerToClient) => {
            crate::zookeeper::server_credential_ranges(bytes)
        }
    }
}

/// Replaces the credentials of `bytes` with [`FILLER`]; returns how many bytes it replaced.
pub fn scrub_credentials(protocol: Protocol, direction: Direction, bytes: &mut [u8]) -> usize {
    let mut replaced = 0;
    for range in credential_ranges(protocol, direction, bytes) {
        replaced += range.len();
        bytes[range].fill(FILLER);
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_keeps_lengths_and_replaces_only_the_password() {
        // A client Hello: code 0, name, version 1.2, revision 54460 (VarUInt), database,
        // user, password.
        let mut hello = b"\x00\x03cli\x01\x02\xbc\xa9\x03\x02db\x05alice".to_vec();
        hello.extend_from_slice(b"\x07hunter2");
        let mut scrubbed = hello.clone();
        assert_eq!(
            scrub_credentials(
                Protocol::ClickHouse,
                Direction::ClientToServer,
                &mut scrubbed
            ),
            7
        );
        assert_eq!(scrubbed.len(), hello.len());
        assert!(scrubbed.ends_with(b"\x07*******"));
        assert_eq!(scrubbed[..hello.len() - 7], hello[..hello.len() - 7]);
    }
}
