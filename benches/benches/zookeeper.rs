//! ZooKeeper parser benchmarks: throughput over the recorded fixtures
//! (`tests/fixtures/zookeeper/*.chunks`) next to a plain copy of the same bytes, and the
//! allocations the parser makes per request in steady state.
//!
//! `cargo bench -p l7tap-benches --bench zookeeper` prints, after criterion's own reports
//! (`ZOOKEEPER_PROFILE_SECONDS=N` only parses the fixtures in a loop for N seconds, for
//! `perf`; `ZOOKEEPER_PROFILE_PASSES=N` N times, for `valgrind --tool=callgrind`):
//! - parse and memcpy throughput over the same chunks, timed in alternated pairs, and the
//!   median of the pairs' ratios (goal: parsing at least 1/10 of memcpy), and, for scale,
//!   the stream driver alone (reassembly, no parsing);
//! - allocations per request/reply pair for each kind of exchange once the connection is
//!   warm (records keep their text in the output batch's arena, so the goal is none): any
//!   allocation fails the run.
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use l7tap_benches::zookeeper_wire::{jute_string, reply, request};
use l7tap_protocols::debug::FrameCounter;
use l7tap_protocols::fixture::{parse_chunks, Chunk};
use l7tap_protocols::stream::StreamDriver;
use l7tap_protocols::zookeeper::ZooKeeperParser;
use l7tap_protocols::{Direction, Parser, Records};

/// Counts heap allocations (not frees) made by the whole process.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the counter is a relaxed atomic and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr`/`layout` come from this allocator; forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

// ---- corpus --------------------------------------------------------------------------------

