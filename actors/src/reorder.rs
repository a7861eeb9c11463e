//! Puts events back in timestamp order. Events of one connection can come from different
//! CPUs; they are held until the watermark says nothing older can still arrive, then
//! released oldest first (ties keep arrival order).
//!
//! Most events arrive already in order (the ring buffer is filled in reservation order),
//! so those wait in a FIFO at O(1), their bytes appended back to back to fixed-size chunks
//! that are reused once every event in them is released; only an event older than the
//! newest one held goes to a heap (its bytes to a pooled slot), and release merges the two.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Slots kept in the pool once nothing is held: late events held between two watermarks.
const KEEP_SLOTS: usize = 1024;

/// Bytes of one chunk of in-order events. Events are appended back to back, so a chunk
/// holds hundreds of small ones; an event larger than a chunk gets a chunk of its own size.
const CHUNK_BYTES: usize = 64 * 1024;

/// Released chunks kept for reuse: what steady state holds between two watermarks (a few
/// ms of events); a burst's extra chunks are freed as they are released.
const KEEP_CHUNKS: usize = 16;

/// Bytes of buffer capacity the late slots keep once their events are released. A slot's
/// buffer keeps the capacity of the largest event it ever held, so without this bound the
/// pool grew with every burst of large late events toward `KEEP_SLOTS` × the largest event.
const KEEP_BYTES: usize = 4 << 20;

/// A late event: timestamp, arrival sequence (breaks ties), slot of its bytes.
type Held = (u64, u64, usize);

/// An in-order event: timestamp, arrival sequence, and where its bytes are.
#[derive(Clone, Copy)]
struct InOrder {
    ts: u64,
    seq: u64,
    /// Number of its chunk, counted since the first chunk ever (`Reorder::first_chunk` is
    /// the number of `chunks[0]`).
    chunk: u64,
    start: usize,
    len: usize,
}

#[derive(Default)]
pub struct Reorder {
    /// Events that arrived in timestamp order.
    in_order: VecDeque<InOrder>,
    /// Their bytes, oldest chunk first; the last one is being filled.
    chunks: VecDeque<Vec<u8>>,
    /// Number of `chunks[0]`.
    first_chunk: u64,
    /// Released chunks, emptied, for reuse.
    spare_chunks: Vec<Vec<u8>>,
    /// Events that arrived after a newer one.
    late: BinaryHeap<Reverse<Held>>,
    slots: Vec<Vec<u8>>,
    /// Summed capacity of `slots`.
    pooled_bytes: usize,
    free: Vec<usize>,
    seq: u64,
    watermark: u64,
}

