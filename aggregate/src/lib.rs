//! Per-interval latency aggregation of captured requests: the rows of the `intervals` table.
//!
//! An [`Aggregator`] is fed [`CapturedRequest`]s one at a time ([`Aggregator::record`]) and keeps,
//! per wall-clock-aligned window (default 10 s) and per [`IntervalKey`] (protocol, side, client
//! IP without port, comm, server `ip:port`, operation, status, the client's application
//! and process name when known, and the query fingerprint):
//!
//! * count, errors (requests with [`Status::Error`]), sum, min and max of the durations;
//! * an HDR histogram of the durations ([`hdrhistogram`], values in ns, 1 µs .. 1 h, 3 significant
//!   digits, lowest discernible value 1 µs as HdrHistogram defines it: a recorded value reads back
//!   within 1/1024 of itself or 512 ns, whichever is larger; durations below 1 µs are recorded as
//!   1 µs, above 1 h as 1 h; min/max/sum stay exact);
//! * heatmap counts: per heatmap sub-window (default 1 s) the number of requests in each of the
//!   fixed latency buckets [`HEATMAP_BUCKET_UPPER_BOUNDS_NS`] (a 1-2-5 series from 1 µs to 1 h plus
//!   an overflow bucket). Failed requests are in the rows whose status is `error`, because the
//!   status is part of the key.
//!
//! A request belongs to the window and sub-window containing its *end* time (the answer's last
//! byte), converted from CLOCK_MONOTONIC to Unix time with the configured offset, so that records
//! reach an aggregator roughly in window order. [`Aggregator::flush_until`] closes every window
//! that ends at or before the given Unix time and returns its rows; a record that arrives for an
//! already closed window is counted into the oldest open window (first sub-window) and in
//! [`Aggregator::late_records`].
//!
//! Windows stay open (in memory) until flushed: call `flush_until` regularly, e.g. every second
//! with the current time minus a grace period of a second or two for records still in flight.
//!
//! The aggregator is pure: no threads, no clock, no I/O. The intended use is one aggregator per
//! actor thread (no lock on the per-request path) whose rows are merged at flush time, either by
//! merging whole aggregators ([`Aggregator::merge`]) or the rows of several aggregators for the
//! same windows ([`merge_interval_rows`]).
//!
//! Per-request cost: four string-interning look-ups (comm, operation, client application and
//! process) and one look-up of a
//! fixed-size key in a hash map with a fast non-cryptographic hash; no allocation in steady state.
//! State is recycled between windows (key statistics and histograms go back to pools), and the
//! first [`INLINE_SAMPLES`] durations of a key in a window are kept inline so that rarely seen keys
//! never need a (16 KiB+) dense histogram while the window is open.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hdrhistogram::Histogram;
use l7tap_protocols::fingerprint::Fingerprint;
use l7tap_protocols::{CapturedBatch, CapturedRequest, Protocol, Side, Status};

/// Shortest duration recorded in the histograms (1 µs); shorter durations are recorded as this.
pub const HISTOGRAM_LOWEST_NS: u64 = 1_000;
/// The histograms' HDR "lowest discernible value" (1 µs): with 3 significant digits a value
/// reads back within 1/1024 of itself or 512 ns (the unit HDR rounds 1 µs down to), whichever is
/// larger. A dense histogram of this kind covering up to 1 s takes 12 Ki counters (96 KiB); with
/// a lowest discernible value of 1 ns it would take twice as many.
pub const HISTOGRAM_LOWEST_DISCERNIBLE_NS: u64 = HISTOGRAM_LOWEST_NS;
/// Highest duration the histograms track (1 h); longer durations are recorded as this.
pub const HISTOGRAM_HIGHEST_NS: u64 = 3_600_000_000_000;
/// Significant decimal digits kept by the histograms.
pub const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;

/// Upper bounds (inclusive, ns) of the heatmap latency buckets: a 1-2-5 series from 1 µs to
/// 2000 s, then 1 h. Bucket `k` counts durations `d` with `bounds[k-1] < d <= bounds[k]`
/// (`bounds[-1]` = 0, so bucket 0 also holds sub-microsecond durations); the last bucket, index
/// `HEATMAP_BUCKET_UPPER_BOUNDS_NS.len()`, counts durations above 1 h.
pub const HEATMAP_BUCKET_UPPER_BOUNDS_NS: [u64; 30] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    20_000_000_000,
    50_000_000_000,
    100_000_000_000,
    200_000_000_000,
    500_000_000_000,
    1_000_000_000_000,
    2_000_000_000_000,
    3_600_000_000_000,
];

