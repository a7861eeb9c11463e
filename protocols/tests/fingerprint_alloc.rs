//! Fingerprints cost no allocation per record in steady state: once a batch's buffers and
//! the fingerprint table have held a round of records, thousands more ClickHouse queries
//! (literals and IN-lists of every length) and ZooKeeper paths are fingerprinted and folded
//! without allocating. Its own test binary: the counting allocator sees only this.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use l7tap_protocols::fingerprint::FingerprintTable;
use l7tap_protocols::{
    CapturedBatch, ConnectionInfo, Details, Protocol, RequestRecord, Side, Status, ZooKeeperDetails,
};

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

fn record(
    protocol: Protocol,
    operation: &'static str,
    query: Option<l7tap_protocols::Text>,
) -> RequestRecord {
    RequestRecord {
        protocol,
        start_ns: 1,
        end_ns: 2,
        operation,
        status: Status::Ok,
        error_code: None,
        error_name: None,
        error_message: None,
        query,
        query_truncated: false,
        bytes_sent: 1,
        bytes_received: 1,
        details: match protocol {
            Protocol::ZooKeeper => Details::ZooKeeper(ZooKeeperDetails::default()),
            Protocol::ClickHouse | Protocol::ClickHouseHttp => {
                Details::ClickHouse(Default::default())
            }
        },
    }
}

#[test]
fn no_allocation_per_record_in_steady_state() {
    COUNTED.with(|c| c.set(true));
    let conn = Arc::new(ConnectionInfo {
        pid: 1,
        comm: "client".into(),
        cgroup_id: 0,
        side: Side::Client,
        client_addr: "127.0.0.1:40000".parse().unwrap(),
        server_addr: "127.0.0.1:9000".parse().unwrap(),
        tls: false,
        identity: Default::default(),
    });
    let queries: Vec<String> = (0..64)
        .map(|i| {
            let list: Vec<String> = (0..=i % 9).map(|v| (v * 31 + i).to_string()).collect();
            format!(
                "SELECT a, b /* {i} */ FROM t{} WHERE id IN ({}) AND s = 'x{i}'",
                i % 4,
                list.join(", ")
            )
        })
        .collect();
    let paths: Vec<String> = (0..64)
        .map(|i| format!("/clickhouse/tables/{i}/log/log-{:010}", i * 7))
        .collect();
    let mut batch = CapturedBatch::with_capacity(128, 1 << 14);
    let mut table = FingerprintTable::default();
    let mut round = |batch: &mut CapturedBatch| {
        for (query, path) in queries.iter().zip(&paths) {
            let q = batch.records.text.push(query);
            batch
                .records
                .push(record(Protocol::ClickHouse, "SELECT", Some(q)));
            let p = batch.records.text.push(path);
            batch
                .records
                .push(record(Protocol::ZooKeeper, "getData", Some(p)));
            batch.assign_new(&conn);
        }
        for fingerprint in &mut batch.fingerprints {
            *fingerprint = table.fold(*fingerprint);
        }
        batch.len()
    };
    // Warm-up: the batch's buffers and the table grow to a round's size. Literals, comments
    // and list lengths vary, the shapes do not: 4 tables, 1 path pattern.
    assert_eq!(round(&mut batch), 128);
    let shapes: std::collections::BTreeSet<_> = batch.fingerprints.iter().collect();
    assert_eq!(shapes.len(), 5);
    batch.clear();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(before > 0, "the counting allocator counts nothing");
    let mut records = 0;
    for _ in 0..200 {
        records += round(&mut batch);
        batch.clear();
    }
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(records, 200 * 128);
    assert_eq!(during, 0, "{during} allocations over {records} records");
    assert_eq!(table.folded(), 0);
}
