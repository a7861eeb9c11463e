//! One direction of a TCP connection put back in order: segments in, in whatever order and
//! as often as the capture saw them; out, the stream's bytes once each, in order, with the
//! bytes the capture never held (lost segments, bytes cut by the snaplen) as counted gaps.
//!
//! A hole is declared lost when the peer acknowledges bytes beyond it (the receiver had
//! them, the capture did not), when the segments held after it pass [`MAX_HELD_BYTES`], or
//! when the connection ends. Memory is what the held segments hold, never more.
use std::collections::BTreeMap;

/// Bytes of out-of-order segments held per direction, waiting for a hole to fill.
pub const MAX_HELD_BYTES: usize = 4 << 20;
/// Segments further ahead of the expected byte than this are not of this stream (a stray
/// or corrupt sequence number): dropped and counted.
const MAX_AHEAD: u64 = 1 << 30;
/// Stream offsets start here, so a segment a little before the first one seen (a capture
/// that began mid-stream, then saw an earlier retransmission) still has an offset.
const FIRST_OFFSET: u64 = 1 << 32;

/// What the stream delivers next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes of the stream, followed by `cut` bytes the capture did not keep.
    Data { bytes: Vec<u8>, cut: u64 },
    /// `len` bytes of the stream the capture never saw.
    Gap { len: u64 },
}

/// What a direction counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Bytes seen again after they had been delivered (retransmissions, duplicates).
    pub duplicate_bytes: u64,
    /// Bytes of gaps: lost segments.
    pub lost_bytes: u64,
    /// Bytes the snaplen cut from segments.
    pub cut_bytes: u64,
    /// Segments whose sequence number lies far outside the stream.
    pub stray_segments: u64,
}

struct Held {
    bytes: Vec<u8>,
    cut: u64,
}

impl Held {
    fn len(&self) -> u64 {
        self.bytes.len() as u64 + self.cut
    }
}

#[derive(Default)]
pub struct Reassembler {
    /// The sequence number of stream offset [`FIRST_OFFSET`]; none before the first segment.
    origin: Option<u32>,
    /// Offset of the next byte to deliver.
    next: u64,
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// Offset of the FIN: it takes a sequence number that is no byte of the stream, so an
    /// acknowledgement of it is no loss.
    fin_at: Option<u64>,
    pub counts: StreamCounts,
}

impl Reassembler {
    /// The stream's offset of sequence number `seq`: the one nearest the next byte.
    fn offset(&self, origin: u32, seq: u32) -> u64 {
        let rel = seq.wrapping_sub(origin) as u64;
        let wrap = 1u64 << 32;
        let base = (self.next - FIRST_OFFSET) & !(wrap - 1);
        let candidates = [base.wrapping_sub(wrap), base, base + wrap];
        candidates
            .iter()
            .map(|b| b.wrapping_add(rel).wrapping_add(FIRST_OFFSET))
            .min_by_key(|off| off.abs_diff(self.next))
            .unwrap()
    }

    /// The sequence number of the stream's first byte, once a segment was seen.
    pub fn first_seq(&self) -> Option<u32> {
        self.origin
    }

    /// A SYN: the stream's first byte is `seq + 1`.
    pub fn syn(&mut self, seq: u32) {
        if self.origin.is_none() {
            self.origin = Some(seq.wrapping_add(1));
            self.next = FIRST_OFFSET;
        }
    }

    /// A segment's data: `payload` kept by the capture, then `cut` bytes it did not keep.
    pub fn segment(&mut self, seq: u32, payload: &[u8], cut: u32, out: &mut Vec<Chunk>) {
        let len = payload.len() as u64 + u64::from(cut);
        if len == 0 {
            return;
        }
        let origin = *self.origin.get_or_insert_with(|| {
            self.next = FIRST_OFFSET;
            seq
        });
        let start = self.offset(origin, seq);
        let end = start + len;
        if end <= self.next {
            self.counts.duplicate_bytes += len;
            return;
        }
        if start > self.next + MAX_AHEAD || self.next > start + MAX_AHEAD {
            self.counts.stray_segments += 1;
            return;
        }
        if start > self.next {
            self.hold(start, payload, u64::from(cut), out);
            return;
        }
        self.deliver(start, payload, u64::from(cut), out);
        self.release(out);
    }

