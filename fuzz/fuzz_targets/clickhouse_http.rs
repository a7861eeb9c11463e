//! Fuzz target: arbitrary chunks in both directions through
//! `StreamDriver<ClickHouseHttpParser>`, with cut syscalls, tails and lost bytes, then close.
//! The parser must never panic, must keep its memory bounded, and every record it makes must
//! be a ClickHouse HTTP record with sane fields.
//!
//! Input: as `protocols::stream::feed_fuzz_input` reads it. Seeds made from
//! `tests/fixtures/clickhouse_http/*.chunks` (each chunk as `[direction, length ≤ 255]` +
//! bytes) reach the deep states quickly.
#![no_main]

use l7tap_protocols::clickhouse_http::ClickHouseHttpParser;
use l7tap_protocols::stream::{feed_fuzz_input, StreamDriver};
use l7tap_protocols::{Details, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut driver = StreamDriver::new(ClickHouseHttpParser::default());
    let out = feed_fuzz_input(&mut driver, data, |driver| {
        // Bounded memory: the driver's cap plus one syscall.
        assert!(driver.buffered() <= 1024 * 1024);
    });
    for r in &out {
        let Details::ClickHouse(d) = &r.details else {
            panic!("not a ClickHouse record: {r:?}");
        };
        assert_eq!(r.protocol, Protocol::ClickHouseHttp);
        assert!(r.end_ns >= r.start_ns, "{r:?}");
        // The text is cut at max_query_bytes (lossy UTF-8 may triple it).
        assert!(r.query.map_or(0, |t| t.len()) <= 3 * 4096);
        assert!(r.error_message.map_or(0, |t| t.len()) <= 3 * 512);
        assert!(d.query_id.len() <= 3 * 1024 && d.user.len() <= 3 * 1024);
        // Only a response with a status line ends an exchange other than as incomplete.
        assert!(r.status == l7tap_protocols::Status::Incomplete || d.http_status >= 100);
    }
});
