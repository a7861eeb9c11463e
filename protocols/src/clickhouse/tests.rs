//! Data-driven tests over the `.chunks` fixtures of `tests/fixtures/clickhouse/`, through the
//! shared [`crate::testkit`]: each fixture's records, formatted, must equal the committed
//! `<fixture>.expected` next to it (re-bless with `UPDATE_EXPECT=1 cargo test -p
//! l7tap-protocols clickhouse`). Then properties over all fixtures: re-chunking, every
//! prefix, mid-stream starts, gaps, garbage, and that the password never reaches a record.
//!
//! Fixtures dumped from live captures (`l7tap dump`) may end a line with `cut=<n>`: `n` more
//! bytes of that syscall were not captured by the kernel. A line ending with `tail` holds the
//! last bytes of the cut syscall before it (the kernel sends them on their own). The kit
//! replays both as the pipeline does.
use std::fmt::Write;
use std::path::PathBuf;

use super::ClickHouseParser;
use crate::fixture::{Chunk, Cut};
use crate::stream::StreamDriver;
use crate::testkit::{
    self, as_recorded, complete, complete_records_are_known_by, complete_records_form_a_prefix,
    evenly, gathered, has_cuts, Kit,
};
use crate::{Details, Direction, OwnedRecord, Records, Status};

/// The ClickHouse parser and its fixtures, for the shared test kit.
fn kit() -> Kit<ClickHouseParser> {
    Kit::new(
        testkit::fixture_dir("clickhouse"),
        || StreamDriver::new(ClickHouseParser::default()),
        describe,
    )
    .credentials(|_| &[PASSWORD, "wrong-"])
    .resync_trusts_syscall_boundaries()
    .one_byte_pieces_up_to(200_000)
}

/// The password of the `*_password-*` fixtures.
const PASSWORD: &str = "ch-secret-pw";

fn load(name: &str) -> Vec<Chunk> {
    kit().load(name)
}

fn all_fixtures() -> Vec<String> {
    kit().fixtures()
}

/// Feeds `chunks` to a fresh driver, each split into pieces of at most `piece` bytes (a cut
/// follows the last piece), and closes at the end.
fn run(chunks: &[Chunk], piece: usize) -> (Vec<OwnedRecord>, StreamDriver<ClickHouseParser>) {
    kit().run(chunks, piece)
}

fn requests(out: Records) -> Vec<OwnedRecord> {
    out.to_owned_records()
}

/// Golden text: each record on a few lines, then the counters.
fn describe(
    _chunks: &[Chunk],
    records: &[OwnedRecord],
    driver: &StreamDriver<ClickHouseParser>,
) -> String {
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
            r.str(d.query_id),
            d.query_kind.map_or("-", |k| k.name()),
            r.str(d.initial_query_id),
            r.str(d.user),
            r.str(d.client_name),
            r.str(d.client_version),
            d.revision,
            d.compressed
        );
        let _ = writeln!(
            s,
            "   read={}r/{}b written={}r/{}b result_rows={}",
            d.rows_read, d.bytes_read, d.rows_written, d.bytes_written, d.result_rows
        );
        if let Some(q) = r.query() {
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
                r.error_name.unwrap_or("?"),
                r.error_message().unwrap_or("")
            );
        }
    }
    let p = driver.parser_counters();
    let c = driver.counters();
    let _ = write!(
        s,
        "counters: messages={} resyncs={} resync_bytes={} parse_errors={} skipped={} dropped={}",
        p.n_messages,
        p.n_resyncs,
        p.n_resync_bytes,
        c.n_parse_errors,
        c.n_skipped_bytes,
        c.n_dropped
    );
    // Only where there are any, so that the fixtures of whole conversations keep their line.
    if p.n_midstream_starts > 0 {
        let _ = write!(s, " midstream_starts={}", p.n_midstream_starts);
    }
    if p.n_gap_resyncs > 0 {
        let _ = write!(s, " gap_resyncs={}", p.n_gap_resyncs);
    }
    let _ = writeln!(s);
    s
}

