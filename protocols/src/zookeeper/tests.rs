//! Tests of the ZooKeeper parser against recorded conversations (`tests/fixtures/zookeeper`,
//! recorded from a real ZooKeeper 3.8 and converted from zktraffic's pcaps) and synthetic
//! streams, the fixture properties through the shared [`crate::testkit`]. Golden outputs
//! live next to the fixtures as `<name>.expected`; re-bless them with
//! `UPDATE_EXPECT=1 cargo test -p l7tap-protocols zookeeper`.
use std::collections::HashMap;
use std::fmt::Write as _;

use super::*;
use crate::fixture::Chunk;
use crate::stream::StreamDriver;
use crate::testkit::{self, suffix, total_len, Judge, Kit};
use crate::{Details, OwnedRecord};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

// ---- helpers ---------------------------------------------------------------------------

/// The ZooKeeper parser and its fixtures, for the shared test kit.
fn kit() -> Kit<ZooKeeperParser> {
    kit_with(ZooKeeperSettings::default())
}

fn kit_with(settings: ZooKeeperSettings) -> Kit<ZooKeeperParser> {
    Kit::new(
        testkit::fixture_dir("zookeeper"),
        move || StreamDriver::new(ZooKeeperParser::new(settings)),
        describe,
    )
    .credentials(credentials)
}

/// The credentials each fixture carries (auth packets of the digest scheme).
fn credentials(fixture: &str) -> &'static [&'static str] {
    match fixture {
        "auth-1" => &["zk-secret-auth", "l7tap:zk"],
        "auth-2" | "auth-3" | "auth-4" => &["zk-secret-auth"],
        "zktraffic-auth" => &["tacos:tacos", "tacos"],
        _ => &[],
    }
}

/// Every fixture of the directory, by name (file stem).
fn fixture_names() -> Vec<String> {
    kit().fixtures()
}

fn load(name: &str) -> Vec<Chunk> {
    kit().load(name)
}

fn replay(chunks: &[Chunk], piece: usize) -> (Vec<OwnedRecord>, StreamDriver<ZooKeeperParser>) {
    kit().run(chunks, piece)
}

fn requests(out: Records) -> Vec<OwnedRecord> {
    out.to_owned_records()
}

fn zk(record: &OwnedRecord) -> &ZooKeeperDetails {
    match &record.details {
        Details::ZooKeeper(d) => d,
        Details::ClickHouse(_) => panic!("not a ZooKeeper record"),
    }
}

/// One line per record, times relative to `base_ns`, in start order.
fn format_records(records: &[OwnedRecord], base_ns: u64) -> String {
    let mut sorted: Vec<&OwnedRecord> = records.iter().collect();
    sorted.sort_by_key(|r| (r.start_ns, zk(r).xid));
    let mut s = String::new();
    for r in sorted {
        let d = zk(r);
        let _ = write!(
            s,
            "+{}us {}us {} {}",
            r.start_ns.saturating_sub(base_ns) / 1000,
            r.end_ns.saturating_sub(r.start_ns) / 1000,
            r.operation,
            r.status.name()
        );
        if let Some(name) = &r.error_name {
            let _ = write!(s, " {name}");
            if let Some(code) = r.error_code {
                let _ = write!(s, "({code})");
            }
        }
        if let Some(msg) = r.error_message() {
            let _ = write!(s, " {msg:?}");
        }
        let _ = write!(s, " xid={} zxid={:#x}", d.xid, d.zxid);
        if let Some(id) = d.session_id {
            let _ = write!(s, " session={id:#x}");
        }
        if let Some(q) = r.query() {
            let _ = write!(s, " path={q:?}");
            if r.query_truncated {
                s.push('…');
            }
        }
        if d.watch {
            s.push_str(" watch");
        }
        if let Some(v) = d.version {
            let _ = write!(s, " version={v}");
        }
        if !r.multi_ops().is_empty() {
            let _ = write!(s, " ops=[{}]", r.multi_ops().join(","));
        }
        if let Some((t, st)) = d.notification {
            let _ = write!(s, " event={t} state={st}");
        }
        if let Some(c) = &d.connect {
            let _ = write!(
                s,
                " protocol={} timeout={}/{} resume={:#x} last_zxid={:#x} read_only={}",
                c.protocol_version,
                c.requested_timeout_ms,
                c.negotiated_timeout_ms,
                c.resumed_session_id,
                c.last_zxid_seen,
                c.read_only
            );
        }
        let _ = writeln!(s, " sent={} recv={}", r.bytes_sent, r.bytes_received);
    }
    s
}

