//! ClickHouse parser throughput on the recorded fixtures (`tests/fixtures/clickhouse`),
//! next to a plain memcpy of the same bytes in the same run, and the allocations the parser
//! makes per packet in steady state (a counting global allocator).
//!
//! `cargo bench -p l7tap-benches --bench clickhouse`
//! Prints, after criterion's groups, one line per fixture set: parse MB/s, memcpy MB/s and
//! the ratio; then allocations per packet over a long stream of Data packets.
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use l7tap_protocols::clickhouse::ClickHouseParser;
use l7tap_protocols::fixture::{parse_chunks, Chunk};
use l7tap_protocols::stream::StreamDriver;
use l7tap_protocols::{Direction, Parser, Records};

/// Counts allocations (not frees) made through the global allocator.
struct CountingAllocator;

static N_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the counter is a relaxed atomic and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        N_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        N_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr`/`layout` come from `System` (see `alloc`); the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/clickhouse")
}

fn load(name: &str) -> Vec<Chunk> {
    let path = fixture_dir().join(format!("{name}.chunks"));
    parse_chunks(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn all_fixture_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".chunks").map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

/// Named sets of conversations, each replayed as separate connections.
fn sets() -> Vec<(&'static str, Vec<Vec<Chunk>>)> {
    let all: Vec<Vec<Chunk>> = all_fixture_names().iter().map(|n| load(n)).collect();
    vec![
        ("all_fixtures", all),
        ("uncompressed_1M_uint8", vec![load("py_million")]),
        ("uncompressed_strings", vec![load("py_basic-3")]),
        ("lz4_strings", vec![load("py_lz4-3")]),
        ("uncompressed_types", vec![load("py_types")]),
        ("steady_state_result", vec![long_result(2000)]),
    ]
}

fn bytes_of(set: &[Vec<Chunk>]) -> u64 {
    set.iter().flatten().map(|c| c.bytes.len() as u64).sum()
}

fn parse_set(set: &[Vec<Chunk>], out: &mut Records) -> usize {
    let mut n = 0;
    for conv in set {
        let mut driver = StreamDriver::new(ClickHouseParser::default());
        for c in conv {
            driver.push(c.dir, c.ts_ns, &c.bytes, 0, out);
        }
        driver.close(u64::MAX, out);
        n += out.len();
        out.clear();
    }
    n
}

fn memcpy_set(set: &[Vec<Chunk>], dst: &mut [u8]) -> u8 {
    let mut x = 0u8;
    for conv in set {
        for c in conv {
            let d = &mut dst[..c.bytes.len()];
            d.copy_from_slice(black_box(&c.bytes));
            // Reads the first byte back (an empty chunk reads nothing).
            x ^= black_box(d).first().copied().unwrap_or(0);
        }
    }
    x
}

fn max_chunk(set: &[Vec<Chunk>]) -> usize {
    set.iter()
        .flatten()
        .map(|c| c.bytes.len())
        .max()
        .unwrap_or(0)
        .max(1)
}

fn bench(c: &mut Criterion) {
    for (name, set) in sets() {
        let mut group = c.benchmark_group(format!("clickhouse/{name}"));
        group.throughput(Throughput::Bytes(bytes_of(&set)));
        group.measurement_time(Duration::from_secs(3));
        group.sample_size(20);
        let mut out = Records::default();
        group.bench_function(BenchmarkId::new("parse", name), |b| {
            b.iter(|| parse_set(black_box(&set), &mut out))
        });
        let mut dst = vec![0u8; max_chunk(&set)];
        group.bench_function(BenchmarkId::new("memcpy", name), |b| {
            b.iter(|| memcpy_set(black_box(&set), &mut dst))
        });
        group.finish();
    }
    summary();
}

/// Median seconds per run of `f` over `runs` runs.
fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn summary() {
    println!("\nclickhouse parse vs memcpy (same bytes, same run; medians):");
    for (name, set) in sets() {
        let bytes = bytes_of(&set) as f64;
        let mut out = Records::default();
        let parse = median_secs(31, || {
            black_box(parse_set(black_box(&set), &mut out));
        });
        let mut dst = vec![0u8; max_chunk(&set)];
        let copy = median_secs(31, || {
            black_box(memcpy_set(black_box(&set), &mut dst));
        });
        println!(
            "  {name:<24} {:>9.1} MB  parse {:>8.0} MB/s  memcpy {:>8.0} MB/s  parse/memcpy = 1/{:.1}",
            bytes / 1e6,
            bytes / parse / 1e6,
            bytes / copy / 1e6,
            parse / copy
        );
    }
    allocations_per_packet();
}

/// A handshake, one query, then `n` small uncompressed Data packets (3 columns, 100 rows,
/// one syscall each) and EndOfStream: the steady state of a long result.
fn long_result(n: usize) -> Vec<Chunk> {
    fn vu(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn s(x: &[u8], out: &mut Vec<u8>) {
        vu(x.len() as u64, out);
        out.extend_from_slice(x);
    }
    let py = load("py_basic-3");
    // Hello, server Hello, and the first Query (with its empty Data) of a real session.
    let mut chunks: Vec<Chunk> = py[..3].to_vec();
    let mut block = vec![1, 0, 1, 0, 2, 0xff, 0xff, 0xff, 0xff, 0, 3, 100];
    s(b"n", &mut block);
    s(b"UInt64", &mut block);
    block.extend_from_slice(&[7u8; 800]);
    s(b"s", &mut block);
    s(b"String", &mut block);
    for i in 0..100u32 {
        s(i.to_string().as_bytes(), &mut block);
    }
    s(b"a", &mut block);
    s(b"Array(Nullable(UInt8))", &mut block);
    for i in 0..100u64 {
        block.extend_from_slice(&(i * 2).to_le_bytes());
    }
    // Nullable(UInt8) of 198 values: null map, then values.
    block.extend_from_slice(&[0u8; 396]);
    let mut ts = chunks.last().map_or(0, |c| c.ts_ns);
    for _ in 0..n {
        ts += 1;
        chunks.push(Chunk::new(Direction::ServerToClient, ts, block.clone()));
    }
    chunks.push(Chunk::new(Direction::ServerToClient, ts + 1, vec![5]));
    chunks
}

fn allocations_per_packet() {
    for n in [1_000usize, 10_000] {
        let chunks = long_result(n);
        let mut out = Records::with_capacity(16, 4096);
        let mut driver = StreamDriver::new(ClickHouseParser::default());
        let before = N_ALLOCATIONS.load(Ordering::Relaxed);
        for c in &chunks {
            driver.push(c.dir, c.ts_ns, &c.bytes, 0, &mut out);
        }
        let during = N_ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert_eq!(
            out.len(),
            1,
            "the query ends with EndOfStream: {:?} {:?}",
            driver.counters(),
            driver.parser().counters()
        );
        let packets = driver.parser().counters().n_messages;
        println!(
            "  allocations: {during} while parsing {packets} packets ({n} Data packets of 100 rows; includes the handshake and the connection's first buffers; the record's text goes to the preallocated output arena)"
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
