//! The `capture_stats` table: [`CaptureStatsRow`], the plain struct callers fill, and its Arrow
//! column builders.
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder,
};

use crate::schema::{Table, MAP_FIELD_NAMES};
use crate::table::TableColumns;
use crate::time::NANOS_PER_MICRO;

/// Capture counters for one window (and one CPU, or the whole machine). Counters are the amounts
/// during the window, not running totals; `connections` is whatever the capture path reports
/// (the number tracked at the window's end).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStatsRow {
    /// Window start, Unix time in ns.
    pub window_start_unix_ns: i64,
    /// Window length in ns.
    pub window_ns: u64,
    /// CPU the counters are for; `None` for counters of the whole machine.
    pub cpu: Option<u32>,
    pub events: u64,
    pub bytes: u64,
    pub lost_samples: u64,
    pub ring_drops: u64,
    pub parse_errors: u64,
    pub resyncs: u64,
    pub connections: u64,
    /// Named counters beyond the fixed fields (the `counters` column), in the order added.
    pub counters: Vec<(&'static str, u64)>,
}

/// Column builders of the `capture_stats` table, in schema order.
pub struct CaptureStatsColumns {
    rows: usize,
    window_start: TimestampMicrosecondBuilder,
    cpu: Int32Builder,
    events: Int64Builder,
    bytes: Int64Builder,
    lost_samples: Int64Builder,
    ring_drops: Int64Builder,
    parse_errors: Int64Builder,
    resyncs: Int64Builder,
    connections: Int64Builder,
    window_ns: Int64Builder,
    counters: MapBuilder<StringBuilder, Int64Builder>,
}

impl Default for CaptureStatsColumns {
    fn default() -> Self {
        CaptureStatsColumns {
            rows: 0,
            window_start: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            cpu: Int32Builder::new(),
            events: Int64Builder::new(),
            bytes: Int64Builder::new(),
            lost_samples: Int64Builder::new(),
            ring_drops: Int64Builder::new(),
            parse_errors: Int64Builder::new(),
            resyncs: Int64Builder::new(),
            connections: Int64Builder::new(),
            window_ns: Int64Builder::new(),
            counters: counters_builder(),
        }
    }
}

fn counters_builder() -> MapBuilder<StringBuilder, Int64Builder> {
    let (entry, key, value) = MAP_FIELD_NAMES;
    let names = MapFieldNames {
        entry: entry.into(),
        key: key.into(),
        value: value.into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), Int64Builder::new())
}

fn to_i64(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

impl CaptureStatsColumns {
    /// The row's `window_start` in Unix µs.
    pub fn ts_micros(row: &CaptureStatsRow) -> i64 {
        row.window_start_unix_ns.div_euclid(NANOS_PER_MICRO)
    }

    pub fn append(&mut self, row: &CaptureStatsRow) {
        self.rows += 1;
        self.window_start.append_value(Self::ts_micros(row));
        self.cpu.append_option(row.cpu.map(|cpu| cpu as i32));
        self.events.append_value(to_i64(row.events));
        self.bytes.append_value(to_i64(row.bytes));
        self.lost_samples.append_value(to_i64(row.lost_samples));
        self.ring_drops.append_value(to_i64(row.ring_drops));
        self.parse_errors.append_value(to_i64(row.parse_errors));
        self.resyncs.append_value(to_i64(row.resyncs));
        self.connections.append_value(to_i64(row.connections));
        self.window_ns.append_value(to_i64(row.window_ns));
        for &(name, value) in &row.counters {
            self.counters.keys().append_value(name);
            self.counters.values().append_value(to_i64(value));
        }
        self.counters
            .append(true)
            .expect("keys and values were appended in pairs");
    }
}

impl TableColumns for CaptureStatsColumns {
    const TABLE: Table = Table::CaptureStats;

    fn len(&self) -> usize {
        self.rows
    }

    fn estimated_bytes(&self) -> usize {
        self.rows * 80
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut f = std::mem::take(self);
        vec![
            Arc::new(f.window_start.finish()),
            Arc::new(f.cpu.finish()),
            Arc::new(f.events.finish()),
            Arc::new(f.bytes.finish()),
            Arc::new(f.lost_samples.finish()),
            Arc::new(f.ring_drops.finish()),
            Arc::new(f.parse_errors.finish()),
            Arc::new(f.resyncs.finish()),
            Arc::new(f.connections.finish()),
            Arc::new(f.window_ns.finish()),
            Arc::new(f.counters.finish()),
        ]
    }
}
