//! Tests of the ClickHouse HTTP parser over the `.chunks` fixtures of
//! `tests/fixtures/clickhouse_http/` (recorded from a real ClickHouse 18.16) and synthetic
//! exchanges, the fixture properties through the shared [`crate::testkit`]. Each fixture's
//! records, formatted, must equal the committed `<fixture>.expected` next to it (re-bless with
//! `UPDATE_EXPECT=1 cargo test -p l7tap-protocols clickhouse_http`). Beyond the kit's
//! properties: cut reads with tails, gathered reads, lost syscalls, HTTP-looking garbage,
//! and the server's query_log.
//!
//! A fixture line may end with `cut=<n>` (`n` more bytes of that syscall were not captured)
//! or `tail` (the last bytes of the cut syscall before it), as `l7tap dump` writes them.
use std::fmt::Write;

use super::ClickHouseHttpParser;
use crate::fixture::{Chunk, Cut};
use crate::stream::StreamDriver;
use crate::testkit::{
    self, as_recorded, complete, complete_records_are_known_by, complete_records_form_a_prefix,
    evenly, gathered, has_cuts, Kit, Rng,
};
use crate::{Details, Direction, OwnedRecord, Records, Status};

/// The ClickHouse HTTP parser and its fixtures, for the shared test kit.
fn kit() -> Kit<ClickHouseHttpParser> {
    Kit::new(
        testkit::fixture_dir("clickhouse_http"),
        || StreamDriver::new(ClickHouseHttpParser::default()),
        describe,
    )
    .credentials(|_| SECRETS)
    // A lost position is found again where a syscall begins, which re-chunking moves.
    .resync_trusts_syscall_boundaries()
    .one_byte_pieces_up_to(200_000)
}

/// The test bed's password is replaced by the first in the fixtures (record.py); the second
/// is the wrong password of `http_password`, the third the first in base64 (basic auth).
const SECRETS: &[&str] = &["fixture-fake-pw", "wrong-pw", "Zml4dHVyZS1mYWtlLXB3"];

fn load(name: &str) -> Vec<Chunk> {
    kit().load(name)
}

fn all_fixtures() -> Vec<String> {
    kit().fixtures()
}

/// Feeds `chunks` to a fresh driver, each split into pieces of at most `piece` bytes (a cut
/// follows the last piece, a tail goes whole), and closes at the last timestamp.
fn run(chunks: &[Chunk], piece: usize) -> (Vec<OwnedRecord>, StreamDriver<ClickHouseHttpParser>) {
    kit().run(chunks, piece)
}

/// Golden text: each record on a few lines, then the counters.
fn describe(
    _chunks: &[Chunk],
    records: &[OwnedRecord],
    driver: &StreamDriver<ClickHouseHttpParser>,
) -> String {
    let mut s = String::new();
    for (i, r) in records.iter().enumerate() {
        let Details::ClickHouse(d) = &r.details else {
            panic!("not a ClickHouse record")
        };
        let _ = writeln!(
            s,
            "#{} {} {} http={}  start={} end={} sent={} received={}",
            i + 1,
            r.operation,
            r.status.name(),
            d.http_status,
            r.start_ns,
            r.end_ns,
            r.bytes_sent,
            r.bytes_received
        );
        let _ = writeln!(
            s,
            "   id={:?} kind={} user={:?} database={:?} format={:?}",
            r.str(d.query_id),
            d.query_kind.map_or("-", |k| k.name()),
            r.str(d.user),
            r.str(d.database),
            r.str(d.format),
        );
        let _ = writeln!(
            s,
            "   read={}r/{}b written={}r/{}b",
            d.rows_read, d.bytes_read, d.rows_written, d.bytes_written
        );
        if let Some(q) = r.query() {
            let truncated = if r.query_truncated {
                " (truncated)"
            } else {
                ""
            };
            let _ = writeln!(s, "   query={q:?}{truncated}");
        }
        if r.status == crate::Status::Error {
            let _ = writeln!(
                s,
                "   error={} {} {:?}",
                r.error_code.map_or("-".to_string(), |c| c.to_string()),
                r.error_name.unwrap_or("?"),
                r.error_message().unwrap_or("")
            );
        }
    }
    let p = driver.parser_counters();
    let c = driver.counters();
    let h = driver.parser().http_counters();
    let _ = writeln!(
        s,
        "counters: messages={} resyncs={} resync_bytes={} parse_errors={} skipped={} gaps={} dropped={}",
        p.n_messages,
        p.n_resyncs,
        p.n_resync_bytes,
        c.n_parse_errors,
        c.n_skipped_bytes,
        c.n_gaps,
        c.n_dropped
    );
    let _ = writeln!(
        s,
        "http: unmatched={} overflows={} chunked_lost={} chunked_found={}",
        h.n_unmatched_responses, h.n_in_flight_overflows, h.n_chunked_lost, h.n_chunked_found
    );
    s
}

