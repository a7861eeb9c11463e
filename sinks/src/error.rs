//! The sink's typed errors. Every I/O failure says which path and which step failed; none of
//! them loses rows: the sink keeps what it could not write and retries on the next flush.
use std::io;
use std::path::PathBuf;

/// A flush, or the sink's configuration, failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid sink configuration: {0}")]
    InvalidConfig(String),
    #[error("creating directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("creating file {path}: {source}")]
    CreateFile { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("syncing {path} to disk: {source}")]
    Sync { path: PathBuf, source: io::Error },
    #[error("renaming {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// Arrow/Parquet refused a batch: a bug (schema mismatch), not an I/O condition. The batch
    /// is dropped (retrying could not succeed) and its rows counted in `SinkStats::rows_dropped`.
    #[error("encoding {rows} rows of table {table}: {message}")]
    Encode {
        table: &'static str,
        rows: usize,
        message: String,
    },
}

impl SinkError {
    /// The I/O error behind this one, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            SinkError::CreateDir { source, .. }
            | SinkError::CreateFile { source, .. }
            | SinkError::Write { source, .. }
            | SinkError::Sync { source, .. }
            | SinkError::Rename { source, .. } => Some(source),
            SinkError::InvalidConfig(_) | SinkError::Encode { .. } => None,
        }
    }

    /// The file system is full (ENOSPC) or the quota is exhausted (EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        self.io_error().is_some_and(|error| {
            error.kind() == io::ErrorKind::StorageFull
                || matches!(
                    error.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
        })
    }

    /// Calling `try_flush` again later may succeed (an I/O condition, not a bug or bad config).
    pub fn is_retryable(&self) -> bool {
        self.io_error().is_some()
    }
}