crate::golden_tests! { kit();
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
    golden_live_pool_client => "live_pool_client",
    golden_live_pool_server => "live_pool_server",
    golden_live_py_million_cut => "live_py_million_cut",
    golden_live_py_throwif => "live_py_throwif",
    golden_live_py_throwif_cut => "live_py_throwif_cut",
}

/// Both ends of one live connection (a Distributed pool connection opened before the
/// capture): the reading end sees the server's packets gathered (Data, ProfileInfo,
/// Progress, Data, EndOfStream in one syscall), yet makes the same records as the writing end.
#[test]
fn both_ends_of_a_connection_make_the_same_records() {
    let (client, client_driver) = run(&load("live_pool_client"), usize::MAX);
    let (server, _) = run(&load("live_pool_server"), usize::MAX);
    assert_eq!(client.len(), 6);
    assert!(client.iter().all(|r| r.status == Status::Ok));
    let untimed_client: Vec<_> = client.iter().map(untimed).collect();
    let untimed_server: Vec<_> = server.iter().map(untimed).collect();
    assert_eq!(untimed_client, untimed_server);
    assert_eq!(client_driver.counters().n_parse_errors, 0);
}

/// Where the kernel cut the end of a response (the reading end gathers it into one large
/// read), the query stays `incomplete`: its end was never seen. The queries after it are
/// whole again.
#[test]
fn a_response_whose_end_was_cut_stays_incomplete() {
    for name in ["live_py_million_cut", "live_py_throwif_cut"] {
        let chunks = load(name);
        assert!(has_cuts(&chunks));
        let (records, _) = run(&chunks, usize::MAX);
        let cut: Vec<_> = records
            .iter()
            .filter(|r| r.status == Status::Incomplete)
            .collect();
        assert_eq!(cut.len(), 1, "{name}");
        assert!(cut[0].query().unwrap().contains("system.numbers"), "{name}");
        assert_eq!(cut[0].end_ns, cut[0].start_ns, "{name}");
        assert!(records.len() > 1, "{name}");
    }
}

/// Also in pieces of 4096 bytes, and of 1 byte up to 200 KB (7, 64 and 4096 beyond).
#[test]
fn rechunking_gives_identical_records() {
    kit().check_rechunking();
}

#[test]
fn every_prefix_gives_a_prefix_of_the_records() {
    kit().check_prefixes(evenly(20_000, 500), complete_records_form_a_prefix);
}

/// The fields a record from a mid-stream start must get right when it exists at all.
/// Start, end, query, status, error code, query id.
type Key = (u64, u64, Option<String>, Status, Option<i32>, String);

fn key(r: &OwnedRecord) -> Key {
    let Details::ClickHouse(d) = &r.details else {
        unreachable!()
    };
    (
        r.start_ns,
        r.end_ns,
        r.query().map(str::to_owned),
        r.status,
        r.error_code,
        r.str(d.query_id).to_owned(),
    )
}

/// Also as a reading process sees the conversation: packets gathered in fewer syscalls.
#[test]
fn mid_stream_starts_never_misparse() {
    kit().check_mid_stream_starts(
        &[as_recorded, gathered],
        evenly(20_000, 300),
        complete_records_are_known_by(key),
    );
}

/// A record without its timestamps (which move when syscalls are merged).
fn untimed(r: &OwnedRecord) -> OwnedRecord {
    let mut r = r.clone();
    r.start_ns = 0;
    r.end_ns = 0;
    r
}

