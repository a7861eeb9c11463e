//! One table's path from rows to published files: column builders → pending batches → the open
//! [`ParquetFile`] → files being committed.
//!
//! Rolling: a file is closed when its encoded size reaches `roll_bytes`, when it is older than
//! `roll_age`, and when a row belongs to a later UTC hour than the rows before it (late rows of
//! an earlier hour stay in the current file). The partition (`date=`/`hour=`) and the `<start>`
//! in the name are those of the file's first row.
//!
//! Pushing a row never does I/O and never fails; [`TableWriter::try_flush`] does the I/O and, on
//! error, keeps everything for the next attempt.
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::error::SinkError;
use crate::file::{CommittedFile, FileName, ParquetFile, RowGroupLimits};
use crate::schema::{ColumnSpec, ColumnType, Table};
use crate::time::MICROS_PER_HOUR;

/// The column builders of one table.
pub trait TableColumns {
    const TABLE: Table;
    /// Rows appended since the last `finish`.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Rough memory held by the builders.
    fn estimated_bytes(&self) -> usize;
    /// The columns built so far, in schema order; the builders start over empty.
    fn finish(&mut self) -> Vec<ArrayRef>;
}

/// How files are written and rolled (shared by the three tables).
#[derive(Clone, Debug)]
pub struct TableSettings {
    pub out_dir: PathBuf,
    pub host: String,
    /// See [`crate::SinkConfig::run_id`].
    pub run_id: String,
    pub roll_bytes: u64,
    pub roll_age: std::time::Duration,
    pub row_group_rows: usize,
    pub row_group_bytes: usize,
    pub batch_rows: usize,
    pub sync_every_bytes: usize,
    pub zstd_level: i32,
    /// See [`crate::SinkConfig::parquet_2`].
    pub parquet_2: bool,
    /// See [`crate::SinkConfig::host_partition`].
    pub host_partition: bool,
}

impl TableSettings {
    fn row_group_limits(&self) -> RowGroupLimits {
        RowGroupLimits {
            row_group_rows: self.row_group_rows,
            row_group_bytes: self.row_group_bytes,
            roll_bytes: self.roll_bytes,
        }
    }
}

enum Pending {
    Batch {
        columns: Vec<ArrayRef>,
        rows: usize,
        first_ts_us: i64,
        bytes: usize,
    },
    /// The rows after this belong to a later hour: close the open file.
    EndOfHour,
}

/// Counters of one table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Rows pushed.
    pub rows_pushed: u64,
    /// Rows in published files.
    pub rows_committed: u64,
    /// Rows dropped: over the memory budget, or refused by the encoder (a bug).
    pub rows_dropped: u64,
    pub files_committed: u64,
    pub bytes_committed: u64,
    /// `try_flush` calls that returned an error.
    pub flush_errors: u64,
}

pub struct TableWriter<C: TableColumns> {
    settings: TableSettings,
    schema: SchemaRef,
    properties: WriterProperties,
    pub columns: C,
    /// `ts` of the builders' first row.
    columns_first_ts_us: i64,
    /// Hour of the rows being collected (for rolling at hour boundaries).
    current_hour: Option<i64>,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    open: Option<ParquetFile>,
    closing: VecDeque<ParquetFile>,
    next_seq: u64,
    /// Real/estimated row group size, carried from file to file.
    size_ratio: (f64, bool),
    stats: TableStats,
    committed: Vec<CommittedFile>,
}

/// Columns with min/max statistics (per column chunk; `ts`/`window_start` also per page): times
/// and numbers, which readers prune row groups with. String statistics would cost a comparison
/// per value; low-cardinality strings are dictionary-encoded, which readers can filter on.
fn wants_statistics(spec: &ColumnSpec) -> bool {
    matches!(
        spec.column_type,
        ColumnType::TimestampMicrosUtc | ColumnType::Int32 | ColumnType::Int64
    )
}

/// Text and binary columns without a dictionary (query text, query ids, error messages, `hdr`)
/// are PLAIN rather than Parquet 2's DELTA_BYTE_ARRAY: their values share little prefix (ids
/// are random), so zstd over PLAIN is as small, without the per-value prefix search and the
/// two delta-packed length streams.
fn plain_encoded(spec: &ColumnSpec) -> bool {
    !spec.dictionary && matches!(spec.column_type, ColumnType::Utf8 | ColumnType::Binary)
}

