//! The uploader of an output that ships files: a thread that sends each published file of the
//! spool to its [`Destination`], removes it from the spool once stored, and retries a failed
//! send with exponential backoff up to a cap, for as long as the run lasts. Files an earlier
//! run left in the spool are sent first.
//!
//! Destinations: a bucket ([`BucketDestination`]: one PUT, or a multipart upload completed at
//! the end, so an object appears only complete; keys are the files' names, so an upload
//! repeated after a lost answer rewrites the same object with the same bytes) and a ClickHouse
//! server ([`super::clickhouse::Client`]: one insert of one block per file).
//!
//! The spool is bounded: a file published while the files waiting exceed the bound is
//! dropped (removed, counted in [`ShipStats`] and said on stderr), except `capture_stats`
//! files, which are small and carry the count.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

use super::bucket::{runtime, BucketError, BucketOutput};
use super::spool::{published_files, SpooledFile};
use crate::file::CommittedFile;
use crate::schema::Table;

/// Default spool bound: 2 GiB of files waiting to upload.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 2 << 30;
/// First wait after a failed upload; it doubles per failure up to [`DEFAULT_BACKOFF_CAP`].
pub const DEFAULT_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Files above this size go up as a multipart upload.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 32 << 20;
/// Part size of a multipart upload (S3's minimum is 5 MiB).
pub const DEFAULT_PART_BYTES: usize = 16 << 20;
/// How long the end of a run waits for the last uploads before leaving them to the next run.
pub const DEFAULT_FINISH_WAIT: Duration = Duration::from_secs(60);
/// A failing upload is said on stderr at most this often.
const ERROR_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub struct UploadSettings {
    pub spool_max_bytes: u64,
    pub backoff_first: Duration,
    pub backoff_cap: Duration,
    pub multipart_threshold: u64,
    pub part_bytes: usize,
    pub finish_wait: Duration,
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            backoff_first: DEFAULT_BACKOFF_FIRST,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_bytes: DEFAULT_PART_BYTES,
            finish_wait: DEFAULT_FINISH_WAIT,
        }
    }
}

/// What the uploader did and what waits, read by the progress line and `capture_stats`.
#[derive(Debug, Default)]
pub struct ShipStats {
    pub waiting_files: AtomicU64,
    pub waiting_bytes: AtomicU64,
    pub uploaded_files: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    /// Files (and their rows) dropped because the spool was over its bound.
    pub dropped_files: AtomicU64,
    pub dropped_rows: AtomicU64,
    /// Upload attempts that failed (each was retried).
    pub failed_attempts: AtomicU64,
    /// Consecutive failures of the file being uploaded now (0: uploads go through).
    pub failing: AtomicU64,
}

impl ShipStats {
    /// `upload: N files (X MiB) waiting`, and whether uploads are failing.
    pub fn progress_text(&self) -> String {
        let mut text = format!(
            "upload: {} files ({:.1} MiB) waiting, {} uploaded",
            self.waiting_files.load(Relaxed),
            self.waiting_bytes.load(Relaxed) as f64 / (1 << 20) as f64,
            self.uploaded_files.load(Relaxed),
        );
        let failing = self.failing.load(Relaxed);
        if failing > 0 {
            text.push_str(&format!(", retrying ({failing} failures)"));
        }
        let dropped = self.dropped_files.load(Relaxed);
        if dropped > 0 {
            text.push_str(&format!(", {dropped} dropped (spool full)"));
        }
        text
    }
}

/// Where a shipper sends its files.
pub trait Destination: Send + 'static {
    /// For messages (holds no credential).
    fn name(&self) -> String;
    /// Sends one spooled file; called again with the same file after an error.
    fn send(&self, file: &SpooledFile) -> Result<(), SendError>;
}

/// Why a file was not sent.
#[derive(Debug)]
pub enum SendError {
    /// The spool file is gone (another process of the same spool sent it).
    Gone,
    /// The file cannot be read: retrying cannot help; it stays in the spool.
    Local(String),
    /// The destination failed (said in words a user acts on): retried.
    Remote(String),
}

