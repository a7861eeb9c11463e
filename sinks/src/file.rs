//! One Parquet file being produced: encoded in memory by an [`ArrowWriter`], written to a
//! temporary dot-file next to its final name, and published by rename once complete.
//!
//! Failure model. The [`ArrowWriter`] writes into memory ([`MemorySink`]), so encoding never
//! sees an I/O error. Bytes move from there into `retained` and are written to the temporary
//! file with positioned writes; they are dropped from memory only once an `fsync` has covered
//! them. Any I/O error (full disk, unwritable directory, EIO on fsync) leaves the file in a state
//! from which the next [`ParquetFile::persist`] resumes: a failed write is retried at the same
//! offset, a failed fsync rewrites everything since the last good one. Nothing is renamed before
//! the complete file has been written and fsynced, so a crash (SIGKILL, power loss) leaves
//! published files intact and at worst a `.…parquet.tmp` file that readers ignore.
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::error::SinkError;
use crate::schema::Table;
use crate::time::{UtcDateTime, MICROS_PER_HOUR};

/// Mode of published files (before and regardless of the umask).
pub const FILE_MODE: u32 = 0o640;
/// Mode of created directories (before the umask).
pub const DIR_MODE: u32 = 0o750;
/// Suffix of files still being written.
pub const TEMP_SUFFIX: &str = ".tmp";

/// The in-memory `Write` target of the [`ArrowWriter`]; [`ParquetFile`] takes the bytes out.
#[derive(Default)]
pub struct MemorySink {
    bytes: Vec<u8>,
}

impl Write for MemorySink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a file goes: `<out>/<table>/date=YYYY-MM-DD/hour=HH/<host>-<run>-<start>-<seq>.parquet`,
/// with a `host=<host>/` level below `hour=` when the output is shared by hosts.
#[derive(Clone, Debug)]
pub struct FileName {
    pub dir: PathBuf,
    pub host: String,
    /// The run's id ([`crate::RunId`]).
    pub run_id: String,
    /// `YYYYMMDDTHHMMSSZ` of the file's first row.
    pub start: String,
    pub seq: u64,
}

impl FileName {
    pub fn new(
        out_dir: &Path,
        table: Table,
        host: &str,
        run_id: &str,
        first_ts_us: i64,
        seq: u64,
        host_partition: bool,
    ) -> Self {
        let start = UtcDateTime::from_unix_micros(first_ts_us);
        let mut dir = out_dir
            .join(table.name())
            .join(format!("date={}", start.date_string()))
            .join(format!("hour={:02}", start.hour));
        if host_partition {
            dir = dir.join(format!("host={host}"));
        }
        FileName {
            dir,
            host: host.to_string(),
            run_id: run_id.to_string(),
            start: start.compact_string(),
            seq,
        }
    }

    pub fn final_name(&self) -> String {
        format!(
            "{}-{}-{}-{:06}.parquet",
            self.host, self.run_id, self.start, self.seq
        )
    }

    pub fn final_path(&self) -> PathBuf {
        self.dir.join(self.final_name())
    }

    pub fn temp_path(&self) -> PathBuf {
        self.dir
            .join(format!(".{}{}", self.final_name(), TEMP_SUFFIX))
    }
}

/// A file published by [`ParquetFile::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedFile {
    pub table: Table,
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// One file in progress; see the module documentation.
pub struct ParquetFile {
    table: Table,
    name: FileName,
    temp_path: PathBuf,
    /// `None` once the footer was written.
    writer: Option<ArrowWriter<MemorySink>>,
    /// Hour (Unix µs / 1 h) of the first row: the partition.
    pub first_hour: i64,
    pub opened_at: Instant,
    rows: u64,
    disk: Option<File>,
    /// Bytes covered by a successful fsync; they are no longer in memory.
    synced_len: u64,
    /// Bytes written to the file (some maybe not yet synced): `synced_len..written_len` is
    /// `retained[..written_len - synced_len]`.
    written_len: u64,
    /// Bytes from `synced_len` on.
    retained: Vec<u8>,
    /// See [`ParquetFile::encoded_bytes`].
    size_ratio: f64,
    size_ratio_measured: bool,
}

/// When row groups end and files roll by size.
#[derive(Clone, Copy, Debug)]
pub struct RowGroupLimits {
    pub row_group_rows: usize,
    pub row_group_bytes: usize,
    pub roll_bytes: u64,
}