crate::golden_tests! { kit();
    golden_http_get => "http_get",
    golden_http_post => "http_post",
    golden_http_password => "http_password",
    golden_http_errors => "http_errors",
    golden_http_error_midstream => "http_error_midstream",
    golden_http_error_midstream_cut => "http_error_midstream_cut",
    golden_http_large => "http_large",
    golden_http_large_cut => "http_large_cut",
    golden_http_insert => "http_insert",
    golden_http_keepalive => "http_keepalive",
    golden_http_gzip => "http_gzip",
    golden_http_requests => "http_requests",
}

fn details(r: &OwnedRecord) -> &crate::ClickHouseDetails {
    let Details::ClickHouse(d) = &r.details else {
        panic!("not a ClickHouse record: {r:?}")
    };
    d
}

/// What the server logged for each fixture query (system.query_log, 18.16, `interface = 2`):
/// the query text and the exception code (0: none). The parser must agree.
#[test]
fn records_agree_with_the_servers_query_log() {
    let logged: &[(&str, &str, i32)] = &[
        ("http_get", "SELECT 1", 0),
        (
            "http_post",
            "SELECT name, value FROM settings WHERE name LIKE 'max_threads' FORMAT JSON",
            0,
        ),
        ("http_errors", "SELECT * FROM default.no_such_table", 60),
        ("http_errors", "SELEC 1", 62),
        (
            "http_errors",
            "SELECT throwIf(number = 3) FROM system.numbers LIMIT 5",
            395,
        ),
        (
            "http_error_midstream",
            "SELECT number, throwIf(number = 300000) FROM system.numbers",
            395,
        ),
        (
            "http_insert",
            "INSERT INTO default.l7_http_kv FORMAT TSV",
            0,
        ),
        ("http_insert", "INSERT INTO default.l7_http_kv VALUES", 0),
        ("http_password", "SELECT 'basic auth'", 0),
        ("http_requests", "SELECT 2 + 2", 0),
    ];
    for &(name, query, code) in logged {
        let (records, _) = run(&load(name), usize::MAX);
        let r = records
            .iter()
            .find(|r| r.query() == Some(query))
            .unwrap_or_else(|| panic!("{name}: no record of {query:?}"));
        assert_eq!(r.error_code.unwrap_or(0), code, "{name}: {query}");
        let want = if code == 0 { Status::Ok } else { Status::Error };
        assert_eq!(r.status, want, "{name}: {query}");
    }
}

#[test]
fn users_come_from_parameters_basic_auth_and_headers() {
    let (records, _) = run(&load("http_password"), usize::MAX);
    let users: Vec<&str> = records.iter().map(|r| r.str(details(r).user)).collect();
    assert_eq!(users, ["l7tap"; 4]);
    let wrong = &records[3];
    assert_eq!(
        (wrong.status, wrong.error_code, details(wrong).http_status),
        (Status::Error, Some(193), 401)
    );
}

/// A result cut by the capture limit (16 KiB per read, then an 8 KiB tail) still ends where
/// the complete one does: the chunk being skipped carries over the first cut reads, and the
/// last chunk is found in a syscall's end.
#[test]
fn a_cut_result_ends_where_the_whole_one_does() {
    let cut = load("http_large_cut");
    assert!(has_cuts(&cut));
    let (whole, _) = run(&load("http_large"), usize::MAX);
    let (records, driver) = run(&cut, usize::MAX);
    assert_eq!(records.len(), 2);
    for (r, w) in records.iter().zip(&whole) {
        assert_eq!(
            (r.status, r.end_ns, r.query(), r.bytes_received),
            (w.status, w.end_ns, w.query(), w.bytes_received)
        );
    }
    assert_eq!(driver.parser().http_counters().n_chunked_lost, 1);
}