/// Parquet writer properties for a table: zstd, dictionary encoding only for the columns the
/// schema marks low-cardinality, PLAIN text without one ([`plain_encoded`]), page statistics, the
/// table's key-value metadata with the host and run id.
pub fn writer_properties(table: Table, settings: &TableSettings) -> WriterProperties {
    let zstd = ZstdLevel::try_new(settings.zstd_level).unwrap_or_default();
    let mut metadata: Vec<KeyValue> = table
        .file_metadata()
        .into_iter()
        .map(|(key, value)| KeyValue::new(key, value))
        .collect();
    metadata.push(KeyValue::new(
        "l7tap.host".to_string(),
        settings.host.to_string(),
    ));
    metadata.push(KeyValue::new(
        "l7tap.run_id".to_string(),
        settings.run_id.to_string(),
    ));
    let mut builder = WriterProperties::builder()
        .set_writer_version(if settings.parquet_2 {
            WriterVersion::PARQUET_2_0
        } else {
            WriterVersion::PARQUET_1_0
        })
        .set_compression(Compression::ZSTD(zstd))
        // Row groups are ended by `ParquetFile::write_batch`, which measures their real size.
        .set_max_row_group_size(settings.row_group_rows.saturating_add(settings.batch_rows))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_write_batch_size(8192)
        .set_dictionary_enabled(false)
        .set_key_value_metadata(Some(metadata))
        .set_created_by(format!("l7tap-sinks {}", env!("CARGO_PKG_VERSION")));
    for spec in table.columns() {
        if !wants_statistics(spec) {
            builder = builder.set_column_statistics_enabled(
                ColumnPath::from(spec.name),
                EnabledStatistics::None,
            );
        }
        if spec.dictionary {
            builder = builder.set_column_dictionary_enabled(ColumnPath::from(spec.name), true);
        }
        if plain_encoded(spec) {
            builder = builder.set_column_encoding(ColumnPath::from(spec.name), Encoding::PLAIN);
        }
        if spec.name == "ts" || spec.name == "window_start" {
            builder = builder.set_column_statistics_enabled(
                ColumnPath::from(spec.name),
                EnabledStatistics::Page,
            );
        }
    }
    builder.build()
}

