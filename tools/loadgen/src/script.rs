//! Recorded conversations as scripts for the responder and the raw client.
//!
//! Input is the `.chunks` format of `protocols/src/fixture.rs` (written by
//! `ci/fixture-proxy.py`): one line per recorded `recv()`, `c`lient or `s`erver, a timestamp
//! and hex bytes, read by that module's codec.
//!
//! - ClickHouse ([`ClickHouseScript`]): the conversation is cut into exchanges (client bytes,
//!   then the server's answer); the last exchange is the request that repeats, the ones
//!   before it the handshake. Replayed byte for byte, so both ends know every length.
//! - ZooKeeper ([`ZooKeeperScript`]): the streams are cut into length-prefixed frames; the
//!   first frame each way is the session handshake, the others are indexed by opcode
//!   (requests) and by the opcode of the request they answer (replies, paired by xid).
use std::collections::HashMap;
use std::path::Path;

use l7tap_protocols::fixture;
use l7tap_protocols::Direction;

/// A malformed fixture.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScriptError {
    #[error("fixture {file}, line {line}: {what}")]
    Line {
        file: String,
        line: usize,
        what: &'static str,
    },
    #[error("fixture {file}: {what}")]
    Shape { file: String, what: String },
    #[error("reading fixture {file}: {error}")]
    Read { file: String, error: String },
}

/// Which side sent a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

/// One recorded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub sender: Sender,
    pub bytes: Vec<u8>,
}

/// Parses `.chunks` text (`file` names it in errors) with the fixture codec of
/// `l7tap_protocols::fixture`, keeping each chunk's sender and bytes.
pub fn parse_chunks(text: &str, file: &str) -> Result<Vec<Chunk>, ScriptError> {
    let chunks = fixture::parse_chunks(text).map_err(|e| ScriptError::Line {
        file: file.to_string(),
        line: e.line,
        what: e.what,
    })?;
    Ok(chunks
        .into_iter()
        .map(|c| Chunk {
            sender: match c.dir {
                Direction::ClientToServer => Sender::Client,
                Direction::ServerToClient => Sender::Server,
            },
            bytes: c.bytes,
        })
        .collect())
}

fn read_chunks(path: &Path) -> Result<Vec<Chunk>, ScriptError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ScriptError::Read {
        file: file.clone(),
        error: e.to_string(),
    })?;
    parse_chunks(&text, &file)
}

/// Client writes followed by the server's answer, each as recorded chunk by chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exchange {
    pub client: Vec<Vec<u8>>,
    pub server: Vec<Vec<u8>>,
}

impl Exchange {
    pub fn client_len(&self) -> usize {
        self.client.iter().map(Vec::len).sum()
    }
    pub fn server_len(&self) -> usize {
        self.server.iter().map(Vec::len).sum()
    }
}

/// Cuts a conversation into exchanges; trailing client bytes nobody answered are dropped.
pub fn exchanges(chunks: &[Chunk]) -> Vec<Exchange> {
    let mut out: Vec<Exchange> = Vec::new();
    let mut current = Exchange::default();
    for chunk in chunks.iter().filter(|c| !c.bytes.is_empty()) {
        match chunk.sender {
            Sender::Client => {
                if !current.server.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                current.client.push(chunk.bytes.clone());
            }
            Sender::Server => current.server.push(chunk.bytes.clone()),
        }
    }
    if !current.server.is_empty() {
        out.push(current);
    }
    out
}

/// A ClickHouse conversation: handshake exchanges, then one request replayed over and over.
#[derive(Clone, Debug)]
pub struct ClickHouseScript {
    pub handshake: Vec<Exchange>,
    pub request: Exchange,
}

impl ClickHouseScript {
    pub fn load(path: &Path) -> Result<Self, ScriptError> {
        Self::from_chunks(&read_chunks(path)?, &path.display().to_string())
    }

    pub fn from_chunks(chunks: &[Chunk], file: &str) -> Result<Self, ScriptError> {
        let mut all = exchanges(chunks);
        let request = all.pop().ok_or_else(|| ScriptError::Shape {
            file: file.to_string(),
            what: "no exchange (client bytes answered by the server)".into(),
        })?;
        Ok(ClickHouseScript {
            handshake: all,
            request,
        })
    }
}

/// ZooKeeper opcodes the tools name.
pub mod opcode {
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const PING: i32 = 11;
    pub const CREATE2: i32 = 15;
    pub const CLOSE_SESSION: i32 = -11;
}

