//! Reassembly of one connection's two byte streams for a [`Parser`].
//!
//! The driver receives each syscall's bytes (already in timestamp order), keeps what the
//! parser has not consumed, discards what it asked to skip, turns cut or lost bytes into
//! [`Parser::gap`] calls, and caps the bytes held per direction. The last bytes of a syscall
//! whose middle was cut ([`StreamDriver::push_tail`]) go on as stream bytes when the parser
//! was skipping over the cut anyway, and to [`Parser::tail`] when the cut was a gap.
use crate::{Direction, Input, ParseError, Parser, ParserCounters, Records, Step};

/// Default cap on the unconsumed bytes held per direction.
pub const DEFAULT_MAX_BUFFERED: usize = 256 * 1024;

/// Counters of the reassembly itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    pub n_bytes: u64,
    /// Bytes the parser skipped without their being buffered.
    pub n_skipped_bytes: u64,
    /// Gaps reported to the parser and the bytes they covered.
    pub n_gaps: u64,
    pub n_gap_bytes: u64,
    /// Times a direction's buffer reached its cap and was dropped.
    pub n_overflows: u64,
    /// Parse errors (each followed by a resync) and connections given up.
    pub n_parse_errors: u64,
    pub n_dropped: u64,
}

impl StreamCounters {
    pub fn add(&mut self, o: &StreamCounters) {
        self.n_bytes += o.n_bytes;
        self.n_skipped_bytes += o.n_skipped_bytes;
        self.n_gaps += o.n_gaps;
        self.n_gap_bytes += o.n_gap_bytes;
        self.n_overflows += o.n_overflows;
        self.n_parse_errors += o.n_parse_errors;
        self.n_dropped += o.n_dropped;
    }
}

#[derive(Default)]
struct DirectionBuffer {
    bytes: Vec<u8>,
    /// Where the unconsumed bytes start in `bytes` (consumed bytes are compacted lazily).
    start: usize,
    /// `(end offset in bytes, ts)` per syscall still (partly) buffered.
    marks: Vec<(usize, u64)>,
    /// Bytes still to discard as they arrive.
    skip: u64,
    /// The timestamp of the last syscall pushed, if its cut bytes were a gap (a tail of
    /// that syscall then starts at an unknown position).
    gap_at: Option<u64>,
    /// The timestamp of the last syscall pushed.
    last_ts: Option<u64>,
}

impl DirectionBuffer {
    fn unconsumed(&self) -> usize {
        self.bytes.len() - self.start
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.marks.clear();
        self.start = 0;
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.bytes.len() {
            self.clear();
        }
    }

    /// Moves unconsumed bytes to the front, rebasing the marks.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        let start = self.start;
        self.bytes.drain(..start);
        self.marks.retain(|&(end, _)| end > start);
        for mark in &mut self.marks {
            mark.0 -= start;
        }
        self.start = 0;
    }
}

/// A parser plus the reassembly state of one connection.
pub struct StreamDriver<P> {
    parser: P,
    dirs: [DirectionBuffer; 2],
    max_buffered: usize,
    dropped: bool,
    counters: StreamCounters,
}

impl<P: Parser> StreamDriver<P> {
    pub fn new(parser: P) -> Self {
        Self::with_max_buffered(parser, DEFAULT_MAX_BUFFERED)
    }

    pub fn with_max_buffered(parser: P, max_buffered: usize) -> Self {
        StreamDriver {
            parser,
            dirs: Default::default(),
            max_buffered: max_buffered.max(64),
            dropped: false,
            counters: StreamCounters::default(),
        }
    }

    pub fn parser(&self) -> &P {
        &self.parser
    }

    pub fn counters(&self) -> StreamCounters {
        self.counters
    }

    pub fn parser_counters(&self) -> ParserCounters {
        self.parser.counters()
    }

    /// The connection was given up after an unfollowable stream.
    pub fn is_dropped(&self) -> bool {
        self.dropped
    }

    /// Bytes currently held for both directions.
    pub fn buffered(&self) -> usize {
        self.dirs.iter().map(|d| d.bytes.capacity()).sum()
    }

