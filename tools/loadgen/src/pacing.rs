//! Spacing requests to a target rate: each worker sends on its own schedule of
//! `connections / rate` seconds per request, catching up after a late wake-up (so the average
//! rate holds) but never by more than [`MAX_BACKLOG`] (so a stalled server is not hit by a
//! burst of everything it missed).
use std::time::{Duration, Instant};

/// How far a worker may fall behind its schedule before it gives up the missed sends.
pub const MAX_BACKLOG: Duration = Duration::from_millis(50);

/// One worker's send schedule; `interval == None` means flat out.
#[derive(Clone, Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    /// A worker's share of `rate` (requests/s over all `workers`); `None` is flat out.
    /// Workers start staggered over one interval so they do not fire together.
    pub fn new(rate: Option<f64>, workers: usize, worker: usize) -> Self {
        let interval = rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(workers.max(1) as f64 / r));
        let offset = interval
            .map(|i| i.mul_f64(worker as f64 / workers.max(1) as f64))
            .unwrap_or_default();
        Pacer {
            interval,
            next: Instant::now() + offset,
        }
    }

    /// Whether this worker sends as fast as it can.
    pub fn is_flat_out(&self) -> bool {
        self.interval.is_none()
    }

    /// When the next request is due, advancing the schedule (`None`: send now, flat out).
    pub fn next_due(&mut self) -> Option<Instant> {
        let interval = self.interval?;
        let now = Instant::now();
        if now.saturating_duration_since(self.next) > MAX_BACKLOG {
            self.next = now;
        }
        let due = self.next;
        self.next += interval;
        Some(due)
    }

    /// Sleeps (blocking the thread) until the next request is due.
    pub fn wait_blocking(&mut self) {
        if let Some(due) = self.next_due() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }

    /// Sleeps (async) until the next request is due.
    pub async fn wait(&mut self) {
        if let Some(due) = self.next_due() {
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_out_never_waits_and_paced_spaces_by_share() {
        let mut flat = Pacer::new(None, 4, 0);
        assert!(flat.next_due().is_none());
        let mut paced = Pacer::new(Some(1000.0), 2, 0);
        let a = paced.next_due().unwrap();
        let b = paced.next_due().unwrap();
        assert_eq!(b - a, Duration::from_millis(2));
    }

    #[test]
    fn a_long_stall_drops_the_backlog() {
        let mut paced = Pacer::new(Some(1000.0), 1, 0);
        paced.next = Instant::now() - Duration::from_secs(1);
        let due = paced.next_due().unwrap();
        assert!(Instant::now().saturating_duration_since(due) < MAX_BACKLOG);
    }
}