/// Number of heatmap latency buckets: one per upper bound plus the overflow bucket.
pub const HEATMAP_BUCKETS: usize = HEATMAP_BUCKET_UPPER_BOUNDS_NS.len() + 1;

/// Samples a key with a dense histogram buffers before recording them (see `KeyStats::pending`).
const PENDING_SAMPLES: usize = 256;

/// Reset dense histograms, each with its (empty) pending-sample buffer, for keys to reuse.
type HistogramPool = Vec<(Histogram<u64>, Vec<u64>)>;

/// Durations kept inline per key and window before a dense histogram is taken from the pool.
pub const INLINE_SAMPLES: usize = 16;

/// Default aggregation window: 10 s.
pub const DEFAULT_WINDOW_NS: u64 = 10_000_000_000;
/// Default heatmap sub-window: 1 s.
pub const DEFAULT_HEATMAP_SUB_WINDOW_NS: u64 = 1_000_000_000;

/// Index of the heatmap bucket for a duration (see [`HEATMAP_BUCKET_UPPER_BOUNDS_NS`]).
pub fn heatmap_bucket(duration_ns: u64) -> usize {
    HEATMAP_BUCKET_UPPER_BOUNDS_NS.partition_point(|&upper| upper < duration_ns)
}

/// A new, empty histogram with the aggregation's bounds. It starts small and grows (auto-resize)
/// up to the largest value recorded, which [`clamp_to_histogram_range`] keeps at or below 1 h.
pub fn new_duration_histogram() -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(
        HISTOGRAM_LOWEST_DISCERNIBLE_NS,
        2 * HISTOGRAM_LOWEST_DISCERNIBLE_NS,
        HISTOGRAM_SIGNIFICANT_DIGITS,
    )
    .expect("constant histogram bounds are valid");
    histogram.auto(true);
    histogram
}

/// Records a clamped duration, growing the histogram if needed (`saturating_record` would not
/// grow an auto-resizing histogram: it clamps to the current highest trackable value).
#[inline]
fn record_in(histogram: &mut Histogram<u64>, clamped_ns: u64) {
    if histogram.record(clamped_ns).is_err() {
        histogram.saturating_record(clamped_ns);
    }
}

/// The value recorded in a histogram for a duration: clamped to 1 µs ..= 1 h.
pub fn clamp_to_histogram_range(duration_ns: u64) -> u64 {
    duration_ns.clamp(HISTOGRAM_LOWEST_NS, HISTOGRAM_HIGHEST_NS)
}

/// The configuration of an [`Aggregator`] is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregatorConfigError {
    #[error("window_ns and heatmap_sub_window_ns must be positive")]
    ZeroDuration,
    #[error(
        "window_ns ({window_ns}) must be a multiple of heatmap_sub_window_ns ({sub_window_ns})"
    )]
    WindowNotMultipleOfSubWindow { window_ns: u64, sub_window_ns: u64 },
    #[error("window_ns ({0}) must be at most one day")]
    WindowTooLong(u64),
}

/// Window sizes and the clock conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggregatorConfig {
    /// Aggregation window (default 10 s). Windows start at multiples of this since the Unix epoch.
    pub window_ns: u64,
    /// Heatmap sub-window (default 1 s); `window_ns` must be a multiple of it.
    pub heatmap_sub_window_ns: u64,
    /// Added to record timestamps (CLOCK_MONOTONIC ns) to get Unix time in ns.
    pub monotonic_to_unix_offset_ns: i64,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            window_ns: DEFAULT_WINDOW_NS,
            heatmap_sub_window_ns: DEFAULT_HEATMAP_SUB_WINDOW_NS,
            monotonic_to_unix_offset_ns: 0,
        }
    }
}

impl AggregatorConfig {
    /// Heatmap sub-windows per window.
    pub fn sub_windows(&self) -> usize {
        (self.window_ns / self.heatmap_sub_window_ns) as usize
    }