    /// Feeds one syscall's captured `bytes` of `dir`, at `ts_ns`; `cut` more bytes of the same
    /// syscall were not captured.
    #[inline]
    pub fn push(&mut self, dir: Direction, ts_ns: u64, bytes: &[u8], cut: u64, out: &mut Records) {
        if self.dropped {
            return;
        }
        self.counters.n_bytes += bytes.len() as u64 + cut;
        let d = &mut self.dirs[dir.index()];
        d.gap_at = None;
        d.last_ts = Some(ts_ns);
        if cut == 0 && d.skip == 0 && d.unconsumed() == 0 && !bytes.is_empty() {
            // The common case, kept lean: a whole syscall with nothing buffered before it is
            // parsed straight from its bytes; only a rest is kept.
            let used = self.run_syscall(dir, ts_ns, bytes, out);
            if used < bytes.len() {
                self.keep_rest(dir, ts_ns, &bytes[used..]);
            }
            return;
        }
        self.push_buffered(dir, ts_ns, bytes, cut, out);
    }

    /// The rest of a syscall the parser did not consume, kept for the next one.
    #[inline(never)]
    fn keep_rest(&mut self, dir: Direction, ts_ns: u64, rest: &[u8]) {
        if self.dropped {
            return;
        }
        let d = &mut self.dirs[dir.index()];
        d.bytes.extend_from_slice(rest);
        d.marks.push((d.bytes.len(), ts_ns));
        self.enforce_cap(dir, ts_ns);
    }

    /// [`Self::push`] with bytes to skip, bytes already buffered, or a cut.
    #[inline(never)]
    fn push_buffered(
        &mut self,
        dir: Direction,
        ts_ns: u64,
        bytes: &[u8],
        cut: u64,
        out: &mut Records,
    ) {
        let d = &mut self.dirs[dir.index()];
        let mut data = bytes;
        if d.skip > 0 {
            let n = d.skip.min(data.len() as u64);
            d.skip -= n;
            self.counters.n_skipped_bytes += n;
            data = &data[n as usize..];
        }
        if !data.is_empty() {
            if d.unconsumed() == 0 {
                let used = self.run_syscall(dir, ts_ns, data, out);
                let rest = &data[used.min(data.len())..];
                if !rest.is_empty() && !self.dropped {
                    let d = &mut self.dirs[dir.index()];
                    d.bytes.extend_from_slice(rest);
                    d.marks.push((d.bytes.len(), ts_ns));
                }
            } else {
                d.compact();
                d.bytes.extend_from_slice(data);
                d.marks.push((d.bytes.len(), ts_ns));
                self.drain_buffer(dir, out);
            }
            self.enforce_cap(dir, ts_ns);
        }
        if cut > 0 && !self.dropped {
            let d = &mut self.dirs[dir.index()];
            let skipped = d.skip.min(cut);
            d.skip -= skipped;
            self.counters.n_skipped_bytes += skipped;
            let missing = cut - skipped;
            if missing > 0 {
                let lost = missing + d.unconsumed() as u64;
                d.clear();
                d.gap_at = Some(ts_ns);
                self.counters.n_gaps += 1;
                self.counters.n_gap_bytes += missing;
                self.parser.gap(dir, lost, ts_ns);
            }
        }
    }

    /// Feeds the last `bytes` of the syscall of `dir` at `ts_ns` just pushed with a cut:
    /// they end that syscall. When the parser skipped over the whole cut they follow on in
    /// the stream; when the cut was a gap they start at an unknown position and go to
    /// [`Parser::tail`]. Without the syscall's first bytes (lost on the way) they also
    /// follow a gap.
    pub fn push_tail(&mut self, dir: Direction, ts_ns: u64, bytes: &[u8], out: &mut Records) {
        if self.dropped || bytes.is_empty() {
            return;
        }
        let d = &self.dirs[dir.index()];
        if d.last_ts == Some(ts_ns) && d.gap_at.is_none() {
            self.push(dir, ts_ns, bytes, 0, out);
            return;
        }
        if d.gap_at != Some(ts_ns) {
            // The head of this syscall never came: what was before the tail is lost.
            self.lost(dir, 0, ts_ns);
        }
        self.counters.n_bytes += bytes.len() as u64;
        let d = &mut self.dirs[dir.index()];
        d.last_ts = Some(ts_ns);
        d.gap_at = Some(ts_ns);
        self.parser.tail(dir, bytes, ts_ns, out);
    }

