//! Reading a Parquet file of the output: projected columns of the row groups that overlap a
//! selection's time range, optionally only non-null rows or chosen rows, several files in parallel.
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowFilter, RowSelection,
};
use parquet::arrow::ProjectionMask;
use parquet::file::statistics::Statistics;

use super::error::ReadError;
use super::selection::Selection;

/// Reads `columns` of one file, keeping only row groups whose `time_column` statistics overlap
/// the selection (`slack_us` widens the range, e.g. by a window length).
pub fn read_projected(
    path: &Path,
    columns: &[&str],
    time_column: &str,
    selection: &Selection,
    slack_us: i64,
) -> Result<(Vec<RecordBatch>, HashMap<String, String>), ReadError> {
    read_projected_where(path, columns, time_column, selection, slack_us, None)
}

/// [`read_projected`], keeping only the rows where the column `non_null` is not null: that
/// column is decoded first, the others only for the rows kept.
pub fn read_projected_where(
    path: &Path,
    columns: &[&str],
    time_column: &str,
    selection: &Selection,
    slack_us: i64,
    non_null: Option<&str>,
) -> Result<(Vec<RecordBatch>, HashMap<String, String>), ReadError> {
    read_inner(
        path,
        columns,
        time_column,
        selection,
        slack_us,
        non_null,
        None,
    )
}

/// [`read_projected`] of some rows only: `rows` are sorted indices among the rows that
/// `read_projected` with the same arguments returns (pages holding none are not decoded).
pub fn read_rows(
    path: &Path,
    columns: &[&str],
    time_column: &str,
    selection: &Selection,
    slack_us: i64,
    rows: &[usize],
) -> Result<Vec<RecordBatch>, ReadError> {
    read_inner(
        path,
        columns,
        time_column,
        selection,
        slack_us,
        None,
        Some(rows),
    )
    .map(|r| r.0)
}

fn read_inner(
    path: &Path,
    columns: &[&str],
    time_column: &str,
    selection: &Selection,
    slack_us: i64,
    non_null: Option<&str>,
    rows: Option<&[usize]>,
) -> Result<(Vec<RecordBatch>, HashMap<String, String>), ReadError> {
    let file = File::open(path).map_err(|e| ReadError::Io(path.to_path_buf(), e))?;
    let parquet_err = |e| ReadError::Parquet(path.to_path_buf(), e);
    // With a row selection, the page index lets the reader skip pages holding no chosen row.
    let options = ArrowReaderOptions::new().with_page_index(rows.is_some());
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(parquet_err)?;
    // A file without a requested column is foreign (or of another table): say which, rather
    // than read nothing or index a column that is not there.
    let schema = builder.schema().clone();
    for &name in columns.iter().chain(non_null.iter()) {
        if schema.column_with_name(name).is_none() && !ADDED_COLUMNS.contains(&name) {
            return Err(ReadError::MissingColumn(
                path.to_path_buf(),
                name.to_string(),
            ));
        }
    }
    let metadata = builder.metadata().clone();
    let key_values: HashMap<String, String> = metadata
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    let schema_descr = metadata.file_metadata().schema_descr();
    let time_index =
        (0..schema_descr.num_columns()).find(|&i| schema_descr.column(i).name() == time_column);
    let row_groups: Vec<usize> = (0..metadata.num_row_groups())
        .filter(|&i| {
            let Some(ci) = time_index else { return true };
            match metadata.row_group(i).column(ci).statistics() {
                Some(Statistics::Int64(s)) => {
                    let (Some(&min), Some(&max)) = (s.min_opt(), s.max_opt()) else {
                        return true;
                    };
                    selection.until_us.is_none_or(|u| min - slack_us < u)
                        && selection
                            .since_us
                            .is_none_or(|since| max + slack_us >= since)
                }
                _ => true,
            }
        })
        .collect();
    let mask = ProjectionMask::columns(schema_descr, columns.iter().copied());
    let mut builder = builder;
    if let Some(name) = non_null {
        let filter_mask = ProjectionMask::columns(schema_descr, [name]);
        let predicate = ArrowPredicateFn::new(filter_mask, |batch: RecordBatch| {
            arrow::compute::is_not_null(batch.column(0).as_ref())
        });
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
    }
    if let Some(rows) = rows {
        let total: usize = row_groups
            .iter()
            .map(|&i| metadata.row_group(i).num_rows() as usize)
            .sum();
        let ranges = rows.iter().map(|&r| r..r + 1);
        builder = builder.with_row_selection(RowSelection::from_consecutive_ranges(ranges, total));
    }
    let reader = builder
        .with_projection(mask)
        .with_row_groups(row_groups)
        .build()
        .map_err(parquet_err)?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ReadError::Arrow(path.to_path_buf(), e))?;
    Ok((batches, key_values))
}

/// `read(file)` of every file, decoded on up to one thread per core (8 at most) a few files
/// at a time, yielded in file order: Parquet decoding is most of a long report's time, and
/// only that many files' batches are in memory at once.
pub fn read_files_in_parallel<'a, T: Send + 'a>(
    files: Vec<PathBuf>,
    read: impl Fn(&Path) -> Result<T, ReadError> + Sync + 'a,
) -> impl Iterator<Item = (PathBuf, Result<T, ReadError>)> + 'a {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let chunks: Vec<Vec<PathBuf>> = files.chunks(threads).map(|c| c.to_vec()).collect();
    chunks.into_iter().flat_map(move |chunk| {
        let read = &read;
        let decoded: Vec<Result<T, ReadError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = chunk
                .iter()
                .map(|path| scope.spawn(move || read(path)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a Parquet reader thread panicked"))
                .collect()
        });
        chunk.into_iter().zip(decoded).collect::<Vec<_>>()
    })
}

/// Columns added to the tables after their first release: files written before lack them, and
/// a read asking for one reads such files without it (see [`column_if_present`]).
pub const ADDED_COLUMNS: &[&str] = &["client_app", "client_process", "fingerprint"];

/// The column `name` of `batch`, or none when the file predates it (one of [`ADDED_COLUMNS`]);
/// a format error when it is of another type.
pub fn column_if_present<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<Option<&'a T>, ReadError> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(c) => c
            .as_any()
            .downcast_ref::<T>()
            .map(Some)
            .ok_or_else(|| ReadError::Format(format!("column {name} of another type"))),
    }
}

/// The column `name` of `batch` as an array of type `T` (a format error when it is missing or of
/// another type).
pub fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ReadError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ReadError::Format(format!("column {name} missing or of another type")))
}
