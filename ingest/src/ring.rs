//! Lock-free single-producer single-consumer byte rings (rtrb) carrying frames from the
//! reactor to one actor. A frame is copied into the ring once; the consumer reads it in
//! place unless it wraps around the ring's end.
//!
//! An idle consumer sleeps instead of polling: it parks its thread after announcing it on
//! the ring's [`Doorbell`], and the producer rings the bell once per batch of frames (the
//! reactor: after each sweep of the kernel buffers), not once per frame.
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use crate::frame::{self, Tag, FRAME_HEADER};

pub struct FrameProducer {
    inner: rtrb::Producer<u8>,
    doorbell: Arc<Doorbell>,
}

pub struct FrameConsumer {
    inner: rtrb::Consumer<u8>,
    /// Holds a frame that wraps around the ring's end.
    scratch: Vec<u8>,
    doorbell: Arc<Doorbell>,
}

/// How a sleeping consumer is woken.
#[derive(Default)]
struct Doorbell {
    /// The consumer is parked, or about to park.
    sleeping: AtomicBool,
    /// The consumer's thread, known from its first wait.
    consumer: OnceLock<Thread>,
    /// The producer is gone. Set before the producer's last wake-up call: the ring itself
    /// only counts as abandoned once the producer's fields are dropped, after that call, and
    /// a consumer that took the wake-up before could park again with nothing to wake it.
    producer_gone: AtomicBool,
}

/// A ring of `bytes` capacity.
pub fn frame_ring(bytes: usize) -> (FrameProducer, FrameConsumer) {
    let (p, c) = rtrb::RingBuffer::new(bytes);
    let doorbell = Arc::new(Doorbell::default());
    (
        FrameProducer {
            inner: p,
            doorbell: doorbell.clone(),
        },
        FrameConsumer {
            inner: c,
            scratch: Vec::new(),
            doorbell,
        },
    )
}

impl FrameProducer {
    /// Writes one frame made of `parts`; false if the ring has no room for it (nothing is
    /// written then).
    pub fn try_push(&mut self, tag: Tag, parts: &[&[u8]]) -> bool {
        let body: usize = parts.iter().map(|p| p.len()).sum();
        let total = FRAME_HEADER + body;
        let Ok(mut chunk) = self.inner.write_chunk_uninit(total) else {
            return false;
        };
        let header = frame::header(tag, body);
        let (a, b) = chunk.as_mut_slices();
        if b.is_empty() {
            // The frame does not wrap around the ring's end (all but one in thousands): one
            // copy per part, without the split arithmetic, which was most of this function's
            // instructions.
            let (head, mut rest) = a.split_at_mut(FRAME_HEADER);
            head.write_copy_of_slice(&header);
            for part in parts {
                let (dst, tail) = rest.split_at_mut(part.len());
                dst.write_copy_of_slice(part);
                rest = tail;
            }
        } else {
            let mut at = 0;
            for src in std::iter::once(&header[..]).chain(parts.iter().copied()) {
                write_split(a, b, at, src);
                at += src.len();
            }
        }
        // SAFETY: the loop above initialised all `total` bytes of the chunk (header + parts).
        unsafe { chunk.commit_all() };
        true
    }

