//! Fuzz target: arbitrary chunks in both directions through `StreamDriver<ZooKeeperParser>`,
//! with cut syscalls and lost bytes, then close. The parser must never panic, must stay
//! within its bounds, and every record it makes must be a ZooKeeper record with sane times;
//! the same input through the general decoder alone (fast path off) must give the same
//! records and counters.
//!
//! Input: as `protocols::stream::feed_fuzz_input` reads it.
#![no_main]

use l7tap_protocols::stream::{feed_fuzz_input, StreamDriver};
use l7tap_protocols::zookeeper::{ZooKeeperParser, ZooKeeperSettings};
use l7tap_protocols::Details;
use l7tap_protocols::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut driver = StreamDriver::new(ZooKeeperParser::default());
    let out = feed_fuzz_input(&mut driver, data, |driver| {
        // Bounded memory: the driver's cap plus one syscall; a bounded in-flight queue.
        assert!(driver.buffered() <= 1024 * 1024);
        assert!(driver.parser().in_flight() <= driver.parser().settings().max_in_flight);
    });
    let general = ZooKeeperSettings {
        fast_path: false,
        ..ZooKeeperSettings::default()
    };
    let mut general_driver = StreamDriver::new(ZooKeeperParser::new(general));
    let general_out = feed_fuzz_input(&mut general_driver, data, |_| {});
    assert_eq!(out.to_owned_records(), general_out.to_owned_records());
    assert_eq!(
        driver.parser().counters(),
        general_driver.parser().counters()
    );
    assert_eq!(
        driver.parser().zk_counters(),
        general_driver.parser().zk_counters()
    );
    for r in &out {
        assert!(matches!(r.details, Details::ZooKeeper(_)));
        assert!(r.end_ns >= r.start_ns, "{r:?}");
        // A path is cut at max_path_bytes (lossy UTF-8 may triple it).
        assert!(r.query.map_or(0, |t| t.len()) <= 3 * 512);
    }
});
