//! The ClickHouse HTTP parser allocates nothing per exchange in steady state: once its
//! buffers have held a connection's largest exchange, thousands more (keep-alive GETs,
//! POST bodies read for their query text, errors read for their message, INSERT data
//! skipped) make no allocation. Its own test binary: the counting allocator sees only this.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use l7tap_protocols::clickhouse_http::ClickHouseHttpParser;
use l7tap_protocols::stream::StreamDriver;
use l7tap_protocols::testkit::{fixture_dir, load_path};
use l7tap_protocols::Records;

/// Counts allocations (not frees) made through the global allocator by the thread that
/// turned counting on: the test harness's own threads allocate at times of their choosing.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count_this_thread() {
    if COUNTED.with(|c| c.get()) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged (counting on the way), so
// the `GlobalAlloc` contract holds as it does for `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_this_thread();
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_this_thread();
        // SAFETY: `ptr`/`layout` come from `System` (see `alloc`); the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn no_allocation_per_exchange_in_steady_state() {
    COUNTED.with(|c| c.set(true));
    let dir = fixture_dir("clickhouse_http");
    let mut chunks = Vec::new();
    for name in [
        "http_keepalive",
        "http_errors",
        "http_insert",
        "http_password",
    ] {
        chunks.extend(load_path(&dir.join(format!("{name}.chunks"))));
    }
    let mut driver = StreamDriver::new(ClickHouseHttpParser::default());
    let mut out = Records::with_capacity(64, 1 << 16);
    let mut round = |r: u64, out: &mut Records| {
        for c in &chunks {
            driver.push(c.dir, c.ts_ns + r * 1_000_000_000_000, &c.bytes, 0, out);
        }
        let n = out.len();
        out.clear();
        n
    };
    // Warm-up: the buffers grow to the largest exchange.
    let records = round(0, &mut out);
    assert_eq!(records, 17);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(before > 0, "the counting allocator counts nothing");
    let mut exchanges = 0;
    for r in 1..=200 {
        exchanges += round(r, &mut out);
    }
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(exchanges, 200 * 17);
    assert_eq!(during, 0, "{during} allocations over {exchanges} exchanges");
}