impl Reorder {
    /// The last watermark seen: events older than it are late.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.in_order.len() + self.late.len()
    }

    /// Holds a copy of `raw` (in reused memory: no allocation in steady state).
    pub fn hold(&mut self, ts_ns: u64, raw: &[u8]) {
        let seq = self.seq;
        self.seq += 1;
        match self.in_order.back() {
            Some(newest) if ts_ns < newest.ts => self.hold_late((ts_ns, seq, 0), raw),
            _ => self.hold_in_order(ts_ns, seq, raw),
        }
    }

    fn hold_in_order(&mut self, ts: u64, seq: u64, raw: &[u8]) {
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.capacity() - c.len() >= raw.len());
        if !fits {
            let chunk = match self.spare_chunks.pop() {
                Some(c) if c.capacity() >= raw.len() => c,
                _ => Vec::with_capacity(CHUNK_BYTES.max(raw.len())),
            };
            self.chunks.push_back(chunk);
        }
        let chunk = self.chunks.back_mut().expect("a chunk was pushed above");
        let start = chunk.len();
        // Within capacity (checked above): never reallocates, so earlier events stay put.
        chunk.extend_from_slice(raw);
        self.in_order.push_back(InOrder {
            ts,
            seq,
            chunk: self.first_chunk + self.chunks.len() as u64 - 1,
            start,
            len: raw.len(),
        });
    }

    #[cold]
    fn hold_late(&mut self, (ts, seq, _): Held, raw: &[u8]) {
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Vec::new());
                self.slots.len() - 1
            }
        };
        let buf = &mut self.slots[slot];
        let capacity = buf.capacity();
        buf.clear();
        buf.extend_from_slice(raw);
        self.pooled_bytes += buf.capacity() - capacity;
        self.late.push(Reverse((ts, seq, slot)));
    }

    /// Releases, oldest first, every held event stamped before `watermark`.
    pub fn release(&mut self, watermark: u64, mut f: impl FnMut(&[u8])) {
        self.watermark = self.watermark.max(watermark);
        loop {
            let fifo = self.in_order.front().copied();
            let heap = self.late.peek().map(|r| r.0);
            let from_fifo = match (&fifo, heap) {
                (Some(a), Some(b)) => (a.ts, a.seq) < (b.0, b.1),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if from_fifo {
                let e = fifo.expect("from_fifo implies a front");
                if e.ts >= watermark && watermark != u64::MAX {
                    break;
                }
                self.in_order.pop_front();
                let chunk = &self.chunks[(e.chunk - self.first_chunk) as usize];
                f(&chunk[e.start..e.start + e.len]);
            } else {
                let (ts, _, slot) = heap.expect("not from_fifo implies a heap top");
                if ts >= watermark && watermark != u64::MAX {
                    break;
                }
                self.late.pop();
                f(&self.slots[slot]);
                if self.pooled_bytes > KEEP_BYTES {
                    let buf = std::mem::take(&mut self.slots[slot]);
                    self.pooled_bytes -= buf.capacity();
                }
                self.free.push(slot);
            }
        }
        self.recycle_chunks();
        if self.late.is_empty() && self.slots.len() > KEEP_SLOTS {
            // A burst (a stalled watermark, events from many CPUs) grew the pool; nothing
            // late is held now, so give back what steady state does not use.
            self.slots.truncate(KEEP_SLOTS);
            self.slots.shrink_to_fit();
            self.pooled_bytes = self.slots.iter().map(Vec::capacity).sum();
            self.free.clear();
            self.free.extend(0..KEEP_SLOTS);
            self.free.shrink_to_fit();
        }
    }

    /// Returns the chunks no held event is in (all of them once the FIFO is empty) to the
    /// spare list, keeping at most [`KEEP_CHUNKS`].
    fn recycle_chunks(&mut self) {
        let keep_from = match self.in_order.front() {
            Some(e) => e.chunk,
            None => self.first_chunk + self.chunks.len() as u64,
        };
        while self.first_chunk < keep_from {
            let mut chunk = self.chunks.pop_front().expect("counted chunk");
            self.first_chunk += 1;
            if self.spare_chunks.len() < KEEP_CHUNKS && chunk.capacity() == CHUNK_BYTES {
                chunk.clear();
                self.spare_chunks.push(chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled_capacity(r: &Reorder) -> usize {
        r.slots.iter().map(Vec::capacity).sum()
    }

    /// Bursts of large late events (each older than the newest held) leave at most
    /// `KEEP_BYTES` of slot capacity behind once released.
    #[test]
    fn the_late_pool_keeps_a_bounded_number_of_bytes_after_bursts_of_large_events() {
        let mut r = Reorder::default();
        let large = vec![7u8; 16 << 10];
        let mut released = 0usize;
        let bursts = [KEEP_SLOTS / 2, KEEP_SLOTS, 3 * KEEP_SLOTS, 700];
        for burst in bursts {
            r.hold(1 << 40, b"newest");
            for ts in 0..burst as u64 {
                r.hold(ts, &large);
            }
            r.release(u64::MAX, |b| {
                if b.len() == large.len() {
                    released += 1;
                }
            });
            assert!(
                pooled_capacity(&r) <= KEEP_BYTES,
                "{} bytes pooled after a burst of {burst}",
                pooled_capacity(&r)
            );
            assert_eq!(r.pooled_bytes, pooled_capacity(&r));
        }
        assert_eq!(released, bursts.iter().sum::<usize>());
        // Small events after that reuse what is left and keep their order.
        r.hold(1 << 41, b"c");
        r.hold(9, b"b");
        r.hold(8, b"a");
        let mut out = vec![];
        r.release(u64::MAX, |b| out.push(b.to_vec()));
        assert_eq!(out, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn releases_in_timestamp_order_up_to_the_watermark() {
        let mut r = Reorder::default();
        r.hold(30, b"c");
        r.hold(10, b"a");
        r.hold(20, b"b1");
        r.hold(20, b"b2");
        let mut out = vec![];
        r.release(25, |b| out.push(b.to_vec()));
        assert_eq!(out, vec![b"a".to_vec(), b"b1".to_vec(), b"b2".to_vec()]);
        r.release(u64::MAX, |b| out.push(b.to_vec()));
        assert_eq!(out.last().unwrap(), b"c");
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn in_order_and_late_events_merge_by_timestamp_then_arrival() {
        let mut r = Reorder::default();
        for (ts, body) in [
            (10, "a"),
            (20, "c1"),
            (15, "b"),
            (30, "e"),
            (20, "c2"),
            (25, "d"),
            (40, "f"),
            (5, "0"),
        ] {
            r.hold(ts, body.as_bytes());
        }
        let mut out = vec![];
        r.release(26, |b| out.push(String::from_utf8(b.to_vec()).unwrap()));
        assert_eq!(out, ["0", "a", "b", "c1", "c2", "d"]);
        r.hold(35, b"e2");
        r.release(u64::MAX, |b| {
            out.push(String::from_utf8(b.to_vec()).unwrap())
        });
        assert_eq!(out[6..], ["e", "e2", "f"]);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn the_pool_shrinks_after_a_burst_and_keeps_working() {
        let mut r = Reorder::default();
        // A burst in order: its bytes fill many chunks.
        let body = [7u8; 1000];
        let burst = 3 * KEEP_CHUNKS * CHUNK_BYTES / body.len();
        for ts in 0..burst as u64 {
            let mut event = body;
            event[..8].copy_from_slice(&ts.to_le_bytes());
            r.hold(ts, &event);
        }
        assert!(r.chunks.len() >= 3 * KEEP_CHUNKS);
        let mut n = 0u64;
        r.release(u64::MAX, |b| {
            assert_eq!(b[..8], n.to_le_bytes());
            assert_eq!(b.len(), body.len());
            n += 1;
        });
        assert_eq!(n, burst as u64);
        assert!(r.chunks.is_empty());
        assert_eq!(r.spare_chunks.len(), KEEP_CHUNKS);
        // A burst of late events: each takes a slot.
        r.hold(u64::MAX - 1, b"newest");
        for ts in (0..3 * KEEP_SLOTS as u64).rev() {
            r.hold(ts, &ts.to_le_bytes());
        }
        assert_eq!(r.slots.len(), 3 * KEEP_SLOTS);
        let mut n = 0u64;
        r.release(u64::MAX - 1, |b| {
            assert_eq!(b, n.to_le_bytes());
            n += 1;
        });
        assert_eq!(n, 3 * KEEP_SLOTS as u64);
        assert_eq!(r.slots.len(), KEEP_SLOTS);
        r.hold(7, b"x");
        r.hold(5, b"y");
        let mut out = vec![];
        r.release(u64::MAX, |b| out.push(b.to_vec()));
        assert_eq!(out, [b"y".to_vec(), b"x".to_vec(), b"newest".to_vec()]);
    }

    #[test]
    fn events_of_any_size_come_back_whole_across_chunks_and_partial_releases() {
        let mut r = Reorder::default();
        let event = |ts: u64| {
            // Sizes from 1 byte to past a chunk's size.
            let len = 1 + (ts as usize * 7919) % (CHUNK_BYTES + CHUNK_BYTES / 2);
            let mut body = vec![(ts % 251) as u8; len];
            body[0] = (ts % 256) as u8;
            body
        };
        let mut out = vec![];
        let mut next = 0u64;
        for round in 0..40u64 {
            for ts in round * 10..round * 10 + 10 {
                r.hold(ts, &event(ts));
            }
            // Release all but the last few held: chunks are partly released.
            r.release(round * 10 + 7, |b| out.push(b.to_vec()));
            while (out.len() as u64) > next {
                assert_eq!(out[next as usize], event(next), "event {next}");
                next += 1;
            }
        }
        r.release(u64::MAX, |b| out.push(b.to_vec()));
        assert_eq!(out.len(), 400);
        for (ts, b) in out.iter().enumerate() {
            assert_eq!(*b, event(ts as u64));
        }
        assert!(r.chunks.is_empty());
        assert!(r.spare_chunks.len() <= KEEP_CHUNKS);
    }
}