    fn validate(&self) -> Result<(), AggregatorConfigError> {
        if self.window_ns == 0 || self.heatmap_sub_window_ns == 0 {
            return Err(AggregatorConfigError::ZeroDuration);
        }
        if self.window_ns > 86_400_000_000_000 {
            return Err(AggregatorConfigError::WindowTooLong(self.window_ns));
        }
        #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85
        if self.window_ns % self.heatmap_sub_window_ns != 0 {
            return Err(AggregatorConfigError::WindowNotMultipleOfSubWindow {
                window_ns: self.window_ns,
                sub_window_ns: self.heatmap_sub_window_ns,
            });
        }
        Ok(())
    }
}

/// What an interval row is aggregated by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntervalKey {
    pub protocol: Protocol,
    pub side: Side,
    /// Client IP (IPv4-mapped IPv6 addresses are shown as IPv4), without the port.
    pub client_ip: IpAddr,
    pub comm: Arc<str>,
    pub server_addr: SocketAddr,
    pub operation: Arc<str>,
    pub status: Status,
    /// The client's application (the observed process on the client side, the joined local
    /// peer on the server side); empty when unknown (a remote client).
    pub client_app: Arc<str>,
    /// The client's process name, known as `client_app` is; empty when unknown.
    pub client_process: Arc<str>,
    /// The requests' query fingerprint (`other` for those folded past the cap).
    pub fingerprint: Fingerprint,
}

/// One row of the `intervals` table: the statistics of one key in one window.
#[derive(Clone, Debug)]
pub struct IntervalRow {
    /// Window start, Unix time in ns (a multiple of `window_ns`).
    pub window_start_unix_ns: i64,
    pub window_ns: u64,
    pub key: IntervalKey,
    pub count: u64,
    /// Requests with status `error` (equals `count` in `error` rows, 0 otherwise).
    pub errors: u64,
    /// Sum of the exact durations (saturating).
    pub sum_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    /// Durations clamped to 1 µs ..= 1 h, 3 significant digits (see [`IntervalRow::histogram`]).
    pub durations: RowDurations,
    pub heatmap_sub_window_ns: u64,
    /// `window_ns / heatmap_sub_window_ns` runs of [`HEATMAP_BUCKETS`] counts, sub-window by
    /// sub-window (row-major: `heatmap[sub_window * HEATMAP_BUCKETS + bucket]`).
    pub heatmap: Vec<u64>,
}

/// The durations of one [`IntervalRow`], clamped to 1 µs ..= 1 h: up to [`INLINE_SAMPLES`] kept
/// as values, more in a dense HDR histogram. A dense histogram takes 16 KiB or more however few
/// values it holds, and a window has a row per key (per client address, among others): with
/// 10 000 clients of a few requests each, dense rows alone would take hundreds of MiB.
#[derive(Clone, Debug)]
pub enum RowDurations {
    Inline {
        samples: [u64; INLINE_SAMPLES],
        len: usize,
    },
    Histogram(Histogram<u64>),
}

impl RowDurations {
    /// The durations as an HDR histogram (built on the fly from inline values).
    pub fn histogram(&self) -> Cow<'_, Histogram<u64>> {
        match self {
            RowDurations::Histogram(histogram) => Cow::Borrowed(histogram),
            RowDurations::Inline { samples, len } => {
                let mut histogram = new_duration_histogram();
                for &sample in &samples[..*len] {
                    record_in(&mut histogram, sample);
                }
                Cow::Owned(histogram)
            }
        }
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        match self {
            RowDurations::Histogram(histogram) => histogram.len(),
            RowDurations::Inline { len, .. } => *len as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add(&mut self, other: &RowDurations) -> Result<(), MergeError> {
        if let (
            RowDurations::Inline { samples, len },
            RowDurations::Inline {
                samples: theirs,
                len: their_len,
            },
        ) = (&mut *self, other)
        {
            if *len + their_len <= INLINE_SAMPLES {
                samples[*len..*len + their_len].copy_from_slice(&theirs[..*their_len]);
                *len += their_len;
                return Ok(());
            }
        }
        let mut histogram = match std::mem::replace(
            self,
            RowDurations::Inline {
                samples: [0; INLINE_SAMPLES],
                len: 0,
            },
        ) {
            RowDurations::Histogram(histogram) => histogram,
            inline => inline.histogram().into_owned(),
        };
        let result = match other {
            RowDurations::Histogram(theirs) => histogram
                .add(theirs)
                .map_err(|_| MergeError::HistogramRange),
            RowDurations::Inline { samples, len } => {
                for &sample in &samples[..*len] {
                    record_in(&mut histogram, sample);
                }
                Ok(())
            }
        };
        *self = RowDurations::Histogram(histogram);
        result
    }
}

impl IntervalRow {
    /// The durations as an HDR histogram (what the `hdr` column holds).
    pub fn histogram(&self) -> Cow<'_, Histogram<u64>> {
        self.durations.histogram()
    }

