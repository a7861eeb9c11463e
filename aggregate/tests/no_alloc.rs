//! The aggregator's per-request path does not allocate in steady state: counted with a global
//! allocator wrapper (this test binary only), per thread.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use l7tap_aggregate::{Aggregator, AggregatorConfig};
use l7tap_protocols::{CapturedBatch, Side, Status};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// GlobalAlloc contract holds exactly as for `System`; the thread-local counter is a `const`
// Cell without destructor, so touching it neither allocates nor recurses into the allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this wrapper with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded unchanged; `ptr`/`layout` come from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn recording_does_not_allocate_in_steady_state() {
    const SECOND: u64 = 1_000_000_000;
    let mut aggregator = Aggregator::new(AggregatorConfig {
        monotonic_to_unix_offset_ns: OFFSET_NS,
        ..AggregatorConfig::default()
    })
    .unwrap();
    let conns: Vec<_> = (0..20)
        .map(|i| {
            conn(
                Side::Server,
                &format!("10.0.{i}.1:4000"),
                "10.0.0.9:2181",
                "java",
            )
        })
        .collect();
    let operations = ["getData", "exists", "create", "setData", "multi"];
    let mut requests = Vec::new();
    for window in 0..4u64 {
        let mut batch = CapturedBatch::default();
        for i in 0..20_000u64 {
            let conn = &conns[(i % 20) as usize];
            let operation = operations[(i / 20 % 5) as usize];
            let status = if i % 97 == 0 {
                Status::Error
            } else {
                Status::Ok
            };
            let duration = 5_000 + (i * 7919) % 50_000_000;
            let end = window * 10 * SECOND + SECOND + i * 100_000;
            batch.append(zookeeper_request(
                conn,
                end - duration,
                duration,
                operation,
                "/x",
                status,
            ));
        }
        requests.push(batch);
    }
    let mut per_window = Vec::new();
    for (window, batch) in requests.iter().enumerate() {
        let before = allocations();
        for request in batch.iter() {
            aggregator.record(&request);
        }
        per_window.push(allocations() - before);
        let until = common::BASE_UNIX_NS + ((window as u64 + 1) * 10 * SECOND) as i64;
        let rows = aggregator.flush_until(until);
        assert_eq!(rows.iter().map(|row| row.count).sum::<u64>(), 20_000);
    }
    // The first window allocates keys, strings, statistics and histograms; after that the
    // pools cover every key and histogram size.
    assert!(per_window[0] > 0);
    assert_eq!(
        per_window[2..],
        [0, 0],
        "allocations per window: {per_window:?}"
    );
}