    /// Pushes, waiting for room (replay: never drop). Returns false if the consumer is gone.
    pub fn push_blocking(&mut self, tag: Tag, parts: &[&[u8]]) -> bool {
        let mut spins = 0u32;
        while !self.try_push(tag, parts) {
            if self.inner.is_abandoned() {
                return false;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // The consumer may be asleep with a full ring to read. 500 µs: a replay
                // sharing a core with its actor woke every 50 µs to push a few frames, two
                // context switches each time; a full ring holds far more than 500 µs of work.
                self.wake_consumer();
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
        }
        true
    }

    pub fn is_abandoned(&self) -> bool {
        self.inner.is_abandoned()
    }

    /// Wakes the consumer if it sleeps. Call after a batch of pushes; cheap when it is
    /// awake (one fence and one load).
    pub fn wake_consumer(&self) {
        // Orders the frames just committed before the load of `sleeping`; pairs with the
        // fence in `FrameConsumer::wait` so that either the consumer sees the frames or we
        // see it sleeping.
        fence(Ordering::SeqCst);
        if self.doorbell.sleeping.load(Ordering::Relaxed) {
            if let Some(thread) = self.doorbell.consumer.get() {
                thread.unpark();
            }
        }
    }
}

impl Drop for FrameProducer {
    /// A consumer waiting for frames must notice that none will come.
    fn drop(&mut self) {
        self.doorbell.producer_gone.store(true, Ordering::Release);
        // Pairs with the fence in `FrameConsumer::wait`: either the consumer sees the
        // producer gone, or we see its thread and unpark it.
        fence(Ordering::SeqCst);
        if let Some(thread) = self.doorbell.consumer.get() {
            thread.unpark();
        }
    }
}

/// Copies `src` to position `at` of the two-part destination `a ++ b`.
fn write_split(
    a: &mut [std::mem::MaybeUninit<u8>],
    b: &mut [std::mem::MaybeUninit<u8>],
    at: usize,
    src: &[u8],
) {
    let (in_a, in_b) = if at >= a.len() {
        (&[][..], src)
    } else {
        src.split_at(src.len().min(a.len() - at))
    };
    if !in_a.is_empty() {
        copy_uninit(&mut a[at..at + in_a.len()], in_a);
    }
    if !in_b.is_empty() {
        let start = (at + in_a.len()) - a.len();
        copy_uninit(&mut b[start..start + in_b.len()], in_b);
    }
}

/// One `memcpy`: an element-by-element loop here was 2.5 % of a replay's instructions (the
/// one copy of every event into its actor's ring).
fn copy_uninit(dst: &mut [std::mem::MaybeUninit<u8>], src: &[u8]) {
    dst.write_copy_of_slice(src);
}

impl FrameConsumer {
    /// Hands the next frame to `f` (tag, body) and removes it; false if the ring is empty.
    pub fn pop<R>(&mut self, f: impl FnOnce(Tag, &[u8]) -> R) -> Option<R> {
        let avail = self.inner.slots();
        if avail < FRAME_HEADER {
            return None;
        }
        let mut h = [0u8; FRAME_HEADER];
        {
            // Peeked, not committed: the frame is consumed as a whole below.
            let head = self.inner.read_chunk(FRAME_HEADER).ok()?;
            let (a, b) = head.as_slices();
            if b.is_empty() {
                h.copy_from_slice(a);
            } else {
                for (d, s) in h.iter_mut().zip(a.iter().chain(b)) {
                    *d = *s;
                }
            }
        }
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let total = 4 + len;
        // The producer commits whole frames, so a visible header means a visible body.
        let chunk = self.inner.read_chunk(total).ok()?;
        let Some(tag) = Tag::from_u8(h[4]) else {
            // Our producer writes no unknown tags; skip such a frame rather than stall.
            chunk.commit_all();
            return self.pop(f);
        };
        let (a, b) = chunk.as_slices();
        let result = if b.is_empty() {
            f(tag, &a[FRAME_HEADER..])
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(a);
            self.scratch.extend_from_slice(b);
            f(tag, &self.scratch[FRAME_HEADER..])
        };
        chunk.commit_all();
        Some(result)
    }

    /// The producer is gone (frames it pushed may still be there to read).
    pub fn is_abandoned(&self) -> bool {
        self.doorbell.producer_gone.load(Ordering::Acquire) || self.inner.is_abandoned()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Sleeps until the producer rings (frames arrived, or it is gone) or `timeout`
    /// passes; returns at once if frames are already there.
    pub fn wait(&mut self, timeout: Duration) {
        self.doorbell.consumer.get_or_init(std::thread::current);
        self.doorbell.sleeping.store(true, Ordering::Relaxed);
        // Pairs with the fence in `FrameProducer::wake_consumer`.
        fence(Ordering::SeqCst);
        if self.inner.is_empty() && !self.is_abandoned() {
            std::thread::park_timeout(timeout);
        }
        self.doorbell.sleeping.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_wrapping_around_the_ring_end() {
        let (mut p, mut c) = frame_ring(64);
        for round in 0..50u8 {
            let body = vec![round; (round as usize % 20) + 1];
            assert!(p.try_push(Tag::KernelEvent, &[&body[..1], &body[1..]]));
            let got = c.pop(|tag, b| (tag, b.to_vec())).unwrap();
            assert_eq!(got, (Tag::KernelEvent, body));
        }
        assert!(c.pop(|_, _| ()).is_none());
    }

    #[test]
    fn a_waiting_consumer_wakes_for_frames_and_for_a_dropped_producer() {
        let (mut p, mut c) = frame_ring(1024);
        let consumer = std::thread::spawn(move || {
            let mut got = Vec::new();
            let started = std::time::Instant::now();
            loop {
                while let Some(body) = c.pop(|_, b| b.to_vec()) {
                    got.push(body);
                }
                if c.is_abandoned() && c.is_empty() {
                    break;
                }
                c.wait(Duration::from_secs(30));
            }
            (got, started.elapsed())
        });
        for i in 0..100u8 {
            assert!(p.try_push(Tag::Watermark, &[&[i; 8]]));
            p.wake_consumer();
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        drop(p);
        let (got, elapsed) = consumer.join().unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], vec![99; 8]);
        // Woken by the bell, not by the 30 s timeout.
        assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    }

    #[test]
    fn a_full_ring_refuses_without_writing() {
        let (mut p, mut c) = frame_ring(32);
        assert!(p.try_push(Tag::Watermark, &[&[1; 20]]));
        assert!(!p.try_push(Tag::Watermark, &[&[2; 20]]));
        assert_eq!(c.pop(|_, b| b.to_vec()).unwrap(), vec![1; 20]);
        assert!(c.pop(|_, _| ()).is_none());
    }
}