    /// Durations at each of `quantiles` (0..=1), bounded by the exact min and max; builds the
    /// histogram of an inline row once for all of them.
    pub fn quantiles_ns<const N: usize>(&self, quantiles: [f64; N]) -> [u64; N] {
        self.quantiles_ns_of(&self.histogram(), quantiles)
    }

    /// [`IntervalRow::quantiles_ns`] with the row's histogram already at hand. Ascending
    /// quantiles are found in one pass over the counts (the same values as one
    /// `value_at_quantile` each, which scanned the counts once per quantile).
    pub fn quantiles_ns_of<const N: usize>(
        &self,
        histogram: &Histogram<u64>,
        quantiles: [f64; N],
    ) -> [u64; N] {
        if self.count == 0 {
            return [0; N];
        }
        let bound = |value: u64| value.clamp(self.min_ns, self.max_ns);
        if quantiles.is_sorted() {
            let mut values = histogram.value_at_quantiles(quantiles);
            quantiles.map(|_| bound(values.next().unwrap_or_default()))
        } else {
            quantiles.map(|q| bound(histogram.value_at_quantile(q)))
        }
    }

    /// Heatmap sub-windows in this row.
    pub fn sub_windows(&self) -> usize {
        self.heatmap.len() / HEATMAP_BUCKETS
    }

    /// The counts of one heatmap sub-window, one per latency bucket.
    pub fn heatmap_sub_window(&self, index: usize) -> &[u64] {
        &self.heatmap[index * HEATMAP_BUCKETS..(index + 1) * HEATMAP_BUCKETS]
    }

    /// Duration at `quantile` (0..=1) from the histogram, bounded by the exact min and max.
    pub fn quantile_ns(&self, quantile: f64) -> u64 {
        self.quantiles_ns([quantile])[0]
    }

    /// Adds another row of the same window and key (e.g. from another actor thread's aggregator).
    pub fn merge_from(&mut self, other: &IntervalRow) -> Result<(), MergeError> {
        if self.window_start_unix_ns != other.window_start_unix_ns
            || self.window_ns != other.window_ns
            || self.heatmap.len() != other.heatmap.len()
            || self.key != other.key
        {
            return Err(MergeError::DifferentWindowOrKey);
        }
        self.count += other.count;
        self.errors += other.errors;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.durations.add(&other.durations)?;
        for (mine, theirs) in self.heatmap.iter_mut().zip(&other.heatmap) {
            *mine += theirs;
        }
        Ok(())
    }
}

/// Rows or aggregators could not be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("the rows have different windows, heatmap layouts or keys")]
    DifferentWindowOrKey,
    #[error("the aggregators have different window or heatmap sub-window sizes")]
    DifferentConfig,
    #[error("a histogram could not hold the other's range")]
    HistogramRange,
}

/// Merges rows for the same (window, key) coming from several aggregators (one per actor
/// thread); the result is sorted by window then key.
pub fn merge_interval_rows(mut rows: Vec<IntervalRow>) -> Result<Vec<IntervalRow>, MergeError> {
    rows.sort_by(|a, b| (a.window_start_unix_ns, &a.key).cmp(&(b.window_start_unix_ns, &b.key)));
    let mut merged: Vec<IntervalRow> = Vec::with_capacity(rows.len());
    for row in rows {
        match merged.last_mut() {
            Some(last)
                if last.window_start_unix_ns == row.window_start_unix_ns && last.key == row.key =>
            {
                last.merge_from(&row)?
            }
            _ => merged.push(row),
        }
    }
    Ok(merged)
}

