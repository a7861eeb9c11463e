//! The test kit every protocol's parser tests share: recorded `.chunks` fixtures replayed
//! through a fresh [`StreamDriver`], and the properties every parser must have over them.
//!
//! Built for this crate's tests and, with the cargo feature `testkit`, for other crates'
//! tests (`l7tap-protocols = { workspace = true, features = ["testkit"] }` under
//! `[dev-dependencies]`). It reads and writes files, so it is never part of a normal build.
//!
//! A protocol's tests describe the protocol once, as a [`Kit`]:
//!
//! ```ignore
//! fn kit() -> Kit<MyParser> {
//!     Kit::new(fixture_dir("myproto"), || StreamDriver::new(MyParser::default()), describe)
//!         // The strings of a fixture that must never reach a record (passwords, tokens).
//!         .credentials(|_fixture| &["my-secret"])
//! }
//!
//! /// The golden text of a fixture's run: one line (or a few) per record, then counters.
//! fn describe(
//!     chunks: &[Chunk],
//!     records: &[OwnedRecord],
//!     driver: &StreamDriver<MyParser>,
//! ) -> String { ... }
//! ```
//!
//! and then calls it, one short test per property:
//!
//! ```ignore
//! crate::golden_tests! { kit();
//!     golden_select => "select",
//!     golden_insert => "insert",
//! }
//!
//! #[test]
//! fn rechunking_gives_the_same_records() {
//!     kit().check_rechunking();
//! }
//!
//! #[test]
//! fn every_prefix_gives_a_prefix_of_the_records() {
//!     kit().check_prefixes(evenly(20_000, 500), complete_records_form_a_prefix);
//! }
//!
//! #[test]
//! fn mid_stream_starts_never_misparse() {
//!     kit().check_mid_stream_starts(&[as_recorded, gathered], evenly(20_000, 300),
//!         complete_records_are_known_by(key)); // key: the fields a record must get right
//! }
//!
//! #[test]
//! fn garbage_is_counted_and_makes_no_records() {
//!     kit().check_random_bytes(SEED, 200, 20);
//!     kit().check_garbage_prepended(SEED, complete_records_are_known_by(key));
//! }
//!
//! #[test]
//! fn credentials_never_reach_a_record() {
//!     assert!(kit().check_no_credentials() > 0, "no fixture carries a credential");
//! }
//! ```
//!
//! What each checks:
//!
//! - golden output: [`golden_tests!`](crate::golden_tests) makes one test per fixture
//!   comparing [`Kit::describe`] with `<fixture>.expected` next to the fixture (re-bless with
//!   `UPDATE_EXPECT=1`; a mismatch writes `<fixture>.actual`), and one test that every
//!   fixture of the directory is listed;
//! - re-chunking: [`Kit::check_rechunking`], the same records whatever the chunk sizes;
//! - every prefix: [`Kit::check_prefixes`], no panic and no record the whole fixture
//!   contradicts, judged by a [`Judge`] (e.g. [`complete_records_form_a_prefix`]);
//! - mid-stream start: [`Kit::check_mid_stream_starts`], the same with the first bytes
//!   dropped (e.g. [`complete_records_are_known_by`] a key of the fields that must be right);
//! - garbage: [`Kit::check_random_bytes`] (random syscalls: no panic, no record, resyncs
//!   counted) and [`Kit::check_garbage_prepended`] (garbage before a fixture: counted, and
//!   judged like a mid-stream start);
//! - no credentials: [`Kit::check_no_credentials`], none of a fixture's credentials in the
//!   records or the parser's state, whatever the chunking.
//!
//! Fixtures live in `tests/fixtures/<protocol>/` ([`fixture_dir`]), in the format of
//! [`crate::fixture`]; chunks cut by the kernel (`cut=<n>`) and tails are replayed as the
//! capture pipeline feeds them ([`StreamDriver::push`] with the cut, [`StreamDriver::push_tail`]).
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use crate::fixture::{parse_chunks, Chunk, Cut};
use crate::stream::StreamDriver;
use crate::{Direction, OwnedRecord, Parser, Records, Status};

/// Judges the records of a partial run (a prefix, a mid-stream start) against those of the
/// whole fixture it was made from: `Err` says what is wrong.
pub type Judge = Box<dyn Fn(&[OwnedRecord]) -> Result<(), String>>;

/// A way to see a conversation: [`as_recorded`], [`gathered`].
pub type View = fn(&[Chunk]) -> Vec<Chunk>;