fn format_counters(driver: &StreamDriver<ZooKeeperParser>) -> String {
    let p = driver.parser_counters();
    let z = driver.parser().zk_counters();
    format!(
        "# messages={} resyncs={} resync_bytes={} unmatched={} overflows={} overtaken={} \
         notifications={} four_letter={} gaps={} dropped={}\n",
        p.n_messages,
        p.n_resyncs,
        p.n_resync_bytes,
        z.n_unmatched_replies,
        z.n_in_flight_overflows,
        z.n_overtaken,
        z.n_notifications,
        z.n_four_letter_words,
        z.n_gaps,
        driver.is_dropped()
    )
}

/// Golden text: the fixture's counters, then its records, times relative to its first chunk.
fn describe(
    chunks: &[Chunk],
    records: &[OwnedRecord],
    driver: &StreamDriver<ZooKeeperParser>,
) -> String {
    let base = chunks.first().map_or(0, |c| c.ts_ns);
    format_counters(driver) + &format_records(records, base)
}

/// The records of a complete replay, by request start and xid.
struct FullRun(HashMap<(u64, i32), Vec<OwnedRecord>>);

impl FullRun {
    fn new(records: &[OwnedRecord]) -> Self {
        let mut index: HashMap<_, Vec<_>> = HashMap::new();
        for r in records {
            index
                .entry((r.start_ns, zk(r).xid))
                .or_default()
                .push(r.clone());
        }
        FullRun(index)
    }
}

/// Judge for the test kit: every record of a partial run is [`consistent_with`] the whole
/// run's.
fn consistent(same_session: bool) -> impl Fn(&[OwnedRecord]) -> Judge {
    move |whole| {
        let full = FullRun::new(whole);
        Box::new(move |records| {
            match records
                .iter()
                .find(|r| !consistent_with(r, &full, same_session))
            {
                None => Ok(()),
                Some(r) => Err(format!("gave {r:#?}")),
            }
        })
    }
}

/// Whether `r`, from a partial or shifted replay, says nothing that the complete replay
/// contradicts: it is one of `full`'s records (same request, same outcome), or that
/// request ended early (`Incomplete`, or its answer's body not seen to the end).
fn consistent_with(r: &OwnedRecord, full: &FullRun, same_session: bool) -> bool {
    let candidates = full.0.get(&(r.start_ns, zk(r).xid));
    candidates.into_iter().flatten().any(|f| {
        let (dr, df) = (zk(r), zk(f));
        if r.operation.starts_with("4lw:") {
            // Text until close: a cut conversation has seen less of it.
            return f.operation == r.operation
                && f.start_ns == r.start_ns
                && r.bytes_sent <= f.bytes_sent
                && r.bytes_received <= f.bytes_received
                && r.end_ns <= f.end_ns;
        }
        let same_request = f.operation == r.operation
            && f.start_ns == r.start_ns
            && dr.xid == df.xid
            && f.query() == r.query()
            && f.bytes_sent == r.bytes_sent
            && f.multi_ops() == r.multi_ops();
        if !same_request {
            return false;
        }
        // Ended by the close of a cut conversation: in flight, or a closeSession taken as
        // answered by the close (what ClickHouse Keeper does).
        let ended_by_close = r.status == Status::Incomplete
            || (r.operation == "closeSession" && r.bytes_received == 0);
        if ended_by_close {
            return true;
        }
        (!same_session || dr.session_id == df.session_id)
            && r.status == f.status
            && r.error_code == f.error_code
            && dr.zxid == df.zxid
            && dr.notification == df.notification
            && dr.watch == df.watch
            && r.end_ns <= f.end_ns
            && r.bytes_received == f.bytes_received
    })
}

