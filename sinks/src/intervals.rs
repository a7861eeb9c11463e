//! Builds the `intervals` table's Arrow columns from [`IntervalRow`]s, and the heatmap's file
//! metadata.
//!
//! `heatmap_counts` is `list<list<int64>>`: the outer list has one entry per heatmap sub-window
//! (`window_ns / heatmap_sub_window_ns`, in time order), each inner list one count per latency
//! bucket, so a per-second heatmap (time × latency bucket, colour = count) is drawn from this
//! table alone by exploding the outer list with its index: `window_start + index *
//! heatmap_sub_window_ns`. Errors are in the rows with `status = 'error'`.
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use hdrhistogram::serialization::{Serializer, V2Serializer};
use l7tap_aggregate::{
    IntervalRow, HEATMAP_BUCKETS, HEATMAP_BUCKET_UPPER_BOUNDS_NS, HISTOGRAM_HIGHEST_NS,
    HISTOGRAM_LOWEST_DISCERNIBLE_NS, HISTOGRAM_LOWEST_NS, HISTOGRAM_SIGNIFICANT_DIGITS,
};

use crate::schema::Table;
use crate::table::TableColumns;
use crate::time::NANOS_PER_MICRO;

/// File metadata describing the heatmap buckets and the histogram encoding.
pub fn heatmap_metadata() -> Vec<(String, String)> {
    let bounds: Vec<String> = HEATMAP_BUCKET_UPPER_BOUNDS_NS
        .iter()
        .map(|b| b.to_string())
        .collect();
    vec![
        (
            "l7tap.heatmap.bucket_upper_bounds_ns".to_string(),
            format!("[{}]", bounds.join(",")),
        ),
        (
            "l7tap.heatmap.buckets".to_string(),
            format!(
                "{HEATMAP_BUCKETS} buckets: bucket k counts durations d with bound[k-1] < d <= bound[k] (bound[-1] = 0); the last bucket counts d > {}",
                HEATMAP_BUCKET_UPPER_BOUNDS_NS[HEATMAP_BUCKET_UPPER_BOUNDS_NS.len() - 1]
            ),
        ),
        (
            "l7tap.hdr".to_string(),
            format!(
                "HdrHistogram V2 serialization (not compressed), values in ns, lowest discernible {HISTOGRAM_LOWEST_DISCERNIBLE_NS}, durations clamped to [{HISTOGRAM_LOWEST_NS}, {HISTOGRAM_HIGHEST_NS}], {HISTOGRAM_SIGNIFICANT_DIGITS} significant digits"
            ),
        ),
    ]
}

/// Column builders of the `intervals` table, in schema order.
pub struct IntervalColumns {
    rows: usize,
    hdr_buffer: Vec<u8>,
    serializer: V2Serializer,
    window_start: TimestampMicrosecondBuilder,
    window_ns: Int64Builder,
    protocol: StringBuilder,
    interface: StringBuilder,
    side: StringBuilder,
    client_addr: StringBuilder,
    comm: StringBuilder,
    server_addr: StringBuilder,
    operation: StringBuilder,
    status: StringBuilder,
    count: Int64Builder,
    errors: Int64Builder,
    sum_ns: Int64Builder,
    min_ns: Int64Builder,
    max_ns: Int64Builder,
    p50_ns: Int64Builder,
    p90_ns: Int64Builder,
    p99_ns: Int64Builder,
    p999_ns: Int64Builder,
    hdr: BinaryBuilder,
    heatmap_counts: ListBuilder<ListBuilder<Int64Builder>>,
    heatmap_sub_window_ns: Int64Builder,
    client_app: StringBuilder,
    client_process: StringBuilder,
    fingerprint: Int64Builder,
}

impl Default for IntervalColumns {
    fn default() -> Self {
        Self::new()
    }
}

