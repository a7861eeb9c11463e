//! Fuzz target: arbitrary chunks in both directions through `StreamDriver<ClickHouseParser>`,
//! with cut syscalls and lost bytes, then close. The parser must never panic, must keep its
//! memory bounded, and every record it makes must be a ClickHouse record with sane fields.
//!
//! Input: as `protocols::stream::feed_fuzz_input` reads it. Seeds made
//! from `tests/fixtures/clickhouse/*.chunks` (each chunk as `[direction, length ≤ 255]` +
//! bytes) reach the deep states quickly.
#![no_main]

use l7tap_protocols::clickhouse::ClickHouseParser;
use l7tap_protocols::stream::{feed_fuzz_input, StreamDriver};
use l7tap_protocols::Details;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut driver = StreamDriver::new(ClickHouseParser::default());
    let out = feed_fuzz_input(&mut driver, data, |driver| {
        // Bounded memory: the driver's cap plus one syscall.
        assert!(driver.buffered() <= 1024 * 1024);
    });
    for r in &out {
        let Details::ClickHouse(d) = &r.details else {
            panic!("not a ClickHouse record: {r:?}");
        };
        assert!(r.end_ns >= r.start_ns, "{r:?}");
        // The text is cut at max_query_bytes (lossy UTF-8 may triple it).
        assert!(r.query.map_or(0, |t| t.len()) <= 3 * 4096);
        assert!(r.error_message.map_or(0, |t| t.len()) <= 3 * 512);
        assert!(d.query_id.len() <= 1024);
    }
});
