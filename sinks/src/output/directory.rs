//! A local directory output: the sink writes and publishes its files in place.
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::OutputParseError;

/// `--out` text of this kind.
pub const SYNTAX: &str = "a directory path";

/// Files roll every 5 min by default: the directory is where they stay, so fewer, larger
/// files are better; a SIGKILL loses the rows of the open files.
pub const DEFAULT_ROLL_AGE: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryOutput {
    pub path: PathBuf,
}

/// Any non-empty path that names no URL scheme is a directory (`s3:` would otherwise become a
/// local folder of that name).
pub fn parse(text: &Path) -> Option<Result<DirectoryOutput, OutputParseError>> {
    if text.as_os_str().is_empty() {
        return Some(Err(OutputParseError("--out is empty".into())));
    }
    if let Some(scheme) = text.to_str().and_then(|t| t.split_once("://")).map(|s| s.0) {
        if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
    }
    Some(Ok(DirectoryOutput {
        path: text.to_path_buf(),
    }))
}
