//! Puts events back in timestamp order. Events of one connection can come from different
//! CPUs; they are held until the watermark says nothing older can still arrive, then
//! released oldest first (ties keep arrival order).
//!
//! Most events arrive already in order (the ring buffer is filled in reservation order),
//! so those wait in a FIFO at O(1); only an event older than the newest one held goes to a
//! heap, and release merges the two.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Slots kept in the pool once nothing is held: events held between two watermarks in
/// steady state (at 1-2 ms per watermark, a few hundred).
const KEEP_SLOTS: usize = 1024;

/// Bytes of buffer capacity the pool keeps once their events are released. A slot's buffer
/// keeps the capacity of the largest event it ever held, so without this bound the pool grew
/// with every burst of large events on the host (other connections' events pass through here
/// before the filter), toward `KEEP_SLOTS` × the largest event (~17 MiB): a soak saw this
/// pool grow from 2 to 14 MiB in 9 minutes of steady load.
const KEEP_BYTES: usize = 4 << 20;

/// A held event: timestamp, arrival sequence (breaks ties), slot of its bytes.
type Held = (u64, u64, usize);

#[derive(Default)]
pub struct Reorder {
    /// Events that arrived in timestamp order.
    in_order: VecDeque<Held>,
    /// Events that arrived after a newer one.
    late: BinaryHeap<Reverse<Held>>,
    slots: Vec<Vec<u8>>,
    free: Vec<usize>,
    /// The capacity of every slot's buffer, held or free.
    pooled_bytes: usize,
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

    /// Holds a copy of `raw` (its buffer comes from a pool: no allocation in steady state).
    pub fn hold(&mut self, ts_ns: u64, raw: &[u8]) {
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
        let held = (ts_ns, self.seq, slot);
        self.seq += 1;
        match self.in_order.back() {
            Some(&(newest, _, _)) if ts_ns < newest => self.late.push(Reverse(held)),
            _ => self.in_order.push_back(held),
        }
    }

    /// Releases, oldest first, every held event stamped before `watermark`.
    pub fn release(&mut self, watermark: u64, mut f: impl FnMut(&[u8])) {
        self.watermark = self.watermark.max(watermark);
        loop {
            let fifo = self.in_order.front().copied();
            let heap = self.late.peek().map(|r| r.0);
            let (next, from_fifo) = match (fifo, heap) {
                (Some(a), Some(b)) if b < a => (b, false),
                (Some(a), _) => (a, true),
                (None, Some(b)) => (b, false),
                (None, None) => break,
            };
            let (ts, _, slot) = next;
            if ts >= watermark && watermark != u64::MAX {
                break;
            }
            if from_fifo {
                self.in_order.pop_front();
            } else {
                self.late.pop();
            }
            f(&self.slots[slot]);
            if self.pooled_bytes > KEEP_BYTES {
                let buf = std::mem::take(&mut self.slots[slot]);
                self.pooled_bytes -= buf.capacity();
            }
            self.free.push(slot);
        }
        if self.in_order.is_empty() && self.late.is_empty() && self.slots.len() > KEEP_SLOTS {
            // A burst (every connection's open event at startup, a stalled watermark) grew
            // the pool; nothing is held now, so give back what steady state does not use.
            self.slots.truncate(KEEP_SLOTS);
            self.slots.shrink_to_fit();
            self.pooled_bytes = self.slots.iter().map(Vec::capacity).sum();
            self.free.clear();
            self.free.extend(0..KEEP_SLOTS);
            self.free.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// What the pool's buffers hold, counted from the buffers themselves.
    fn pooled_capacity(r: &Reorder) -> usize {
        r.slots.iter().map(Vec::capacity).sum()
    }

    /// Bursts of large events (16 KiB, as the probes send) leave at most `KEEP_BYTES` of
    /// buffers behind, however many slots they went through.
    #[test]
    fn the_pool_keeps_a_bounded_number_of_bytes_after_bursts_of_large_events() {
        let mut r = Reorder::default();
        let large = vec![7u8; 16 << 10];
        let mut released = 0usize;
        for burst in [KEEP_SLOTS / 2, KEEP_SLOTS, 3 * KEEP_SLOTS, 700] {
            for ts in 0..burst as u64 {
                r.hold(ts, &large);
            }
            r.release(u64::MAX, |b| {
                assert_eq!(b.len(), large.len());
                released += 1;
            });
            assert!(
                pooled_capacity(&r) <= KEEP_BYTES,
                "{} bytes pooled after a burst of {burst}",
                pooled_capacity(&r)
            );
            assert_eq!(r.pooled_bytes, pooled_capacity(&r));
        }
        assert_eq!(released, KEEP_SLOTS / 2 + KEEP_SLOTS + 3 * KEEP_SLOTS + 700);
        // Small events after that reuse what is left and keep their order.
        r.hold(9, b"b");
        r.hold(8, b"a");
        let mut out = vec![];
        r.release(u64::MAX, |b| out.push(b.to_vec()));
        assert_eq!(out, [b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn the_pool_shrinks_after_a_burst_and_keeps_working() {
        let mut r = Reorder::default();
        for ts in 0..3 * KEEP_SLOTS as u64 {
            r.hold(ts, &ts.to_le_bytes());
        }
        let mut n = 0u64;
        r.release(u64::MAX, |b| {
            assert_eq!(b, n.to_le_bytes());
            n += 1;
        });
        assert_eq!(n, 3 * KEEP_SLOTS as u64);
        assert_eq!(r.slots.len(), KEEP_SLOTS);
        r.hold(7, b"x");
        r.hold(5, b"y");
        let mut out = vec![];
        r.release(u64::MAX, |b| out.push(b.to_vec()));
        assert_eq!(out, [b"y".to_vec(), b"x".to_vec()]);
    }
}