    /// A FIN after `data_len` bytes of the segment at `seq`.
    pub fn fin(&mut self, seq: u32, data_len: u64) {
        if let Some(origin) = self.origin {
            self.fin_at = Some(self.offset(origin, seq) + data_len);
        }
    }

    /// The peer acknowledged every byte before `ack`: a hole before it will not be filled.
    pub fn acknowledged(&mut self, ack: u32, out: &mut Vec<Chunk>) {
        let Some(origin) = self.origin else { return };
        let mut upto = self.offset(origin, ack);
        if let Some(fin_at) = self.fin_at {
            upto = upto.min(fin_at);
        }
        if upto <= self.next || upto > self.next + MAX_AHEAD {
            return;
        }
        self.lose_until(upto, out);
    }

    /// The connection ended: what is held is delivered, the holes before it lost.
    pub fn finish(&mut self, out: &mut Vec<Chunk>) {
        while let Some((&start, _)) = self.held.first_key_value() {
            self.lose_until(start, out);
            self.release(out);
        }
    }

    fn lose_until(&mut self, upto: u64, out: &mut Vec<Chunk>) {
        while self.next < upto {
            let hole_end = self.held.keys().next().map_or(upto, |&s| s.min(upto));
            if hole_end > self.next {
                let len = hole_end - self.next;
                self.counts.lost_bytes += len;
                out.push(Chunk::Gap { len });
                self.next = hole_end;
            }
            self.release(out);
        }
    }

    fn hold(&mut self, start: u64, payload: &[u8], cut: u64, out: &mut Vec<Chunk>) {
        let keep = match self.held.get(&start) {
            Some(h) => (payload.len() as u64 + cut) > h.len(),
            None => true,
        };
        if keep {
            if let Some(old) = self.held.insert(
                start,
                Held {
                    bytes: payload.to_vec(),
                    cut,
                },
            ) {
                self.held_bytes -= old.bytes.len();
            }
            self.held_bytes += payload.len();
        } else {
            self.counts.duplicate_bytes += payload.len() as u64 + cut;
        }
        // Too much waits on one hole: it is lost.
        if self.held_bytes > MAX_HELD_BYTES {
            if let Some(&first) = self.held.keys().next() {
                self.lose_until(first, out);
            }
        }
    }

    /// Delivers a segment starting at or before the next byte (its front already delivered).
    fn deliver(&mut self, start: u64, payload: &[u8], cut: u64, out: &mut Vec<Chunk>) {
        let skip = self.next - start;
        self.counts.duplicate_bytes += skip;
        let chunk = if skip <= payload.len() as u64 {
            Chunk::Data {
                bytes: payload[skip as usize..].to_vec(),
                cut,
            }
        } else {
            Chunk::Data {
                bytes: Vec::new(),
                cut: cut - (skip - payload.len() as u64),
            }
        };
        if let Chunk::Data { cut, .. } = &chunk {
            self.counts.cut_bytes += cut;
        }
        self.next = start + payload.len() as u64 + cut;
        // Segments that follow on in one delivery are one chunk, as the bytes of one write
        // would be: a classifier sees a request whole even if it came in several segments.
        match (out.last_mut(), chunk) {
            (Some(Chunk::Data { bytes, cut: 0 }), Chunk::Data { bytes: more, cut }) => {
                bytes.extend_from_slice(&more);
                if let Some(Chunk::Data { cut: last_cut, .. }) = out.last_mut() {
                    *last_cut = cut;
                }
            }
            (_, chunk) => out.push(chunk),
        }
    }