/// The last read of a failing result is cut too: its tail holds the appended exception and
/// the last chunk, which end the exchange with its error (the tail path).
#[test]
fn the_tail_of_a_cut_read_ends_a_failing_result() {
    let cut = load("http_error_midstream_cut");
    let last = cut.last().unwrap();
    assert_eq!(last.cut, Cut::Tail);
    let (whole, _) = run(&load("http_error_midstream"), usize::MAX);
    let (records, driver) = run(&cut, usize::MAX);
    assert_eq!(records.len(), 1);
    let (r, w) = (&records[0], &whole[0]);
    assert_eq!(
        (r.status, r.error_code, r.end_ns, r.error_message()),
        (Status::Error, Some(395), w.end_ns, w.error_message())
    );
    assert_eq!(r.end_ns, last.ts_ns);
    let h = driver.parser().http_counters();
    assert_eq!((h.n_chunked_lost, h.n_chunked_found), (1, 1));
    // Without the tail, the end is never seen.
    let (headless, _) = run(&cut[..cut.len() - 1], usize::MAX);
    assert_eq!(headless[0].status, Status::Incomplete);
}

/// Cuts every server syscall of every fixture like the kernel (first `capture` bytes, the
/// last `tail` as a tail event): every record that still completes is one of the whole run,
/// with the same end.
#[test]
fn cut_reads_with_tails_never_misparse() {
    for name in all_fixtures() {
        let chunks = load(&name);
        if has_cuts(&chunks) {
            continue;
        }
        let (whole, _) = run(&chunks, usize::MAX);
        for (capture, tail) in [(16384, 8192), (100, 50), (20, 0), (300, 7)] {
            let mut cut = Vec::new();
            for c in &chunks {
                let b = &c.bytes;
                if c.dir == Direction::ServerToClient && b.len() > capture + tail {
                    let missing = (b.len() - capture - tail) as u64;
                    cut.push(Chunk::cut_after(
                        c.dir,
                        c.ts_ns,
                        b[..capture].to_vec(),
                        missing,
                    ));
                    if tail > 0 {
                        cut.push(Chunk::tail(c.dir, c.ts_ns, b[b.len() - tail..].to_vec()));
                    }
                } else {
                    cut.push(c.clone());
                }
            }
            let (records, _) = run(&cut, usize::MAX);
            assert_eq!(records.len(), whole.len(), "{name} {capture}/{tail}");
            for (r, w) in records.iter().zip(&whole) {
                if r.status == Status::Incomplete {
                    continue;
                }
                assert_eq!(
                    (r.start_ns, r.end_ns, r.query()),
                    (w.start_ns, w.end_ns, w.query()),
                    "{name} {capture}/{tail}"
                );
                // An exception appended to a 2xx result is seen only if its line was
                // captured; a failed status always is.
                let appended = (200..300).contains(&details(w).http_status);
                if !appended || (capture, tail) == (16384, 8192) || r.status == Status::Error {
                    assert_eq!(
                        (r.status, r.error_code),
                        (w.status, w.error_code),
                        "{name} {capture}/{tail}"
                    );
                }
            }
        }
    }
}

/// In pieces of 1 (up to 200 KB), 7, 64 and 4096 bytes; fixtures with cuts or a
/// resynchronisation are left out.
#[test]
fn rechunking_gives_identical_records() {
    kit().check_rechunking();
}

/// A record without its timestamps (which move when syscalls are merged).
fn untimed(r: &OwnedRecord) -> OwnedRecord {
    let mut r = r.clone();
    r.start_ns = 0;
    r.end_ns = 0;
    r
}

#[test]
fn reads_that_gather_syscalls_give_the_same_records() {
    for name in all_fixtures() {
        let chunks = load(&name);
        if has_cuts(&chunks) {
            continue;
        }
        let (whole, _) = run(&chunks, usize::MAX);
        let (records, _) = run(&gathered(&chunks), usize::MAX);
        let expected: Vec<_> = whole.iter().map(untimed).collect();
        let actual: Vec<_> = records.iter().map(untimed).collect();
        assert_eq!(actual, expected, "{name}");
    }
}

#[test]
fn every_prefix_gives_a_prefix_of_the_records() {
    kit().check_prefixes(evenly(20_000, 500), complete_records_form_a_prefix);
}

