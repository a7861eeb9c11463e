//! An output read wherever it is ([`open_output`]): a directory in place, and an
//! object-storage output (`s3://bucket/prefix`) through its listing: the objects whose
//! `date=`/`hour=` partition and run can hold the selection are downloaded into a temporary
//! directory with the directory layout (the `host=` level is dropped: file names carry the
//! host), which the rest of `outdir/` then reads as any output directory.
use std::path::{Path, PathBuf};

use l7tap_sinks::output::bucket;
use l7tap_sinks::{Output, Table};

use super::error::ReadError;
use super::partitions::{partition_may_hold, partition_start_us};
use super::runs::run_of_file_name;
use super::selection::Selection;

/// An output ready to read as a directory.
pub struct OutputView {
    /// The directory to read.
    pub dir: PathBuf,
    /// The output as the user named it, for messages.
    pub shown: String,
    /// The downloaded copy of an object-storage output, removed when the view is dropped.
    _downloaded: Option<tempfile::TempDir>,
}

/// Opens `out` (a directory, or an output URL) for reading the rows `selection` can select.
pub fn open_output(out: &Path, selection: &Selection) -> Result<OutputView, ReadError> {
    let output = Output::parse(out).map_err(|e| ReadError::Remote(e.to_string()))?;
    let bucket = match output {
        Output::Directory(directory) => {
            return Ok(OutputView {
                shown: directory.path.display().to_string(),
                dir: directory.path,
                _downloaded: None,
            })
        }
        Output::Bucket(bucket) => bucket,
        Output::ClickHouse(clickhouse) => {
            return Err(ReadError::Remote(format!(
                "{clickhouse}: report and heatmap read a directory or s3:// output; query the \
                 ClickHouse tables with the SQL in the README"
            )))
        }
    };
    let remote = |e: bucket::BucketError| ReadError::Remote(e.to_string());
    let store = bucket.store().map_err(remote)?;
    let runtime = bucket::runtime().map_err(|e| ReadError::Remote(e.to_string()))?;
    let downloaded = tempfile::Builder::new()
        .prefix("l7tap-read-")
        .tempdir()
        .map_err(|e| ReadError::Io(std::env::temp_dir(), e))?;
    let mut objects = 0usize;
    for table in Table::ALL {
        let listed = bucket
            .list_table(&*store, &runtime, table.name())
            .map_err(remote)?;
        if listed.is_empty() {
            continue;
        }
        let table_dir = downloaded.path().join(table.name());
        std::fs::create_dir_all(&table_dir).map_err(|e| ReadError::Io(table_dir.clone(), e))?;
        for object in listed {
            let Some(local) = local_path(&object.relative_key, selection) else {
                continue;
            };
            let path = downloaded.path().join(local);
            let parent = path.parent().expect("a file below the table directory");
            std::fs::create_dir_all(parent).map_err(|e| ReadError::Io(parent.to_path_buf(), e))?;
            bucket
                .download(&*store, &runtime, &object.relative_key, &path)
                .map_err(remote)?;
            objects += 1;
        }
    }
    if objects == 0 && !downloaded.path().join("intervals").is_dir() {
        return Err(ReadError::NotAnOutputDirectory(
            PathBuf::from(bucket.to_string()),
            "no intervals/ objects under it".into(),
        ));
    }
    Ok(OutputView {
        dir: downloaded.path().to_path_buf(),
        shown: bucket.to_string(),
        _downloaded: Some(downloaded),
    })
}

/// Where an object (`<table>/date=…/hour=…[/host=…]/NAME.parquet`) goes in the directory
/// layout, or `None` when it is not a published file the selection can read.
fn local_path(relative_key: &str, selection: &Selection) -> Option<PathBuf> {
    let parts: Vec<&str> = relative_key.split('/').collect();
    let (table, date, hour, name) = match parts.as_slice() {
        [table, date, hour, name] => (*table, *date, *hour, *name),
        [table, date, hour, host, name] if host.starts_with("host=") => {
            (*table, *date, *hour, *name)
        }
        _ => return None,
    };
    if !name.ends_with(".parquet") || name.starts_with('.') {
        return None;
    }
    if !selection.run_matches(run_of_file_name(name)) {
        return None;
    }
    let start = partition_start_us(date, hour)?;
    if !partition_may_hold(selection, start) {
        return None;
    }
    Some(Path::new(table).join(date).join(hour).join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outdir::time::parse_time;

    #[test]
    fn objects_map_to_the_directory_layout_within_the_selection() {
        let key = "requests/date=2024-06-01/hour=10/host=a/a-20240601T100000Z_0a9f3c-20240601T100000Z-000000.parquet";
        assert_eq!(
            local_path(key, &Selection::default()).unwrap(),
            Path::new("requests/date=2024-06-01/hour=10/a-20240601T100000Z_0a9f3c-20240601T100000Z-000000.parquet")
        );
        let later = Selection {
            since_us: Some(parse_time("2024-06-01T15:00:00Z").unwrap()),
            ..Selection::default()
        };
        assert_eq!(local_path(key, &later), None);
        assert_eq!(
            local_path(
                "requests/date=2024-06-01/hour=10/host=a/.x.parquet.tmp",
                &Selection::default()
            ),
            None
        );
        assert_eq!(local_path("_l7tap_probe/a-1", &Selection::default()), None);
    }
}