/// Cut points to try: every one for small fixtures; for large ones about 400 spread ones
/// (50 for the largest) plus points around the boundaries of about 100 chunks.
fn cut_points(chunks: &[Chunk]) -> Vec<usize> {
    let total = total_len(chunks);
    if total <= 4096 {
        return (0..=total).collect();
    }
    let spread = if total > 256 * 1024 { 50 } else { 400 };
    let mut points: Vec<usize> = (0..=total).step_by(total / spread + 1).collect();
    let mut at = 0;
    let every = chunks.len() / 100 + 1;
    for (i, c) in chunks.iter().enumerate() {
        if i % every == 0 {
            for d in [0, 1, 3, 4, 5, 8, 12, 16, 17, 20] {
                points.push((at + d).min(total));
            }
            points.push((at + c.bytes.len()).saturating_sub(1));
        }
        at += c.bytes.len();
    }
    points.sort_unstable();
    points.dedup();
    points
}

/// Builds frames for synthetic streams.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn jute_string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn get_data_request(xid: i32, path: &str) -> Vec<u8> {
    let mut body = xid.to_be_bytes().to_vec();
    body.extend_from_slice(&4i32.to_be_bytes());
    body.extend_from_slice(&jute_string(path));
    body.push(0);
    frame(&body)
}

fn reply(xid: i32, zxid: i64, err: i32, body: &[u8]) -> Vec<u8> {
    let mut b = xid.to_be_bytes().to_vec();
    b.extend_from_slice(&zxid.to_be_bytes());
    b.extend_from_slice(&err.to_be_bytes());
    b.extend_from_slice(body);
    frame(&b)
}

fn get_data_reply(xid: i32, zxid: i64, data_len: usize) -> Vec<u8> {
    let mut body = (data_len as u32).to_be_bytes().to_vec();
    body.resize(4 + data_len, b'd');
    body.extend_from_slice(&[0; decoding::STAT_BYTES]);
    reply(xid, zxid, 0, &body)
}

// ---- golden tests, one per fixture ------------------------------------------------------

crate::golden_tests! { kit();
    golden_basic => "basic",
    golden_errors => "errors",
    golden_multi => "multi",
    golden_watches => "watches",
    golden_auth_after_connect => "auth-1",
    golden_auth_at_connect => "auth-2",
    golden_auth_missing => "auth-3",
    golden_auth_failed => "auth-4",
    golden_pipelined => "pipelined",
    golden_large => "large",
    golden_raw_ops => "raw_ops",
    golden_four_letter_ruok => "four_letter-1",
    golden_four_letter_mntr => "four_letter-2",
    golden_four_letter_stat => "four_letter-3",
    golden_four_letter_srvr => "four_letter-4",
    golden_four_letter_conf => "four_letter-5",
    golden_four_letter_cons => "four_letter-6",
    golden_four_letter_envi => "four_letter-7",
    golden_zktraffic_auth => "zktraffic-auth",
    golden_zktraffic_connect_replies_1 => "zktraffic-connect_replies-1",
    golden_zktraffic_connect_replies_2 => "zktraffic-connect_replies-2",
    golden_zktraffic_connect_replies_3 => "zktraffic-connect_replies-3",
    golden_zktraffic_connects_1 => "zktraffic-connects-1",
    golden_zktraffic_connects_2 => "zktraffic-connects-2",
    golden_zktraffic_connects_3 => "zktraffic-connects-3",
    golden_zktraffic_fire_watches => "zktraffic-fire_watches",
    golden_zktraffic_four_letter_stat => "zktraffic-get_children_with_four_letter-1",
    golden_zktraffic_get_children => "zktraffic-get_children_with_four_letter-2",
    golden_zktraffic_four_letter_conf => "zktraffic-get_children_with_four_letter-3",
    golden_zktraffic_multi => "zktraffic-multi",
    golden_zktraffic_setwatches_1 => "zktraffic-setwatches-1",
    golden_zktraffic_setwatches_2 => "zktraffic-setwatches-2",
}

// ---- properties over every fixture -----------------------------------------------------