/// FxHash (as used by rustc): fast, not DoS-resistant, good enough for keys made of process
/// names, addresses and operation names.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add_word(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add_word(u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add_word(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.add_word(value as u64);
    }
    #[inline]
    fn write_u16(&mut self, value: u16) {
        self.add_word(value as u64);
    }
    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.add_word(value as u64);
    }
    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.add_word(value);
    }
    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.add_word(value as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxBuildHasher = BuildHasherDefault<FxHasher>;

/// Slots of [`StringInterner`]'s cache of recent strings by address.
const RECENT_SLOTS: usize = 64;

/// Strings (comm, operation) interned to small ids so that the per-request key is `Copy`.
#[derive(Clone)]
struct StringInterner {
    ids: HashMap<Box<str>, u32, FxBuildHasher>,
    strings: Vec<Arc<str>>,
    /// `(address, id)` of recently interned texts: most come from the same few places (a
    /// connection's comm, static operation names), so a lookup by address and one
    /// comparison replace hashing. The comparison keeps a reused address correct.
    recent: [(usize, u32); RECENT_SLOTS],
}

impl Default for StringInterner {
    fn default() -> Self {
        StringInterner {
            ids: HashMap::default(),
            strings: Vec::new(),
            recent: [(0, 0); RECENT_SLOTS],
        }
    }
}

impl StringInterner {
    #[inline]
    fn intern(&mut self, text: &str) -> u32 {
        let address = text.as_ptr() as usize;
        let slot = (address >> 3 ^ address >> 11) % RECENT_SLOTS;
        let (cached_address, cached_id) = self.recent[slot];
        if cached_address == address && *self.strings[cached_id as usize] == *text {
            return cached_id;
        }
        let id = match self.ids.get(text) {
            Some(&id) => id,
            None => {
                let id = self.strings.len() as u32;
                self.ids.insert(text.into(), id);
                self.strings.push(text.into());
                id
            }
        };
        self.recent[slot] = (address, id);
        id
    }

    fn resolve(&self, id: u32) -> &Arc<str> {
        &self.strings[id as usize]
    }
}

/// The per-request key: strings replaced by interned ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CompactKey {
    protocol: Protocol,
    side: Side,
    status: Status,
    comm: u32,
    operation: u32,
    client_ip: IpAddr,
    server_addr: SocketAddr,
    client_app: u32,
    client_process: u32,
    fingerprint: Fingerprint,
}

/// Statistics of one key in one window.
struct KeyStats {
    count: u64,
    errors: u64,
    sum_ns: u64,
    min_ns: u64,
    max_ns: u64,
    /// Clamped durations kept while `histogram` is `None`; the first `inline_len` are valid.
    inline_samples: [u64; INLINE_SAMPLES],
    inline_len: usize,
    histogram: Option<Histogram<u64>>,
    /// Clamped durations not yet recorded into `histogram`. A dense histogram spans hundreds
    /// of KiB: recording into it request by request, between other keys' requests, cost a
    /// cache miss each; recorded in runs, the misses overlap.
    pending: Vec<u64>,
    /// `sub_windows * HEATMAP_BUCKETS` counts, saturating. u32: a key's heatmap is 310 counts
    /// with the default 1 s sub-windows, and a window can hold a key per client.
    heatmap: Box<[u32]>,
}

impl KeyStats {
    fn new(sub_windows: usize) -> Self {
        KeyStats {
            count: 0,
            errors: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            inline_samples: [0; INLINE_SAMPLES],
            inline_len: 0,
            histogram: None,
            pending: Vec::new(),
            heatmap: vec![0; sub_windows * HEATMAP_BUCKETS].into_boxed_slice(),
        }
    }

    /// Clears the counters and hands the histogram (reset) back to the pool.
    fn reset_into(&mut self, free_histograms: &mut HistogramPool) {
        self.count = 0;
        self.errors = 0;
        self.sum_ns = 0;
        self.min_ns = u64::MAX;
        self.max_ns = 0;
        self.inline_len = 0;
        self.heatmap.fill(0);
        if let Some(mut histogram) = self.histogram.take() {
            histogram.reset();
            let mut pending = std::mem::take(&mut self.pending);
            pending.clear();
            free_histograms.push((histogram, pending));
        }
    }