/// A bucket as a [`Destination`].
pub struct BucketDestination {
    output: BucketOutput,
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    settings: UploadSettings,
}

impl BucketDestination {
    pub fn new(output: &BucketOutput, settings: UploadSettings) -> Result<Self, BucketError> {
        let runtime = runtime().map_err(|e| BucketError::Other {
            output: output.to_string(),
            action: "starting the upload thread's runtime",
            message: e.to_string(),
        })?;
        Ok(BucketDestination {
            output: output.clone(),
            store: output.store()?,
            runtime,
            settings,
        })
    }
}

impl Destination for BucketDestination {
    fn name(&self) -> String {
        self.output.to_string()
    }

    fn send(&self, file: &SpooledFile) -> Result<(), SendError> {
        let key = self.output.key_of(&file.relative);
        match self
            .runtime
            .block_on(upload(&*self.store, &key, &file.path, &self.settings))
        {
            Ok(()) => Ok(()),
            Err(UploadError::Gone) => Err(SendError::Gone),
            Err(UploadError::Local(e)) => Err(SendError::Local(e.to_string())),
            Err(UploadError::Store(e)) => Err(SendError::Remote(
                self.output.classify(e, "uploading").to_string(),
            )),
        }
    }
}

enum Command {
    File(SpooledFile),
    Finish { wait: Duration },
}

/// The uploading side of an output; see the module documentation.
pub struct Shipper {
    spool_dir: PathBuf,
    output: String,
    settings: UploadSettings,
    stats: Arc<ShipStats>,
    commands: mpsc::Sender<Command>,
    thread: JoinHandle<()>,
    last_drop_said: Option<Instant>,
}

/// What stayed in the spool when the run ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShipReport {
    pub uploaded_files: u64,
    pub left_files: u64,
    pub left_bytes: u64,
    pub dropped_files: u64,
    pub dropped_rows: u64,
}

impl Shipper {
    /// Starts the uploader of `output`, whose files the sink publishes under `spool_dir`;
    /// files already there (left by an earlier run) are queued first and said on stderr.
    pub fn start(
        output: &BucketOutput,
        spool_dir: &Path,
        settings: UploadSettings,
    ) -> Result<Shipper, BucketError> {
        let destination = BucketDestination::new(output, settings)?;
        Self::start_to(Box::new(destination), spool_dir, settings).map_err(|e| BucketError::Other {
            output: output.to_string(),
            action: "starting the uploader",
            message: e.to_string(),
        })
    }