    /// Bytes of `dir` were lost entirely (e.g. perf samples dropped): tell the parser.
    pub fn lost(&mut self, dir: Direction, len: u64, ts_ns: u64) {
        if self.dropped {
            return;
        }
        let d = &mut self.dirs[dir.index()];
        let lost = len + d.unconsumed() as u64;
        d.clear();
        d.skip = 0;
        d.gap_at = None;
        self.counters.n_gaps += 1;
        self.counters.n_gap_bytes += len;
        self.parser.gap(dir, lost, ts_ns);
    }

    /// The connection ended: flush in-flight requests.
    pub fn close(&mut self, ts_ns: u64, out: &mut Records) {
        self.parser.close(ts_ns, out);
        for d in &mut self.dirs {
            d.clear();
            d.bytes.shrink_to_fit();
            d.marks.shrink_to_fit();
        }
    }

    fn drain_buffer(&mut self, dir: Direction, out: &mut Records) {
        let d = &mut self.dirs[dir.index()];
        let start = d.start;
        let bytes = std::mem::take(&mut d.bytes);
        let marks = std::mem::take(&mut d.marks);
        // Marks are relative to `bytes`; the parser sees them relative to `start`.
        let first = marks.partition_point(|&(end, _)| end <= start);
        let mut rel: Vec<(usize, u64)> = Vec::new();
        let view: &[(usize, u64)] = if start == 0 {
            &marks
        } else {
            rel.extend(marks[first..].iter().map(|&(end, ts)| (end - start, ts)));
            &rel
        };
        let input = Input {
            bytes: &bytes[start..],
            marks: view,
        };
        let used = self.run(dir, input, out);
        let d = &mut self.dirs[dir.index()];
        d.bytes = bytes;
        d.marks = marks;
        if self.dropped {
            d.clear();
        } else {
            d.consume(used);
        }
    }

    /// [`Self::run`] for the bytes of one syscall (one mark, rebuilt on the stack per call).
    #[inline(always)]
    fn run_syscall(
        &mut self,
        dir: Direction,
        ts_ns: u64,
        bytes: &[u8],
        out: &mut Records,
    ) -> usize {
        let mut pos = 0usize;
        let mut errors_without_progress = 0u32;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            let marks = [(rest.len(), ts_ns)];
            let input = Input {
                bytes: rest,
                marks: &marks,
            };
            match self.parser.parse(dir, &input, out) {
                Ok(Step::Consumed(0)) | Ok(Step::NeedMore) => break,
                Ok(Step::Consumed(n)) => {
                    errors_without_progress = 0;
                    pos = self.advance(dir, pos, n, bytes.len());
                }
                Err(e) => {
                    if self.parse_failed(e, &mut errors_without_progress) {
                        return bytes.len();
                    }
                }
            }
        }
        pos
    }

    /// The position after the parser consumed `n` bytes at `pos` of `len`; a skip beyond
    /// them is recorded in the direction's `skip`.
    #[inline(always)]
    fn advance(&mut self, dir: Direction, pos: usize, n: u64, len: usize) -> usize {
        let left = (len - pos) as u64;
        if n > left {
            self.dirs[dir.index()].skip += n - left;
            len
        } else {
            pos + n as usize
        }
    }

    /// Counts a parse error; true if the connection is given up: the error is final, or a
    /// second one came without progress (a parser that cannot resync here must not spin).
    #[cold]
    fn parse_failed(&mut self, e: ParseError, errors_without_progress: &mut u32) -> bool {
        self.counters.n_parse_errors += 1;
        *errors_without_progress += 1;
        if !e.can_continue() || *errors_without_progress > 1 {
            self.counters.n_dropped += 1;
            self.dropped = true;
            return true;
        }
        false
    }

    /// Calls the parser until it needs more bytes; returns how many bytes of `input` were
    /// consumed (a skip beyond the input is recorded in the direction's `skip`).
    fn run(&mut self, dir: Direction, input: Input<'_>, out: &mut Records) -> usize {
        let mut pos = 0usize;
        let mut errors_without_progress = 0u32;
        while pos < input.bytes.len() {
            // One syscall in the buffer is the common case: rebase its mark on the stack
            // instead of building a mark list for every call.
            let single;
            let view;
            let shifted = if let [(end, ts)] = input.marks {
                single = [(end - pos, *ts)];
                Input {
                    bytes: &input.bytes[pos..],
                    marks: &single,
                }
            } else {
                view = sub_input(&input, pos);
                view.as_input()
            };
            match self.parser.parse(dir, &shifted, out) {
                Ok(Step::Consumed(0)) | Ok(Step::NeedMore) => break,
                Ok(Step::Consumed(n)) => {
                    errors_without_progress = 0;
                    pos = self.advance(dir, pos, n, input.bytes.len());
                }
                Err(e) => {
                    if self.parse_failed(e, &mut errors_without_progress) {
                        return input.bytes.len();
                    }
                }
            }
        }
        pos
    }

    fn enforce_cap(&mut self, dir: Direction, ts_ns: u64) {
        let d = &mut self.dirs[dir.index()];
        if d.unconsumed() > self.max_buffered {
            let lost = d.unconsumed() as u64;
            d.clear();
            d.bytes.shrink_to(self.max_buffered);
            self.counters.n_overflows += 1;
            self.counters.n_gaps += 1;
            self.parser.gap(dir, lost, ts_ns);
        }
    }
}

