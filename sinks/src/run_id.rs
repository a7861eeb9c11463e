//! [`RunId`]: what tells the files of one capture or replay from those of another written into
//! the same output directory. It is in every file's name and in its `l7tap.run_id` metadata.
//!
//! A run id is the UTC start of the run and six random hex digits, `YYYYMMDDTHHMMSSZ_xxxxxx`:
//! short, unique in practice (two runs would have to start in the same second and draw the
//! same 24 bits), and sorted by start time when sorted as text. It holds no `-`, so a file
//! name `<host>-<run>-<start>-<seq>.parquet` splits unambiguously from the right.
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::time::{UtcDateTime, MICROS_PER_SECOND};

/// Length of the time part, `YYYYMMDDTHHMMSSZ`.
const TIME_LEN: usize = 16;
/// Hex digits after the time.
const SUFFIX_LEN: usize = 6;

/// The id of one run (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(String);

impl RunId {
    /// A fresh id for a run starting at `start`. The suffix mixes the process id, the clock's
    /// nanoseconds and the standard library's per-process random hash keys.
    pub fn generate(start: SystemTime) -> RunId {
        let since_epoch = start.duration_since(UNIX_EPOCH).unwrap_or_default();
        let micros = i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX);
        let time = UtcDateTime::from_unix_micros(micros - micros % MICROS_PER_SECOND);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u128(since_epoch.as_nanos());
        let suffix = hasher.finish() & 0xff_ffff;
        RunId(format!("{}_{suffix:06x}", time.compact_string()))
    }

    /// `text` if it has the shape of a run id, `YYYYMMDDTHHMMSSZ_xxxxxx` (lower-case hex).
    pub fn parse(text: &str) -> Option<RunId> {
        is_run_id(text).then(|| RunId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_run_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != TIME_LEN + 1 + SUFFIX_LEN {
        return false;
    }
    let (time, rest) = bytes.split_at(TIME_LEN);
    let digits = |range: std::ops::Range<usize>| time[range].iter().all(u8::is_ascii_digit);
    digits(0..8)
        && time[8] == b'T'
        && digits(9..15)
        && time[15] == b'Z'
        && rest[0] == b'_'
        && rest[1..]
            .iter()
            .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The run id in a published file's name, `<host>-<run>-<start>-<seq>.parquet`; `None` for a
/// name without one (`<host>-<start>-<seq>.parquet`, written before run ids existed) or a
/// name of another shape.
pub fn run_id_of_file_name(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".parquet")?;
    let mut parts = stem.rsplitn(4, '-');
    let (_seq, _start, run) = (parts.next()?, parts.next()?, parts.next()?);
    // At least a host before the run.
    parts.next()?;
    is_run_id(run).then_some(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_start_with_the_utc_start_and_sort_by_it() {
        let start = UNIX_EPOCH + Duration::from_secs(1_717_236_000);
        let id = RunId::generate(start);
        assert!(id.as_str().starts_with("20240601T100000Z_"), "{id}");
        assert_eq!(RunId::parse(id.as_str()), Some(id.clone()));
        let later = RunId::generate(start + Duration::from_secs(1));
        assert!(later > id, "{later} sorts before {id}");
    }

    #[test]
    fn ids_of_runs_started_at_once_differ() {
        let start = SystemTime::now();
        let ids: std::collections::BTreeSet<RunId> =
            (0..50).map(|_| RunId::generate(start)).collect();
        assert!(ids.len() >= 49, "{ids:?}");
    }

    #[test]
    fn only_the_shape_of_an_id_parses() {
        for text in [
            "",
            "unnamed",
            "20240601T100000Z",
            "20240601T100000Z_ABCDEF",
            "20240601T100000Z-abcdef",
            "20240601T100000Z_abcdeff",
            "2024060xT100000Z_abcdef",
            "../../etc/passwd",
        ] {
            assert_eq!(RunId::parse(text), None, "{text}");
        }
        assert!(RunId::parse("20240601T100000Z_0a9f3c").is_some());
    }

    #[test]
    fn file_names_give_their_run_id_from_the_right() {
        let run = "20240601T100000Z_0a9f3c";
        assert_eq!(
            run_id_of_file_name(&format!("my-host-{run}-20240601T100512Z-000003.parquet")),
            Some(run)
        );
        assert_eq!(
            run_id_of_file_name(&format!("h-{run}-20240601T100512Z-000003.parquet")),
            Some(run)
        );
        // Names written before run ids: none, whatever the host.
        for old in [
            "my-host-20240601T100512Z-000003.parquet",
            "host-20240601T100512Z-000003.parquet",
            "a-b-c-20240601T100512Z-000003.parquet",
        ] {
            assert_eq!(run_id_of_file_name(old), None, "{old}");
        }
        assert_eq!(
            run_id_of_file_name(&format!("h-{run}-20240601T100512Z-000003.parquet.tmp")),
            None
        );
    }
}
