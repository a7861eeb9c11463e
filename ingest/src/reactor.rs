//! The mio reactor: waits on every kernel buffer's fd, drains each until empty, routes the
//! events, and advances the watermark that lets actors release events in timestamp order.
//! Replay ([`crate::replay`]) is the same routing with a file instead of kernel buffers.
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use aya::maps::perf::PerfEventArrayBuffer;
use aya::maps::{MapData, RingBuf};
use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events as MioEvents, Interest, Poll, Token};

use crate::recording::RecordingError;
use crate::{monotonic_ns, Router};

/// Events with a timestamp older than "drain start − slack" are known to be routed: a
/// probe writes its event within microseconds of taking the timestamp.
pub const WATERMARK_SLACK_NS: u64 = 5_000_000;

/// The ring buffer does not wake the reader per event: the sweep period bounds how late
/// events are read. A new connection's open event wakes the reader at once (its process's
/// identity is read from /proc while the process is still there), and a quarter-full ring
/// too, so the period only delays data.
///
/// Every sweep costs a wakeup of the reactor and of the actors it feeds (tens of µs each on a
/// VM), whatever the traffic: at 10 ms it was half of an idle capture's CPU and 2.5-5 µs per
/// captured ClickHouse request at 1,800-2,000 queries/s. So light traffic is swept every
/// [`POLL_TIMEOUT`]. Heavy traffic ([`BUSY_BYTES_PER_SECOND`]) is swept every
/// [`BUSY_POLL_TIMEOUT`]: a 50 ms sweep of pipelined ZooKeeper (7 MB/s of events) hands the
/// actors 350 KB at once, and the watched server's CPU per request rose with it.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);
const BUSY_POLL_TIMEOUT: Duration = Duration::from_millis(10);
const BUSY_BYTES_PER_SECOND: u64 = 4 << 20;
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ReactorError {
    #[error("epoll: {0}")]
    Poll(#[source] std::io::Error),
    #[error("reading the perf buffer of CPU {cpu}: {source}")]
    Perf {
        cpu: u32,
        #[source]
        source: aya::maps::perf::PerfBufferError,
    },
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

/// A kernel buffer the reactor drains.
pub enum KernelBuffer {
    Perf {
        cpu: u32,
        buffer: PerfEventArrayBuffer<MapData>,
    },
    Ring(RingBuf<MapData>),
}

impl KernelBuffer {
    fn raw_fd(&self) -> i32 {
        match self {
            KernelBuffer::Perf { buffer, .. } => buffer.as_raw_fd(),
            KernelBuffer::Ring(r) => r.as_raw_fd(),
        }
    }
}

/// Loss as the loader reports it (perf "lost" records; undercounts, see the kernel
/// counters for the real figure).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReactorStats {
    pub loader_lost: u64,
    pub drains: u64,
}

/// Drains `buffers` into `router` until `stop` is set; calls `tick` about once a second
/// (progress line, kernel counters). The caller then detaches the probes and calls
/// [`finish_live`], so that no event is emitted into a buffer that is no longer read.
pub fn run_live(
    buffers: &mut [KernelBuffer],
    router: &mut Router,
    stop: &AtomicBool,
    mut tick: impl FnMut(&mut Router, &ReactorStats) -> Result<(), RecordingError>,
) -> Result<ReactorStats, ReactorError> {
    let mut poll = Poll::new().map_err(ReactorError::Poll)?;
    for (i, b) in buffers.iter().enumerate() {
        let fd = b.raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
            .map_err(ReactorError::Poll)?;
    }
    let mut events = MioEvents::with_capacity(buffers.len().max(1));
    let mut samples = sample_buffers();
    let mut stats = ReactorStats::default();
    let mut next_tick = Instant::now() + TICK;
    let mut timeout = POLL_TIMEOUT;
    let mut last_sweep = Instant::now();
    while !stop.load(Relaxed) {
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReactorError::Poll(e)),
        }
        // Drain every buffer, not only the ready ones: the watermark below promises that
        // everything stamped before `sweep_start` has been routed.
        let sweep_start = monotonic_ns();
        let mut bytes = 0;
        for b in buffers.iter_mut() {
            bytes += drain(b, &mut samples, router, &mut stats)?;
        }
        let now = Instant::now();
        timeout = sweep_period(bytes, now.saturating_duration_since(last_sweep));
        last_sweep = now;
        stats.drains += 1;
        router.watermark(sweep_start.saturating_sub(WATERMARK_SLACK_NS))?;
        if now >= next_tick {
            tick(router, &stats)?;
            next_tick += TICK;
        }
    }
    Ok(stats)
}