/// An `Input` shifted by `pos` bytes, with marks rebased (no copy of the bytes; marks are few).
struct SubInput<'a> {
    bytes: &'a [u8],
    marks: smallmarks::Marks,
}

impl<'a> SubInput<'a> {
    fn as_input(&self) -> Input<'_> {
        Input {
            bytes: self.bytes,
            marks: self.marks.as_slice(),
        }
    }
}

fn sub_input<'a>(input: &Input<'a>, pos: usize) -> SubInput<'a> {
    let first = input.marks.partition_point(|&(end, _)| end <= pos);
    let mut marks = smallmarks::Marks::default();
    for &(end, ts) in &input.marks[first..] {
        marks.push((end - pos, ts));
    }
    SubInput {
        bytes: &input.bytes[pos..],
        marks,
    }
}

mod smallmarks {
    //! A mark list that stays on the stack for the common case of a few syscalls per buffer.
    const INLINE: usize = 8;

    pub enum Marks {
        Inline([(usize, u64); INLINE], usize),
        Heap(Vec<(usize, u64)>),
    }

    impl Default for Marks {
        fn default() -> Self {
            Marks::Inline([(0, 0); INLINE], 0)
        }
    }

    impl Marks {
        pub fn push(&mut self, m: (usize, u64)) {
            match self {
                Marks::Inline(arr, n) if *n < INLINE => {
                    arr[*n] = m;
                    *n += 1;
                }
                Marks::Inline(arr, n) => {
                    let mut v = arr[..*n].to_vec();
                    v.push(m);
                    *self = Marks::Heap(v);
                }
                Marks::Heap(v) => v.push(m),
            }
        }

        pub fn as_slice(&self) -> &[(usize, u64)] {
            match self {
                Marks::Inline(arr, n) => &arr[..*n],
                Marks::Heap(v) => v,
            }
        }
    }
}

/// Feeds `chunks` (direction, ts, bytes) to a fresh driver, each chunk split into pieces of
/// at most `piece` bytes, and closes at the end. Used by parser tests: every re-chunking of
/// the same stream must give the same records.
pub fn replay_chunks<P: Parser>(
    parser: P,
    chunks: &[(Direction, u64, &[u8])],
    piece: usize,
) -> (Records, StreamDriver<P>) {
    let mut driver = StreamDriver::new(parser);
    let mut out = Records::default();
    let mut last_ts = 0;
    for &(dir, ts, bytes) in chunks {
        for part in bytes.chunks(piece.max(1)) {
            driver.push(dir, ts, part, 0, &mut out);
        }
        last_ts = ts;
    }
    driver.close(last_ts, &mut out);
    (out, driver)
}

