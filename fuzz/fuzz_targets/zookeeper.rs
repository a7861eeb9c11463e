//! Fuzz target: arbitrary chunks in both directions through `StreamDriver<ZooKeeperParser>`,
//! with cut syscalls and lost bytes, then close. The parser must never panic, must stay
//! within its bounds, and every record it makes must be a ZooKeeper record with sane times.
//!
//! Input: as `protocols::stream::feed_fuzz_input` reads it.
#![no_main]

use l7tap_protocols::stream::{feed_fuzz_input, StreamDriver};
use l7tap_protocols::zookeeper::ZooKeeperParser;
use l7tap_protocols::Details;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut driver = StreamDriver::new(ZooKeeperParser::default());
    let out = feed_fuzz_input(&mut driver, data, |driver| {
        // Bounded memory: the driver's cap plus one syscall; a bounded in-flight queue.
        assert!(driver.buffered() <= 1024 * 1024);
        assert!(driver.parser().in_flight() <= driver.parser().settings().max_in_flight);
    });
    for r in &out {
        assert!(matches!(r.details, Details::ZooKeeper(_)));
        assert!(r.end_ns >= r.start_ns, "{r:?}");
        // A path is cut at max_path_bytes (lossy UTF-8 may triple it).
        assert!(r.query.map_or(0, |t| t.len()) <= 3 * 512);
    }
});