/// The fields a record from a mid-stream start must get right when it is complete.
/// Start, end, query, status, error code, query id.
type Key = (u64, u64, Option<String>, Status, Option<i32>, String);

fn key(r: &OwnedRecord) -> Key {
    (
        r.start_ns,
        r.end_ns,
        r.query().map(str::to_owned),
        r.status,
        r.error_code,
        r.str(details(r).query_id).to_owned(),
    )
}

/// Also as a reading process sees the conversation: syscalls gathered into fewer reads.
#[test]
fn mid_stream_starts_never_misparse() {
    kit().check_mid_stream_starts(
        &[as_recorded, gathered],
        evenly(20_000, 300),
        complete_records_are_known_by(key),
    );
}

#[test]
fn a_lost_syscall_loses_at_most_its_exchange() {
    for name in all_fixtures() {
        let chunks = load(&name);
        if has_cuts(&chunks) {
            continue;
        }
        let (whole, _) = run(&chunks, usize::MAX);
        let ok_whole = complete(&whole).len();
        for i in 0..chunks.len() {
            let mut driver = kit().driver();
            let mut out = Records::default();
            for (j, c) in chunks.iter().enumerate() {
                if j == i && c.bytes.len() > 2 {
                    // Only the first 2 bytes of this syscall were captured.
                    let (bytes, cut) = (&c.bytes[..2], c.bytes.len() as u64 - 2);
                    driver.push(c.dir, c.ts_ns, bytes, cut, &mut out);
                } else {
                    driver.push(c.dir, c.ts_ns, &c.bytes, 0, &mut out);
                }
            }
            driver.close(u64::MAX, &mut out);
            let records = out.to_owned_records();
            let known: Vec<_> = whole.iter().map(key).collect();
            let done = complete(&records);
            assert!(
                done.len() + 1 >= ok_whole,
                "{name}: gap at chunk {i}: {} of {ok_whole}",
                done.len()
            );
            for r in done {
                // An exchange whose response lost its middle may still end on time, its
                // error text unread; a request body cut short leaves a truncated query.
                let id = r.str(details(r).query_id);
                let query = r.query().unwrap_or("");
                let matches = |k: &Key| {
                    (k.0, k.1, k.5.as_str()) == (r.start_ns, r.end_ns, id)
                        && match &k.2 {
                            Some(q) if r.query_truncated => q.starts_with(query),
                            q => q.as_deref() == r.query(),
                        }
                };
                assert!(
                    known.iter().any(matches),
                    "{name}: gap at chunk {i}: misparsed {r:?}"
                );
            }
        }
    }
}

/// Random syscalls make no record and are counted as resynchronisation.
#[test]
fn garbage_makes_no_records() {
    kit().check_random_bytes(0x2545_f491_4f6c_dd1d, 300, 20);
}

/// Random bytes that start like an HTTP request get past the first line and still make no
/// record, and the parser's buffers stay bounded (two 64 KiB heads and a little).
#[test]
fn garbage_that_starts_like_http_makes_no_records() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..300 {
        let mut driver = kit().driver();
        let mut out = Records::default();
        for i in 0..20 {
            let len = rng.below(300);
            let mut bytes = rng.bytes(len);
            // Some rounds start like HTTP to get past the first line.
            if round % 3 == 0 && i % 2 == 0 {
                bytes.splice(0..0, *b"GET / HTTP/1.1\r\n");
            }
            let dir = if rng.below(2) == 0 {
                Direction::ClientToServer
            } else {
                Direction::ServerToClient
            };
            driver.push(dir, i, &bytes, 0, &mut out);
        }
        driver.close(99, &mut out);
        assert!(out.is_empty(), "round {round}: {out:?}");
        assert!(driver.buffered() <= 2 * 64 * 1024 + 4096, "round {round}");
    }
}

/// Garbage before the first syscall of each direction is counted and misparses nothing.
#[test]
fn garbage_before_a_conversation_misparses_nothing() {
    kit().check_garbage_prepended(0x9e37_79b9_7f4a_7c15, complete_records_are_known_by(key));
}

