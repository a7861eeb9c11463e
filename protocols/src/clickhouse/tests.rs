//! Data-driven tests over the `.chunks` fixtures of `tests/fixtures/clickhouse/`: each
//! fixture's records, formatted, must equal the committed `<fixture>.expected` next to it
//! (re-bless with `UPDATE_EXPECT=1 cargo test -p l7tap-protocols clickhouse`). Then
//! properties over all fixtures: re-chunking, every prefix, mid-stream starts, gaps, garbage,
//! and that the password never reaches a record.
use std::fmt::Write;
use std::path::PathBuf;

use super::ClickHouseParser;
use crate::fixture::{parse_chunks, Chunk};
use crate::stream::{replay_chunks, StreamDriver};
use crate::{Details, Direction, Record, RequestRecord, Status};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/clickhouse")
}

fn load(name: &str) -> Vec<Chunk> {
    let path = fixture_dir().join(format!("{name}.chunks"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_chunks(&text).unwrap()
}

fn all_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".chunks").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

fn borrowed(chunks: &[Chunk]) -> Vec<(Direction, u64, &[u8])> {
    chunks
        .iter()
        .map(|(d, t, b)| (*d, *t, b.as_slice()))
        .collect()
}

fn run(chunks: &[Chunk], piece: usize) -> (Vec<RequestRecord>, StreamDriver<ClickHouseParser>) {
    let (out, driver) = replay_chunks(ClickHouseParser::default(), &borrowed(chunks), piece);
    (requests(out), driver)
}

fn requests(out: Vec<Record>) -> Vec<RequestRecord> {
    out.into_iter().map(|Record::Request(r)| r).collect()
}

fn describe(records: &[RequestRecord], driver: &StreamDriver<ClickHouseParser>) -> String {
    let mut s = String::new();
    for (i, r) in records.iter().enumerate() {
        let Details::ClickHouse(d) = &r.details else {
            panic!("not a ClickHouse record")
        };
        let _ = writeln!(
            s,
            "#{} {} {}  start={} end={} sent={} received={}",
            i + 1,
            r.operation,
            r.status.name(),
            r.start_ns,
            r.end_ns,
            r.bytes_sent,
            r.bytes_received
        );
        let _ = writeln!(
            s,
            "   id={:?} kind={} initial_id={:?} user={:?} client={:?} version={:?} revision={} compressed={}",
            d.query_id,
            d.query_kind.map_or("-", |k| k.name()),
            d.initial_query_id,
            d.user,
            d.client_name,
            d.client_version,
            d.revision,
            d.compressed
        );
        let _ = writeln!(
            s,
            "   read={}r/{}b written={}r/{}b result_rows={}",
            d.rows_read, d.bytes_read, d.rows_written, d.bytes_written, d.result_rows
        );
        if let Some(q) = &r.query {
            let _ = writeln!(
                s,
                "   query={:?}{}",
                q,
                if r.query_truncated {
                    " (truncated)"
                } else {
                    ""
                }
            );
        }
        if let Some(code) = r.error_code {
            let _ = writeln!(
                s,
                "   error={} {} {:?}",
                code,
                r.error_name.as_deref().unwrap_or("?"),
                r.error_message.as_deref().unwrap_or("")
            );
        }
    }
    let p = driver.parser_counters();
    let c = driver.counters();
    let _ = writeln!(
        s,
        "counters: messages={} resyncs={} resync_bytes={} parse_errors={} skipped={} dropped={}",
        p.n_messages,
        p.n_resyncs,
        p.n_resync_bytes,
        c.n_parse_errors,
        c.n_skipped_bytes,
        c.n_dropped
    );
    s
}

/// Compares a fixture's formatted records with `<name>.expected` (written when
/// `UPDATE_EXPECT=1`; on a mismatch the actual output goes to `<name>.actual`).
fn check(name: &str) {
    let chunks = load(name);
    let (records, driver) = run(&chunks, usize::MAX);
    let actual = describe(&records, &driver);
    let path = fixture_dir().join(format!("{name}.expected"));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let actual_path = fixture_dir().join(format!("{name}.actual"));
        std::fs::write(&actual_path, &actual).unwrap();
        panic!(
            "{name}: records differ from {} (actual in {}; UPDATE_EXPECT=1 re-blesses)",
            path.display(),
            actual_path.display()
        );
    }
}

