//! Fuzz target: arbitrary chunks in both directions through `StreamDriver<ZooKeeperParser>`,
//! with cut syscalls and lost bytes, then close. The parser must never panic, must stay
//! within its bounds, and every record it makes must be a ZooKeeper record with sane times.
//!
//! Input: repeated `[control, length, chunk bytes]`. Control bit 0 is the direction
//! (0: client to server); bits 1–2 the kind (0, 1: a whole syscall; 2: a syscall cut after
//! the chunk by `control * 97` bytes; 3: `length * 31` bytes lost, no chunk).
#![no_main]

use l7tap_protocols::stream::StreamDriver;
use l7tap_protocols::zookeeper::ZooKeeperParser;
use l7tap_protocols::{Details, Direction, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut driver = StreamDriver::new(ZooKeeperParser::default());
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
        let cut = if (control >> 1) & 3 == 2 {
            u64::from(*control) * 97
        } else {
            0
        };
        driver.push(dir, ts, chunk, cut, &mut out);
        // Bounded memory: the driver's cap plus one syscall; a bounded in-flight queue.
        assert!(driver.buffered() <= 1024 * 1024);
        assert!(driver.parser().in_flight() <= driver.parser().settings().max_in_flight);
    }
    driver.close(ts + 1, &mut out);
    for Record::Request(r) in &out {
        assert!(matches!(r.details, Details::ZooKeeper(_)));
        assert!(r.end_ns >= r.start_ns, "{r:?}");
        // A path is cut at max_path_bytes (lossy UTF-8 may triple it).
        assert!(r.query.as_ref().map_or(0, String::len) <= 3 * 512);
    }
});