/// Splits a byte stream into ZooKeeper frames (4-byte big-endian length + body), each
/// returned with its length prefix; an incomplete tail is ignored.
pub fn zookeeper_frames(stream: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut at = 0;
    while stream.len() >= at + 4 {
        let len = i32::from_be_bytes(stream[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len > stream.len() - at - 4 {
            break;
        }
        frames.push(&stream[at..at + 4 + len]);
        at += 4 + len;
    }
    frames
}

/// Reads the big-endian i32 at `at` of a frame (0 when the frame is too short).
pub fn be_i32(frame: &[u8], at: usize) -> i32 {
    frame
        .get(at..at + 4)
        .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
        .unwrap_or(0)
}

/// A ZooKeeper session's recorded frames.
#[derive(Clone, Debug)]
pub struct ZooKeeperScript {
    pub connect_request: Vec<u8>,
    pub connect_response: Vec<u8>,
    /// First request frame seen per opcode.
    pub requests: HashMap<i32, Vec<u8>>,
    /// First successful reply frame per request opcode (the first failed one if none).
    pub replies: HashMap<i32, Vec<u8>>,
}

impl ZooKeeperScript {
    pub fn load(path: &Path) -> Result<Self, ScriptError> {
        Self::from_chunks(&read_chunks(path)?, &path.display().to_string())
    }

    pub fn from_chunks(chunks: &[Chunk], file: &str) -> Result<Self, ScriptError> {
        let stream = |sender| -> Vec<u8> {
            chunks
                .iter()
                .filter(|c| c.sender == sender)
                .flat_map(|c| c.bytes.iter().copied())
                .collect()
        };
        let (client, server) = (stream(Sender::Client), stream(Sender::Server));
        let client_frames = zookeeper_frames(&client);
        let server_frames = zookeeper_frames(&server);
        let shape = |what: &str| ScriptError::Shape {
            file: file.to_string(),
            what: what.to_string(),
        };
        let (connect_request, requests_part) = client_frames
            .split_first()
            .ok_or_else(|| shape("no ConnectRequest"))?;
        let (connect_response, replies_part) = server_frames
            .split_first()
            .ok_or_else(|| shape("no ConnectResponse"))?;
        let mut opcode_of_xid = HashMap::new();
        let mut requests = HashMap::new();
        for frame in requests_part {
            let (xid, op) = (be_i32(frame, 4), be_i32(frame, 8));
            opcode_of_xid.insert(xid, op);
            requests.entry(op).or_insert_with(|| frame.to_vec());
        }
        let mut replies: HashMap<i32, Vec<u8>> = HashMap::new();
        for frame in replies_part {
            let xid = be_i32(frame, 4);
            let Some(&op) = opcode_of_xid.get(&xid) else {
                continue; // watch notifications (xid -1) and the like
            };
            let ok = be_i32(frame, 16) == 0;
            match replies.get(&op) {
                Some(existing) if be_i32(existing, 16) == 0 || !ok => {}
                _ => {
                    replies.insert(op, frame.to_vec());
                }
            }
        }
        Ok(ZooKeeperScript {
            connect_request: connect_request.to_vec(),
            connect_response: connect_response.to_vec(),
            requests,
            replies,
        })
    }

    /// The recorded request for `op`, or an error naming what the fixture holds.
    pub fn request(&self, op: i32) -> Result<&[u8], ScriptError> {
        self.requests
            .get(&op)
            .map(Vec::as_slice)
            .ok_or_else(|| ScriptError::Shape {
                file: "zookeeper script".into(),
                what: format!(
                    "no request with opcode {op} (has {:?})",
                    self.requests.keys().collect::<Vec<_>>()
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> String {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn header(xid: i32, second: i32) -> Vec<u8> {
        [xid.to_be_bytes(), second.to_be_bytes()].concat()
    }

    #[test]
    fn clickhouse_last_exchange_repeats() {
        let text =
            "# c\nc 1 00\ns 2 01\ns 3 02\nc 4 04\ns 5 04\nc 6 0101\nc 7 02\ns 8 05\nc 9 ff\n";
        let script = ClickHouseScript::from_chunks(&parse_chunks(text, "t").unwrap(), "t").unwrap();
        assert_eq!(script.handshake.len(), 2);
        assert_eq!(script.handshake[0].server, vec![vec![1], vec![2]]);
        assert_eq!(script.request.client, vec![vec![1, 1], vec![2]]);
        assert_eq!(
            (script.request.client_len(), script.request.server_len()),
            (3, 1)
        );
    }

    #[test]
    fn zookeeper_replies_pair_by_xid() {
        let connect = frame(&[0; 8]);
        let get = frame(&[header(1, opcode::GET_DATA), vec![9, 9]].concat());
        let ping = frame(&header(-2, opcode::PING));
        let mut reply_get = header(1, 0);
        reply_get.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 0xaa]);
        let mut reply_ping = header(-2, 0);
        reply_ping.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0]);
        let text = format!(
            "c 1 {connect}{}\ns 2 {}\nc 3 {}{ping}\ns 4 {}{}\n",
            &get[..6],
            frame(&[1; 4]),
            &get[6..],
            frame(&reply_get),
            frame(&reply_ping),
        );
        let script = ZooKeeperScript::from_chunks(&parse_chunks(&text, "t").unwrap(), "t").unwrap();
        assert_eq!(script.connect_response.len(), 8);
        assert_eq!(
            be_i32(script.request(opcode::GET_DATA).unwrap(), 8),
            opcode::GET_DATA
        );
        // The get frame was split across chunks: frames are cut from the whole stream.
        assert!(script.requests.contains_key(&opcode::PING));
        assert_eq!(script.replies[&opcode::GET_DATA].last(), Some(&0xaa));
        assert!(script.request(opcode::SET_DATA).is_err());
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse_chunks("c 1 0", "f").unwrap_err();
        assert_eq!(
            e,
            ScriptError::Line {
                file: "f".into(),
                line: 1,
                what: "odd number of hex digits"
            }
        );
    }
}