#[test]
fn endless_heads_are_bounded() {
    let mut driver = kit().driver();
    let mut out = Records::default();
    driver.push(
        Direction::ClientToServer,
        1,
        b"GET /?query=SELECT+1 HTTP/1.1\r\n",
        0,
        &mut out,
    );
    for i in 0..2000u64 {
        driver.push(
            Direction::ClientToServer,
            2 + i,
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            0,
            &mut out,
        );
        assert!(driver.buffered() <= 2 * 64 * 1024 + 4096);
    }
    assert!(driver.counters().n_parse_errors >= 1);
    driver.close(9999, &mut out);
    assert!(out.is_empty());
}

/// Not in the records nor the parser's state, whatever the chunking (the kit), nor in the
/// golden text of a run nor the committed `.expected` files.
#[test]
fn no_credential_reaches_a_record() {
    assert!(kit().check_no_credentials() > 0);
    let mut carrying = 0;
    for name in &all_fixtures() {
        let bytes: Vec<u8> = load(name).iter().flat_map(|c| c.bytes.clone()).collect();
        if bytes
            .windows(SECRETS[0].len())
            .any(|w| w == SECRETS[0].as_bytes())
        {
            carrying += 1;
        }
        let expected =
            std::fs::read_to_string(kit().fixture_dir().join(format!("{name}.expected")))
                .unwrap_or_default();
        for piece in [1, 7, usize::MAX] {
            if piece == 1 && bytes.len() > 100_000 {
                continue;
            }
            let chunks = load(name);
            let (records, driver) = run(&chunks, piece);
            let golden = describe(&chunks, &records, &driver);
            for secret in SECRETS {
                assert!(!golden.contains(secret), "{name}: {secret} leaked");
                assert!(!expected.contains(secret), "{name}.expected: {secret}");
            }
        }
    }
    assert!(
        carrying >= 1,
        "the password fixture must carry the password"
    );
}

