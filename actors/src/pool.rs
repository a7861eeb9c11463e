//! Record batches going back from the sink to the actors once written, so that a batch's
//! buffers (1024 records and their text, a few hundred KiB) are reused instead of freed by
//! one thread and allocated again by another, which cost page faults on every batch.
use crossbeam_channel::{Receiver, Sender};
use l7tap_protocols::CapturedBatch;

/// Records per batch an actor sends.
pub const BATCH: usize = 1024;

/// Text bytes per record a new batch is sized for (ZooKeeper paths, ClickHouse ids and
/// queries); the arena grows past it when needed.
const BATCH_TEXT_PER_RECORD: usize = 64;

/// Text capacity a spare batch may keep (a batch of long ClickHouse queries can reach MiBs).
const MAX_KEPT_TEXT_BYTES: usize = 1 << 20;

/// Spare batches, shared by the actors (taking) and the output thread (giving back).
/// Bounded: a batch given back to a full pool is freed.
#[derive(Clone)]
pub struct BatchPool {
    spare_tx: Sender<CapturedBatch>,
    spare_rx: Receiver<CapturedBatch>,
}

impl BatchPool {
    /// A pool that keeps at most `capacity` spare batches.
    pub fn new(capacity: usize) -> Self {
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(capacity);
        BatchPool { spare_tx, spare_rx }
    }

    /// An empty batch: a spare one if there is any, else a new one.
    pub fn take(&self) -> CapturedBatch {
        self.spare_rx
            .try_recv()
            .unwrap_or_else(|_| CapturedBatch::with_capacity(BATCH, BATCH * BATCH_TEXT_PER_RECORD))
    }

    /// Returns a written batch for reuse. A text arena that grew past
    /// [`MAX_KEPT_TEXT_BYTES`] (long queries) is shrunk first, so that spare batches stay
    /// small.
    pub fn give(&self, mut batch: CapturedBatch) {
        batch.clear();
        if batch.records.text.capacity() > MAX_KEPT_TEXT_BYTES {
            batch.records.text.shrink_to(BATCH * BATCH_TEXT_PER_RECORD);
        }
        let _ = self.spare_tx.try_send(batch);
    }
}

impl Default for BatchPool {
    fn default() -> Self {
        BatchPool::new(16)
    }
}

impl std::fmt::Debug for BatchPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchPool")
            .field("spare", &self.spare_rx.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_given_back_is_taken_again_empty_with_its_capacity() {
        let pool = BatchPool::new(2);
        let mut batch = pool.take();
        batch.records.text.push("/some/path");
        let capacity = batch.records.text.capacity();
        pool.give(batch);
        let again = pool.take();
        assert!(again.is_empty() && again.records.text.is_empty());
        assert_eq!(again.records.text.capacity(), capacity);
    }

    #[test]
    fn a_batch_whose_text_grew_large_comes_back_shrunk() {
        let pool = BatchPool::new(2);
        let mut batch = pool.take();
        batch.records.text.push(&"x".repeat(4 << 20));
        pool.give(batch);
        assert!(pool.take().records.text.capacity() <= MAX_KEPT_TEXT_BYTES);
    }
}
