//! Kernel counters over time: the `KernelCounters` recording frame (so a replay sees what the
//! live run saw), and their per-window, per-CPU deltas for the `capture_stats` table.
use l7tap_probes::KernelCounters;
use l7tap_sinks::CaptureStatsRow;

/// Fields per CPU in a counters frame.
const FIELDS: usize = 10;
/// Bytes before the per-CPU fields: time, ring drops, TLS symbols attached and failed.
const HEAD: usize = 32;

/// A snapshot taken by the reactor's tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CounterSnapshot {
    /// CLOCK_MONOTONIC ns when it was taken.
    pub monotonic_ns: u64,
    /// Events dropped on full actor rings so far.
    pub ring_drops: u64,
    /// TLS library functions attached so far (each at entry and return).
    pub tls_attached: u64,
    /// TLS library functions that could not be attached so far.
    pub tls_attach_failed: u64,
    pub per_cpu: Vec<KernelCounters>,
}

impl CounterSnapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD + self.per_cpu.len() * FIELDS * 8);
        out.extend_from_slice(&self.monotonic_ns.to_le_bytes());
        out.extend_from_slice(&self.ring_drops.to_le_bytes());
        out.extend_from_slice(&self.tls_attached.to_le_bytes());
        out.extend_from_slice(&self.tls_attach_failed.to_le_bytes());
        for c in &self.per_cpu {
            for v in [
                c.events_emitted,
                c.bytes_emitted,
                c.events_failed,
                c.bytes_failed,
                c.classify_checks,
                c.classified,
                c.ignored,
                c.last_error as u64,
                c.tls_payloads,
                c.tls_lost,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Option<CounterSnapshot> {
        let u = |b: &[u8], i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let per_cpu = b
            .get(HEAD..)?
            .chunks_exact(FIELDS * 8)
            .map(|c| KernelCounters {
                events_emitted: u(c, 0).unwrap_or(0),
                bytes_emitted: u(c, 1).unwrap_or(0),
                events_failed: u(c, 2).unwrap_or(0),
                bytes_failed: u(c, 3).unwrap_or(0),
                classify_checks: u(c, 4).unwrap_or(0),
                classified: u(c, 5).unwrap_or(0),
                ignored: u(c, 6).unwrap_or(0),
                last_error: u(c, 7).unwrap_or(0) as i64,
                tls_payloads: u(c, 8).unwrap_or(0),
                tls_lost: u(c, 9).unwrap_or(0),
            })
            .collect();
        Some(CounterSnapshot {
            monotonic_ns: u(b, 0)?,
            ring_drops: u(b, 1)?,
            tls_attached: u(b, 2)?,
            tls_attach_failed: u(b, 3)?,
            per_cpu,
        })
    }
}

/// The reactor's kernel rows for the output thread, and how far the kernel's counts are known.
#[derive(Debug)]
pub struct KernelRows {
    pub rows: Vec<CaptureStatsRow>,
    /// Unix ns of the snapshot these rows were cut at: a window that ends by then has all its
    /// kernel rows in this message or an earlier one, so its machine row can be published.
    pub complete_until_unix_ns: i64,
}

/// Turns successive snapshots into per-window rows: one per CPU (events, bytes, lost
/// samples) and one for the machine (`cpu` None: ring drops), for each window that ended.
pub struct KernelWindows {
    window_ns: i64,
    offset_ns: i64,
    previous: Option<CounterSnapshot>,
    window_start: Option<i64>,
    rows: Vec<CaptureStatsRow>,
}

impl KernelWindows {
    pub fn new(window_ns: u64, monotonic_to_unix_ns: i64) -> Self {
        KernelWindows {
            window_ns: window_ns as i64,
            offset_ns: monotonic_to_unix_ns,
            previous: None,
            window_start: None,
            rows: Vec::new(),
        }
    }

    /// Adds a snapshot; returns the rows of windows that ended before it.
    pub fn observe(&mut self, snap: CounterSnapshot) -> KernelRows {
        let unix = snap.monotonic_ns as i64 + self.offset_ns;
        let window = unix - unix.rem_euclid(self.window_ns);
        let mut done = Vec::new();
        if self.window_start.is_some_and(|w| w != window) {
            done = std::mem::take(&mut self.rows);
        }
        if self.window_start != Some(window) {
            self.window_start = Some(window);
        }
        let prev = self.previous.take().unwrap_or_default();
        let machine = self.row(window, None);
        machine.ring_drops += snap.ring_drops.saturating_sub(prev.ring_drops);
        for (name, now, before) in [
            ("tls.attached", snap.tls_attached, prev.tls_attached),
            (
                "tls.attach_failed",
                snap.tls_attach_failed,
                prev.tls_attach_failed,
            ),
        ] {
            add_counter(&mut machine.counters, name, now.saturating_sub(before));
        }
        for (cpu, c) in snap.per_cpu.iter().enumerate() {
            let p = prev.per_cpu.get(cpu).copied().unwrap_or_default();
            let row = self.row(window, Some(cpu as u32));
            row.events += c.events_emitted.saturating_sub(p.events_emitted);
            row.bytes += c.bytes_emitted.saturating_sub(p.bytes_emitted);
            row.lost_samples += c.events_failed.saturating_sub(p.events_failed);
            for (name, now, before) in [
                ("kernel.bytes_failed", c.bytes_failed, p.bytes_failed),
                (
                    "kernel.classify_checks",
                    c.classify_checks,
                    p.classify_checks,
                ),
                ("kernel.classified", c.classified, p.classified),
                ("kernel.ignored", c.ignored, p.ignored),
                ("kernel.tls_payloads", c.tls_payloads, p.tls_payloads),
                ("kernel.tls_lost", c.tls_lost, p.tls_lost),
            ] {
                add_counter(&mut row.counters, name, now.saturating_sub(before));
            }
        }
        self.previous = Some(snap);
        KernelRows {
            rows: done,
            complete_until_unix_ns: unix,
        }
    }

    /// The rows of the window in progress: the kernel's last word.
    pub fn finish(&mut self) -> KernelRows {
        KernelRows {
            rows: std::mem::take(&mut self.rows),
            complete_until_unix_ns: i64::MAX,
        }
    }

    fn row(&mut self, window: i64, cpu: Option<u32>) -> &mut CaptureStatsRow {
        let i = match self.rows.iter().position(|r| r.cpu == cpu) {
            Some(i) => i,
            None => {
                self.rows.push(CaptureStatsRow {
                    window_start_unix_ns: window,
                    window_ns: self.window_ns as u64,
                    cpu,
                    ..Default::default()
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }
}

/// The `capture_stats` counter of resyncs after bytes the capture cut or lost (a part of the
/// `resyncs` column): what `report` tells apart from parser trouble.
pub const GAP_RESYNCS: &str = "parse.gap_resyncs";

/// Adds `value` to the named counter of a `capture_stats` row.
pub(crate) fn add_counter(counters: &mut Vec<(&'static str, u64)>, name: &'static str, value: u64) {
    match counters.iter_mut().find(|(n, _)| *n == name) {
        Some((_, total)) => *total += value,
        None => counters.push((name, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(ts: u64, drops: u64, emitted: [u64; 2], failed: [u64; 2]) -> CounterSnapshot {
        CounterSnapshot {
            monotonic_ns: ts,
            ring_drops: drops,
            tls_attached: 0,
            tls_attach_failed: 0,
            per_cpu: (0..2)
                .map(|i| KernelCounters {
                    events_emitted: emitted[i],
                    bytes_emitted: emitted[i] * 10,
                    events_failed: failed[i],
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn snapshots_round_trip_through_the_recording_frame() {
        let mut s = snap(5, 1, [2, 3], [0, 4]);
        s.tls_attached = 8;
        s.tls_attach_failed = 1;
        s.per_cpu[1].tls_payloads = 6;
        s.per_cpu[0].tls_lost = 2;
        assert_eq!(CounterSnapshot::decode(&s.encode()), Some(s));
    }

    #[test]
    fn deltas_land_in_the_window_of_their_snapshot() {
        let mut w = KernelWindows::new(10, 0);
        assert!(w.observe(snap(1, 0, [5, 5], [0, 0])).rows.is_empty());
        let second = w.observe(snap(6, 2, [7, 5], [0, 1]));
        assert!(second.rows.is_empty());
        assert_eq!(second.complete_until_unix_ns, 6);
        let KernelRows {
            rows,
            complete_until_unix_ns,
        } = w.observe(snap(12, 2, [8, 9], [0, 1]));
        assert_eq!(complete_until_unix_ns, 12);
        // window [0, 10): totals of the first two snapshots
        let cpu0 = rows.iter().find(|r| r.cpu == Some(0)).unwrap();
        let cpu1 = rows.iter().find(|r| r.cpu == Some(1)).unwrap();
        let machine = rows.iter().find(|r| r.cpu.is_none()).unwrap();
        assert_eq!((cpu0.events, cpu0.bytes, cpu0.lost_samples), (7, 70, 0));
        assert_eq!((cpu1.events, cpu1.lost_samples), (5, 1));
        assert_eq!(machine.ring_drops, 2);
        let KernelRows {
            rows: rest,
            complete_until_unix_ns,
        } = w.finish();
        assert_eq!(complete_until_unix_ns, i64::MAX);
        assert_eq!(rest.iter().find(|r| r.cpu == Some(1)).unwrap().events, 4);
        assert_eq!(rest[0].window_start_unix_ns, 10);
    }

    #[test]
    fn kernel_counters_without_a_column_land_in_the_counters_map() {
        let mut w = KernelWindows::new(10, 0);
        let mut first = snap(1, 0, [0, 0], [0, 0]);
        first.per_cpu[1].classified = 2;
        let mut second = snap(6, 0, [0, 0], [0, 0]);
        second.per_cpu[1].classified = 5;
        second.per_cpu[1].classify_checks = 9;
        w.observe(first);
        w.observe(second);
        let rows = w.finish().rows;
        let cpu1 = rows.iter().find(|r| r.cpu == Some(1)).unwrap();
        let get = |name| {
            cpu1.counters
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
        };
        assert_eq!(get("kernel.classified"), Some(5));
        assert_eq!(get("kernel.classify_checks"), Some(9));
        assert_eq!(get("kernel.ignored"), Some(0));
    }
}