/// The reading end of a connection sees the writer's packets gathered into fewer syscalls
/// (a Progress, a ProfileInfo and the EndOfStream in one read): the same records come out.
#[test]
fn reads_that_gather_packets_give_the_same_records() {
    for name in all_fixtures() {
        let chunks = load(&name);
        let (whole, driver) = run(&chunks, usize::MAX);
        if driver.parser_counters().n_resync_bytes > 0 || has_cuts(&chunks) {
            // Resynchronisation trusts syscall boundaries, which gathering moves.
            continue;
        }
        let (records, _) = run(&gathered(&chunks), usize::MAX);
        let expected: Vec<_> = whole.iter().map(untimed).collect();
        let actual: Vec<_> = records.iter().map(untimed).collect();
        assert_eq!(actual, expected, "{name}");
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
        for (i, c) in chunks.iter().enumerate() {
            if c.dir != Direction::ServerToClient || c.bytes.len() < 4 {
                continue;
            }
            let mut driver = StreamDriver::new(ClickHouseParser::default());
            let mut out = Records::default();
            for (j, c) in chunks.iter().enumerate() {
                if j == i {
                    // Only the first 2 bytes of this syscall were captured.
                    let (bytes, cut) = (&c.bytes[..2], c.bytes.len() as u64 - 2);
                    driver.push(c.dir, c.ts_ns, bytes, cut, &mut out);
                } else {
                    driver.push(c.dir, c.ts_ns, &c.bytes, 0, &mut out);
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
    kit().check_random_bytes(0x2545_f491_4f6c_dd1d, 200, 20);
}

/// Garbage before each direction's first syscall (so before both Hellos) is counted, and
/// gives no record a mid-stream start would not.
#[test]
fn garbage_first_is_counted_and_misparses_nothing() {
    kit().check_garbage_prepended(0x9e37_79b9_7f4a_7c15, complete_records_are_known_by(key));
}

/// `chunks` with a syscall of random bytes (first byte 0xff) before each direction's first.
fn with_garbage_first(chunks: &[Chunk], rng: &mut testkit::Rng) -> Vec<Chunk> {
    let mut dirty = Vec::with_capacity(chunks.len() + 2);
    let mut seen = [false; 2];
    for c in chunks {
        if !seen[c.dir.index()] {
            seen[c.dir.index()] = true;
            let len = 1 + rng.below(300);
            let mut garbage = rng.bytes(len);
            garbage[0] = 0xff;
            dirty.push(Chunk::new(c.dir, c.ts_ns, garbage));
        }
        dirty.push(c.clone());
    }
    dirty
}

/// A record without what only the handshake tells (user, negotiated revision).
fn without_handshake(r: &OwnedRecord) -> (Key, u64, u64, u64, u64, u64, u64, u64, bool) {
    let Details::ClickHouse(d) = &r.details else {
        unreachable!()
    };
    (
        key(r),
        r.bytes_sent,
        r.bytes_received,
        d.rows_read,
        d.bytes_read,
        d.rows_written,
        d.bytes_written,
        d.result_rows,
        d.compressed,
    )
}

/// Garbage hides both Hellos of a compressed session of two queries: the first Query, which
/// carries no settings, reads alike at every revision from 54401 to 54440, so its inferred
/// layout range must hold them all (the true one is 54412). Taking only the newest (54429 and
/// up) read its Progress packets with written rows, lost the first response's end, failed on
/// the second Query (its settings are binary, as before 54429) and made one record from the
/// first Query to the second's EndOfStream, with both results' rows.
#[test]
fn garbage_before_the_hellos_of_a_compressed_session_keeps_its_two_queries() {
    let mut rng = testkit::Rng(0x2545_f491_4f6c_dd1d);
    for name in ["py_lz4-3", "py_zstd-3"] {
        let chunks = load(name);
        let (clean, _) = run(&chunks, usize::MAX);
        assert_eq!(clean.len(), 2, "{name}");
        let expected: Vec<_> = clean.iter().map(without_handshake).collect();
        for round in 0..8 {
            let (records, driver) = run(&with_garbage_first(&chunks, &mut rng), usize::MAX);
            let actual: Vec<_> = records.iter().map(without_handshake).collect();
            assert_eq!(actual, expected, "{name}: round {round}");
            let counters = driver.parser_counters();
            assert!(
                counters.searches() > 0 && counters.n_resync_bytes > 0,
                "{name}"
            );
            assert_eq!(driver.counters().n_parse_errors, 0, "{name}: round {round}");
            let Details::ClickHouse(d) = &records[0].details else {
                unreachable!()
            };
            assert!(
                (54412..=54440).contains(&d.revision),
                "{name}: {}",
                d.revision
            );
        }
    }
}

/// When the end of a response was lost and the next Query cannot be read, the query in
/// flight ends incomplete (counted): a later response end may be the unread Query's, so
/// pairing it with the query in flight would merge two queries into one record. Whether the
/// client side was in step (the Query comes at a packet boundary) or resynchronising.
#[test]
fn an_unreadable_query_after_a_lost_response_end_ends_the_query_in_flight() {
    use Direction::*;
    let chunks = load("py_lz4-3");
    let (clean, _) = run(&chunks, usize::MAX);
    assert_eq!(clean.len(), 2);
    let first_end = chunks
        .iter()
        .position(|c| c.dir == ServerToClient && c.ts_ns == clean[0].end_ns)
        .unwrap();
    let second_query = chunks
        .iter()
        .position(|c| c.dir == ClientToServer && c.ts_ns == clean[1].start_ns)
        .unwrap();
    let known = keys(&clean);
    for client_lost in [false, true] {
        let mut driver = StreamDriver::new(ClickHouseParser::default());
        let mut out = Records::default();
        for (i, c) in chunks.iter().enumerate() {
            if i == first_end {
                // The syscall holding the first response's end is lost.
                driver.lost(c.dir, c.bytes.len() as u64, c.ts_ns);
                continue;
            }
            if i == second_query {
                if client_lost {
                    driver.lost(ClientToServer, 100, c.ts_ns);
                }
                // A query id of 5 bytes that are not printable: no Query layout reads it.
                let mut bytes = c.bytes.clone();
                assert_eq!(bytes[..2], [1, 0]);
                bytes[1] = 5;
                driver.push(c.dir, c.ts_ns, &bytes, 0, &mut out);
                continue;
            }
            driver.push(c.dir, c.ts_ns, &c.bytes, 0, &mut out);
        }
        driver.close(chunks.last().unwrap().ts_ns, &mut out);
        let records = requests(out);
        assert_eq!(records.len(), 1, "client lost: {client_lost}: {records:?}");
        let r = &records[0];
        assert_eq!(
            (r.status, r.start_ns, r.end_ns),
            (Status::Incomplete, clean[0].start_ns, clean[0].start_ns),
            "client lost: {client_lost}"
        );
        assert!(complete(&records).iter().all(|r| known.contains(&key(r))));
        assert_eq!(driver.parser().unanswered_queries(), 1);
    }
}

#[test]
fn the_password_never_reaches_a_record() {
    kit().check_no_credentials();
    let carrying = all_fixtures()
        .iter()
        .filter(|name| {
            let chunks = load(name);
            let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.clone()).collect();
            bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes())
        })
        .count();
    assert!(
        carrying >= 3,
        "the password fixtures must carry the password"
    );
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
            Chunk::new(dir, *ts, c.to_vec())
        })
        .collect()
}