    /// The dense histogram, taken from the pool (or created) and filled with the inline samples
    /// on first use.
    fn dense_histogram(&mut self, free_histograms: &mut HistogramPool) -> &mut Histogram<u64> {
        if self.histogram.is_none() {
            let (mut histogram, pending) = free_histograms.pop().unwrap_or_else(|| {
                (
                    new_duration_histogram(),
                    Vec::with_capacity(PENDING_SAMPLES),
                )
            });
            for &sample in &self.inline_samples[..self.inline_len] {
                record_in(&mut histogram, sample);
            }
            self.inline_len = 0;
            self.pending = pending;
            self.histogram = Some(histogram);
        }
        self.histogram.as_mut().expect("set above")
    }

    /// Records the pending samples into the histogram.
    fn settle(&mut self) {
        if let Some(histogram) = &mut self.histogram {
            for &sample in &self.pending {
                record_in(histogram, sample);
            }
        }
        self.pending.clear();
    }

    /// Adds one clamped duration to the inline samples or the histogram.
    #[inline]
    fn add_sample(&mut self, clamped_ns: u64, free_histograms: &mut HistogramPool) {
        match &mut self.histogram {
            Some(_) => {
                self.pending.push(clamped_ns);
                if self.pending.len() >= PENDING_SAMPLES {
                    self.settle();
                }
            }
            None if self.inline_len < INLINE_SAMPLES => {
                self.inline_samples[self.inline_len] = clamped_ns;
                self.inline_len += 1;
            }
            None => record_in(self.dense_histogram(free_histograms), clamped_ns),
        }
    }

    #[inline]
    fn record(
        &mut self,
        duration_ns: u64,
        is_error: bool,
        sub_window: usize,
        free_histograms: &mut HistogramPool,
    ) {
        self.add_sample(clamp_to_histogram_range(duration_ns), free_histograms);
        self.count += 1;
        self.errors += is_error as u64;
        self.sum_ns = self.sum_ns.saturating_add(duration_ns);
        self.min_ns = self.min_ns.min(duration_ns);
        self.max_ns = self.max_ns.max(duration_ns);
        let cell = &mut self.heatmap[sub_window * HEATMAP_BUCKETS + heatmap_bucket(duration_ns)];
        *cell = cell.saturating_add(1);
    }

    /// Adds `other` into `self`. With `late`, all of `other`'s heatmap counts go to the first
    /// sub-window, like late records.
    fn merge_from(
        &mut self,
        other: &KeyStats,
        late: bool,
        free_histograms: &mut HistogramPool,
    ) -> Result<(), MergeError> {
        if let Some(theirs) = &other.histogram {
            self.dense_histogram(free_histograms)
                .add(theirs)
                .map_err(|_| MergeError::HistogramRange)?;
        }
        for &sample in other.inline_samples[..other.inline_len]
            .iter()
            .chain(&other.pending)
        {
            self.add_sample(sample, free_histograms);
        }
        self.count += other.count;
        self.errors += other.errors;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        if late {
            for (index, count) in other.heatmap.iter().enumerate() {
                let cell = &mut self.heatmap[index % HEATMAP_BUCKETS];
                *cell = cell.saturating_add(*count);
            }
        } else {
            for (mine, theirs) in self.heatmap.iter_mut().zip(other.heatmap.iter()) {
                *mine = mine.saturating_add(*theirs);
            }
        }
        Ok(())
    }

    fn finish_row(
        &mut self,
        window_start_unix_ns: i64,
        config: &AggregatorConfig,
        key: IntervalKey,
    ) -> IntervalRow {
        self.settle();
        let durations = match &self.histogram {
            Some(histogram) => RowDurations::Histogram(histogram.clone()),
            None => RowDurations::Inline {
                samples: self.inline_samples,
                len: self.inline_len,
            },
        };
        IntervalRow {
            window_start_unix_ns,
            window_ns: config.window_ns,
            key,
            count: self.count,
            errors: self.errors,
            sum_ns: self.sum_ns,
            min_ns: if self.count == 0 { 0 } else { self.min_ns },
            max_ns: self.max_ns,
            durations,
            heatmap_sub_window_ns: config.heatmap_sub_window_ns,
            heatmap: self.heatmap.iter().map(|&count| u64::from(count)).collect(),
        }
    }
}

/// One open window.
struct Window {
    start_unix_ns: i64,
    stats: HashMap<CompactKey, KeyStats, FxBuildHasher>,
}