/// `tests/fixtures/<protocol>` of this repository.
pub fn fixture_dir(protocol: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(protocol)
}

/// A protocol's parser and the facts its fixture tests need.
pub struct Kit<P> {
    fixture_dir: PathBuf,
    new_driver: Box<dyn Fn() -> StreamDriver<P>>,
    describe: fn(&[Chunk], &[OwnedRecord], &StreamDriver<P>) -> String,
    credentials: fn(&str) -> &'static [&'static str],
    resync_trusts_syscall_boundaries: bool,
    one_byte_pieces_up_to: usize,
}

impl<P: Parser + Debug> Kit<P> {
    /// The fixtures of `fixture_dir`, replayed through the drivers `new_driver` makes, their
    /// records rendered by `describe` for the golden files.
    pub fn new(
        fixture_dir: impl Into<PathBuf>,
        new_driver: impl Fn() -> StreamDriver<P> + 'static,
        describe: fn(&[Chunk], &[OwnedRecord], &StreamDriver<P>) -> String,
    ) -> Self {
        Kit {
            fixture_dir: fixture_dir.into(),
            new_driver: Box::new(new_driver),
            describe,
            credentials: |_| &[],
            resync_trusts_syscall_boundaries: false,
            one_byte_pieces_up_to: 300_000,
        }
    }

