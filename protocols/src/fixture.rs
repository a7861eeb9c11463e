//! The `.chunks` fixture format: a recorded conversation of one connection, one line per
//! syscall-sized chunk, written by `ci/fixture-proxy.py` from real servers.
//!
//! ```text
//! # free comment lines
//! c <ts_ns> <hex bytes>     client -> server
//! s <ts_ns> <hex bytes>     server -> client
//! ```
use crate::Direction;

/// One chunk of a fixture: direction, timestamp (ns) and bytes.
pub type Chunk = (Direction, u64, Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("fixture line {line}: {what}")]
pub struct FixtureError {
    pub line: usize,
    pub what: &'static str,
}

pub fn parse_chunks(text: &str) -> Result<Vec<Chunk>, FixtureError> {
    let mut chunks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what| FixtureError { line: i + 1, what };
        let mut parts = line.split_ascii_whitespace();
        let dir = match parts.next() {
            Some("c") => Direction::ClientToServer,
            Some("s") => Direction::ServerToClient,
            _ => return Err(err("direction must be c or s")),
        };
        let ts = parts
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| err("bad timestamp"))?;
        let hex = parts.next().unwrap_or("");
        if hex.len() % 2 != 0 {
            return Err(err("odd number of hex digits"));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(&hex[j..j + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| err("bad hex"))?;
        chunks.push((dir, ts, bytes));
    }
    Ok(chunks)
}

/// Writes chunks in the same format (used to bless new fixtures).
pub fn format_chunks(chunks: &[Chunk]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for (dir, ts, bytes) in chunks {
        let d = if *dir == Direction::ClientToServer {
            'c'
        } else {
            's'
        };
        let _ = write!(s, "{d} {ts} ");
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_bad_lines() {
        let text = "# x\nc 5 0001ff\ns 7 \n";
        let chunks = parse_chunks(text).unwrap();
        assert_eq!(chunks[0], (Direction::ClientToServer, 5, vec![0, 1, 0xff]));
        assert_eq!(chunks[1], (Direction::ServerToClient, 7, vec![]));
        assert_eq!(parse_chunks(&format_chunks(&chunks)).unwrap(), chunks);
        assert_eq!(parse_chunks("x 1 00").unwrap_err().line, 1);
        assert_eq!(
            parse_chunks("c 1 0").unwrap_err().what,
            "odd number of hex digits"
        );
    }
}
