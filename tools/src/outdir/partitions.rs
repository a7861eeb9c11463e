//! Finding a table's Parquet files: the `date=`/`hour=` partitions that can hold rows of a
//! selection's time range.
use std::path::{Path, PathBuf};

use super::selection::Selection;
use super::time::parse_time;

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// The Parquet files of `table` under `dir` whose `date=`/`hour=` partition can hold rows of
/// the selected time range. A file's partition is the hour of its first row, and a file can
/// hold a few rows of the previous hour, so partition H is read when the selection overlaps
/// [H − 1 h, H + 1 h).
pub fn table_files(dir: &Path, table: &str, selection: &Selection) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let root = dir.join(table);
    let Ok(dates) = std::fs::read_dir(&root) else {
        return files;
    };
    for date in dates.flatten() {
        let date_name = date.file_name().to_string_lossy().into_owned();
        let Ok(hours) = std::fs::read_dir(date.path()) else {
            continue;
        };
        for hour in hours.flatten() {
            let hour_name = hour.file_name().to_string_lossy().into_owned();
            let partition = partition_start_us(&date_name, &hour_name);
            if partition.is_some_and(|start| !partition_may_hold(selection, start)) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(hour.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".parquet") && !name.starts_with('.') {
                    files.push(entry.path());
                }
            }
        }
    }
    files.sort();
    files
}

/// Whether the partition of the hour starting at `hour_start_us` can hold rows of the selection:
/// rows of hour H are in partition H, or H + 1 when they arrived after a row of H + 1.
fn partition_may_hold(selection: &Selection, hour_start_us: i64) -> bool {
    let too_late = selection
        .until_us
        .is_some_and(|u| hour_start_us - MICROS_PER_HOUR >= u);
    let too_early = selection
        .since_us
        .is_some_and(|s| hour_start_us + MICROS_PER_HOUR <= s);
    !too_late && !too_early
}

fn partition_start_us(date_dir: &str, hour_dir: &str) -> Option<i64> {
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