#[test]
fn a_million_string_rows_keep_the_end_of_the_query() {
    use Direction::*;
    let (hello_c, hello_s) = build::handshake_54412();
    let mut chunks = vec![
        Chunk::new(ClientToServer, 1, hello_c),
        Chunk::new(ServerToClient, 2, hello_s),
    ];
    let mut ts = 10;
    chunks.push(Chunk::new(
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
    chunks.push(Chunk::new(ServerToClient, ts + 100, vec![5]));
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
    let mut chunks = vec![
        Chunk::new(ClientToServer, 1, hello_c),
        Chunk::new(ServerToClient, 2, hello_s),
    ];
    chunks.extend(syscalls(
        ClientToServer,
        &mut ts,
        &build::query_54412(&text),
        65_536,
    ));
    chunks.push(Chunk::new(ServerToClient, ts + 5, vec![5]));
    let (records, driver) = run(&chunks, usize::MAX);
    assert_eq!(records.len(), 1, "{:?}", driver.counters());
    let r = &records[0];
    assert!(r.query_truncated);
    let q = r.query().unwrap();
    assert!(q.len() <= 4096 && q.starts_with("INSERT INTO t VALUES (1, 'é')"));
    assert_eq!(
        (r.operation, r.status, r.start_ns),
        ("INSERT", Status::Ok, 20)
    );
    assert_eq!(driver.parser_counters().n_resyncs, 0);
}

#[test]
fn a_query_cut_by_close_is_incomplete() {
    let chunks = load("cli_sleep");
    let cut: Vec<Chunk> = chunks.iter().filter(|c| c.bytes != [5]).cloned().collect();
    let (records, _) = run(&cut, usize::MAX);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, Status::Incomplete);
    assert_eq!(records[0].end_ns, records[0].start_ns);
}

/// The conversation as a client with large reads sees it: each run of server syscalls read
/// in reads of `read` bytes (aligned to the run's end, so the last read is a large one), each
/// read longer than `capture` cut after its first `capture` bytes, its last `tail` bytes (at
/// most the cut) sent as a tail: what the kernel probes send.
fn client_reads(chunks: &[Chunk], read: usize, capture: usize, tail: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chunks.len() {
        if chunks[i].dir != Direction::ServerToClient {
            out.push(chunks[i].clone());
            i += 1;
            continue;
        }
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        while i < chunks.len() && chunks[i].dir == Direction::ServerToClient {
            bytes.extend_from_slice(&chunks[i].bytes);
            ends.push((bytes.len(), chunks[i].ts_ns));
            i += 1;
        }
        let mut start = 0;
        let first = bytes.len() % read;
        let mut end = if first == 0 {
            read.min(bytes.len())
        } else {
            first
        };
        while start < bytes.len() {
            let ts = ends.iter().find(|e| e.0 >= end).unwrap().1;
            let r = &bytes[start..end];
            if r.len() > capture {
                let t = tail.min(r.len() - capture);
                let cut = (r.len() - capture - t) as u64;
                let head = r[..capture].to_vec();
                out.push(Chunk::cut_after(Direction::ServerToClient, ts, head, cut));
                if t > 0 {
                    let tail = r[r.len() - t..].to_vec();
                    out.push(Chunk::tail(Direction::ServerToClient, ts, tail));
                }
            } else {
                out.push(Chunk::new(Direction::ServerToClient, ts, r.to_vec()));
            }
            start = end;
            end = (end + read).min(bytes.len());
        }
    }
    out
}

/// A record with its end set to its start.
fn untimed_end(r: &OwnedRecord) -> OwnedRecord {
    let mut r = r.clone();
    r.end_ns = r.start_ns;
    r
}

fn keys(records: &[OwnedRecord]) -> Vec<Key> {
    records.iter().map(key).collect()
}

/// A client reading a 10^6-row result (uncompressed, compressed) or a result broken off by an
/// Exception in large reads: the kernel captures only the first bytes of each read and its
/// tail, and the query still ends where the whole conversation says, with the same status
/// and error. Without tails its end is lost.
#[test]
fn the_tail_of_a_cut_read_ends_the_query() {
    let cases: &[(&str, usize, usize, usize)] = &[
        ("py_million", 1 << 20, 16384, 4096),
        ("py_million", 100_000, 16384, 256),
        ("py_million", 100_000, 16384, 2048),
        ("cli_million", 1 << 20, 1024, 2048),
        ("cli_million", 4000, 1024, 512),
        ("py_lz4-1", 4000, 100, 4096),
        ("cli_errors-3", 1 << 20, 100, 8192),
    ];
    for &(name, read, capture, tail) in cases {
        let chunks = load(name);
        assert!(!has_cuts(&chunks));
        let (whole, _) = run(&chunks, usize::MAX);
        let reads = client_reads(&chunks, read, capture, tail);
        assert!(reads.iter().any(|c| c.cut == Cut::Tail), "{name}: no tail");
        let (records, driver) = run(&reads, usize::MAX);
        assert_eq!(
            keys(&records),
            keys(&whole),
            "{name} {read} {capture} {tail}"
        );
        for (r, w) in records.iter().zip(&whole) {
            assert_eq!(r.error_message(), w.error_message(), "{name}");
            assert_eq!(r.error_name, w.error_name, "{name}");
        }
        // The 10^6-row results lose their frame chain in a cut; the errors' reads are cut
        // by less than the tail, so they arrive whole, in two parts.
        assert_eq!(
            driver.counters().n_gaps > 0,
            name.contains("million"),
            "{name}: gaps"
        );
        let (untailed, _) = run(&client_reads(&chunks, read, capture, 0), usize::MAX);
        assert!(
            untailed.iter().any(|r| r.status == Status::Incomplete),
            "{name} {read} {capture}: the end was not in a cut"
        );
    }
}

/// A client reading a 10^6-row uncompressed result in large reads whose middles the kernel
/// cut: the blocks inside the cuts are never walked, so their rows are taken from the
/// ProfileInfo in the last read's tail, not from the blocks seen (65536 of 10^6, the count
/// the demo load's records showed).
#[test]
fn a_result_read_through_cuts_counts_its_rows_from_profile_info() {
    let chunks = load("py_million");
    let (whole, _) = run(&chunks, usize::MAX);
    let rows = |r: &OwnedRecord| {
        let Details::ClickHouse(d) = &r.details else {
            unreachable!()
        };
        (d.compressed, d.result_rows)
    };
    assert_eq!(rows(&whole[0]), (false, 1_000_000));
    for (read, tail) in [(1 << 20, 4096), (100_000, 256), (100_000, 2048)] {
        let reads = client_reads(&chunks, read, 16384, tail);
        let (records, driver) = run(&reads, usize::MAX);
        assert!(driver.counters().n_gaps > 0, "reads of {read}: no gap");
        assert_eq!(keys(&records), keys(&whole), "reads of {read}, tail {tail}");
        let first = &records[0];
        assert_eq!(first.status, Status::Ok);
        assert_eq!(rows(first), rows(&whole[0]), "reads of {read}, tail {tail}");
    }
}

/// A result broken off by an Exception (the real one of 18.16, with its stack trace) after
/// 10^5 rows, read by the client in 1 MiB reads: the Exception in the last read's tail ends
/// the query as an error with its code, name and message.
#[test]
fn an_exception_in_the_tail_of_a_cut_read_ends_the_query() {
    use Direction::*;
    let exception = load("live_py_throwif")
        .into_iter()
        .find(|c| c.dir == ServerToClient && c.bytes.first() == Some(&2))
        .unwrap()
        .bytes;
    assert!(exception.len() > 1500 && exception.len() < 4096);
    let (hello_c, hello_s) = build::handshake_54412();
    let mut response = build::string_block(100_000, |i| i.to_string().into_bytes());
    response.extend_from_slice(&exception);
    let chunks = vec![
        Chunk::new(ClientToServer, 1, hello_c),
        Chunk::new(ServerToClient, 2, hello_s),
        Chunk::new(
            ClientToServer,
            3,
            build::query_54412(b"SELECT throwIf(number = 100000)"),
        ),
        Chunk::new(ServerToClient, 4, response),
    ];
    let (whole, _) = run(&chunks, usize::MAX);
    assert_eq!(whole[0].status, Status::Error);
    for (read, tail, ended) in [
        (1 << 20, 4096, true),
        (1 << 20, 1024, false),
        (300_000, 4096, true),
    ] {
        let (records, _) = run(&client_reads(&chunks, read, 16384, tail), usize::MAX);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        if ended {
            assert_eq!(key(r), key(&whole[0]), "reads of {read}, tail {tail}");
            assert_eq!(r.error_name, Some("FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"));
            assert_eq!(r.error_message(), whole[0].error_message());
        } else {
            // The Exception does not fit in the tail: its end is not guessed.
            assert_eq!(r.status, Status::Incomplete, "reads of {read}, tail {tail}");
        }
    }
}

/// Whatever the read sizes, capture limit and tail size, a record made from tails is one the
/// whole conversation makes: never a query ended at misparsed bytes. (Capture limits stay
/// far above one byte: a captured head of a lone byte 5 would pass for an EndOfStream
/// filling its syscall, since the head is parsed before its cut is known.)
#[test]
fn cut_reads_with_tails_never_misparse() {
    for name in all_fixtures() {
        let chunks = load(&name);
        if has_cuts(&chunks) {
            continue;
        }
        let (whole, _) = run(&chunks, usize::MAX);
        // A read is stamped when it returns: a record of gathered reads may end later.
        let known: Vec<_> = whole.iter().map(|r| key(&untimed_end(r))).collect();
        for &(read, capture, tail) in &[
            (1 << 20, 16384, 4096),
            (50_000, 4096, 1024),
            (3000, 64, 256),
            (777, 64, 64),
            (200, 100, 8),
        ] {
            let (records, _) = run(&client_reads(&chunks, read, capture, tail), usize::MAX);
            for r in complete(&records) {
                let i = known.iter().position(|k| *k == key(&untimed_end(r)));
                assert!(
                    i.is_some_and(|i| r.end_ns >= whole[i].end_ns),
                    "{name}: reads of {read}, capture {capture}, tail {tail}: misparsed {r:?}"
                );
            }
        }
    }
}

/// Tails of random bytes, of column data ending in a byte 5 (EndOfStream's code), or of
/// packets that look like a response's end without a block before the EndOfStream, end no
/// query.
#[test]
fn tails_that_are_not_a_response_end_end_nothing() {
    use Direction::*;
    let (hello_c, hello_s) = build::handshake_54412();
    let query = build::query_54412(b"SELECT number % 7 FROM numbers(1000000)");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut tails: Vec<Vec<u8>> = Vec::new();
    for round in 0..2000 {
        let len = 1 + (next() % 600) as usize;
        let mut t: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 {
            *t.last_mut().unwrap() = 5;
        }
        tails.push(t);
    }
    // UInt8 column data 0..6 repeated, ending at each of its bytes.
    let pattern: Vec<u8> = (0..700).map(|i| (i % 7) as u8).collect();
    for end in 600..607 {
        tails.push(pattern[..end].to_vec());
    }
    // ProfileInfo, Progress, EndOfStream: no block before the end.
    let mut no_block = pattern[..600].to_vec();
    no_block.extend_from_slice(&[6, 0xc0, 0x84, 0x3d, 16, 0x80, 0x80, 0x40, 0, 0, 1]);
    no_block.extend_from_slice(&[3, 0x80, 0x80, 0x40, 0x80, 0x80, 0x80, 4, 0]);
    no_block.push(5);
    tails.push(no_block);
    // An Exception whose name is no exception class.
    let mut fake = pattern[..100].to_vec();
    fake.extend_from_slice(&[2, 60, 0, 0, 0]);
    build::s(b"Hello", &mut fake);
    build::s(b"message", &mut fake);
    build::s(b"", &mut fake);
    fake.push(0);
    tails.push(fake);
    for (i, t) in tails.iter().enumerate() {
        let chunks = vec![
            Chunk::new(ClientToServer, 1, hello_c.clone()),
            Chunk::new(ServerToClient, 2, hello_s.clone()),
            Chunk::new(ClientToServer, 3, query.clone()),
            Chunk::cut_after(ServerToClient, 4, pattern[..300].to_vec(), 1_000_000),
            Chunk::tail(ServerToClient, 4, t.clone()),
        ];
        let (records, _) = run(&chunks, usize::MAX);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].status, Status::Incomplete, "tail {i}: {t:?}");
    }
}

/// Prints the records of any `.chunks` file, or of every file of a directory
/// (`CH_CHUNKS=path cargo test -p l7tap-protocols describe_chunks_file -- --ignored
/// --nocapture`): how live dumps are examined.
#[test]
#[ignore]
fn describe_chunks_file() {
    let path = PathBuf::from(std::env::var("CH_CHUNKS").expect("CH_CHUNKS=<file.chunks|dir>"));
    let mut files = vec![path.clone()];
    if path.is_dir() {
        files = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "chunks"))
            .collect();
        files.sort();
    }
    for file in files {
        let text = kit().describe_chunks(&testkit::load_path(&file));
        println!("== {}\n{text}", file.display());
    }
}