    /// The strings each fixture (by name) carries that must never reach a record.
    pub fn credentials(mut self, of_fixture: fn(&str) -> &'static [&'static str]) -> Self {
        self.credentials = of_fixture;
        self
    }

    /// The parser finds packets again only where a syscall began, so a fixture whose run
    /// resynchronised (or had cuts) may give other records when its syscalls are cut
    /// differently: [`Kit::check_rechunking`] leaves such fixtures out.
    pub fn resync_trusts_syscall_boundaries(mut self) -> Self {
        self.resync_trusts_syscall_boundaries = true;
        self
    }

    /// Fixtures larger than this are not re-chunked into 1-byte pieces (slow in debug builds).
    pub fn one_byte_pieces_up_to(mut self, bytes: usize) -> Self {
        self.one_byte_pieces_up_to = bytes;
        self
    }

    pub fn fixture_dir(&self) -> &Path {
        &self.fixture_dir
    }

    /// Every fixture of the directory, by name (file stem), sorted.
    pub fn fixtures(&self) -> Vec<String> {
        let dir = &self.fixture_dir;
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".chunks").map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }

    /// The chunks of fixture `name`.
    pub fn load(&self, name: &str) -> Vec<Chunk> {
        load_path(&self.fixture_dir.join(format!("{name}.chunks")))
    }

    /// A fresh driver, as the protocol's tests make it.
    pub fn driver(&self) -> StreamDriver<P> {
        (self.new_driver)()
    }

    /// Feeds `chunks` to a fresh driver, each split into pieces of at most `piece` bytes (a
    /// cut follows the last piece; a tail goes whole to [`StreamDriver::push_tail`]), and
    /// closes at the last timestamp.
    pub fn run(&self, chunks: &[Chunk], piece: usize) -> (Vec<OwnedRecord>, StreamDriver<P>) {
        let mut driver = self.driver();
        let mut out = Records::default();
        let mut last_ts = 0;
        for c in chunks {
            last_ts = c.ts_ns;
            if c.cut == Cut::Tail {
                driver.push_tail(c.dir, c.ts_ns, &c.bytes, &mut out);
                continue;
            }
            if c.bytes.is_empty() {
                driver.push(c.dir, c.ts_ns, &[], c.cut_bytes(), &mut out);
                continue;
            }
            let n = c.bytes.len().div_ceil(piece.max(1));
            for (i, part) in c.bytes.chunks(piece.max(1)).enumerate() {
                let cut = if i + 1 == n { c.cut_bytes() } else { 0 };
                driver.push(c.dir, c.ts_ns, part, cut, &mut out);
            }
        }
        driver.close(last_ts, &mut out);
        (out.to_owned_records(), driver)
    }

    /// The golden text of fixture `name`: its whole run, rendered.
    pub fn describe(&self, name: &str) -> String {
        self.describe_chunks(&self.load(name))
    }

    /// The golden text of a run of `chunks`.
    pub fn describe_chunks(&self, chunks: &[Chunk]) -> String {
        let (records, driver) = self.run(chunks, usize::MAX);
        (self.describe)(chunks, &records, &driver)
    }

    /// Compares [`Kit::describe`] of fixture `name` with `<name>.expected` (written instead
    /// when `UPDATE_EXPECT` is set; on a mismatch the actual text goes to `<name>.actual`).
    pub fn check_golden(&self, name: &str) {
        let actual = self.describe(name);
        let path = self.fixture_dir.join(format!("{name}.expected"));
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&path, &actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            let actual_path = self.fixture_dir.join(format!("{name}.actual"));
            std::fs::write(&actual_path, &actual).unwrap();
            panic!(
                "{name}: records differ from {} (actual in {}; UPDATE_EXPECT=1 re-blesses)\n{actual}",
                path.display(),
                actual_path.display()
            );
        }
    }

    /// Every fixture of the directory is in `listed` (has its golden test).
    pub fn check_every_fixture_listed(&self, listed: &[&str]) {
        let fixtures = self.fixtures();
        assert!(
            !fixtures.is_empty(),
            "no fixtures in {:?}",
            self.fixture_dir
        );
        for name in fixtures {
            assert!(listed.contains(&name.as_str()), "no golden test for {name}");
        }
    }

    /// Every fixture cut into pieces of 1 (up to [`Kit::one_byte_pieces_up_to`]), 7, 64 and
    /// 4096 bytes gives the records of its whole run.
    pub fn check_rechunking(&self) {
        for name in self.fixtures() {
            let chunks = self.load(&name);
            let (whole, driver) = self.run(&chunks, usize::MAX);
            if self.resync_trusts_syscall_boundaries
                && (driver.parser_counters().searches() > 0 || has_cuts(&chunks))
            {
                continue;
            }
            for piece in [1, 7, 64, 4096] {
                if piece == 1 && total_len(&chunks) > self.one_byte_pieces_up_to {
                    continue;
                }
                let (records, _) = self.run(&chunks, piece);
                assert_eq!(records, whole, "{name}: pieces of {piece}");
            }
        }
    }

    /// Every fixture cut after each of `points(chunks)` bytes ([`prefix`]) runs without a
    /// panic and gives records that `judge` (made from the whole run's records) accepts.
    pub fn check_prefixes(
        &self,
        points: impl Fn(&[Chunk]) -> Vec<usize>,
        judge: impl Fn(&[OwnedRecord]) -> Judge,
    ) {
        for name in self.fixtures() {
            let chunks = self.load(&name);
            let (whole, _) = self.run(&chunks, usize::MAX);
            let accept = judge(&whole);
            for keep in points(&chunks) {
                let (records, _) = self.run(&prefix(&chunks, keep), usize::MAX);
                if let Err(e) = accept(&records) {
                    panic!("{name}: prefix of {keep} bytes: {e}");
                }
            }
        }
    }

    /// Every fixture, seen through each of `views` (e.g. [`as_recorded`], [`gathered`]),
    /// without its first `points(view)` bytes ([`suffix`]): a capture that started late. No
    /// panic, and records that `judge` (made from the whole view's records) accepts.
    pub fn check_mid_stream_starts(
        &self,
        views: &[View],
        points: impl Fn(&[Chunk]) -> Vec<usize>,
        judge: impl Fn(&[OwnedRecord]) -> Judge,
    ) {
        for name in self.fixtures() {
            let recorded = self.load(&name);
            for (v, view) in views.iter().enumerate() {
                let chunks = view(&recorded);
                let (whole, _) = self.run(&chunks, usize::MAX);
                let accept = judge(&whole);
                for drop in points(&chunks) {
                    let (records, _) = self.run(&suffix(&chunks, drop), usize::MAX);
                    if let Err(e) = accept(&records) {
                        panic!("{name} (view {v}): without the first {drop} bytes: {e}");
                    }
                }
            }
        }
    }

    /// `rounds` connections of `syscalls` random syscalls (1 to 300 bytes, random direction)
    /// each: no panic, no record, the resynchronisations counted, the connection not dropped.
    pub fn check_random_bytes(&self, seed: u64, rounds: usize, syscalls: usize) {
        let mut rng = Rng(seed);
        for round in 0..rounds {
            let mut driver = self.driver();
            let mut out = Records::default();
            for ts in 0..syscalls as u64 {
                let len = 1 + rng.below(300);
                let bytes = rng.bytes(len);
                let dir = if rng.below(2) == 0 {
                    Direction::ClientToServer
                } else {
                    Direction::ServerToClient
                };
                driver.push(dir, ts, &bytes, 0, &mut out);
            }
            driver.close(syscalls as u64, &mut out);
            assert!(out.is_empty(), "round {round}: {out:?}");
            // Garbage from the first byte reads as a mid-stream start (a parser cannot tell
            // the two apart); later garbage, as a resync. Either way it is counted.
            assert!(driver.parser_counters().searches() > 0, "round {round}");
            assert!(!driver.is_dropped(), "round {round}");
        }
    }

    /// Every fixture with a syscall of random bytes before its first syscall of each
    /// direction: no panic, the garbage counted as resynchronisation, and records that
    /// `judge` (made from the whole fixture's records) accepts, as for a mid-stream start.
    pub fn check_garbage_prepended(&self, seed: u64, judge: impl Fn(&[OwnedRecord]) -> Judge) {
        let mut rng = Rng(seed);
        for name in self.fixtures() {
            let chunks = self.load(&name);
            let (whole, _) = self.run(&chunks, usize::MAX);
            let accept = judge(&whole);
            for round in 0..4 {
                let mut dirty = Vec::with_capacity(chunks.len() + 2);
                let mut seen = [false; 2];
                for c in &chunks {
                    if !seen[c.dir.index()] {
                        seen[c.dir.index()] = true;
                        // A first byte of 0xff starts no message of either protocol.
                        let len = 1 + rng.below(300);
                        let mut garbage = rng.bytes(len);
                        garbage[0] = 0xff;
                        dirty.push(Chunk::new(c.dir, c.ts_ns, garbage));
                    }
                    dirty.push(c.clone());
                }
                let (records, driver) = self.run(&dirty, usize::MAX);
                let counters = driver.parser_counters();
                assert!(
                    counters.searches() > 0 && counters.n_resync_bytes > 0,
                    "{name}: round {round}: garbage not counted: {counters:?}"
                );
                if let Err(e) = accept(&records) {
                    panic!("{name}: round {round}: garbage first: {e}");
                }
            }
        }
    }

    /// No credential of a fixture (see [`Kit::credentials`]) appears in its records or in the
    /// parser's state, in pieces of 1 (up to [`Kit::one_byte_pieces_up_to`]), 7 bytes or
    /// whole. Returns how many fixtures carry one of their credentials in their bytes, so a
    /// test can check that the property was put to the test.
    pub fn check_no_credentials(&self) -> usize {
        let mut carrying = 0;
        for name in self.fixtures() {
            let secrets = (self.credentials)(&name);
            if secrets.is_empty() {
                continue;
            }
            let chunks = self.load(&name);
            let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.clone()).collect();
            if secrets
                .iter()
                .any(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
            {
                carrying += 1;
            }
            for piece in [1, 7, usize::MAX] {
                if piece == 1 && bytes.len() > self.one_byte_pieces_up_to {
                    continue;
                }
                let (records, driver) = self.run(&chunks, piece);
                let dump = format!("{records:?} {:?}", driver.parser());
                for secret in secrets {
                    assert!(
                        !dump.contains(secret),
                        "{name}: pieces of {piece}: {secret:?} leaked in {dump}"
                    );
                }
            }
        }
        carrying
    }
}