/// In pieces of 1 (up to 300 KB), 7, 64 and 4096 bytes.
#[test]
fn every_rechunking_gives_the_same_records() {
    kit().check_rechunking();
}

#[test]
fn the_fast_path_changes_no_record() {
    let general = ZooKeeperSettings {
        fast_path: false,
        ..Default::default()
    };
    for name in fixture_names() {
        let chunks = load(name.as_str());
        for piece in [usize::MAX, 7] {
            let (fast, fast_driver) = replay(&chunks, piece);
            let (out, general_driver) = kit_with(general).run(&chunks, piece);
            assert_eq!(fast, out, "{name}: pieces of {piece}");
            assert_eq!(
                fast_driver.parser().counters(),
                general_driver.parser().counters(),
                "{name}: pieces of {piece}"
            );
        }
    }
}

#[test]
fn every_prefix_yields_no_wrong_record() {
    kit().check_prefixes(cut_points, consistent(true));
}

#[test]
fn a_capture_starting_mid_stream_yields_no_misparsed_record() {
    kit().check_mid_stream_starts(&[testkit::as_recorded], cut_points, consistent(false));
}

#[test]
fn mid_stream_start_finds_the_frames_again() {
    // Drop the handshake and the first request's first bytes: the rest pairs as usual.
    let chunks = load("basic");
    let (full, _) = replay(&chunks, usize::MAX);
    let skip = chunks[0].bytes.len() + chunks[1].bytes.len() + 5;
    let (records, driver) = replay(&suffix(&chunks, skip), usize::MAX);
    assert!(driver.parser_counters().n_resyncs >= 1);
    assert!(driver.parser().zk_counters().n_unmatched_replies >= 1);
    let answered = records.iter().filter(|r| r.status != Status::Incomplete);
    assert!(answered.count() + 3 >= full.len() - 2, "{records:#?}");
    assert!(records.iter().all(|r| zk(r).session_id.is_none()));
}

// ---- robustness --------------------------------------------------------------------------

#[test]
fn random_bytes_neither_panic_nor_make_records() {
    kit().check_random_bytes(0x5eed_1234_abcd_0001, 200, 50);
}

/// Garbage before each direction's first syscall is resynchronised past and counted, and
/// gives no record a mid-stream start would not.
#[test]
fn garbage_first_is_counted_and_misparses_nothing() {
    kit().check_garbage_prepended(0x9e37_79b9_7f4a_7c15, consistent(false));
}

#[test]
fn garbage_between_frames_is_skipped_and_counted() {
    let mut stream = get_data_request(1, "/a");
    stream.extend_from_slice(b"\x00\x00\x00\x01garbage\xff\xff");
    stream.extend_from_slice(&get_data_request(2, "/b"));
    let mut replies = get_data_reply(1, 5, 3);
    replies.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0]);
    replies.extend_from_slice(&get_data_reply(2, 6, 3));
    let chunks = vec![Chunk::new(C2S, 1, stream), Chunk::new(S2C, 2, replies)];
    for piece in [1, 3, usize::MAX] {
        let (records, driver) = replay(&chunks, piece);
        let paths: Vec<_> = records
            .iter()
            .map(|r| (r.query().map(str::to_owned), r.status))
            .collect();
        assert_eq!(
            paths,
            vec![
                (Some("/a".into()), Status::Ok),
                (Some("/b".into()), Status::Ok)
            ],
            "pieces of {piece}"
        );
        let counters = driver.parser_counters();
        assert_eq!(counters.n_resyncs, 2, "pieces of {piece}");
        assert_eq!(counters.n_resync_bytes, 13 + 7, "pieces of {piece}");
    }
}

#[test]
fn oversized_lengths_are_rejected_without_buffering() {
    let mut driver = StreamDriver::new(ZooKeeperParser::default());
    let mut out = Records::default();
    let mut bytes = vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 4];
    bytes.extend_from_slice(&[0x41; 100]);
    driver.push(C2S, 1, &bytes, 0, &mut out);
    assert_eq!(driver.parser_counters().n_resyncs, 1);
    assert!(driver.buffered() < 64, "{}", driver.buffered());
}

