//! Puts events back in timestamp order. Events of one connection can come from different
//! CPUs' buffers; they are held until the watermark says nothing older can still arrive,
//! then released oldest first (ties keep arrival order).
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub struct Reorder {
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slots: Vec<Vec<u8>>,
    free: Vec<usize>,
    seq: u64,
    watermark: u64,
}

impl Default for Reorder {
    fn default() -> Self {
        Reorder {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
            watermark: 0,
        }
    }
}

impl Reorder {
    /// The last watermark seen: events older than it are late.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.heap.len()
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
        buf.clear();
        buf.extend_from_slice(raw);
        self.heap.push(Reverse((ts_ns, self.seq, slot)));
        self.seq += 1;
    }

    /// Releases, oldest first, every held event stamped before `watermark`.
    pub fn release(&mut self, watermark: u64, mut f: impl FnMut(&[u8])) {
        self.watermark = self.watermark.max(watermark);
        while let Some(&Reverse((ts, _, slot))) = self.heap.peek() {
            if ts >= watermark && watermark != u64::MAX {
                break;
            }
            self.heap.pop();
            f(&self.slots[slot]);
            self.free.push(slot);
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
}