/// Feeds a fuzzer's bytes to `driver` as syscalls, then closes it; `check` runs after every
/// step. Input: repeated `[control, length, chunk bytes]`. Control bit 0 is the direction
/// (0: client to server); bits 1–2 the kind (0, 1: a whole syscall; 2: a syscall cut after
/// the chunk by `control * 97` bytes, and with bit 4 the chunk's second half is the
/// syscall's tail, after the cut; 3: `length * 31` bytes lost, no chunk).
pub fn feed_fuzz_input<P: Parser>(
    driver: &mut StreamDriver<P>,
    data: &[u8],
    mut check: impl FnMut(&StreamDriver<P>),
) -> Records {
    let mut out = Records::default();
    let mut rest = data;
    let mut ts = 1u64;
    while let [control, length, tail @ ..] = rest {
        let dir = if control & 1 == 0 {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        ts += 1;
        if (control >> 1) & 3 == 3 {
            driver.lost(dir, u64::from(*length) * 31, ts);
            rest = tail;
            continue;
        }
        let (chunk, next) = tail.split_at(usize::from(*length).min(tail.len()));
        rest = next;
        let cut = if (control >> 1) & 3 == 2 {
            u64::from(*control) * 97
        } else {
            0
        };
        if cut > 0 && control & 0x10 != 0 {
            let (head, tail) = chunk.split_at(chunk.len() / 2);
            driver.push(dir, ts, head, cut, &mut out);
            check(driver);
            driver.push_tail(dir, ts, tail, &mut out);
        } else {
            driver.push(dir, ts, chunk, cut, &mut out);
        }
        check(driver);
    }
    driver.close(ts + 1, &mut out);
    out
}

/// Parse error kinds are small and `Copy`; this keeps them that way.
const _: () = {
    const fn assert_copy<T: Copy>() {}
    assert_copy::<ParseError>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParserCounters;

    /// Test parser: messages are `len:u8` + `len` bytes; records nothing, logs what it saw.
    #[derive(Default)]
    struct LenPrefixed {
        seen: Vec<(Direction, Vec<u8>, u64, u64)>,
        gaps: Vec<(Direction, u64)>,
        tails: Vec<(Direction, Vec<u8>, u64)>,
        skip_bodies_over: Option<u8>,
    }

    impl Parser for LenPrefixed {
        fn parse(
            &mut self,
            dir: Direction,
            input: &Input<'_>,
            _out: &mut Records,
        ) -> Result<Step, ParseError> {
            let Some(&len) = input.bytes.first() else {
                return Ok(Step::NeedMore);
            };
            if len == 0xff {
                return Err(ParseError::Unfollowable {
                    protocol: crate::Protocol::ZooKeeper,
                    what: "test",
                });
            }
            let total = 1 + len as usize;
            if let Some(limit) = self.skip_bodies_over {
                if len > limit {
                    self.seen.push((dir, vec![], input.ts_at(0), 0));
                    return Ok(Step::Consumed(total as u64));
                }
            }
            if input.bytes.len() < total {
                return Ok(Step::NeedMore);
            }
            self.seen.push((
                dir,
                input.bytes[1..total].to_vec(),
                input.ts_at(0),
                input.ts_end(total),
            ));
            Ok(Step::Consumed(total as u64))
        }
        fn gap(&mut self, dir: Direction, len: u64, _ts: u64) {
            self.gaps.push((dir, len));
        }
        fn tail(&mut self, dir: Direction, bytes: &[u8], ts: u64, _out: &mut Records) {
            self.tails.push((dir, bytes.to_vec(), ts));
        }
        fn close(&mut self, _ts: u64, _out: &mut Records) {}
        fn counters(&self) -> ParserCounters {
            ParserCounters::default()
        }
    }

    const C2S: Direction = Direction::ClientToServer;

    #[test]
    fn messages_split_across_syscalls_keep_first_and_last_timestamps() {
        let mut d = StreamDriver::new(LenPrefixed::default());
        let mut out = crate::Records::default();
        d.push(C2S, 10, &[3, b'a'], 0, &mut out);
        d.push(C2S, 20, b"b", 0, &mut out);
        d.push(C2S, 30, &[b'c', 1, b'x', 2], 0, &mut out);
        d.push(C2S, 40, b"yz", 0, &mut out);
        let seen = &d.parser().seen;
        assert_eq!(
            seen,
            &vec![
                (C2S, b"abc".to_vec(), 10, 30),
                (C2S, b"x".to_vec(), 30, 30),
                (C2S, b"yz".to_vec(), 30, 40),
            ]
        );
        assert_eq!(d.counters().n_bytes, 9);
    }

    #[test]
    fn every_rechunking_gives_the_same_messages() {
        let stream: Vec<u8> = [&[2u8, 1, 2][..], &[0], &[5, 1, 2, 3, 4, 5], &[1, 9]].concat();
        let mut reference = None;
        for piece in 1..=stream.len() {
            let (_, d) = replay_chunks(LenPrefixed::default(), &[(C2S, 1, &stream)], piece);
            let msgs: Vec<_> = d.parser().seen.iter().map(|s| s.1.clone()).collect();
            assert_eq!(msgs.len(), 4, "piece {piece}");
            if let Some(r) = &reference {
                assert_eq!(&msgs, r, "piece {piece}");
            }
            reference = Some(msgs);
        }
    }

    #[test]
    fn skip_beyond_input_discards_following_bytes_and_absorbs_cuts() {
        let parser = LenPrefixed {
            skip_bodies_over: Some(10),
            ..Default::default()
        };
        let mut d = StreamDriver::new(parser);
        let mut out = crate::Records::default();
        // A 100-byte body: header seen, 3 body bytes captured, 50 cut, 47 in the next call.
        d.push(C2S, 1, &[100, 0, 0, 0], 50, &mut out);
        d.push(C2S, 2, &[0; 47], 0, &mut out);
        d.push(C2S, 3, &[1, b'k'], 0, &mut out);
        let seen = &d.parser().seen;
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].1, b"k".to_vec());
        assert!(d.parser().gaps.is_empty());
        assert_eq!(d.counters().n_skipped_bytes, 97);
    }

    #[test]
    fn cut_inside_a_message_is_a_gap_that_includes_the_buffered_part() {
        let mut d = StreamDriver::new(LenPrefixed::default());
        let mut out = crate::Records::default();
        d.push(C2S, 1, &[9, 1, 2], 7, &mut out);
        assert_eq!(d.parser().gaps, vec![(C2S, 10)]);
        d.push(C2S, 2, &[1, 7], 0, &mut out);
        assert_eq!(d.parser().seen.last().unwrap().1, vec![7]);
    }

    #[test]
    fn a_tail_after_a_gap_goes_to_the_parser_and_the_next_syscall_starts_fresh() {
        let mut d = StreamDriver::new(LenPrefixed::default());
        let mut out = crate::Records::default();
        d.push(C2S, 1, &[9, 1, 2], 100, &mut out);
        d.push_tail(C2S, 1, &[3, 4], &mut out);
        assert_eq!(d.parser().gaps, vec![(C2S, 103)]);
        assert_eq!(d.parser().tails, vec![(C2S, vec![3, 4], 1)]);
        d.push(C2S, 2, &[1, 7], 0, &mut out);
        assert_eq!(d.parser().seen.last().unwrap().1, vec![7]);
        assert_eq!(d.counters().n_bytes, 107);
    }

    #[test]
    fn a_tail_after_a_skipped_cut_goes_on_as_stream_bytes() {
        let parser = LenPrefixed {
            skip_bodies_over: Some(10),
            ..Default::default()
        };
        let mut d = StreamDriver::new(parser);
        let mut out = crate::Records::default();
        // A 100-byte body: 3 bytes captured, 95 cut (skipped), its last 2 and a message in
        // the tail.
        d.push(C2S, 1, &[100, 0, 0, 0], 95, &mut out);
        d.push_tail(C2S, 1, &[0, 0, 1, b'k'], &mut out);
        assert!(d.parser().gaps.is_empty() && d.parser().tails.is_empty());
        assert_eq!(d.parser().seen.last().unwrap().1, b"k".to_vec());
    }

    #[test]
    fn a_tail_without_its_head_follows_a_gap() {
        let mut d = StreamDriver::new(LenPrefixed::default());
        let mut out = crate::Records::default();
        d.push(C2S, 1, &[5, 1], 0, &mut out);
        d.push_tail(C2S, 2, &[3, 4], &mut out);
        assert_eq!(d.parser().gaps, vec![(C2S, 2)]);
        assert_eq!(d.parser().tails.len(), 1);
    }

    #[test]
    fn buffer_cap_turns_an_endless_message_into_a_gap() {
        let mut d = StreamDriver::with_max_buffered(LenPrefixed::default(), 64);
        let mut out = crate::Records::default();
        d.push(C2S, 1, &[200; 40], 0, &mut out);
        d.push(C2S, 2, &[200; 40], 0, &mut out);
        assert_eq!(d.counters().n_overflows, 1);
        assert_eq!(d.parser().gaps, vec![(C2S, 80)]);
    }

    #[test]
    fn unfollowable_stream_drops_the_connection() {
        let mut d = StreamDriver::new(LenPrefixed::default());
        let mut out = crate::Records::default();
        d.push(C2S, 1, &[0xff, 1, 2], 0, &mut out);
        assert!(d.is_dropped());
        d.push(C2S, 2, &[1, 1], 0, &mut out);
        assert!(d.parser().seen.is_empty());
        assert_eq!(d.counters().n_dropped, 1);
    }
}
