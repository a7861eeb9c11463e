//! A protocol-agnostic parser that counts frames: a frame is a run of bytes in one direction
//! ended by bytes in the other direction (a request or a response turn). It produces no
//! records; it lets the capture path be checked end to end before the real parsers exist,
//! and gives a count that a replay must reproduce exactly.
use crate::{Direction, Input, ParseError, Parser, ParserCounters, Records, Step};

#[derive(Debug, Default)]
pub struct FrameCounter {
    current: Option<Direction>,
    /// Frames per direction, indexed by [`Direction::index`].
    pub n_frames: [u64; 2],
    pub n_bytes: [u64; 2],
}

impl Parser for FrameCounter {
    fn parse(
        &mut self,
        dir: Direction,
        input: &Input<'_>,
        _out: &mut Records,
    ) -> Result<Step, ParseError> {
        if self.current != Some(dir) {
            self.current = Some(dir);
            self.n_frames[dir.index()] += 1;
        }
        self.n_bytes[dir.index()] += input.bytes.len() as u64;
        Ok(Step::Consumed(input.bytes.len() as u64))
    }

    fn gap(&mut self, dir: Direction, len: u64, _ts_ns: u64) {
        self.n_bytes[dir.index()] += len;
    }

    fn close(&mut self, _ts_ns: u64, _out: &mut Records) {}

    fn counters(&self) -> ParserCounters {
        ParserCounters {
            n_messages: self.n_frames[0] + self.n_frames[1],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::replay_chunks;
    use Direction::*;

    #[test]
    fn counts_direction_turns_whatever_the_chunking() {
        let chunks: [(Direction, u64, &[u8]); 4] = [
            (ClientToServer, 1, b"hello"),
            (ClientToServer, 2, b"again"),
            (ServerToClient, 3, b"answer"),
            (ClientToServer, 4, b"q"),
        ];
        for piece in [1, 2, 100] {
            let (_, d) = replay_chunks(FrameCounter::default(), &chunks, piece);
            assert_eq!(d.parser().n_frames, [2, 1]);
            assert_eq!(d.parser().n_bytes, [11, 6]);
        }
    }
}
