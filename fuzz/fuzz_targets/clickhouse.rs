//! Fuzz target: arbitrary chunks in both directions through `StreamDriver<ClickHouseParser>`,
//! with cut syscalls and lost bytes, then close. The parser must never panic, must keep its
//! memory bounded, and every record it makes must be a ClickHouse record with sane fields.
//!
//! Input: repeated `[control, length, chunk bytes]`. Control bit 0 is the direction
//! (0: client to server); bits 1–2 the kind (0, 1: a whole syscall; 2: a syscall cut after
//! the chunk by `control * 97` bytes; 3: `length * 31` bytes lost, no chunk). Seeds made
//! from `tests/fixtures/clickhouse/*.chunks` (each chunk as `[direction, length ≤ 255]` +
//! bytes) reach the deep states quickly.
#![no_main]

use l7tap_protocols::clickhouse::ClickHouseParser;
use l7tap_protocols::stream::StreamDriver;
use l7tap_protocols::{Details, Direction, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut driver = StreamDriver::new(ClickHouseParser::default());
    let mut out = Vec::new();
    let mut rest = data;
    let mut ts = 1u64;
    while let [control, length, tail @ ..] = rest {
        let dir = if control & 1 == 0 {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        ts += 1;
        if (control >> 1) & 3 == 3 {
            driver.lost(dir, u64::from(*length) * 31, ts);
            rest = tail;
            continue;
        }
        let (chunk, next) = tail.split_at(usize::from(*length).min(tail.len()));
        rest = next;
        let cut = if (control >> 1) & 3 == 2 { u64::from(*control) * 97 } else { 0 };
        driver.push(dir, ts, chunk, cut, &mut out);
        // Bounded memory: the driver's cap plus one syscall.
        assert!(driver.buffered() <= 1024 * 1024);
    }
    driver.close(ts + 1, &mut out);
    for Record::Request(r) in &out {
        let Details::ClickHouse(d) = &r.details else {
            panic!("not a ClickHouse record: {r:?}");
        };
        assert!(r.end_ns >= r.start_ns, "{r:?}");
        // The text is cut at max_query_bytes (lossy UTF-8 may triple it).
        assert!(r.query.as_ref().map_or(0, String::len) <= 3 * 4096);
        assert!(r.error_message.as_ref().map_or(0, String::len) <= 3 * 512);
        assert!(d.query_id.len() <= 1024);
    }
});