#[test]
fn truncated_conversation_ends_requests_incomplete() {
    let chunks = load("errors");
    let (full_records, _) = replay(&chunks, usize::MAX);
    let full = FullRun::new(&full_records);
    // Stop right after the third request: its reply never comes.
    let requests_seen: Vec<usize> = chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.dir == C2S)
        .map(|(i, _)| i)
        .collect();
    let cut = requests_seen[3] + 1;
    let (records, _) = replay(&chunks[..cut], usize::MAX);
    let last = records.iter().max_by_key(|r| r.start_ns).unwrap();
    assert_eq!(last.status, Status::Incomplete);
    assert_eq!(last.end_ns, last.start_ns);
    assert!(records.iter().all(|r| consistent_with(r, &full, true)));
}

// ---- gaps --------------------------------------------------------------------------------

#[test]
fn a_lost_reply_ends_its_request_when_a_later_one_is_answered() {
    let mut driver = StreamDriver::new(ZooKeeperParser::default());
    let mut out = Records::default();
    for xid in 1..=3 {
        driver.push(
            C2S,
            xid as u64,
            &get_data_request(xid, &format!("/n{xid}")),
            0,
            &mut out,
        );
    }
    driver.push(S2C, 10, &get_data_reply(1, 7, 10), 0, &mut out);
    driver.lost(S2C, 98, 11); // reply 2 lost
    driver.push(S2C, 12, &get_data_reply(3, 8, 10), 0, &mut out);
    driver.close(20, &mut out);
    let got: Vec<_> = requests(out)
        .iter()
        .map(|r| (zk(r).xid, r.status, r.end_ns))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Status::Ok, 10),
            (2, Status::Incomplete, 2),
            (3, Status::Ok, 12)
        ]
    );
    assert_eq!(driver.parser().zk_counters().n_overtaken, 1);
}

#[test]
fn a_lost_request_leaves_its_reply_unmatched() {
    let mut driver = StreamDriver::new(ZooKeeperParser::default());
    let mut out = Records::default();
    driver.push(C2S, 1, &get_data_request(1, "/a"), 0, &mut out);
    driver.lost(C2S, 20, 2); // request 2 lost
    driver.push(C2S, 3, &get_data_request(3, "/c"), 0, &mut out);
    for xid in 1..=3 {
        driver.push(
            S2C,
            10 + xid as u64,
            &get_data_reply(xid, 9, 1),
            0,
            &mut out,
        );
    }
    driver.close(20, &mut out);
    let got: Vec<_> = requests(out)
        .iter()
        .map(|r| (zk(r).xid, r.status))
        .collect();
    assert_eq!(got, vec![(1, Status::Ok), (3, Status::Ok)]);
    assert_eq!(driver.parser().zk_counters().n_unmatched_replies, 1);
}

#[test]
fn a_gap_inside_a_skipped_reply_body_keeps_the_frame() {
    // 500 KB getData reply whose middle was cut by the capture's payload limit.
    let mut driver = StreamDriver::new(ZooKeeperParser::default());
    let mut out = Records::default();
    driver.push(C2S, 1, &get_data_request(1, "/big"), 0, &mut out);
    let big = get_data_reply(1, 4, 500_000);
    driver.push(S2C, 2, &big[..4096], 100_000, &mut out);
    driver.push(S2C, 3, &big[104_096..], 0, &mut out);
    driver.push(C2S, 4, &get_data_request(2, "/small"), 0, &mut out);
    driver.push(S2C, 5, &get_data_reply(2, 5, 1), 0, &mut out);
    driver.close(9, &mut out);
    let got: Vec<_> = requests(out)
        .iter()
        .map(|r| (zk(r).xid, r.status, r.end_ns, r.bytes_received))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Status::Ok, 3, big.len() as u64),
            (2, Status::Ok, 5, 4 + 16 + 4 + 1 + 68)
        ]
    );
    assert_eq!(driver.parser_counters().n_resyncs, 0);
}

