//! TLS attach points during a capture: the first scan of `/proc` (done before the capture
//! says it is attached), a thread that scans again every second for processes started
//! since (their new files), and the account of what was attached where and what failed
//! (OpenSSL-style libraries and Go binaries alike: one registry, one path).
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use l7tap_probes::{Probes, ScanStats, TlsLibrary, TlsScanner, TlsTarget};

use crate::allocator;
use crate::untrusted;

/// How often `/proc` is scanned for new processes.
const RESCAN: Duration = Duration::from_secs(1);

/// Tries per symbol, one per scan: an attach can fail for a moment (`perf_event_open` was seen
/// failing on the system libssl while another capture attached or detached its own probes).
const ATTACH_TRIES: u32 = 5;

/// A symbol that could not be attached, and why.
type SymbolFailure = (&'static str, String);

pub struct TlsAttacher {
    found: Receiver<(Vec<TlsTarget>, ScanStats)>,
    /// Dropped to stop the rescanning thread, which waits on it between scans.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Files attached and the symbols attached in each.
    files: Vec<(String, Vec<&'static str>)>,
    /// (file, symbol, reason) of every attach that failed.
    failures: Vec<(String, &'static str, String)>,
    processes: u64,
    files_examined: u64,
    unreadable: u64,
    libssl_without_symbols: Vec<String>,
    go_without_symbols: Vec<String>,
    /// Go binaries attached: path and Go version.
    go_binaries: Vec<(String, String)>,
    /// Symbols whose attach failed and is tried again at the next scans: the target (its
    /// failed symbols only), the tries left, and the last reasons.
    retrying: Vec<(TlsTarget, u32, Vec<SymbolFailure>)>,
    /// Symbols attached and failed (for good) so far (for `capture_stats`).
    pub attached: u64,
    pub failed: u64,
}

impl TlsAttacher {
    /// Scans every running process, attaches to what it finds, and starts the rescanning
    /// thread.
    pub fn start(probes: &mut Probes) -> Result<TlsAttacher> {
        let mut scanner = TlsScanner::new();
        let mut stats = ScanStats::default();
        let first = scanner.scan(&mut stats);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let thread = std::thread::Builder::new()
            .name("l7tap-tls-scan".into())
            .spawn(move || rescan(scanner, tx, stopped))?;
        let mut attacher = TlsAttacher {
            found: rx,
            stop: Some(stop),
            thread: Some(thread),
            files: Vec::new(),
            failures: Vec::new(),
            processes: 0,
            files_examined: 0,
            unreadable: 0,
            libssl_without_symbols: Vec::new(),
            go_without_symbols: Vec::new(),
            go_binaries: Vec::new(),
            retrying: Vec::new(),
            attached: 0,
            failed: 0,
        };
        attacher.attach(probes, first, stats);
        Ok(attacher)
    }

    /// Attaches to what the thread found since the last call.
    pub fn poll(&mut self, probes: &mut Probes) {
        while let Ok((targets, stats)) = self.found.try_recv() {
            for (target, tries_left, _) in std::mem::take(&mut self.retrying) {
                self.attach_target(probes, target, tries_left);
            }
            self.attach(probes, targets, stats);
        }
    }

    fn attach(&mut self, probes: &mut Probes, targets: Vec<TlsTarget>, stats: ScanStats) {
        self.processes += stats.processes;
        self.files_examined += stats.files_examined;
        self.unreadable += stats.unreadable.len() as u64;
        self.libssl_without_symbols.extend(
            stats
                .libssl_without_symbols
                .iter()
                .map(|p| p.display().to_string()),
        );
        self.go_without_symbols.extend(
            stats
                .go_without_symbols
                .iter()
                .map(|p| p.display().to_string()),
        );
        // Go binaries whose crypto/tls functions cannot be attached: failures of those
        // functions.
        for (path, symbols, reason) in stats.go_unsupported {
            let failed = symbols.into_iter().map(|s| (s, reason.clone())).collect();
            self.fail(&path.display().to_string(), failed);
        }
        for target in targets {
            self.attach_target(probes, target, ATTACH_TRIES);
        }
    }

    /// Attaches `target`'s symbols; those that fail are tried again at the next scan while
    /// tries are left, and count as failed after the last.
    fn attach_target(&mut self, probes: &mut Probes, mut target: TlsTarget, tries_left: u32) {
        let path = target.path.display().to_string();
        let failed = match probes.attach_tls(&target) {
            Ok(done) => {
                self.attached += done.attached.len() as u64;
                if let Some(go) = &target.go {
                    let go_attached = done.attached.iter().any(|s| {
                        target.symbols.iter().any(|f| {
                            f.point.symbol == *s && f.point.library == TlsLibrary::GoCryptoTls
                        })
                    });
                    if go_attached {
                        self.go_binaries
                            .push((path.clone(), go.binary.version.clone()));
                    }
                }
                if !done.attached.is_empty() {
                    self.files.push((path.clone(), done.attached));
                }
                done.failed
            }
            Err(e) => target
                .symbols
                .iter()
                .map(|found| (found.point.symbol, e.to_string()))
                .collect(),
        };
        if failed.is_empty() {
            return;
        }
        if tries_left > 1 {
            target.symbols.retain(|found| {
                failed
                    .iter()
                    .any(|(symbol, _)| *symbol == found.point.symbol)
            });
            self.retrying.push((target, tries_left - 1, failed));
            return;
        }
        self.fail(&path, failed);
    }

    fn fail(&mut self, path: &str, failed: Vec<SymbolFailure>) {
        self.failed += failed.len() as u64;
        for (symbol, reason) in failed {
            self.failures.push((path.to_string(), symbol, reason));
        }
    }

    /// Stops the rescanning thread.
    pub fn stop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Nothing is attached once the capture is stopping; what still failed, failed.
        while self.found.try_recv().is_ok() {}
        for (target, _, failed) in std::mem::take(&mut self.retrying) {
            self.fail(&target.path.display().to_string(), failed);
        }
    }

    /// What was scanned, what was attached where and what failed, one line each (text from
    /// the file system escaped). The counts of functions attached and failed are in the
    /// summary (`tls.symbols_attached`, `tls.attach_failures`: recorded, so a replay shows
    /// them too).
    pub fn report(&self) -> String {
        let mut out = format!(
            "  tls: {} processes scanned, {} executable files examined ({} unreadable), \
             {} files attached\n",
            self.processes,
            self.files_examined,
            self.unreadable,
            self.files.len()
        );
        for (path, symbols) in &self.files {
            out.push_str(&format!(
                "  tls: attached {} in {}\n",
                symbols.join(", "),
                untrusted::for_terminal(path)
            ));
        }
        for (path, version) in &self.go_binaries {
            out.push_str(&format!(
                "  tls: {} is a Go binary built by {}: crypto/tls read at its RET instructions\n",
                untrusted::for_terminal(path),
                untrusted::for_terminal(version)
            ));
        }
        for (path, symbol, reason) in &self.failures {
            out.push_str(&format!(
                "  tls: could not attach {symbol} in {}: {}\n",
                untrusted::for_terminal(path),
                untrusted::for_terminal(reason)
            ));
        }
        for path in &self.libssl_without_symbols {
            out.push_str(&format!(
                "  tls: {} defines none of the TLS functions (stripped?): not attached\n",
                untrusted::for_terminal(path)
            ));
        }
        for path in &self.go_without_symbols {
            out.push_str(&format!(
                "  tls: {} is a Go binary without a symbol table (built with -ldflags=-s?): \
                 its crypto/tls, if any, is not attached\n",
                untrusted::for_terminal(path)
            ));
        }
        out
    }
}

impl Drop for TlsAttacher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: a scan every [`RESCAN`] (new processes only), its findings sent on, until
/// `stopped` is disconnected. It sleeps in the channel's wait: one wakeup per scan (a wakeup
/// every 100 ms to look at a stop flag was a third of this thread's CPU).
fn rescan(
    mut scanner: TlsScanner,
    found: Sender<(Vec<TlsTarget>, ScanStats)>,
    stopped: Receiver<()>,
) {
    loop {
        match stopped.recv_timeout(RESCAN) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut stats = ScanStats::default();
        let targets = scanner.scan(&mut stats);
        if stats.files_examined > 0 {
            // The symbol tables just read (3-20 MiB for a test binary of a build on the host)
            // are free now: give them back at once rather than at the next periodic release.
            allocator::release_free_memory();
        }
        if found.send((targets, stats)).is_err() {
            return;
        }
    }
}
