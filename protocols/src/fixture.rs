//! The `.chunks` fixture format, read and written by [`parse_chunks`] and [`format_chunks`]:
//! a recorded conversation of one connection, one line per syscall-sized chunk, written by
//! `ci/fixture-proxy.py` from real servers and by `l7tap dump` from captures.
//!
//! ```text
//! # free comment lines
//! c <ts_ns> <hex bytes>            client -> server
//! s <ts_ns> <hex bytes>            server -> client
//! s <ts_ns> <hex bytes> cut=<n>    n more bytes of this syscall were not captured
//! s <ts_ns> <hex bytes> tail       the last bytes of the cut syscall on the line before
//! ```
//!
//! The last two come from live captures (`l7tap dump`): the kernel captures a syscall's
//! first bytes and, on ClickHouse connections, its last bytes as a separate tail.
use crate::Direction;

/// One line of a fixture: the captured bytes of one syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub dir: Direction,
    /// When the syscall happened (ns, monotonic).
    pub ts_ns: u64,
    pub bytes: Vec<u8>,
    /// What of the syscall was not captured.
    pub cut: Cut,
}

/// What of a chunk's syscall the capture missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cut {
    /// Nothing: the bytes are the whole syscall.
    #[default]
    Whole,
    /// This many more bytes of the syscall followed and were not captured (`cut=<n>`).
    After(u64),
    /// The bytes are the last ones of the cut syscall of the chunk before (`tail`).
    Tail,
}

impl Chunk {
    /// A syscall captured whole.
    pub fn new(dir: Direction, ts_ns: u64, bytes: Vec<u8>) -> Self {
        Chunk {
            dir,
            ts_ns,
            bytes,
            cut: Cut::Whole,
        }
    }

    /// A syscall of which only `bytes` were captured, `n` more bytes cut after them.
    pub fn cut_after(dir: Direction, ts_ns: u64, bytes: Vec<u8>, n: u64) -> Self {
        Chunk {
            cut: if n == 0 { Cut::Whole } else { Cut::After(n) },
            ..Chunk::new(dir, ts_ns, bytes)
        }
    }

    /// The last bytes of the cut syscall before this chunk.
    pub fn tail(dir: Direction, ts_ns: u64, bytes: Vec<u8>) -> Self {
        Chunk {
            cut: Cut::Tail,
            ..Chunk::new(dir, ts_ns, bytes)
        }
    }

    /// Bytes of the syscall cut after the captured ones (0 for a whole syscall or a tail).
    pub fn cut_bytes(&self) -> u64 {
        match self.cut {
            Cut::After(n) => n,
            Cut::Whole | Cut::Tail => 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("fixture line {line}: {what}")]
pub struct FixtureError {
    pub line: usize,
    pub what: &'static str,
}

/// Reads a fixture's text.
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
        let ts_ns = parts
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| err("bad timestamp"))?;
        let hex = parts.next().unwrap_or("");
        if hex.len() % 2 != 0 {
            return Err(err("odd number of hex digits"));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|j| {
                hex.get(j..j + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| err("bad hex"))?;
        let cut = match parts.next() {
            None => Cut::Whole,
            Some("tail") => Cut::Tail,
            Some(field) => match field.strip_prefix("cut=").map(str::parse::<u64>) {
                Some(Ok(0)) => Cut::Whole,
                Some(Ok(n)) => Cut::After(n),
                _ => return Err(err("fourth field must be cut=<n> or tail")),
            },
        };
        if parts.next().is_some() {
            return Err(err("more than four fields"));
        }
        chunks.push(Chunk {
            dir,
            ts_ns,
            bytes,
            cut,
        });
    }
    Ok(chunks)
}

/// Writes chunks in the same format: what [`parse_chunks`] reads back unchanged.
pub fn format_chunks(chunks: &[Chunk]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for chunk in chunks {
        let d = match chunk.dir {
            Direction::ClientToServer => 'c',
            Direction::ServerToClient => 's',
        };
        let _ = write!(s, "{d} {} ", chunk.ts_ns);
        for b in &chunk.bytes {
            let _ = write!(s, "{b:02x}");
        }
        match chunk.cut {
            Cut::Whole => {}
            Cut::After(n) => {
                let _ = write!(s, " cut={n}");
            }
            Cut::Tail => s.push_str(" tail"),
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;

    #[test]
    fn round_trips_and_reports_bad_lines() {
        let text = "# x\nc 5 0001ff\ns 7 \n";
        let chunks = parse_chunks(text).unwrap();
        assert_eq!(chunks[0], Chunk::new(ClientToServer, 5, vec![0, 1, 0xff]));
        assert_eq!(chunks[1], Chunk::new(ServerToClient, 7, vec![]));
        assert_eq!(parse_chunks(&format_chunks(&chunks)).unwrap(), chunks);
        assert_eq!(parse_chunks("x 1 00").unwrap_err().line, 1);
        assert_eq!(
            parse_chunks("c 1 0").unwrap_err().what,
            "odd number of hex digits"
        );
        assert_eq!(parse_chunks("c 1 0g").unwrap_err().what, "bad hex");
        assert_eq!(parse_chunks("c 1 é").unwrap_err().what, "bad hex");
    }

    #[test]
    fn cuts_and_tails_round_trip() {
        let text = "s 9 0102 cut=300\ns 9 05 tail\nc 10 01 cut=0\n";
        let chunks = parse_chunks(text).unwrap();
        assert_eq!(
            chunks,
            [
                Chunk::cut_after(ServerToClient, 9, vec![1, 2], 300),
                Chunk::tail(ServerToClient, 9, vec![5]),
                Chunk::new(ClientToServer, 10, vec![1]),
            ]
        );
        assert_eq!(chunks[0].cut_bytes(), 300);
        assert_eq!(
            format_chunks(&chunks),
            "s 9 0102 cut=300\ns 9 05 tail\nc 10 01\n"
        );
        assert_eq!(parse_chunks(&format_chunks(&chunks)).unwrap(), chunks);
        for bad in ["s 9 01 cut=x", "s 9 01 cut", "s 9 01 more", "s 9 01 tail x"] {
            assert_eq!(parse_chunks(bad).unwrap_err().line, 1, "{bad}");
        }
    }
}