#[test]
fn a_gap_mid_frame_resyncs_at_the_next_syscall() {
    let mut driver = StreamDriver::new(ZooKeeperParser::default());
    let mut out = Records::default();
    let lost = get_data_request(1, "/lost");
    driver.push(C2S, 1, &lost[..6], (lost.len() - 6) as u64, &mut out);
    driver.push(C2S, 2, &get_data_request(2, "/kept"), 0, &mut out);
    driver.push(S2C, 3, &get_data_reply(1, 3, 0), 0, &mut out);
    driver.push(S2C, 4, &get_data_reply(2, 3, 0), 0, &mut out);
    driver.close(9, &mut out);
    let got: Vec<_> = requests(out)
        .iter()
        .map(|r| (r.query().map(str::to_owned), r.status))
        .collect();
    assert_eq!(got, vec![(Some("/kept".into()), Status::Ok)]);
    assert_eq!(driver.parser_counters().n_resyncs, 0);
}

// ---- pairing -----------------------------------------------------------------------------

#[test]
fn five_hundred_in_flight_all_pair() {
    let mut requests_bytes = Vec::new();
    let mut replies_bytes = Vec::new();
    for xid in 1..=500 {
        requests_bytes.extend(get_data_request(xid, &format!("/p/{xid}")));
        replies_bytes.extend(get_data_reply(xid, 1000 + xid as i64, xid as usize % 7));
    }
    let chunks = vec![
        Chunk::new(C2S, 1, requests_bytes),
        Chunk::new(S2C, 2, replies_bytes),
    ];
    for piece in [1, 100, usize::MAX] {
        let (records, driver) = replay(&chunks, piece);
        assert_eq!(records.len(), 500);
        for (i, r) in records.iter().enumerate() {
            let xid = i as i32 + 1;
            assert_eq!(r.status, Status::Ok);
            assert_eq!(zk(r).xid, xid);
            assert_eq!(zk(r).zxid, 1000 + xid as i64);
            assert_eq!(r.query(), Some(format!("/p/{xid}").as_str()));
        }
        assert_eq!(driver.parser().zk_counters().n_unmatched_replies, 0);
    }
}

#[test]
fn pipelined_fixture_pairs_every_request() {
    let (records, driver) = replay(&load("pipelined"), usize::MAX);
    let data_ops = records
        .iter()
        .filter(|r| r.operation == "create" || r.operation == "getData");
    assert_eq!(data_ops.clone().count(), 800);
    assert!(data_ops.clone().all(|r| r.status != Status::Incomplete));
    let nonodes = data_ops.filter(|r| r.error_name == Some("NoNode"));
    assert_eq!(nonodes.count(), 200);
    assert_eq!(driver.parser().zk_counters().n_unmatched_replies, 0);
}

#[test]
fn in_flight_overflow_drops_the_oldest() {
    let settings = ZooKeeperSettings {
        max_in_flight: 10,
        ..Default::default()
    };
    let mut driver = StreamDriver::new(ZooKeeperParser::new(settings));
    let mut out = Records::default();
    for xid in 1..=15 {
        driver.push(C2S, xid as u64, &get_data_request(xid, "/x"), 0, &mut out);
    }
    assert_eq!(out.len(), 5);
    assert_eq!(driver.parser().zk_counters().n_in_flight_overflows, 5);
    assert_eq!(driver.parser().in_flight(), 10);
}

// ---- secrets -----------------------------------------------------------------------------

#[test]
fn credentials_never_reach_a_record() {
    // auth-3 is a client that never authenticates: its bytes carry no credential.
    let carrying = kit().check_no_credentials();
    assert_eq!(carrying, 4, "the auth fixtures carry credentials");
    for name in ["auth-1", "auth-2", "auth-4", "zktraffic-auth"] {
        let (records, _) = replay(&load(name), usize::MAX);
        assert!(
            records.iter().any(|r| r.operation == "auth"
                && r.query()
                    .is_some_and(|q| q == "digest" || q == "bogus-scheme")),
            "{name}: {records:#?}"
        );
    }
}

// ---- opening of a connection ---------------------------------------------------------------

