//! The spool directory of an uploading output: published files wait here until uploaded.
//! Its layout is the output's (`<table>/date=…/hour=…/host=…/NAME.parquet`), so a file's
//! path below the spool directory is its key below the prefix.
use std::path::{Path, PathBuf};

use crate::file::TEMP_SUFFIX;
use crate::schema::Table;

/// The default spool root: `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`),
/// `/var/lib/l7tap/spool` as root, else `$XDG_STATE_HOME/l7tap/spool` (or
/// `~/.local/state/l7tap/spool`). Each output has its own directory below it.
pub fn default_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several, separated by ':'; the first is this service's.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(first).join("spool");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/l7tap/spool");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("l7tap/spool")
}

/// A published file waiting in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpooledFile {
    pub path: PathBuf,
    /// Path below the spool directory, `/`-separated: the key below the prefix.
    pub relative: String,
    pub bytes: u64,
    /// Rows in the file (0 when unknown: a file found at start).
    pub rows: u64,
    /// The table, from the first level of `relative`.
    pub table: Option<Table>,
}

impl SpooledFile {
    /// A file under `spool_dir` (`None` if it is not below it).
    pub fn new(spool_dir: &Path, path: PathBuf, bytes: u64, rows: u64) -> Option<SpooledFile> {
        let relative = path.strip_prefix(spool_dir).ok()?;
        let relative: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_str().map(str::to_string))
            .collect::<Option<_>>()?;
        let table = Table::ALL
            .into_iter()
            .find(|t| relative.first().map(String::as_str) == Some(t.name()));
        Some(SpooledFile {
            relative: relative.join("/"),
            path,
            bytes,
            rows,
            table,
        })
    }
}

/// The spool directory of one destination under the spool root, named by `destination`
/// (its characters outside `[A-Za-z0-9._-]` become `_`), so that files left for one
/// destination never go to another.
pub fn destination_dir(spool: &Path, destination: &str) -> PathBuf {
    spool.join(crate::sink::file_name_safe(destination))
}

/// The published files under `spool_dir` (left by an earlier run: a crash or an outage), oldest
/// name first within a table; temporary files are not published and are not listed.
pub fn published_files(spool_dir: &Path) -> std::io::Result<Vec<SpooledFile>> {
    let mut files = Vec::new();
    walk(spool_dir, &mut |path, name, len| {
        if name.ends_with(".parquet") && !name.starts_with('.') {
            if let Some(file) = SpooledFile::new(spool_dir, path.to_path_buf(), len, 0) {
                files.push(file);
            }
        }
    })?;
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(files)
}

/// Removes the temporary files (`.<host>-….parquet.tmp`) a killed run of `host` left under
/// `spool_dir`; returns how many. Other hosts' files are left alone.
pub fn remove_stale_temp_files(spool_dir: &Path, host: &str) -> std::io::Result<usize> {
    let prefix = format!(".{}-", crate::sink::sanitize_host(host));
    let mut stale = Vec::new();
    walk(spool_dir, &mut |path, name, _| {
        if name.starts_with(&prefix) && name.ends_with(&format!(".parquet{TEMP_SUFFIX}")) {
            stale.push(path.to_path_buf());
        }
    })?;
    for path in &stale {
        std::fs::remove_file(path)?;
    }
    Ok(stale.len())
}

/// Calls `visit(path, file name, length)` for every regular file below `dir` (none if `dir`
/// does not exist).
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &str, u64)) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            walk(&path, visit)?;
        } else if kind.is_file() {
            let name = entry.file_name();
            let len = entry.metadata()?.len();
            visit(&path, &name.to_string_lossy(), len);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_files_are_listed_with_their_keys_and_temp_files_of_the_host_removed() {
        let dir = tempfile::tempdir().unwrap();
        let hour = dir.path().join("requests/date=2026-12-07/hour=10/host=a");
        std::fs::create_dir_all(&hour).unwrap();
        std::fs::write(hour.join("a-run-x-000001.parquet"), b"12345").unwrap();
        std::fs::write(hour.join(".a-run-x-000002.parquet.tmp"), b"1").unwrap();
        std::fs::write(hour.join(".b-run-x-000002.parquet.tmp"), b"1").unwrap();
        let files = published_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].relative,
            "requests/date=2026-12-07/hour=10/host=a/a-run-x-000001.parquet"
        );
        assert_eq!(files[0].bytes, 5);
        assert_eq!(files[0].table, Some(Table::Requests));
        assert_eq!(remove_stale_temp_files(dir.path(), "a").unwrap(), 1);
        assert!(hour.join(".b-run-x-000002.parquet.tmp").exists());
        assert!(published_files(&dir.path().join("missing"))
            .unwrap()
            .is_empty());
    }
}