/// Aggregates captured requests into interval rows; see the module documentation.
pub struct Aggregator {
    config: AggregatorConfig,
    strings: StringInterner,
    /// Open windows, ascending by start; usually one or two.
    windows: Vec<Window>,
    /// Windows starting before this (Unix ns) were flushed.
    closed_before_unix_ns: i64,
    free_stats: Vec<KeyStats>,
    free_histograms: HistogramPool,
    free_maps: Vec<HashMap<CompactKey, KeyStats, FxBuildHasher>>,
    late_records: u64,
    records: u64,
}

impl Aggregator {
    pub fn new(config: AggregatorConfig) -> Result<Self, AggregatorConfigError> {
        config.validate()?;
        Ok(Aggregator {
            config,
            strings: StringInterner::default(),
            windows: Vec::new(),
            closed_before_unix_ns: i64::MIN,
            free_stats: Vec::new(),
            free_histograms: Vec::new(),
            free_maps: Vec::new(),
            late_records: 0,
            records: 0,
        })
    }

    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// Records that arrived after their window was flushed (counted into the oldest open window).
    pub fn late_records(&self) -> u64 {
        self.late_records
    }

    /// Records seen since creation.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Windows currently open.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Converts a CLOCK_MONOTONIC timestamp to Unix ns with the configured offset.
    #[inline]
    pub fn monotonic_to_unix_ns(&self, monotonic_ns: u64) -> i64 {
        (monotonic_ns as i64).saturating_add(self.config.monotonic_to_unix_offset_ns)
    }

    /// Records every request of `batch`.
    pub fn record_batch(&mut self, batch: &CapturedBatch) {
        for request in batch.iter() {
            self.record(&request);
        }
    }

    /// Adds one request. Allocates only for keys, strings or windows not seen before (or when
    /// the pools have not yet grown to the steady-state number of keys).
    #[inline]
    pub fn record(&mut self, request: &CapturedRequest<'_>) {
        let record = request.record;
        let conn = &**request.conn;
        let duration_ns = record.end_ns.saturating_sub(record.start_ns);
        let end_unix_ns = self.monotonic_to_unix_ns(record.end_ns);
        let client = conn.client_end();
        let key = CompactKey {
            client_app: self.strings.intern(client.map_or("", |c| c.app)),
            client_process: self.strings.intern(client.map_or("", |c| c.process)),
            protocol: record.protocol,
            side: conn.side,
            status: record.status,
            comm: self.strings.intern(&conn.comm),
            operation: self.strings.intern(record.operation),
            client_ip: conn.client_addr.ip().to_canonical(),
            server_addr: canonical_socket_addr(conn.server_addr),
            fingerprint: request.fingerprint,
        };
        self.record_compact(
            key,
            end_unix_ns,
            duration_ns,
            record.status == Status::Error,
        );
    }

    #[inline]
    fn record_compact(
        &mut self,
        key: CompactKey,
        end_unix_ns: i64,
        duration_ns: u64,
        is_error: bool,
    ) {
        self.records += 1;
        let window_ns = self.config.window_ns as i64;
        let mut window_start = end_unix_ns.div_euclid(window_ns) * window_ns;
        let mut sub_window =
            ((end_unix_ns - window_start) as u64 / self.config.heatmap_sub_window_ns) as usize;
        if window_start < self.closed_before_unix_ns {
            self.late_records += 1;
            window_start = self.closed_before_unix_ns;
            sub_window = 0;
        }
        let window_index = self.window_index(window_start);
        let Aggregator {
            windows,
            free_stats,
            free_histograms,
            config,
            ..
        } = self;
        let stats = windows[window_index].stats.entry(key).or_insert_with(|| {
            free_stats
                .pop()
                .unwrap_or_else(|| KeyStats::new(config.sub_windows()))
        });
        stats.record(duration_ns, is_error, sub_window, free_histograms);
    }

    /// Index in `self.windows` of the window starting at `start`, created if needed.
    #[inline]
    fn window_index(&mut self, start_unix_ns: i64) -> usize {
        if let Some(last) = self.windows.last() {
            if last.start_unix_ns == start_unix_ns {
                return self.windows.len() - 1;
            }
        }
        match self
            .windows
            .binary_search_by_key(&start_unix_ns, |window| window.start_unix_ns)
        {
            Ok(index) => index,
            Err(index) => {
                let stats = self.free_maps.pop().unwrap_or_default();
                self.windows.insert(
                    index,
                    Window {
                        start_unix_ns,
                        stats,
                    },
                );
                index
            }
        }
    }