#[test]
fn four_letter_word_refused_by_the_whitelist_is_an_error() {
    let chunks = vec![
        Chunk::new(C2S, 1, b"wchc".to_vec()),
        Chunk::new(
            S2C,
            2,
            b"wchc is not executed because it is not in the whitelist.\n".to_vec(),
        ),
    ];
    let (records, _) = replay(&chunks, usize::MAX);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].operation, "4lw:wchc");
    assert_eq!(records[0].status, Status::Error);
    assert_eq!(records[0].error_name, Some("NotInWhitelist"));
}

#[test]
fn four_letter_word_without_answer_is_incomplete() {
    let (records, _) = replay(&[Chunk::new(C2S, 1, b"ruok".to_vec())], usize::MAX);
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].operation, records[0].status),
        ("4lw:ruok", Status::Incomplete)
    );
}

#[test]
fn a_path_that_spells_a_four_letter_word_mid_stream_is_not_one() {
    // The capture starts inside a request whose path contains "stat": binary replies
    // follow, so it is a session, not a four-letter word.
    let request = get_data_request(7, "/stat/x");
    let at = request.windows(4).position(|w| w == b"stat").unwrap();
    let mut c2s = request[at..].to_vec();
    c2s.extend(get_data_request(8, "/ok"));
    let mut s2c = get_data_reply(7, 1, 0);
    s2c.extend(get_data_reply(8, 2, 0));
    let (records, driver) = replay(
        &[Chunk::new(C2S, 1, c2s), Chunk::new(S2C, 2, s2c)],
        usize::MAX,
    );
    let got: Vec<_> = records.iter().map(|r| (r.operation, r.status)).collect();
    assert_eq!(got, vec![("getData", Status::Ok)]);
    assert_eq!(driver.parser().zk_counters().n_four_letter_words, 0);
}

fn keeper_handshake(version: i32, compression: bool) -> (Vec<u8>, Vec<u8>) {
    let mut request = 45u32.to_be_bytes().to_vec();
    request.extend_from_slice(&version.to_be_bytes());
    if version == 11 {
        request.push(u8::from(compression));
    }
    request.extend_from_slice(&0i64.to_be_bytes());
    request.extend_from_slice(&30_000i32.to_be_bytes());
    request.extend_from_slice(&0i64.to_be_bytes());
    request.extend_from_slice(&16i32.to_be_bytes());
    request.extend_from_slice(&[0; 16]);
    request.push(1);
    let mut response = 36u32.to_be_bytes().to_vec();
    response.extend_from_slice(&version.to_be_bytes());
    response.extend_from_slice(&30_000i32.to_be_bytes());
    response.extend_from_slice(&0x0100_0000_0000_0042i64.to_be_bytes());
    response.extend_from_slice(&16i32.to_be_bytes());
    response.extend_from_slice(&[7; 16]);
    (request, response)
}

#[test]
fn keeper_sixty_four_bit_xids_are_followed_after_their_handshake() {
    let (mut c2s, mut s2c) = keeper_handshake(11, false);
    // getData, xid 0x1_0000_0001 as int64.
    let mut body = 0x1_0000_0001i64.to_be_bytes().to_vec();
    body.extend_from_slice(&4i32.to_be_bytes());
    body.extend(jute_string("/clickhouse"));
    body.push(1);
    c2s.extend(frame(&body));
    let mut reply_body = 0x1_0000_0001i64.to_be_bytes().to_vec();
    reply_body.extend_from_slice(&77i64.to_be_bytes());
    reply_body.extend_from_slice(&(-101i32).to_be_bytes());
    s2c.extend(frame(&reply_body));
    let (records, driver) = replay(
        &[Chunk::new(C2S, 1, c2s), Chunk::new(S2C, 2, s2c)],
        usize::MAX,
    );
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.operation, r.status, r.query().map(str::to_owned)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("connect", Status::Ok, None),
            ("getData", Status::Error, Some("/clickhouse".into()))
        ]
    );
    assert_eq!(zk(&records[1]).xid, i32::MAX); // saturated
    assert_eq!(driver.parser().session_id(), Some(0x0100_0000_0000_0042));
}

