//! Gives the memory allocator's free pages back to the system, from time to time.
//!
//! Why: glibc's malloc keeps freed memory in its arenas (one per thread that allocates) and
//! returns it only from the top of a heap, above a threshold that grows with the largest
//! block freed so far (up to 64 MiB). A capture frees large buffers regularly (a Parquet file's
//! encoded row group at each roll, record batches, symbol tables read by the TLS scan), so
//! without this its resident memory kept every arena's high-water mark: ten minutes into a
//! soak (ci/soak.py), `malloc_trim` gave back 25 of its 90 MiB of anonymous memory at once.
use std::time::{Duration, Instant};

/// How often free memory is given back: rare enough that its cost (a walk of every arena's
/// free lists, a few ms at most) does not matter, often enough that a freed buffer does not
/// stay resident for long.
pub const RELEASE_EVERY: Duration = Duration::from_secs(10);

/// Calls [`release_free_memory`] at most once per [`RELEASE_EVERY`].
pub struct Releaser {
    last: Instant,
}

impl Releaser {
    pub fn new() -> Self {
        Releaser {
            last: Instant::now(),
        }
    }

    /// Releases free memory if the last release is [`RELEASE_EVERY`] old.
    pub fn tick(&mut self) {
        if self.last.elapsed() >= RELEASE_EVERY {
            release_free_memory();
            self.last = Instant::now();
        }
    }
}

/// Returns the free pages of every malloc arena to the system (they stay mapped, so reusing
/// them costs a page fault, not a system call).
#[cfg(target_env = "gnu")]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free chunks; it takes
    // each arena's lock, so other threads may allocate meanwhile.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries (musl) return freed memory on their own.
#[cfg(not(target_env = "gnu"))]
pub fn release_free_memory() {}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::*;

    fn anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// A thread's arena that held 64 MiB of buffers, of which every 16th is still alive (as
    /// a sink's long-lived rows sit among freed ones), keeps the freed ones resident until
    /// they are released.
    #[test]
    fn freed_memory_in_a_fragmented_arena_is_given_back() {
        let (before, after) = std::thread::spawn(|| {
            let mut blocks: Vec<Vec<u8>> = (0..1024).map(|_| vec![1u8; 64 << 10]).collect();
            let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(16).map(std::mem::take).collect();
            drop(blocks);
            let before = anon_kib();
            release_free_memory();
            let after = anon_kib();
            assert_eq!(kept.len(), 64);
            (before, after)
        })
        .join()
        .unwrap();
        assert!(
            before - after.min(before) > 32 << 10,
            "RssAnon {before} KiB before, {after} KiB after"
        );
    }
}
