//! [`ReadError`]: what can go wrong reading an output directory.
use std::path::PathBuf;

/// Errors of the report and heatmap readers (the binary turns them into messages).
#[derive(Debug)]
pub enum ReadError {
    Io(PathBuf, std::io::Error),
    Parquet(PathBuf, parquet::errors::ParquetError),
    Arrow(PathBuf, arrow::error::ArrowError),
    Histogram(String),
    Format(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Parquet(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Arrow(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Histogram(m) | ReadError::Format(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReadError {}