#[test]
fn refused_and_expired_sessions_are_errors() {
    for (version, session, expected) in [(42, 0x42, "ConnectionRejected"), (0, 0, "SessionExpired")]
    {
        let (c2s, _) = keeper_handshake(0, false);
        let (_, mut s2c) = keeper_handshake(version, false);
        s2c[12..20].copy_from_slice(&(session as i64).to_be_bytes());
        let (records, _) = replay(
            &[Chunk::new(C2S, 1, c2s), Chunk::new(S2C, 2, s2c)],
            usize::MAX,
        );
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].status, Status::Error);
        assert_eq!(records[0].error_name, Some(expected));
    }
}

#[test]
fn a_keeper_that_declines_64_bit_xids_keeps_32_bit_headers() {
    // The client waits for the handshake's answer before sending requests.
    let (c2s, _) = keeper_handshake(11, false);
    let (_, s2c) = keeper_handshake(0, false);
    let chunks = [
        Chunk::new(C2S, 1, c2s),
        Chunk::new(S2C, 2, s2c),
        Chunk::new(C2S, 3, get_data_request(1, "/a")),
        Chunk::new(S2C, 4, get_data_reply(1, 2, 0)),
    ];
    let (records, _) = replay(&chunks, usize::MAX);
    let got: Vec<_> = records.iter().map(|r| (r.operation, r.status)).collect();
    assert_eq!(got, vec![("connect", Status::Ok), ("getData", Status::Ok)]);
}

#[test]
fn keeper_compression_is_unfollowable_after_the_handshake() {
    let (c2s, mut s2c) = keeper_handshake(10, true);
    s2c.extend_from_slice(&[0x55; 40]); // compressed frames
    let (records, driver) = replay(
        &[Chunk::new(C2S, 1, c2s), Chunk::new(S2C, 2, s2c)],
        usize::MAX,
    );
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].operation, "connect");
    assert_eq!(records[0].status, Status::Ok);
    assert!(driver.is_dropped());
}

#[test]
fn large_set_data_gets_its_version_from_the_frame_tail() {
    let data = vec![b'v'; 300_000];
    let mut body = 9i32.to_be_bytes().to_vec();
    body.extend_from_slice(&5i32.to_be_bytes());
    body.extend(jute_string("/big"));
    body.extend_from_slice(&(data.len() as u32).to_be_bytes());
    body.extend_from_slice(&data);
    body.extend_from_slice(&41i32.to_be_bytes());
    let request = frame(&body);
    let mut stat = vec![0; decoding::STAT_BYTES];
    stat[32..36].copy_from_slice(&42i32.to_be_bytes());
    let chunks = vec![
        Chunk::new(C2S, 1, request),
        Chunk::new(S2C, 2, reply(9, 3, 0, &stat)),
    ];
    for piece in [1000, 65536, usize::MAX] {
        let (records, driver) = replay(&chunks, piece);
        assert_eq!(records.len(), 1);
        assert_eq!(zk(&records[0]).version, Some(41), "pieces of {piece}");
        assert_eq!(records[0].status, Status::Ok);
        if piece < data.len() {
            assert!(
                driver.counters().n_skipped_bytes > 200_000,
                "pieces of {piece}"
            );
        }
    }
}

#[test]
fn long_paths_are_cut_and_flagged() {
    let path = format!("/{}", "p".repeat(600));
    let chunks = vec![
        Chunk::new(C2S, 1, get_data_request(1, &path)),
        Chunk::new(S2C, 2, get_data_reply(1, 1, 0)),
    ];
    let (records, _) = replay(&chunks, usize::MAX);
    assert_eq!(records[0].query().map(str::len), Some(512));
    assert!(records[0].query_truncated);
    // A character cut by the bound is dropped, not replaced.
    let path = format!("/{}", "é".repeat(300));
    let chunks = vec![
        Chunk::new(C2S, 1, get_data_request(1, &path)),
        Chunk::new(S2C, 2, get_data_reply(1, 1, 0)),
    ];
    let (records, _) = replay(&chunks, usize::MAX);
    assert_eq!(records[0].query().map(str::len), Some(511));
}
