//! The output registry: where a capture's three tables go, one kind per module.
//!
//! [`OUTPUT_KINDS`] is the one list of output kinds; [`Output::parse`] asks each kind, in list
//! order, whether it takes the `--out` text. An output says where the [`crate::ParquetSink`]
//! writes its files, how long they may stay open (the rows a SIGKILL can lose), and what is
//! done with a file once it is published ([`Shipper`]). Adding a kind is its module, a line in
//! the list and an arm in each `match` below (the compiler names them).
pub mod bucket;
pub mod clickhouse;
pub mod clickhouse_columns;
pub mod directory;
pub mod spool;
pub mod uploader;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bucket::{BucketError, BucketOutput, RemoteObject};
pub use clickhouse::{ClickHouseError, ClickHouseOutput};
pub use directory::DirectoryOutput;
pub use uploader::{Destination, SendError, ShipStats, Shipper, UploadSettings};

/// The kinds of output, in the order [`Output::parse`] tries them (a directory takes any
/// text, so it comes last).
pub const OUTPUT_KINDS: [OutputKind; 3] = [
    OutputKind::Bucket,
    OutputKind::ClickHouse,
    OutputKind::Directory,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// `s3://bucket/prefix`: files finished in a local spool, then uploaded ([`bucket`]).
    Bucket,
    /// `clickhouse://host:port/database`: files finished in a local spool every second, then
    /// inserted into the database's tables ([`clickhouse`]).
    ClickHouse,
    /// A local directory, written in place ([`directory`]).
    Directory,
}

impl OutputKind {
    /// What `--out` text selects this kind, for help and error texts.
    pub fn syntax(self) -> &'static str {
        match self {
            OutputKind::Bucket => bucket::SYNTAX,
            OutputKind::ClickHouse => clickhouse::SYNTAX,
            OutputKind::Directory => directory::SYNTAX,
        }
    }
}

/// A parsed `--out`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Bucket(BucketOutput),
    ClickHouse(ClickHouseOutput),
    Directory(DirectoryOutput),
}

/// `--out` names no output l7tap can write.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutputParseError(pub String);

impl Output {
    /// The output `text` names: the first kind of [`OUTPUT_KINDS`] that takes it.
    pub fn parse(text: &Path) -> Result<Output, OutputParseError> {
        for kind in OUTPUT_KINDS {
            let parsed = match kind {
                OutputKind::Bucket => bucket::parse(text).map(|r| r.map(Output::Bucket)),
                OutputKind::ClickHouse => {
                    clickhouse::parse(text).map(|r| r.map(Output::ClickHouse))
                }
                OutputKind::Directory => directory::parse(text).map(|r| r.map(Output::Directory)),
            };
            if let Some(result) = parsed {
                return result;
            }
        }
        Err(OutputParseError(format!(
            "{}: not an output l7tap can write (one of: {})",
            text.display(),
            OUTPUT_KINDS.map(OutputKind::syntax).join(", ")
        )))
    }

    pub fn kind(&self) -> OutputKind {
        match self {
            Output::Bucket(_) => OutputKind::Bucket,
            Output::ClickHouse(_) => OutputKind::ClickHouse,
            Output::Directory(_) => OutputKind::Directory,
        }
    }

    /// How long a file stays open by default: the longest a row waits before it is in a
    /// published file (a SIGKILL loses at most that, plus the sink's 1 s flush tick).
    pub fn default_roll_age(&self) -> Duration {
        match self {
            Output::Bucket(_) => bucket::DEFAULT_ROLL_AGE,
            Output::ClickHouse(_) => clickhouse::DEFAULT_ROLL_AGE,
            Output::Directory(_) => directory::DEFAULT_ROLL_AGE,
        }
    }

    /// Whether file paths get a `host=` level (below `hour=`), so that hosts can share it.
    pub fn host_partition(&self) -> bool {
        match self {
            Output::Bucket(_) => true,
            // Files are only a spool; the rows carry no host column of their own.
            Output::ClickHouse(_) => false,
            Output::Directory(_) => false,
        }
    }

    /// Where the sink writes its files for this output (`spool`: the spool root, for outputs
    /// that upload).
    pub fn write_dir(&self, spool: &Path) -> PathBuf {
        match self {
            Output::Bucket(bucket) => bucket.spool_dir(spool),
            Output::ClickHouse(clickhouse) => clickhouse.spool_dir(spool),
            Output::Directory(directory) => directory.path.clone(),
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Bucket(bucket) => bucket.fmt(f),
            Output::ClickHouse(clickhouse) => clickhouse.fmt(f),
            Output::Directory(directory) => directory.path.display().fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_their_kind_and_anything_else_is_a_directory() {
        let out = Output::parse(Path::new("s3://logs/l7tap/prod")).unwrap();
        assert_eq!(out.kind(), OutputKind::Bucket);
        assert_eq!(out.to_string(), "s3://logs/l7tap/prod");
        assert!(out.host_partition());
        let out = Output::parse(Path::new("l7tap-out")).unwrap();
        assert_eq!(
            out,
            Output::Directory(DirectoryOutput {
                path: "l7tap-out".into()
            })
        );
        assert!(!out.host_partition());
        let out = Output::parse(Path::new("clickhouse://127.0.0.1:8123/l7tap")).unwrap();
        assert_eq!(out.kind(), OutputKind::ClickHouse);
        assert_eq!(out.to_string(), "clickhouse://127.0.0.1:8123/l7tap");
        assert!(Output::parse(Path::new("s3://")).is_err());
        assert!(Output::parse(Path::new("gs://bucket/x")).is_err());
        assert!(Output::parse(Path::new("")).is_err());
    }
}