    /// Starts the uploader of any destination; see [`Shipper::start`].
    pub fn start_to(
        destination: Box<dyn Destination>,
        spool_dir: &Path,
        settings: UploadSettings,
    ) -> std::io::Result<Shipper> {
        let output = destination.name();
        let leftovers = published_files(spool_dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("reading the spool directory {}: {e}", spool_dir.display()),
            )
        })?;
        let stats = Arc::new(ShipStats::default());
        if !leftovers.is_empty() {
            let bytes: u64 = leftovers.iter().map(|f| f.bytes).sum();
            eprintln!(
                "l7tap: {} files ({bytes} bytes) left in the spool {} by an earlier run are sent to {output} first",
                leftovers.len(),
                spool_dir.display()
            );
        }
        let (commands, receiver) = mpsc::channel();
        for file in leftovers {
            stats.waiting_files.fetch_add(1, Relaxed);
            stats.waiting_bytes.fetch_add(file.bytes, Relaxed);
            let _ = commands.send(Command::File(file));
        }
        let worker = Worker {
            output: output.clone(),
            destination,
            settings,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("l7tap-upload".into())
            .spawn(move || worker.run(receiver))?;
        Ok(Shipper {
            spool_dir: spool_dir.to_path_buf(),
            output,
            settings,
            stats,
            commands,
            thread,
            last_drop_said: None,
        })
    }

    pub fn stats(&self) -> Arc<ShipStats> {
        self.stats.clone()
    }

    /// Queues a file the sink published in the spool, or drops it when the spool is over its
    /// bound (not a `capture_stats` file). Returns whether it was queued.
    pub fn ship(&mut self, file: &CommittedFile) -> bool {
        let Some(spooled) =
            SpooledFile::new(&self.spool_dir, file.path.clone(), file.bytes, file.rows)
        else {
            eprintln!(
                "l7tap: {} is not in the spool {}: not uploaded",
                file.path.display(),
                self.spool_dir.display()
            );
            return false;
        };
        let waiting = self.stats.waiting_bytes.load(Relaxed);
        let over = waiting.saturating_add(file.bytes) > self.settings.spool_max_bytes;
        if over && file.table != Table::CaptureStats {
            let _ = std::fs::remove_file(&file.path);
            self.stats.dropped_files.fetch_add(1, Relaxed);
            self.stats.dropped_rows.fetch_add(file.rows, Relaxed);
            if self
                .last_drop_said
                .is_none_or(|t| t.elapsed() >= ERROR_EVERY)
            {
                eprintln!(
                    "l7tap: the spool {} holds {waiting} bytes waiting to upload to {}, over its bound of {}: \
                     dropped a {} file of {} rows ({} files, {} rows dropped so far)",
                    self.spool_dir.display(),
                    self.output,
                    self.settings.spool_max_bytes,
                    file.table.name(),
                    file.rows,
                    self.stats.dropped_files.load(Relaxed),
                    self.stats.dropped_rows.load(Relaxed),
                );
                self.last_drop_said = Some(Instant::now());
            }
            return false;
        }
        self.stats.waiting_files.fetch_add(1, Relaxed);
        self.stats.waiting_bytes.fetch_add(file.bytes, Relaxed);
        let _ = self.commands.send(Command::File(spooled));
        true
    }

    /// Waits for the files queued to be uploaded, at most `settings.finish_wait`; what is left
    /// stays in the spool for the next run (said on stderr).
    pub fn finish(self) -> ShipReport {
        let _ = self.commands.send(Command::Finish {
            wait: self.settings.finish_wait,
        });
        let _ = self.thread.join();
        let stats = &self.stats;
        let report = ShipReport {
            uploaded_files: stats.uploaded_files.load(Relaxed),
            left_files: stats.waiting_files.load(Relaxed),
            left_bytes: stats.waiting_bytes.load(Relaxed),
            dropped_files: stats.dropped_files.load(Relaxed),
            dropped_rows: stats.dropped_rows.load(Relaxed),
        };
        if report.left_files > 0 {
            eprintln!(
                "l7tap: {} files ({} bytes) could not be uploaded to {} in time; they stay in the spool {} \
                 and the next run with this --out uploads them",
                report.left_files,
                report.left_bytes,
                self.output,
                self.spool_dir.display()
            );
        }
        report
    }
}

struct Worker {
    output: String,
    destination: Box<dyn Destination>,
    settings: UploadSettings,
    stats: Arc<ShipStats>,
}