impl<C: TableColumns> TableWriter<C> {
    pub fn new(settings: TableSettings, columns: C) -> Self {
        let properties = writer_properties(C::TABLE, &settings);
        TableWriter {
            settings,
            schema: C::TABLE.schema(),
            properties,
            columns,
            columns_first_ts_us: 0,
            current_hour: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            open: None,
            closing: VecDeque::new(),
            next_seq: 0,
            size_ratio: (1.0, false),
            stats: TableStats::default(),
            committed: Vec::new(),
        }
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Files published since the last call.
    pub fn take_committed(&mut self) -> Vec<CommittedFile> {
        std::mem::take(&mut self.committed)
    }

    /// Rows pushed but not yet in a published file.
    pub fn buffered_rows(&self) -> u64 {
        self.stats.rows_pushed - self.stats.rows_committed - self.stats.rows_dropped
    }

    /// Memory held for rows not yet published (builders, pending batches, encoded bytes).
    pub fn buffered_bytes(&self) -> usize {
        self.columns.estimated_bytes()
            + self.pending_bytes
            + self.open.as_ref().map_or(0, ParquetFile::buffered_bytes)
            + self
                .closing
                .iter()
                .map(ParquetFile::buffered_bytes)
                .sum::<usize>()
    }

    /// Call before appending a row with timestamp `ts_us` to `self.columns`.
    #[inline]
    pub fn before_row(&mut self, ts_us: i64) {
        let hour = ts_us.div_euclid(MICROS_PER_HOUR);
        match self.current_hour {
            Some(current) if hour <= current => {}
            Some(_) => {
                self.seal_columns();
                self.pending.push_back(Pending::EndOfHour);
                self.current_hour = Some(hour);
            }
            None => self.current_hour = Some(hour),
        }
        if self.columns.is_empty() {
            self.columns_first_ts_us = ts_us;
        }
        self.stats.rows_pushed += 1;
    }

    /// Call after appending a row.
    #[inline]
    pub fn after_row(&mut self) {
        if self.columns.len() >= self.settings.batch_rows {
            self.seal_columns();
        }
    }

    /// Counts a row refused because the sink is over its memory budget.
    pub fn drop_row(&mut self) {
        self.stats.rows_pushed += 1;
        self.stats.rows_dropped += 1;
    }

    /// Moves the builders' rows into a pending batch.
    fn seal_columns(&mut self) {
        if self.columns.is_empty() {
            return;
        }
        let rows = self.columns.len();
        let bytes = self.columns.estimated_bytes();
        let columns = self.columns.finish();
        self.pending_bytes += bytes;
        self.pending.push_back(Pending::Batch {
            columns,
            rows,
            first_ts_us: self.columns_first_ts_us,
            bytes,
        });
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Encodes the batches sealed so far (not the rows still in the builders) into files, in
    /// memory (no I/O), closing files by size and hour.
    pub fn encode_pending(&mut self, now: Instant) -> Result<(), SinkError> {
        while let Some(item) = self.pending.front() {
            match item {
                Pending::EndOfHour => {
                    self.close_open()?;
                    self.pending.pop_front();
                }
                Pending::Batch {
                    columns,
                    rows,
                    first_ts_us,
                    bytes,
                } => {
                    let (rows, first_ts_us, bytes) = (*rows, *first_ts_us, *bytes);
                    let batch = match RecordBatch::try_new(self.schema.clone(), columns.clone()) {
                        Ok(batch) => batch,
                        Err(error) => {
                            self.drop_front_batch(rows, bytes);
                            return Err(SinkError::Encode {
                                table: C::TABLE.name(),
                                rows,
                                message: error.to_string(),
                            });
                        }
                    };
                    if self.open.is_none() {
                        let seq = self.take_seq();
                        let name = FileName::new(
                            &self.settings.out_dir,
                            C::TABLE,
                            &self.settings.host,
                            &self.settings.run_id,
                            first_ts_us,
                            seq,
                            self.settings.host_partition,
                        );
                        self.open = Some(ParquetFile::new(
                            C::TABLE,
                            name,
                            first_ts_us,
                            self.properties.clone(),
                            self.size_ratio,
                            now,
                        )?);
                    }
                    let file = self.open.as_mut().expect("opened above");
                    if let Err(error) = file.write_batch(&batch, &self.settings.row_group_limits())
                    {
                        self.drop_front_batch(rows, bytes);
                        return Err(error);
                    }
                    self.pending.pop_front();
                    self.pending_bytes -= bytes;
                    self.size_ratio = file.size_ratio();
                    if file.encoded_bytes() >= self.settings.roll_bytes {
                        self.close_open()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_front_batch(&mut self, rows: usize, bytes: usize) {
        self.pending.pop_front();
        self.pending_bytes -= bytes;
        self.stats.rows_dropped += rows as u64;
    }

    /// Writes the open file's footer and queues it for commit.
    fn close_open(&mut self) -> Result<(), SinkError> {
        if let Some(mut file) = self.open.take() {
            if file.rows() == 0 {
                file.discard();
                return Ok(());
            }
            if let Err(error) = file.close() {
                self.open = Some(file);
                return Err(error);
            }
            self.closing.push_back(file);
        }
        Ok(())
    }

    /// Whether sealed batches wait to be encoded.
    #[inline]
    pub fn has_sealed_batches(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Encodes the rows pushed so far into the open file, in memory (no I/O). Encoded rows
    /// take a fraction of the memory of the column builders and pending batches.
    pub fn encode(&mut self, now: Instant) -> Result<(), SinkError> {
        self.seal_columns();
        self.encode_pending(now)
    }

    /// Encodes what was pushed, rolls files by age, writes and publishes what it can. On error
    /// nothing is lost: the next call resumes.
    pub fn try_flush(&mut self, now: Instant, close_all: bool) -> Result<(), SinkError> {
        let result = self.try_flush_inner(now, close_all);
        if result.is_err() {
            self.stats.flush_errors += 1;
        }
        result
    }

    fn try_flush_inner(&mut self, now: Instant, close_all: bool) -> Result<(), SinkError> {
        self.seal_columns();
        self.encode_pending(now)?;
        let too_old = self.open.as_ref().is_some_and(|file| {
            now.saturating_duration_since(file.opened_at) >= self.settings.roll_age
        });
        if close_all || too_old {
            self.close_open()?;
        }
        while let Some(file) = self.closing.front_mut() {
            let committed = file.commit(&mut self.next_seq)?;
            self.stats.rows_committed += committed.rows;
            self.stats.files_committed += 1;
            self.stats.bytes_committed += committed.bytes;
            self.committed.push(committed);
            self.closing.pop_front();
        }
        if let Some(file) = &mut self.open {
            file.persist(self.settings.sync_every_bytes, false)?;
        }
        Ok(())
    }
}
