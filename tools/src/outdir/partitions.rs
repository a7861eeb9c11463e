//! Finding a table's Parquet files: the `date=`/`hour=` partitions that can hold rows of a
//! selection's time range.
use std::path::{Path, PathBuf};

use super::error::ReadError;
use super::runs::run_of_file_name;
use super::selection::Selection;
use super::time::parse_time;

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// The Parquet files of `table` under `dir` of the selected runs (by file name) whose
/// `date=`/`hour=` partition can hold rows of the selected time range. A file's partition is the hour of its first row, and a file can
/// hold a few rows of the previous hour, so partition H is read when the selection overlaps
/// [H − 1 h, H + 1 h).
pub fn table_files(
    dir: &Path,
    table: &str,
    selection: &Selection,
) -> Result<Vec<PathBuf>, ReadError> {
    let mut files = Vec::new();
    let root = dir.join(table);
    // A table with no rows has no directory; any other failure to list is an error, not
    // fewer rows.
    let dates = match std::fs::read_dir(&root) {
        Ok(dates) => dates,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(ReadError::Io(root, e)),
    };
    let list =
        |path: &Path| std::fs::read_dir(path).map_err(|e| ReadError::Io(path.to_path_buf(), e));
    for date in dates {
        let date = date.map_err(|e| ReadError::Io(root.clone(), e))?;
        if !date.path().is_dir() {
            continue;
        }
        let date_name = date.file_name().to_string_lossy().into_owned();
        for hour in list(&date.path())? {
            let hour = hour.map_err(|e| ReadError::Io(date.path(), e))?;
            if !hour.path().is_dir() {
                continue;
            }
            let hour_name = hour.file_name().to_string_lossy().into_owned();
            let partition = partition_start_us(&date_name, &hour_name);
            if partition.is_some_and(|start| !partition_may_hold(selection, start)) {
                continue;
            }
            for entry in list(&hour.path())? {
                let entry = entry.map_err(|e| ReadError::Io(hour.path(), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".parquet")
                    && !name.starts_with('.')
                    && selection.run_matches(run_of_file_name(&name))
                {
                    files.push(entry.path());
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Checks that `dir` is an output directory of `l7tap capture` or `replay` before it is read:
/// a missing directory, or one without `intervals/`, would otherwise read as no rows.
pub fn check_output_dir(dir: &Path) -> Result<(), ReadError> {
    let metadata = std::fs::metadata(dir).map_err(|e| ReadError::Io(dir.to_path_buf(), e))?;
    if !metadata.is_dir() {
        return Err(ReadError::NotAnOutputDirectory(
            dir.to_path_buf(),
            "not a directory".into(),
        ));
    }
    if !dir.join("intervals").is_dir() {
        return Err(ReadError::NotAnOutputDirectory(
            dir.to_path_buf(),
            "no intervals/ in it".into(),
        ));
    }
    // Unreadable (permissions): an error now rather than an empty report.
    std::fs::read_dir(dir.join("intervals"))
        .map_err(|e| ReadError::Io(dir.join("intervals"), e))?;
    Ok(())
}

/// Whether the partition of the hour starting at `hour_start_us` can hold rows of the selection:
/// rows of hour H are in partition H, or H + 1 when they arrived after a row of H + 1.
pub(super) fn partition_may_hold(selection: &Selection, hour_start_us: i64) -> bool {
    let too_late = selection
        .until_us
        .is_some_and(|u| hour_start_us - MICROS_PER_HOUR >= u);
    let too_early = selection
        .since_us
        .is_some_and(|s| hour_start_us + MICROS_PER_HOUR <= s);
    !too_late && !too_early
}

pub(super) fn partition_start_us(date_dir: &str, hour_dir: &str) -> Option<i64> {
    let date = date_dir.strip_prefix("date=")?;
    let hour: i64 = hour_dir.strip_prefix("hour=")?.parse().ok()?;
    let day_start = parse_time(date).ok()?;
    Some(day_start + hour * MICROS_PER_HOUR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_prune_by_hour_with_one_hour_of_slack() {
        let selection = Selection {
            since_us: Some(parse_time("2024-06-01T10:30:00Z").unwrap()),
            until_us: Some(parse_time("2024-06-01T11:00:00Z").unwrap()),
            ..Selection::default()
        };
        let hour = |h: &str| partition_start_us("date=2024-06-01", h).unwrap();
        let kept = |start: i64| partition_may_hold(&selection, start);
        assert!(!kept(hour("hour=09")));
        assert!(kept(hour("hour=10")));
        assert!(kept(hour("hour=11"))); // may hold late rows of 10:xx
        assert!(!kept(hour("hour=12")));
    }
}