impl Worker {
    fn run(self, commands: mpsc::Receiver<Command>) {
        let mut queue: VecDeque<SpooledFile> = VecDeque::new();
        let mut backoff = self.settings.backoff_first;
        let mut next_attempt = Instant::now();
        let mut finish_by: Option<Instant> = None;
        let mut failing_since: Option<Instant> = None;
        let mut last_said: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if finish_by.is_some_and(|deadline| queue.is_empty() || now >= deadline) {
                return;
            }
            let mut wake = if queue.is_empty() {
                None
            } else {
                Some(next_attempt)
            };
            if let Some(deadline) = finish_by {
                wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
            }
            let command = match wake {
                None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => commands.recv_timeout(at.saturating_duration_since(now)),
            };
            let mut take = |command: Command, finish_by: &mut Option<Instant>| match command {
                Command::File(file) => queue.push_back(file),
                Command::Finish { wait } => *finish_by = Some(Instant::now() + wait),
            };
            match command {
                Ok(command) => {
                    take(command, &mut finish_by);
                    while let Ok(command) = commands.try_recv() {
                        take(command, &mut finish_by);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The shipper is gone without `finish`: leave the rest to the next run.
                Err(RecvTimeoutError::Disconnected) => {
                    if finish_by.is_none() {
                        return;
                    }
                }
            }
            let now = Instant::now();
            if finish_by.is_some_and(|deadline| queue.is_empty() || now >= deadline) {
                return;
            }
            if queue.is_empty() || now < next_attempt {
                continue;
            }
            let file = queue.front().expect("checked above").clone();
            match self.destination.send(&file) {
                Ok(()) | Err(SendError::Gone) => {
                    queue.pop_front();
                    let _ = std::fs::remove_file(&file.path);
                    self.stats.waiting_files.fetch_sub(1, Relaxed);
                    self.stats.waiting_bytes.fetch_sub(file.bytes, Relaxed);
                    self.stats.uploaded_files.fetch_add(1, Relaxed);
                    self.stats.uploaded_bytes.fetch_add(file.bytes, Relaxed);
                    if let Some(since) = failing_since.take() {
                        eprintln!(
                            "l7tap: sending to {} goes through again (failed for {:.0}s)",
                            self.output,
                            since.elapsed().as_secs_f64()
                        );
                    }
                    self.stats.failing.store(0, Relaxed);
                    backoff = self.settings.backoff_first;
                }
                Err(SendError::Remote(reason)) => {
                    self.stats.failed_attempts.fetch_add(1, Relaxed);
                    let failures = self.stats.failing.fetch_add(1, Relaxed) + 1;
                    failing_since.get_or_insert(now);
                    if last_said.is_none_or(|t| t.elapsed() >= ERROR_EVERY) {
                        eprintln!(
                            "l7tap: sending {} failed ({failures} attempts), retrying in {:.0}s: {reason}",
                            file.relative,
                            backoff.as_secs_f64()
                        );
                        last_said = Some(Instant::now());
                    }
                    next_attempt = Instant::now() + backoff;
                    backoff = (backoff * 2).min(self.settings.backoff_cap);
                }
                Err(SendError::Local(error)) => {
                    // The file cannot be read: retrying cannot help; it stays in the spool.
                    eprintln!(
                        "l7tap: cannot send {}: {error}; it stays in the spool",
                        file.path.display()
                    );
                    queue.pop_front();
                    self.stats.waiting_files.fetch_sub(1, Relaxed);
                    self.stats.waiting_bytes.fetch_sub(file.bytes, Relaxed);
                }
            }
        }
    }
}

enum UploadError {
    /// The spool file is gone (another process of the same spool uploaded it).
    Gone,
    Local(std::io::Error),
    Store(object_store::Error),
}

/// Sends one file: a single PUT up to the multipart threshold, else a multipart upload that
/// is completed only once every part is stored (aborted on error).
async fn upload(
    store: &dyn ObjectStore,
    key: &ObjectPath,
    path: &Path,
    settings: &UploadSettings,
) -> Result<(), UploadError> {
    let local = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            UploadError::Gone
        } else {
            UploadError::Local(e)
        }
    };
    let bytes = std::fs::read(path).map_err(local)?;
    if bytes.len() as u64 <= settings.multipart_threshold {
        store
            .put(key, PutPayload::from(bytes))
            .await
            .map_err(UploadError::Store)?;
        return Ok(());
    }
    let upload = store.put_multipart(key).await.map_err(UploadError::Store)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, settings.part_bytes);
    for chunk in bytes.chunks(settings.part_bytes) {
        if let Err(error) = writer.wait_for_capacity(2).await {
            let _ = writer.abort().await;
            return Err(UploadError::Store(error));
        }
        writer.write(chunk);
    }
    match writer.finish().await {
        Ok(_) => Ok(()),
        Err(error) => Err(UploadError::Store(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn settings(multipart_threshold: u64, part_bytes: usize) -> UploadSettings {
        UploadSettings {
            multipart_threshold,
            part_bytes,
            ..UploadSettings::default()
        }
    }

    fn stored(store: &InMemory, key: &ObjectPath) -> Vec<u8> {
        let runtime = runtime().unwrap();
        runtime
            .block_on(async { store.get(key).await?.bytes().await })
            .unwrap()
            .to_vec()
    }

    #[test]
    fn small_files_go_up_in_one_put_and_large_ones_in_completed_parts() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime().unwrap();
        let store = InMemory::new();
        let bytes: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("file.parquet");
        std::fs::write(&path, &bytes).unwrap();
        for (key, settings) in [
            ("single", settings(u64::MAX, DEFAULT_PART_BYTES)),
            // 1 MB in parts of 64 KiB: 16 parts, the last one short.
            ("parts", settings(1000, 64 << 10)),
        ] {
            let key = ObjectPath::from(key);
            assert!(runtime
                .block_on(upload(&store, &key, &path, &settings))
                .is_ok());
            assert_eq!(stored(&store, &key), bytes, "{key}");
        }
    }

    #[test]
    fn a_file_gone_from_the_spool_is_not_an_error_to_retry() {
        let runtime = runtime().unwrap();
        let store = InMemory::new();
        let result = runtime.block_on(upload(
            &store,
            &ObjectPath::from("x"),
            Path::new("/nonexistent/l7tap/file.parquet"),
            &UploadSettings::default(),
        ));
        assert!(matches!(result, Err(UploadError::Gone)));
    }

    /// Fails its first `failures` sends, then keeps what it is sent.
    struct Flaky {
        failures: std::sync::Mutex<u32>,
        sent: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    }

    impl Destination for Flaky {
        fn name(&self) -> String {
            "flaky".into()
        }

        fn send(&self, file: &SpooledFile) -> Result<(), SendError> {
            let bytes = std::fs::read(&file.path).map_err(|e| SendError::Local(e.to_string()))?;
            self.sent.lock().unwrap().push(bytes);
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(SendError::Remote("down".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn a_failed_send_is_retried_with_the_same_bytes_and_then_leaves_the_spool() {
        let spool = tempfile::tempdir().unwrap();
        let dir = spool.path().join("requests/date=2026-12-07/hour=13");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h-run-start-000000.parquet");
        std::fs::write(&path, b"the same block").unwrap();
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let destination = Flaky {
            failures: std::sync::Mutex::new(2),
            sent: sent.clone(),
        };
        let settings = UploadSettings {
            backoff_first: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(20),
            finish_wait: Duration::from_secs(10),
            ..UploadSettings::default()
        };
        let mut shipper = Shipper::start_to(Box::new(destination), spool.path(), settings).unwrap();
        assert!(shipper.ship(&CommittedFile {
            table: Table::Requests,
            path: path.clone(),
            rows: 1,
            bytes: 14,
        }));
        let stats = shipper.stats();
        let report = shipper.finish();
        assert_eq!(report.uploaded_files, 1);
        assert_eq!(report.left_files, 0);
        assert_eq!(stats.failed_attempts.load(Relaxed), 2);
        assert_eq!(*sent.lock().unwrap(), vec![b"the same block".to_vec(); 3]);
        assert!(!path.exists());
    }

    #[test]
    fn the_progress_text_says_what_waits_and_what_fails() {
        let stats = ShipStats::default();
        stats.waiting_files.store(3, Relaxed);
        stats.waiting_bytes.store(3 << 20, Relaxed);
        stats.failing.store(2, Relaxed);
        assert_eq!(
            stats.progress_text(),
            "upload: 3 files (3.0 MiB) waiting, 0 uploaded, retrying (2 failures)"
        );
    }
}