macro_rules! golden {
    ($($test:ident => $fixture:literal,)*) => {
        $(#[test] fn $test() { check($fixture); })*

        /// Every fixture has a golden test.
        #[test]
        fn every_fixture_has_a_golden_test() {
            let listed: &[&str] = &[$($fixture),*];
            for name in all_fixtures() {
                assert!(listed.contains(&name.as_str()), "no golden test for {name}");
            }
        }
    };
}

golden! {
    golden_cli_select1 => "cli_select1",
    golden_cli_insert_1 => "cli_insert-1",
    golden_cli_insert_2 => "cli_insert-2",
    golden_cli_errors_1 => "cli_errors-1",
    golden_cli_errors_2 => "cli_errors-2",
    golden_cli_errors_3 => "cli_errors-3",
    golden_cli_sleep => "cli_sleep",
    golden_cli_million => "cli_million",
    golden_cli_big_block_1 => "cli_big_block-1",
    golden_cli_big_block_2 => "cli_big_block-2",
    golden_cli_logs => "cli_logs",
    golden_cli_password_1 => "cli_password-1",
    golden_cli_password_2 => "cli_password-2",
    golden_cli_external => "cli_external",
    golden_cli_multi => "cli_multi",
    golden_cli_distributed => "cli_distributed",
    golden_py_million => "py_million",
    golden_py_basic_1 => "py_basic-1",
    golden_py_basic_2 => "py_basic-2",
    golden_py_basic_3 => "py_basic-3",
    golden_py_lz4_1 => "py_lz4-1",
    golden_py_lz4_2 => "py_lz4-2",
    golden_py_lz4_3 => "py_lz4-3",
    golden_py_zstd_1 => "py_zstd-1",
    golden_py_zstd_2 => "py_zstd-2",
    golden_py_zstd_3 => "py_zstd-3",
    golden_py_types => "py_types",
    golden_py_types_lz4 => "py_types_lz4",
    golden_py_external => "py_external",
    golden_py_logs => "py_logs",
    golden_py_password_1 => "py_password-1",
    golden_py_password_2 => "py_password-2",
    golden_py_cancel => "py_cancel",
    golden_py_ping => "py_ping",
    golden_synth_54492_lz4 => "synth_54492_lz4",
    golden_synth_54481_zstd => "synth_54481_zstd",
    golden_synth_54485_types => "synth_54485_types",
    golden_synth_54485_interserver => "synth_54485_interserver",
    golden_synth_54470_chunked => "synth_54470_chunked",
    golden_synth_ch_go_54450_midstream => "synth_ch_go_54450_midstream",
    golden_synth_ch_go_54460_otel => "synth_ch_go_54460_otel",
}

fn total_bytes(chunks: &[Chunk]) -> usize {
    chunks.iter().map(|c| c.2.len()).sum()
}

#[test]
fn rechunking_gives_identical_records() {
    for name in all_fixtures() {
        let chunks = load(&name);
        let (whole, driver) = run(&chunks, usize::MAX);
        if driver.parser_counters().n_resync_bytes > 0 {
            // Resynchronisation trusts syscall boundaries, which re-chunking moves.
            continue;
        }
        let pieces: &[usize] = if total_bytes(&chunks) > 200_000 {
            &[7, 64, 4096]
        } else {
            &[1, 7, 64]
        };
        for &piece in pieces {
            let (records, _) = run(&chunks, piece);
            assert_eq!(records, whole, "{name}: pieces of {piece}");
        }
    }
}

/// Records that are complete (not cut off by the end of the bytes).
fn complete(records: &[RequestRecord]) -> Vec<&RequestRecord> {
    records
        .iter()
        .filter(|r| r.status != Status::Incomplete)
        .collect()
}

/// The bytes of a conversation cut at `keep` bytes (in chunk order).
fn prefix(chunks: &[Chunk], keep: usize) -> Vec<Chunk> {
    let mut left = keep;
    let mut out = Vec::new();
    for (d, t, b) in chunks {
        if left == 0 {
            break;
        }
        let n = b.len().min(left);
        out.push((*d, *t, b[..n].to_vec()));
        left -= n;
    }
    out
}

#[test]
fn every_prefix_gives_a_prefix_of_the_records() {
    for name in all_fixtures() {
        let chunks = load(&name);
        let total = total_bytes(&chunks);
        let (whole, _) = run(&chunks, usize::MAX);
        let whole = complete(&whole);
        let step = if total > 20_000 { total / 500 + 1 } else { 1 };
        for keep in (0..=total).step_by(step) {
            let (records, _) = run(&prefix(&chunks, keep), usize::MAX);
            let done = complete(&records);
            assert!(done.len() <= whole.len(), "{name}: prefix {keep}");
            assert_eq!(done[..], whole[..done.len()], "{name}: prefix {keep}");
        }
    }
}

/// The fields a record from a mid-stream start must get right when it exists at all.
fn key(r: &RequestRecord) -> (u64, u64, Option<String>, Status, Option<i32>, String) {
    let Details::ClickHouse(d) = &r.details else {
        unreachable!()
    };
    (
        r.start_ns,
        r.end_ns,
        r.query.clone(),
        r.status,
        r.error_code,
        d.query_id.clone(),
    )
}

#[test]
fn mid_stream_starts_never_misparse() {
    for name in all_fixtures() {
        let chunks = load(&name);
        let total = total_bytes(&chunks);
        let (whole, _) = run(&chunks, usize::MAX);
        let known: Vec<_> = whole.iter().map(key).collect();
        let step = if total > 20_000 { total / 300 + 1 } else { 1 };
        for drop in (1..total).step_by(step) {
            // Drop the first `drop` bytes of the conversation.
            let mut left = drop;
            let mut rest = Vec::new();
            for (d, t, b) in &chunks {
                let n = b.len().min(left);
                left -= n;
                if n < b.len() {
                    rest.push((*d, *t, b[n..].to_vec()));
                }
            }
            let (records, _) = run(&rest, usize::MAX);
            for r in complete(&records) {
                assert!(
                    known.contains(&key(r)),
                    "{name}: drop {drop}: misparsed {r:?}"
                );
            }
        }
    }
}

#[test]
fn a_gap_in_a_response_loses_at_most_that_query() {
    for name in ["py_basic-1", "py_lz4-1", "cli_errors-3", "py_types"] {
        let chunks = load(name);
        let (whole, _) = run(&chunks, usize::MAX);
        let ok_whole = whole
            .iter()
            .filter(|r| r.status != Status::Incomplete)
            .count();
        for (i, (dir, _, b)) in chunks.iter().enumerate() {
            if *dir != Direction::ServerToClient || b.len() < 4 {
                continue;
            }
            let mut driver = StreamDriver::new(ClickHouseParser::default());
            let mut out = Vec::new();
            for (j, (d, t, bytes)) in chunks.iter().enumerate() {
                if j == i {
                    // Only the first 2 bytes of this syscall were captured.
                    driver.push(*d, *t, &bytes[..2], bytes.len() as u64 - 2, &mut out);
                } else {
                    driver.push(*d, *t, bytes, 0, &mut out);
                }
            }
            driver.close(u64::MAX, &mut out);
            let records = requests(out);
            let done = records
                .iter()
                .filter(|r| r.status != Status::Incomplete)
                .count();
            assert!(
                done + 1 >= ok_whole,
                "{name}: gap at chunk {i}: {done} of {ok_whole}"
            );
            assert_eq!(records.len(), whole.len(), "{name}: gap at chunk {i}");
        }
    }
}

#[test]
fn garbage_makes_no_records() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..200 {
        let mut driver = StreamDriver::new(ClickHouseParser::default());
        let mut out = Vec::new();
        for i in 0..20 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let dir = if next() % 2 == 0 {
                Direction::ClientToServer
            } else {
                Direction::ServerToClient
            };
            driver.push(dir, i, &bytes, 0, &mut out);
        }
        driver.close(99, &mut out);
        assert!(out.is_empty(), "round {round}: {out:?}");
    }
}

