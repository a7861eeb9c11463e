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
    /// The file has no column of this name: not a file of this table (or of l7tap).
    MissingColumn(PathBuf, String),
    /// An object-storage output could not be listed or read.
    Remote(String),
    /// The output directory cannot be read as one.
    NotAnOutputDirectory(PathBuf, String),
    /// `--run` named a run the directory does not hold (`runs`: the ones it holds).
    UnknownRun {
        dir: PathBuf,
        run: String,
        runs: String,
    },
}

impl ReadError {
    /// The error, naming `path` if it does not name a file yet.
    pub fn in_file(self, path: &std::path::Path) -> ReadError {
        match self {
            ReadError::Format(m) => ReadError::Format(format!("{}: {m}", path.display())),
            ReadError::Histogram(m) => ReadError::Histogram(format!("{}: {m}", path.display())),
            named => named,
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Parquet(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Arrow(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Histogram(m) | ReadError::Format(m) | ReadError::Remote(m) => f.write_str(m),
            ReadError::MissingColumn(p, column) => write!(
                f,
                "{}: no column {column}: not a file of an l7tap output directory",
                p.display()
            ),
            ReadError::NotAnOutputDirectory(p, why) => {
                write!(f, "{}: not an l7tap output directory ({why})", p.display())
            }
            ReadError::UnknownRun { dir, run, runs } if runs.is_empty() => write!(
                f,
                "--run {run}: no such run in {} (it holds none)",
                dir.display()
            ),
            ReadError::UnknownRun { dir, run, runs } => write!(
                f,
                "--run {run}: no such run in {} (it holds: {runs})",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for ReadError {}