impl ParquetFile {
    /// `properties` must not end row groups by themselves before `write_batch` does (their
    /// maximum row group size must exceed the limit plus one batch); `size_ratio` is the last
    /// one measured for this table (`(1.0, false)` at first).
    pub fn new(
        table: Table,
        name: FileName,
        first_ts_us: i64,
        properties: WriterProperties,
        size_ratio: (f64, bool),
        now: Instant,
    ) -> Result<Self, SinkError> {
        let writer = ArrowWriter::try_new(MemorySink::default(), table.schema(), Some(properties))
            .map_err(|error| SinkError::Encode {
                table: table.name(),
                rows: 0,
                message: error.to_string(),
            })?;
        Ok(ParquetFile {
            table,
            temp_path: name.temp_path(),
            name,
            writer: Some(writer),
            first_hour: first_ts_us.div_euclid(MICROS_PER_HOUR),
            opened_at: now,
            rows: 0,
            disk: None,
            synced_len: 0,
            written_len: 0,
            retained: Vec::new(),
            size_ratio: size_ratio.0,
            size_ratio_measured: size_ratio.1,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Bytes this file holds in memory: retained bytes plus the writer's buffers.
    pub fn buffered_bytes(&self) -> usize {
        self.retained.len()
            + self.writer.as_ref().map_or(0, |writer| {
                writer.inner().bytes.len() + writer.memory_size()
            })
    }

    /// Expected file size so far: flushed row groups plus the row group in progress. The
    /// encoder's estimate for the latter counts buffered pages before compression, so it is
    /// scaled by the ratio (real bytes / estimate) measured when row groups were flushed.
    pub fn encoded_bytes(&self) -> u64 {
        match &self.writer {
            Some(writer) => {
                writer.bytes_written() as u64
                    + (writer.in_progress_size() as f64 * self.size_ratio) as u64
            }
            None => self.synced_len + self.retained.len() as u64,
        }
    }

    /// Real bytes per estimated byte of a row group in progress, as last measured.
    pub fn size_ratio(&self) -> (f64, bool) {
        (self.size_ratio, self.size_ratio_measured)
    }

    /// Ends the row group in progress and measures the size ratio.
    fn flush_row_group(&mut self) -> Result<(), parquet::errors::ParquetError> {
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        let estimate = writer.in_progress_size();
        let before = writer.bytes_written();
        writer.flush()?;
        let written = writer.bytes_written() - before;
        if estimate > 0 && written > 0 {
            self.size_ratio = (written as f64 / estimate as f64).clamp(0.01, 1.0);
            self.size_ratio_measured = true;
        }
        Ok(())
    }

    /// Encodes a batch (in memory; no I/O). Row groups end at `limits.row_group_rows` rows, at
    /// `limits.row_group_bytes` estimated bytes, and early once when the raw estimate reaches
    /// the roll size before any size ratio was measured (so that rolling by size is accurate).
    pub fn write_batch(
        &mut self,
        batch: &RecordBatch,
        limits: &RowGroupLimits,
    ) -> Result<(), SinkError> {
        let table = self.table.name();
        let rows = batch.num_rows();
        let encode_error = |error: parquet::errors::ParquetError| SinkError::Encode {
            table,
            rows,
            message: error.to_string(),
        };
        let Some(writer) = &mut self.writer else {
            return Err(SinkError::Encode {
                table,
                rows,
                message: "file already closed".to_string(),
            });
        };
        let buffered = writer.in_progress_rows();
        if buffered > 0 && buffered + rows > limits.row_group_rows {
            self.flush_row_group().map_err(encode_error)?;
        }
        let writer = self.writer.as_mut().expect("checked above");
        writer.write(batch).map_err(encode_error)?;
        let in_progress = writer.in_progress_size();
        let uncalibrated_at_roll_size =
            !self.size_ratio_measured && in_progress as u64 >= limits.roll_bytes;
        if writer.in_progress_rows() >= limits.row_group_rows
            || in_progress >= limits.row_group_bytes
            || uncalibrated_at_roll_size
        {
            self.flush_row_group().map_err(encode_error)?;
        }
        self.rows += rows as u64;
        Ok(())
    }

    /// Writes the footer (in memory). After this only [`ParquetFile::commit`] remains.
    pub fn close(&mut self) -> Result<(), SinkError> {
        if let Some(mut writer) = self.writer.take() {
            let table = self.table.name();
            let rows = self.rows as usize;
            if let Err(error) = writer.finish() {
                self.writer = Some(writer);
                return Err(SinkError::Encode {
                    table,
                    rows,
                    message: error.to_string(),
                });
            }
            self.take_encoded_bytes_from(&mut writer);
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.writer.is_none()
    }

    fn take_encoded_bytes_from(&mut self, writer: &mut ArrowWriter<MemorySink>) {
        let fresh = &mut writer.inner_mut().bytes;
        if self.retained.is_empty() {
            std::mem::swap(&mut self.retained, fresh);
        } else {
            self.retained.extend_from_slice(fresh);
            fresh.clear();
        }
    }

    /// Writes the bytes encoded so far to the temporary file, and fsyncs when at least
    /// `sync_every_bytes` are unsynced (or `force_sync`). Resumable after any error.
    pub fn persist(&mut self, sync_every_bytes: usize, force_sync: bool) -> Result<(), SinkError> {
        if let Some(mut writer) = self.writer.take() {
            self.take_encoded_bytes_from(&mut writer);
            self.writer = Some(writer);
        }
        if self.disk.is_none() {
            self.disk = Some(self.create_temp_file()?);
        }
        let disk = self.disk.as_ref().expect("opened above");
        let end = self.synced_len + self.retained.len() as u64;
        while self.written_len < end {
            let from = (self.written_len - self.synced_len) as usize;
            match disk.write_at(&self.retained[from..], self.written_len) {
                Ok(0) => {
                    return Err(SinkError::Write {
                        path: self.temp_path.clone(),
                        source: io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes"),
                    })
                }
                Ok(written) => self.written_len += written as u64,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(SinkError::Write {
                        path: self.temp_path.clone(),
                        source,
                    })
                }
            }
        }
        if !self.retained.is_empty() && (force_sync || self.retained.len() >= sync_every_bytes) {
            if let Err(source) = disk.sync_data() {
                // After a failed fsync the page cache may have dropped the dirty pages: write
                // everything since the last good fsync again next time.
                self.written_len = self.synced_len;
                return Err(SinkError::Sync {
                    path: self.temp_path.clone(),
                    source,
                });
            }
            self.synced_len = self.written_len;
            self.retained.clear();
            if self.retained.capacity() > 16 << 20 {
                self.retained.shrink_to(16 << 20);
            }
        }
        Ok(())
    }

    fn create_temp_file(&self) -> Result<File, SinkError> {
        let dir = &self.name.dir;
        if !dir.is_dir() {
            create_dir_durably(dir)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&self.temp_path)
            .map_err(|source| SinkError::CreateFile {
                path: self.temp_path.clone(),
                source,
            })?;
        // The umask may have removed bits from FILE_MODE; set it exactly.
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|source| SinkError::CreateFile {
                path: self.temp_path.clone(),
                source,
            })?;
        Ok(file)
    }

    /// Finishes a closed file: writes and fsyncs what remains, renames it to its final name
    /// (never over an existing file: the sequence number is then replaced by `next_seq`, which
    /// is incremented), and fsyncs the directory. Resumable after any error.
    pub fn commit(&mut self, next_seq: &mut u64) -> Result<CommittedFile, SinkError> {
        debug_assert!(self.is_closed(), "commit before close");
        self.persist(0, true)?;
        let mut final_path = self.name.final_path();
        while final_path.exists() {
            self.name.seq = *next_seq;
            *next_seq += 1;
            final_path = self.name.final_path();
        }
        if let Some(disk) = &self.disk {
            // Size and mode are metadata: make them durable before the rename publishes them.
            disk.sync_all().map_err(|source| SinkError::Sync {
                path: self.temp_path.clone(),
                source,
            })?;
        }
        fs::rename(&self.temp_path, &final_path).map_err(|source| SinkError::Rename {
            from: self.temp_path.clone(),
            to: final_path.clone(),
            source,
        })?;
        self.disk = None;
        // The rename is durable once the directory is; the file itself already is, so a failure
        // here is not worth failing the commit for.
        let _ = sync_dir(&self.name.dir);
        Ok(CommittedFile {
            table: self.table,
            path: final_path,
            rows: self.rows,
            bytes: self.synced_len,
        })
    }

    /// Removes the temporary file of an abandoned (empty) file.
    pub fn discard(mut self) {
        if self.disk.take().is_some() {
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// Creates `dir` and its missing parents (mode [`DIR_MODE`]) and fsyncs the parents of every
/// directory created so the new entries survive a crash.
fn create_dir_durably(dir: &Path) -> Result<(), SinkError> {
    let mut missing = Vec::new();
    let mut ancestor = Some(dir);
    while let Some(path) = ancestor {
        if path.as_os_str().is_empty() || path.is_dir() {
            break;
        }
        missing.push(path);
        ancestor = path.parent();
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| SinkError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    for created in missing {
        if let Some(parent) = created.parent() {
            let _ = sync_dir(parent);
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