#[test]
fn the_password_never_reaches_a_record() {
    let secret = "ch-secret-pw";
    let mut seen = 0;
    for name in &all_fixtures() {
        let chunks = load(name);
        let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.2.clone()).collect();
        if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
            seen += 1;
        }
        for piece in [1, 7, usize::MAX] {
            let (records, driver) = run(&chunks, piece);
            let dump = format!("{records:?} {:?}", driver.parser());
            assert!(!dump.contains(secret), "{name}: the password leaked");
            assert!(!dump.contains("wrong-"), "{name}: the password leaked");
        }
    }
    assert!(seen >= 3, "the password fixtures must carry the password");
}

/// Builders for conversations made in the tests themselves (too large to commit).
mod build {
    pub fn vu(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    pub fn s(x: &[u8], out: &mut Vec<u8>) {
        vu(x.len() as u64, out);
        out.extend_from_slice(x);
    }

    /// The handshake of clickhouse-client 18.16 with an 18.16 server (revision 54412).
    pub fn handshake_54412() -> (Vec<u8>, Vec<u8>) {
        let mut c = vec![0];
        s(b"ClickHouse client", &mut c);
        c.extend_from_slice(&[18, 16]);
        vu(54412, &mut c);
        s(b"default", &mut c);
        s(b"default", &mut c);
        s(b"", &mut c);
        let mut srv = vec![0];
        s(b"ClickHouse", &mut srv);
        srv.extend_from_slice(&[18, 16]);
        vu(54412, &mut srv);
        s(b"UTC", &mut srv);
        s(b"vm", &mut srv);
        vu(1, &mut srv);
        (c, srv)
    }

    /// A Query at revision 54412 (uncompressed) followed by the empty Data block.
    pub fn query_54412(text: &[u8]) -> Vec<u8> {
        let mut q = vec![1, 0, 1, 0, 0];
        s(b"0.0.0.0:0", &mut q);
        q.push(1);
        s(b"", &mut q);
        s(b"vm", &mut q);
        s(b"ClickHouse client", &mut q);
        q.extend_from_slice(&[18, 16]);
        vu(54412, &mut q);
        s(b"", &mut q);
        vu(1, &mut q);
        q.extend_from_slice(&[0, 2, 0]);
        s(text, &mut q);
        q.extend_from_slice(&[2, 0, 1, 0, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0]);
        q
    }

    /// A server Data packet with one String column of `rows` values.
    pub fn string_block(rows: u64, value: impl Fn(u64) -> Vec<u8>) -> Vec<u8> {
        let mut b = vec![1, 0, 1, 0, 2, 0xff, 0xff, 0xff, 0xff, 0, 1];
        vu(rows, &mut b);
        s(b"s", &mut b);
        s(b"String", &mut b);
        for i in 0..rows {
            s(&value(i), &mut b);
        }
        b
    }
}

/// Splits bytes into syscall-sized chunks as a server with a 64 KiB socket buffer would.
fn syscalls(dir: Direction, ts: &mut u64, bytes: &[u8], size: usize) -> Vec<Chunk> {
    bytes
        .chunks(size)
        .map(|c| {
            *ts += 10;
            (dir, *ts, c.to_vec())
        })
        .collect()
}

#[test]
fn a_million_string_rows_keep_the_end_of_the_query() {
    use Direction::*;
    let (hello_c, hello_s) = build::handshake_54412();
    let mut chunks = vec![(ClientToServer, 1, hello_c), (ServerToClient, 2, hello_s)];
    let mut ts = 10;
    chunks.push((
        ClientToServer,
        ts,
        build::query_54412(b"SELECT toString(number) FROM numbers(1000000)"),
    ));
    let mut blocks = Vec::new();
    for b in 0..16u64 {
        blocks.extend(build::string_block(62_500, |i| {
            (b * 62_500 + i).to_string().into_bytes()
        }));
    }
    chunks.extend(syscalls(ServerToClient, &mut ts, &blocks, 65_536));
    chunks.extend(syscalls(
        ServerToClient,
        &mut ts,
        &[6, 0xc0, 0x84, 0x3d, 16, 0x80, 0x80, 0x40, 0, 0, 1],
        1 << 20,
    ));
    chunks.push((ServerToClient, ts + 100, vec![5]));
    let (records, driver) = run(&chunks, usize::MAX);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    let Details::ClickHouse(d) = &r.details else {
        unreachable!()
    };
    assert_eq!(
        (r.status, r.end_ns, d.result_rows),
        (Status::Ok, ts + 100, 1_000_000)
    );
    assert_eq!(r.bytes_received as usize, blocks.len() + 11 + 1);
    assert!(driver.buffered() < 1 << 20, "the result was buffered");
    for piece in [7, 1000] {
        assert_eq!(run(&chunks, piece).0, records, "pieces of {piece}");
    }
}

#[test]
fn a_query_longer_than_the_buffer_is_kept_bounded() {
    use Direction::*;
    let (hello_c, hello_s) = build::handshake_54412();
    let mut text = b"INSERT INTO t VALUES ".to_vec();
    while text.len() < 1_000_000 {
        text.extend_from_slice("(1, 'é'),".as_bytes());
    }
    let mut ts = 10;
    let mut chunks = vec![(ClientToServer, 1, hello_c), (ServerToClient, 2, hello_s)];
    chunks.extend(syscalls(
        ClientToServer,
        &mut ts,
        &build::query_54412(&text),
        65_536,
    ));
    chunks.push((ServerToClient, ts + 5, vec![5]));
    let (records, driver) = run(&chunks, usize::MAX);
    assert_eq!(records.len(), 1, "{:?}", driver.counters());
    let r = &records[0];
    assert!(r.query_truncated);
    let q = r.query.as_deref().unwrap();
    assert!(q.len() <= 4096 && q.starts_with("INSERT INTO t VALUES (1, 'é')"));
    assert_eq!(
        (r.operation.as_ref(), r.status, r.start_ns),
        ("INSERT", Status::Ok, 20)
    );
    assert_eq!(driver.parser_counters().n_resyncs, 0);
}

#[test]
fn a_query_cut_by_close_is_incomplete() {
    let chunks = load("cli_sleep");
    let cut: Vec<Chunk> = chunks.iter().filter(|c| c.2 != [5]).cloned().collect();
    let (records, _) = run(&cut, usize::MAX);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, Status::Incomplete);
    assert_eq!(records[0].end_ns, records[0].start_ns);
}