/// After the probes are detached: drains what is left and releases everything the actors
/// hold.
pub fn finish_live(
    buffers: &mut [KernelBuffer],
    router: &mut Router,
    stats: &mut ReactorStats,
) -> Result<(), ReactorError> {
    let mut samples = sample_buffers();
    for b in buffers.iter_mut() {
        drain(b, &mut samples, router, stats)?;
    }
    router.watermark(u64::MAX)?;
    Ok(())
}

fn sample_buffers() -> Vec<BytesMut> {
    (0..64)
        .map(|_| BytesMut::with_capacity(l7tap_abi::events::layout::DATA_PAYLOAD + 16 * 1024))
        .collect()
}

/// The wait before the next sweep, from the event bytes the last one drained in `elapsed`.
fn sweep_period(bytes: u64, elapsed: Duration) -> Duration {
    let busy =
        u128::from(bytes) * 1_000_000_000 > u128::from(BUSY_BYTES_PER_SECOND) * elapsed.as_nanos();
    if busy {
        BUSY_POLL_TIMEOUT
    } else {
        POLL_TIMEOUT
    }
}

/// Drains `buffer` into `router`; returns the event bytes read.
fn drain(
    buffer: &mut KernelBuffer,
    samples: &mut [BytesMut],
    router: &mut Router,
    stats: &mut ReactorStats,
) -> Result<u64, ReactorError> {
    let mut bytes = 0;
    match buffer {
        KernelBuffer::Perf { cpu, buffer } => {
            while buffer.readable() {
                let got = buffer
                    .read_events(samples)
                    .map_err(|source| ReactorError::Perf { cpu: *cpu, source })?;
                stats.loader_lost += got.lost as u64;
                for sample in &samples[..got.read] {
                    bytes += sample.len() as u64;
                    router.event(sample)?;
                }
                if got.read == 0 && got.lost == 0 {
                    break;
                }
            }
        }
        KernelBuffer::Ring(ring) => {
            while let Some(item) = ring.next() {
                bytes += item.len() as u64;
                router.event(&item)?;
            }
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_traffic_is_swept_more_often_than_light() {
        let ms = Duration::from_millis;
        // Pipelined ZooKeeper: 7 MB/s of events, whatever the last period was.
        assert_eq!(sweep_period(70_000, ms(10)), BUSY_POLL_TIMEOUT);
        assert_eq!(sweep_period(350_000, ms(50)), BUSY_POLL_TIMEOUT);
        // ClickHouse SELECT 1 at 1,800 queries/s: 2 MB/s; and an idle capture.
        assert_eq!(sweep_period(20_000, ms(10)), POLL_TIMEOUT);
        assert_eq!(sweep_period(100_000, ms(50)), POLL_TIMEOUT);
        assert_eq!(sweep_period(0, ms(50)), POLL_TIMEOUT);
        // A sweep right after the last one (a wakeup): the rate, not the byte count, decides.
        assert_eq!(sweep_period(1, Duration::ZERO), BUSY_POLL_TIMEOUT);
        assert_eq!(sweep_period(0, Duration::ZERO), POLL_TIMEOUT);
    }
}