/// A request built here: `GET` with `query=`, or `POST` with a body.
fn request(target: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let method = if body.is_empty() { "GET" } else { "POST" };
    let mut r = format!(
        "{method} {target} HTTP/1.1\r\nHost: h\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn chunked_response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("HTTP/1.1 {status}\r\n{headers}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
    for c in body.chunks(4096) {
        r.extend_from_slice(format!("{:X}\r\n", c.len()).as_bytes());
        r.extend_from_slice(c);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

fn exchange_chunks(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<Chunk> {
    let mut ts = 0;
    let mut chunks = Vec::new();
    for (req, resp) in pairs {
        ts += 10;
        chunks.push(Chunk::new(Direction::ClientToServer, ts, req.clone()));
        ts += 10;
        chunks.push(Chunk::new(Direction::ServerToClient, ts, resp.clone()));
    }
    chunks
}

#[test]
fn newer_servers_headers_fill_the_record() {
    let resp = chunked_response(
        "500 Internal Server Error",
        "X-ClickHouse-Query-Id: 7f3c\r\nX-ClickHouse-Format: TabSeparated\r\n\
         X-ClickHouse-Summary: {\"read_rows\":\"3\",\"read_bytes\":\"24\",\"written_rows\":\"0\",\"written_bytes\":\"0\",\"total_rows_to_read\":\"3\"}\r\n\
         X-ClickHouse-Exception-Code: 60\r\n",
        b"Code: 60. DB::Exception: Table default.t does not exist. (UNKNOWN_TABLE) (version 23.8.1.1)\n",
    );
    let chunks = exchange_chunks(&[(
        request(
            "/?query=SELECT+*+FROM+t&database=default",
            b"",
            "X-ClickHouse-User: alice\r\nX-ClickHouse-Key: hunter2-secret\r\n",
        ),
        resp,
    )]);
    let (records, _) = run(&chunks, usize::MAX);
    let r = &records[0];
    let d = details(r);
    assert_eq!(
        (r.status, r.error_code, r.error_name),
        (Status::Error, Some(60), Some("UNKNOWN_TABLE"))
    );
    assert_eq!(
        (
            r.str(d.query_id),
            r.str(d.user),
            r.str(d.database),
            r.str(d.format)
        ),
        ("7f3c", "alice", "default", "TabSeparated")
    );
    assert_eq!((d.rows_read, d.bytes_read), (3, 24));
    assert!(r
        .error_message()
        .unwrap()
        .starts_with("DB::Exception: Table default.t does not exist."));
    assert!(!format!("{records:?}").contains("hunter2"));
}

#[test]
fn long_and_compressed_query_bodies() {
    let mut long = b"SELECT ".to_vec();
    while long.len() < 100_000 {
        long.extend_from_slice("'é', ".as_bytes());
    }
    long.extend_from_slice(b"1");
    let ok = chunked_response("200 OK", "", b"1\n");
    let mut insert = b"INSERT INTO t FORMAT TSV\n".to_vec();
    insert.extend(std::iter::repeat_n(b"1\tx\n", 50_000).flatten());
    let chunks = exchange_chunks(&[
        (request("/", &long, ""), ok.clone()),
        (
            request(
                "/?query_id=z",
                b"\x1f\x8b\x08\x00garbage",
                "Content-Encoding: gzip\r\n",
            ),
            ok.clone(),
        ),
        (request("/", &insert, ""), ok.clone()),
        (
            request(
                "/?query=INSERT+INTO+t+FORMAT+TSV&password=pw-in-url",
                &insert[25..],
                "",
            ),
            ok,
        ),
    ]);
    for piece in [usize::MAX, 1000, 7] {
        let (records, driver) = run(&chunks, piece);
        assert_eq!(records.len(), 4);
        let q = records[0].query().unwrap();
        assert!(records[0].query_truncated && q.len() <= 4096 && q.starts_with("SELECT 'é'"));
        assert_eq!(records[0].operation, "SELECT");
        assert_eq!((records[1].query(), records[1].operation), (None, ""));
        assert_eq!(records[2].query(), Some("INSERT INTO t FORMAT TSV"));
        assert!(!records[2].query_truncated);
        assert_eq!(records[3].query(), Some("INSERT INTO t FORMAT TSV"));
        assert!(records.iter().all(|r| r.status == Status::Ok));
        assert!(!format!("{records:?}").contains("pw-in-url"));
        assert!(driver.buffered() < 64 * 1024, "a body was buffered");
    }
}

#[test]
fn pipelined_requests_pair_in_order() {
    let req = |id: &str| request(&format!("/?query=SELECT+1&query_id={id}"), b"", "");
    let resp = chunked_response("200 OK", "", b"1\n");
    let mut both = req("a");
    both.extend(req("b"));
    let mut answers = resp.clone();
    answers.extend(resp);
    let chunks = vec![
        Chunk::new(Direction::ClientToServer, 1, both),
        Chunk::new(Direction::ServerToClient, 5, answers),
    ];
    let (records, _) = run(&chunks, usize::MAX);
    let ids: Vec<&str> = records.iter().map(|r| r.str(details(r).query_id)).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(records
        .iter()
        .all(|r| r.status == Status::Ok && r.end_ns == 5));
}

#[test]
fn a_response_until_close_ends_at_close() {
    let chunks = vec![
        Chunk::new(
            Direction::ClientToServer,
            1,
            b"GET /ping HTTP/1.0\r\n\r\n".to_vec(),
        ),
        Chunk::new(
            Direction::ServerToClient,
            2,
            b"HTTP/1.0 200 OK\r\n\r\nOk.\n".to_vec(),
        ),
        Chunk::new(Direction::ServerToClient, 3, b"more".to_vec()),
    ];
    let (records, _) = run(&chunks, usize::MAX);
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].status, records[0].end_ns), (Status::Ok, 3));
    assert_eq!(records[0].bytes_received, 27);
}

#[test]
fn a_request_cut_by_close_is_incomplete() {
    let chunks = vec![Chunk::new(
        Direction::ClientToServer,
        1,
        request("/?query=SELECT+sleep(3)&query_id=s", b"", ""),
    )];
    let (records, _) = run(&chunks, usize::MAX);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, Status::Incomplete);
    assert_eq!(records[0].query(), Some("SELECT sleep(3)"));
}

/// No allocation per exchange in steady state: the parser's own vectors and arena stop
/// growing once they have held the largest exchange.
#[test]
fn steady_state_reuses_its_buffers() {
    let chunks = load("http_keepalive");
    let mut driver = kit().driver();
    let mut out = Records::with_capacity(64, 1 << 16);
    let mut capacities = Vec::new();
    for round in 0..50u64 {
        for c in &chunks {
            driver.push(
                c.dir,
                c.ts_ns + round * 1_000_000_000,
                &c.bytes,
                0,
                &mut out,
            );
        }
        out.clear();
        capacities.push(driver.buffered());
    }
    assert!(capacities.windows(2).skip(1).all(|w| w[0] == w[1]));
}