/// Makes one `#[test]` per fixture comparing its golden output (see [`Kit::check_golden`]),
/// and `every_fixture_has_a_golden_test`. `$kit` is an expression making the [`Kit`].
///
/// ```ignore
/// golden_tests! { kit();
///     golden_select => "select",
///     golden_insert => "insert",
/// }
/// ```
#[macro_export]
macro_rules! golden_tests {
    ($kit:expr; $($test:ident => $fixture:literal,)*) => {
        $(#[test] fn $test() { $kit.check_golden($fixture); })*

        /// Every fixture of the directory has its golden test above.
        #[test]
        fn every_fixture_has_a_golden_test() {
            $kit.check_every_fixture_listed(&[$($fixture),*]);
        }
    };
}

/// Reads a `.chunks` file.
pub fn load_path(path: &Path) -> Vec<Chunk> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_chunks(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Bytes of all chunks.
pub fn total_len(chunks: &[Chunk]) -> usize {
    chunks.iter().map(|c| c.bytes.len()).sum()
}

/// Whether the kernel cut any syscall of the conversation.
pub fn has_cuts(chunks: &[Chunk]) -> bool {
    chunks.iter().any(|c| c.cut != Cut::Whole)
}

/// The first `keep` bytes of a conversation, in chunk order. A cut belongs to the end of its
/// syscall's captured bytes; part of a tail is not the end of its syscall, so it is left out.
pub fn prefix(chunks: &[Chunk], keep: usize) -> Vec<Chunk> {
    let mut left = keep;
    let mut out = Vec::new();
    for c in chunks {
        if left == 0 {
            break;
        }
        let n = c.bytes.len().min(left);
        if c.cut == Cut::Tail && n < c.bytes.len() {
            break;
        }
        let cut = if n == c.bytes.len() {
            c.cut
        } else {
            Cut::Whole
        };
        out.push(Chunk {
            bytes: c.bytes[..n].to_vec(),
            cut,
            ..*c
        });
        left -= n;
    }
    out
}

/// The conversation without its first `drop` bytes (a capture that started late).
pub fn suffix(chunks: &[Chunk], drop: usize) -> Vec<Chunk> {
    let mut left = drop;
    let mut out = Vec::new();
    for c in chunks {
        let n = c.bytes.len().min(left);
        left -= n;
        if n < c.bytes.len() {
            out.push(Chunk {
                bytes: c.bytes[n..].to_vec(),
                ..*c
            });
        }
    }
    out
}

/// The conversation as recorded (a view for [`Kit::check_mid_stream_starts`]).
pub fn as_recorded(chunks: &[Chunk]) -> Vec<Chunk> {
    chunks.to_vec()
}

/// The conversation as a reading process sees it: every run of one direction's syscalls
/// gathered into one read (stamped when its last bytes came), up to a cut syscall.
pub fn gathered(chunks: &[Chunk]) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    for c in chunks {
        match out.last_mut() {
            Some(last) if last.dir == c.dir && last.cut == Cut::Whole => {
                last.ts_ns = c.ts_ns;
                last.bytes.extend_from_slice(&c.bytes);
                last.cut = c.cut;
            }
            _ => out.push(c.clone()),
        }
    }
    out
}

/// Cut points for [`Kit::check_prefixes`] and [`Kit::check_mid_stream_starts`]: every byte
/// of a conversation up to `every_up_to` bytes long, else about `spread` points evenly
/// spread (`0..=total` for prefixes; the caller drops what it does not want).
pub fn evenly(every_up_to: usize, spread: usize) -> impl Fn(&[Chunk]) -> Vec<usize> {
    move |chunks| {
        let total = total_len(chunks);
        let step = if total > every_up_to {
            total / spread + 1
        } else {
            1
        };
        (0..=total).step_by(step).collect()
    }
}

/// Records that are complete (not cut off by the end of the bytes).
pub fn complete(records: &[OwnedRecord]) -> Vec<&OwnedRecord> {
    records
        .iter()
        .filter(|r| r.status != Status::Incomplete)
        .collect()
}

/// Judge: the complete records of a partial run are the first complete records of the whole
/// run, field for field and in order.
pub fn complete_records_form_a_prefix(whole: &[OwnedRecord]) -> Judge {
    let whole: Vec<OwnedRecord> = complete(whole).into_iter().cloned().collect();
    Box::new(move |records| {
        let done = complete(records);
        if done.len() > whole.len() {
            return Err(format!(
                "{} complete records, the whole run has {}",
                done.len(),
                whole.len()
            ));
        }
        match done.iter().zip(&whole).position(|(r, w)| *r != w) {
            None => Ok(()),
            Some(i) => Err(format!(
                "record {i} differs:\n{:?}\nwhole run:\n{:?}",
                done[i], whole[i]
            )),
        }
    })
}

/// Judge: every complete record of a partial run has the `key` of a record of the whole run
/// (the key holds the fields such a record must get right when it exists at all).
pub fn complete_records_are_known_by<K: PartialEq + 'static>(
    key: fn(&OwnedRecord) -> K,
) -> impl Fn(&[OwnedRecord]) -> Judge {
    move |whole| {
        let known: Vec<K> = whole.iter().map(key).collect();
        Box::new(move |records| {
            match complete(records)
                .into_iter()
                .find(|r| !known.contains(&key(r)))
            {
                None => Ok(()),
                Some(r) => Err(format!("misparsed {r:?}")),
            }
        })
    }
}

/// A small deterministic PRNG (xorshift64*), so tests need no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