    /// Closes every window ending at or before `until_unix_ns` and returns its rows, sorted by
    /// window start then key. Records for those windows that arrive later are late (see
    /// [`Aggregator::late_records`]).
    pub fn flush_until(&mut self, until_unix_ns: i64) -> Vec<IntervalRow> {
        let window_ns = self.config.window_ns as i64;
        // Windows starting before this boundary end at or before `until_unix_ns`.
        let boundary = until_unix_ns.div_euclid(window_ns) * window_ns;
        self.closed_before_unix_ns = self.closed_before_unix_ns.max(boundary);
        let closing = self
            .windows
            .partition_point(|window| window.start_unix_ns < boundary);
        let mut rows = Vec::new();
        let mut live_stats = 0;
        for mut window in self.windows.drain(..closing).collect::<Vec<_>>() {
            live_stats += window.stats.len();
            for (compact, mut stats) in window.stats.drain() {
                let key = self.expand_key(&compact);
                rows.push(stats.finish_row(window.start_unix_ns, &self.config, key));
                stats.reset_into(&mut self.free_histograms);
                self.free_stats.push(stats);
            }
            self.free_maps.push(window.stats);
        }
        rows.sort_by(|a, b| {
            (a.window_start_unix_ns, &a.key).cmp(&(b.window_start_unix_ns, &b.key))
        });
        // Keep the pools no larger than what the windows just closed and still open use, so a
        // burst of keys does not pin memory forever.
        let open_stats: usize = self.windows.iter().map(|window| window.stats.len()).sum();
        let keep = (live_stats + open_stats).max(16);
        self.free_stats.truncate(keep);
        self.free_histograms.truncate(keep);
        self.free_maps.truncate(4);
        rows
    }

    fn expand_key(&self, compact: &CompactKey) -> IntervalKey {
        IntervalKey {
            protocol: compact.protocol,
            side: compact.side,
            client_ip: compact.client_ip,
            comm: self.strings.resolve(compact.comm).clone(),
            server_addr: compact.server_addr,
            operation: self.strings.resolve(compact.operation).clone(),
            status: compact.status,
            client_app: self.strings.resolve(compact.client_app).clone(),
            client_process: self.strings.resolve(compact.client_process).clone(),
            fingerprint: compact.fingerprint,
        }
    }

    /// Adds the state of `other` (e.g. another actor thread's aggregator) to this one. Windows
    /// this aggregator already flushed are counted into its oldest open window, as late records.
    pub fn merge(&mut self, other: &Aggregator) -> Result<(), MergeError> {
        if self.config.window_ns != other.config.window_ns
            || self.config.heatmap_sub_window_ns != other.config.heatmap_sub_window_ns
        {
            return Err(MergeError::DifferentConfig);
        }
        self.records += other.records;
        self.late_records += other.late_records;
        for other_window in &other.windows {
            let mut start = other_window.start_unix_ns;
            let late = start < self.closed_before_unix_ns;
            if late {
                start = self.closed_before_unix_ns;
            }
            let window_index = self.window_index(start);
            for (other_key, other_stats) in &other_window.stats {
                let key = CompactKey {
                    comm: self.strings.intern(other.strings.resolve(other_key.comm)),
                    client_app: self
                        .strings
                        .intern(other.strings.resolve(other_key.client_app)),
                    client_process: self
                        .strings
                        .intern(other.strings.resolve(other_key.client_process)),
                    operation: self
                        .strings
                        .intern(other.strings.resolve(other_key.operation)),
                    ..*other_key
                };
                let Aggregator {
                    windows,
                    free_stats,
                    free_histograms,
                    config,
                    late_records,
                    ..
                } = self;
                if late {
                    *late_records += other_stats.count;
                }
                let stats = windows[window_index].stats.entry(key).or_insert_with(|| {
                    free_stats
                        .pop()
                        .unwrap_or_else(|| KeyStats::new(config.sub_windows()))
                });
                stats.merge_from(other_stats, late, free_histograms)?;
            }
        }
        Ok(())
    }
}

/// `addr` with an IPv4-mapped IPv6 address shown as IPv4.
pub fn canonical_socket_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