    /// Delivers the held segments that now follow on.
    fn release(&mut self, out: &mut Vec<Chunk>) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let (start, held) = entry.remove_entry();
            self.held_bytes -= held.bytes.len();
            if start + held.len() <= self.next {
                self.counts.duplicate_bytes += held.len();
                continue;
            }
            self.deliver(start, &held.bytes, held.cut, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: &[u8]) -> Chunk {
        Chunk::Data {
            bytes: bytes.to_vec(),
            cut: 0,
        }
    }

    #[test]
    fn in_order_segments_pass_through() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.syn(99);
        r.segment(100, b"abc", 0, &mut out);
        r.segment(103, b"de", 0, &mut out);
        // Chunks delivered one after the other, not taken in between, are one.
        assert_eq!(out, [data(b"abcde")]);
    }

    #[test]
    fn out_of_order_segments_are_put_back_in_order() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.syn(99);
        r.segment(103, b"de", 0, &mut out);
        assert!(out.is_empty());
        r.segment(100, b"abc", 0, &mut out);
        assert_eq!(out, [data(b"abcde")]);
    }

    #[test]
    fn retransmissions_and_overlaps_are_delivered_once() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.syn(99);
        r.segment(100, b"abc", 0, &mut out);
        r.segment(100, b"abc", 0, &mut out);
        r.segment(102, b"cdef", 0, &mut out);
        assert_eq!(out, [data(b"abcdef")]);
        assert_eq!(r.counts.duplicate_bytes, 4);
    }

    #[test]
    fn a_hole_acknowledged_by_the_peer_is_a_counted_gap() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.syn(99);
        r.segment(100, b"abc", 0, &mut out);
        r.segment(108, b"xy", 0, &mut out);
        r.acknowledged(110, &mut out);
        assert_eq!(out, [data(b"abc"), Chunk::Gap { len: 5 }, data(b"xy")]);
        assert_eq!(r.counts.lost_bytes, 5);
    }

    #[test]
    fn the_acknowledgement_of_a_fin_is_no_loss() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.syn(99);
        r.segment(100, b"abc", 0, &mut out);
        r.fin(100, 3);
        r.acknowledged(104, &mut out);
        assert_eq!(out, [data(b"abc")]);
        assert_eq!(r.counts.lost_bytes, 0);
    }

    #[test]
    fn a_hole_never_filled_is_lost_when_the_connection_ends() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.syn(99);
        r.segment(105, b"fg", 0, &mut out);
        r.finish(&mut out);
        assert_eq!(out, [Chunk::Gap { len: 5 }, data(b"fg")]);
    }

    #[test]
    fn snaplen_cut_bytes_follow_the_kept_ones() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.syn(99);
        r.segment(100, b"ab", 6, &mut out);
        r.segment(108, b"z", 0, &mut out);
        let cut = Chunk::Data {
            bytes: b"ab".to_vec(),
            cut: 6,
        };
        assert_eq!(out, [cut, data(b"z")]);
        assert_eq!(r.counts.cut_bytes, 6);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.syn(u32::MAX - 1);
        r.segment(u32::MAX, b"ab", 0, &mut out);
        r.segment(1, b"cd", 0, &mut out);
        assert_eq!(out, [data(b"abcd")]);
    }

    #[test]
    fn a_stream_seen_from_its_middle_starts_at_its_first_segment() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.segment(5000, b"mid", 0, &mut out);
        r.segment(4990, b"earlier", 0, &mut out);
        assert_eq!(out, [data(b"mid")]);
    }

    #[test]
    fn held_bytes_are_bounded() {
        let (mut r, mut out) = (Reassembler::default(), Vec::new());
        r.syn(0);
        let block = vec![7u8; 1 << 16];
        let mut seq = 1 + 10;
        while r.held_bytes <= MAX_HELD_BYTES && out.is_empty() {
            r.segment(seq, &block, 0, &mut out);
            seq += block.len() as u32;
        }
        assert_eq!(out[0], Chunk::Gap { len: 10 });
        assert!(r.held_bytes <= MAX_HELD_BYTES);
    }
}