fn to_i64(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

impl IntervalColumns {
    pub fn new() -> Self {
        IntervalColumns {
            rows: 0,
            hdr_buffer: Vec::new(),
            serializer: V2Serializer::new(),
            window_start: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            window_ns: Int64Builder::new(),
            protocol: StringBuilder::new(),
            interface: StringBuilder::new(),
            side: StringBuilder::new(),
            client_addr: StringBuilder::new(),
            comm: StringBuilder::new(),
            server_addr: StringBuilder::new(),
            operation: StringBuilder::new(),
            status: StringBuilder::new(),
            count: Int64Builder::new(),
            errors: Int64Builder::new(),
            sum_ns: Int64Builder::new(),
            min_ns: Int64Builder::new(),
            max_ns: Int64Builder::new(),
            p50_ns: Int64Builder::new(),
            p90_ns: Int64Builder::new(),
            p99_ns: Int64Builder::new(),
            p999_ns: Int64Builder::new(),
            hdr: BinaryBuilder::new(),
            heatmap_counts: ListBuilder::new(ListBuilder::new(Int64Builder::new())),
            heatmap_sub_window_ns: Int64Builder::new(),
            client_app: StringBuilder::new(),
            client_process: StringBuilder::new(),
            fingerprint: Int64Builder::new(),
        }
    }

    /// The row's `window_start` in Unix µs.
    pub fn ts_micros(row: &IntervalRow) -> i64 {
        row.window_start_unix_ns.div_euclid(NANOS_PER_MICRO)
    }

    /// Appends one row.
    pub fn append(&mut self, row: &IntervalRow) {
        use std::fmt::Write as _;
        self.rows += 1;
        let key = &row.key;
        self.window_start.append_value(Self::ts_micros(row));
        self.window_ns.append_value(to_i64(row.window_ns));
        self.protocol.append_value(key.protocol.family());
        self.interface.append_value(key.protocol.interface());
        self.side.append_value(key.side.name());
        let _ = write!(self.client_addr, "{}", key.client_ip);
        self.client_addr.append_value("");
        self.comm.append_value(&key.comm);
        self.client_app.append_value(&key.client_app);
        self.client_process.append_value(&key.client_process);
        self.fingerprint.append_value(key.fingerprint.as_i64());
        let _ = write!(self.server_addr, "{}", key.server_addr);
        self.server_addr.append_value("");
        self.operation.append_value(&key.operation);
        self.status.append_value(key.status.name());
        self.count.append_value(to_i64(row.count));
        self.errors.append_value(to_i64(row.errors));
        self.sum_ns.append_value(to_i64(row.sum_ns));
        self.min_ns.append_value(to_i64(row.min_ns));
        self.max_ns.append_value(to_i64(row.max_ns));
        // Built once for the quantiles and the serialized histogram (an inline row's is
        // built from its samples).
        let histogram = row.histogram();
        let [p50, p90, p99, p999] = row.quantiles_ns_of(&histogram, [0.5, 0.9, 0.99, 0.999]);
        self.p50_ns.append_value(to_i64(p50));
        self.p90_ns.append_value(to_i64(p90));
        self.p99_ns.append_value(to_i64(p99));
        self.p999_ns.append_value(to_i64(p999));
        self.hdr_buffer.clear();
        match self.serializer.serialize(&*histogram, &mut self.hdr_buffer) {
            Ok(_) => self.hdr.append_value(&self.hdr_buffer),
            // Serializing into a Vec fails only for histograms too large to describe.
            Err(_) => self.hdr.append_value([]),
        }
        for sub_window in 0..row.sub_windows() {
            let inner = self.heatmap_counts.values();
            for &count in row.heatmap_sub_window(sub_window) {
                inner.values().append_value(to_i64(count));
            }
            inner.append(true);
        }
        self.heatmap_counts.append(true);
        self.heatmap_sub_window_ns
            .append_value(to_i64(row.heatmap_sub_window_ns));
    }
}

impl TableColumns for IntervalColumns {
    const TABLE: Table = Table::Intervals;

    fn len(&self) -> usize {
        self.rows
    }

    fn estimated_bytes(&self) -> usize {
        self.hdr.values_slice().len() + self.rows * (200 + 8 * 10 * HEATMAP_BUCKETS)
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut f = std::mem::take(self);
        vec![
            Arc::new(f.window_start.finish()),
            Arc::new(f.window_ns.finish()),
            Arc::new(f.protocol.finish()),
            Arc::new(f.side.finish()),
            Arc::new(f.client_addr.finish()),
            Arc::new(f.comm.finish()),
            Arc::new(f.server_addr.finish()),
            Arc::new(f.operation.finish()),
            Arc::new(f.status.finish()),
            Arc::new(f.count.finish()),
            Arc::new(f.errors.finish()),
            Arc::new(f.sum_ns.finish()),
            Arc::new(f.min_ns.finish()),
            Arc::new(f.max_ns.finish()),
            Arc::new(f.p50_ns.finish()),
            Arc::new(f.p90_ns.finish()),
            Arc::new(f.p99_ns.finish()),
            Arc::new(f.p999_ns.finish()),
            Arc::new(f.hdr.finish()),
            Arc::new(f.heatmap_counts.finish()),
            Arc::new(f.heatmap_sub_window_ns.finish()),
            Arc::new(f.interface.finish()),
            Arc::new(f.client_app.finish()),
            Arc::new(f.client_process.finish()),
            Arc::new(f.fingerprint.finish()),
        ]
    }
}