/// The recorded conversations, except the one whose 500 KB reply body the parser skips
/// (it would flatter the throughput).
fn corpus() -> Vec<Vec<Chunk>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/zookeeper");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/zookeeper")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "chunks"))
        .filter(|p| !p.ends_with("large.chunks"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| parse_chunks(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

fn corpus_bytes(corpus: &[Vec<Chunk>]) -> u64 {
    corpus.iter().flatten().map(|c| c.bytes.len() as u64).sum()
}

/// Parses every conversation with a fresh driver; returns the records made.
fn parse_all(corpus: &[Vec<Chunk>], out: &mut Records) -> usize {
    drive_all(corpus, out, ZooKeeperParser::default)
}

/// Feeds every conversation to a fresh driver running the parser `new` makes; returns the
/// records made.
fn drive_all<P: Parser>(corpus: &[Vec<Chunk>], out: &mut Records, new: impl Fn() -> P) -> usize {
    let mut n = 0;
    for conversation in corpus {
        let mut driver = StreamDriver::new(new());
        let mut last = 0;
        for c in conversation {
            driver.push(c.dir, c.ts_ns, &c.bytes, 0, out);
            last = c.ts_ns;
        }
        driver.close(last, out);
        n += out.len();
        out.clear();
    }
    n
}

/// Copies every chunk once, as a driver that buffered everything would.
fn copy_all(corpus: &[Vec<Chunk>], buffer: &mut Vec<u8>) -> usize {
    let mut n = 0;
    for conversation in corpus {
        for c in conversation {
            buffer.clear();
            buffer.extend_from_slice(&c.bytes);
            n += black_box(&buffer).len();
        }
    }
    n
}

fn bench_throughput(c: &mut Criterion) {
    let corpus = corpus();
    let mut group = c.benchmark_group("zookeeper");
    group.throughput(Throughput::Bytes(corpus_bytes(&corpus)));
    let mut out = Records::default();
    group.bench_function("parse fixtures", |b| {
        b.iter(|| parse_all(black_box(&corpus), &mut out))
    });
    let mut buffer = Vec::with_capacity(1 << 20);
    group.bench_function("memcpy fixtures", |b| {
        b.iter(|| copy_all(black_box(&corpus), &mut buffer))
    });
    group.finish();
}

criterion_group!(benches, bench_throughput);

// ---- ratio, measured in the same run --------------------------------------------------------

/// Time per pass of `f`, repeated `passes` times.
fn time_per_pass(f: &mut impl FnMut(), passes: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..passes {
        f();
    }
    start.elapsed() / passes
}

/// How many passes of `f` take about `budget`.
fn passes_for(f: &mut impl FnMut(), budget: Duration) -> u32 {
    let once = time_per_pass(f, 1).max(Duration::from_nanos(1));
    (budget.as_nanos() / once.as_nanos()).clamp(1, 1_000_000) as u32
}

/// The median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `subject` and `baseline` in `pairs` alternated rounds of about `budget` each, so
/// that both see the same machine; returns the medians of their times per pass (s) and of
/// the per-pair ratios subject / baseline, with the ratios' range.
fn alternated(
    mut subject: impl FnMut(),
    mut baseline: impl FnMut(),
    pairs: usize,
    budget: Duration,
) -> (f64, f64, f64, (f64, f64)) {
    let (subject_passes, baseline_passes) = (
        passes_for(&mut subject, budget),
        passes_for(&mut baseline, budget),
    );
    let (mut subject_times, mut baseline_times, mut ratios) = (vec![], vec![], vec![]);
    for _ in 0..pairs {
        let s = time_per_pass(&mut subject, subject_passes).as_secs_f64();
        let b = time_per_pass(&mut baseline, baseline_passes).as_secs_f64();
        subject_times.push(s);
        baseline_times.push(b);
        ratios.push(s / b);
    }
    let ratio = median(&mut ratios);
    let range = (ratios[0], ratios[ratios.len() - 1]);
    (
        median(&mut subject_times),
        median(&mut baseline_times),
        ratio,
        range,
    )
}

fn report_ratio() {
    let corpus = corpus();
    let bytes = corpus_bytes(&corpus) as f64;
    let mut out = Records::default();
    let mut buffer = Vec::with_capacity(1 << 20);
    let budget = Duration::from_millis(100);
    let mbps = |secs: f64| bytes / secs / 1e6;
    let (parse, copy, ratio, (low, high)) = alternated(
        || _ = black_box(parse_all(&corpus, &mut out)),
        || _ = black_box(copy_all(&corpus, &mut buffer)),
        21,
        budget,
    );
    println!(
        "zookeeper: {} conversations, {} bytes, 21 alternated pairs (medians): parse {:.0} MB/s, \
         memcpy {:.0} MB/s, parse = 1/{ratio:.1} of memcpy (pairs 1/{low:.1} .. 1/{high:.1})",
        corpus.len(),
        bytes,
        mbps(parse),
        mbps(copy),
    );
    let frames = || FrameCounter::default();
    let (driver, copy, ratio, _) = alternated(
        || _ = black_box(drive_all(&corpus, &mut out, frames)),
        || _ = black_box(copy_all(&corpus, &mut buffer)),
        5,
        budget,
    );
    println!(
        "zookeeper: the stream driver alone (a parser that only consumes bytes): {:.0} MB/s, \
         1/{ratio:.1} of memcpy ({:.0} MB/s)",
        mbps(driver),
        mbps(copy),
    );
}

// ---- allocations in steady state ------------------------------------------------------------

/// One kind of exchange: the bytes of the `i`-th request and reply (empty: none).
struct Exchange {
    name: &'static str,
    make: fn(i32) -> (Vec<u8>, Vec<u8>),
}

fn exchanges() -> Vec<Exchange> {
    vec![
        Exchange {
            name: "ping",
            make: |_| (request(-2, 11, &[]), reply(-2, 9, 0, &[])),
        },
        Exchange {
            name: "getData (path)",
            make: |xid| {
                let mut body = jute_string("/clickhouse/tables/01/replicas/r1/queue");
                body.push(1);
                let mut data = 5u32.to_be_bytes().to_vec();
                data.extend_from_slice(b"hello");
                data.extend_from_slice(&[0; 68]);
                (request(xid, 4, &body), reply(xid, 9, 0, &data))
            },
        },
        Exchange {
            name: "getData NoNode",
            make: |xid| {
                let mut body = jute_string("/missing");
                body.push(0);
                (request(xid, 4, &body), reply(xid, 9, -101, &[]))
            },
        },
        Exchange {
            name: "multi of 3",
            make: |xid| {
                let mut body = Vec::new();
                for path in ["/a", "/b", "/c"] {
                    body.extend_from_slice(&2i32.to_be_bytes());
                    body.push(0);
                    body.extend_from_slice(&(-1i32).to_be_bytes());
                    body.extend(jute_string(path));
                    body.extend_from_slice(&(-1i32).to_be_bytes());
                }
                body.extend_from_slice(&(-1i32).to_be_bytes());
                body.push(1);
                body.extend_from_slice(&(-1i32).to_be_bytes());
                let mut result = Vec::new();
                for _ in 0..3 {
                    result.extend_from_slice(&2i32.to_be_bytes());
                    result.push(0);
                    result.extend_from_slice(&0i32.to_be_bytes());
                }
                result.extend_from_slice(&(-1i32).to_be_bytes());
                result.push(1);
                result.extend_from_slice(&(-1i32).to_be_bytes());
                (request(xid, 14, &body), reply(xid, 9, 0, &result))
            },
        },
        Exchange {
            name: "notification",
            make: |_| {
                let mut event = 3i32.to_be_bytes().to_vec();
                event.extend_from_slice(&3i32.to_be_bytes());
                event.extend(jute_string("/clickhouse/task_queue/ddl"));
                (Vec::new(), reply(-1, -1, 0, &event))
            },
        },
        Exchange {
            name: "reply without request",
            make: |xid| (Vec::new(), reply(xid + 1_000_000, 9, 0, &[0; 68])),
        },
    ]
}

/// Allocations per exchange once the connection is warm (buffers and queues at size),
/// for `n` exchanges pushed one syscall per frame.
fn allocations_per_exchange(exchange: &Exchange, n: i32) -> f64 {
    let mut driver = StreamDriver::new(ZooKeeperParser::default());
    let mut out = Records::with_capacity(64, 4096);
    let mut frames = Vec::new();
    for xid in 1..=2 * n {
        frames.push((exchange.make)(xid));
    }
    let run = |driver: &mut StreamDriver<ZooKeeperParser>,
               out: &mut Records,
               frames: &[(Vec<u8>, Vec<u8>)]| {
        for (i, (req, rsp)) in frames.iter().enumerate() {
            let ts = i as u64;
            if !req.is_empty() {
                driver.push(Direction::ClientToServer, ts, req, 0, out);
            }
            driver.push(Direction::ServerToClient, ts + 1, rsp, 0, out);
            out.clear();
        }
    };
    let (warm, measured) = frames.split_at(n as usize);
    run(&mut driver, &mut out, warm);
    let before = allocations();
    run(&mut driver, &mut out, measured);
    (allocations() - before) as f64 / n as f64
}

fn report_allocations() {
    let mut failures = Vec::new();
    for exchange in exchanges() {
        let per = allocations_per_exchange(&exchange, 10_000);
        println!(
            "zookeeper allocations per exchange, {:<22} {per:.3}",
            exchange.name
        );
        if per > 0.001 {
            failures.push(exchange.name);
        }
    }
    let corpus = corpus();
    let mut out = Records::default();
    let before = allocations();
    let records = parse_all(&corpus, &mut out);
    println!(
        "zookeeper allocations over the fixtures (fresh driver per conversation): {} for {records} records",
        allocations() - before
    );
    assert!(
        failures.is_empty(),
        "the parser allocates per exchange in steady state: {failures:?}"
    );
}

fn main() {
    // `ZOOKEEPER_PROFILE_SECONDS=N`: only parse the fixtures in a loop for N s (for `perf`).
    if let Some(seconds) = std::env::var("ZOOKEEPER_PROFILE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        let corpus = corpus();
        let mut out = Records::default();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(seconds) {
            black_box(parse_all(&corpus, &mut out));
        }
        return;
    }
    // `ZOOKEEPER_PROFILE_PASSES=N`: parse the fixtures N times (for `valgrind --tool=callgrind`,
    // whose instruction counts do not depend on the machine's load).
    if let Some(passes) = std::env::var("ZOOKEEPER_PROFILE_PASSES")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        let corpus = corpus();
        let mut out = Records::default();
        for _ in 0..passes {
            black_box(parse_all(&corpus, &mut out));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    report_ratio();
    report_allocations();
}
