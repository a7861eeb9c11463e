//! TLS library attach points: the registry of the uprobes that read plaintext
//! ([`TLS_ATTACH_POINTS`]), and the scan that finds the files holding them: every
//! executable or library a process maps (a shared `libssl.so*`, or a binary with OpenSSL
//! linked in statically) whose ELF symbol tables (`.symtab`, `.dynsym`) define them.
//!
//! Uprobes attach per file (inode), for every process that maps it, now or later: a process
//! started after the capture began is covered at once if it maps a file already attached;
//! a new file is found by the next scan ([`TlsScanner::scan`], new processes only).
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use object::read::ReadCache;
use object::{Object, ObjectSection, ObjectSymbol, ReadRef};

/// One attach point: a function of the TLS library, the program at its entry and the one at
/// its return. Adding one touches this list and the programs it names (`bpf/tls.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachPoint {
    pub symbol: &'static str,
    /// The uprobe at the function's first instruction (its arguments).
    pub entry: &'static str,
    /// The uretprobe at its return (the plaintext is read then).
    pub ret: &'static str,
}

/// Every TLS attach point (OpenSSL's API, also BoringSSL's and LibreSSL's).
pub const TLS_ATTACH_POINTS: &[AttachPoint] = &[
    AttachPoint {
        symbol: "SSL_write",
        entry: "tls_write_enter",
        ret: "tls_return",
    },
    AttachPoint {
        symbol: "SSL_read",
        entry: "tls_read_enter",
        ret: "tls_return",
    },
    AttachPoint {
        symbol: "SSL_write_ex",
        entry: "tls_write_ex_enter",
        ret: "tls_return",
    },
    AttachPoint {
        symbol: "SSL_read_ex",
        entry: "tls_read_ex_enter",
        ret: "tls_return",
    },
];

/// The programs of [`TLS_ATTACH_POINTS`], each once.
pub fn tls_programs() -> Vec<&'static str> {
    let mut names = Vec::new();
    for p in TLS_ATTACH_POINTS {
        for name in [p.entry, p.ret] {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// A file that defines some of the attach points' symbols.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    /// The file as the process that maps it names it.
    pub path: PathBuf,
    /// The path the probes attach to (through that process's root).
    pub open_path: PathBuf,
    /// The symbols found and their file offsets, in registry order.
    pub symbols: Vec<(AttachPoint, u64)>,
}

/// What a scan saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Processes whose mappings were read.
    pub processes: u64,
    /// Distinct executable files examined.
    pub files_examined: u64,
    /// Files that are not ELF or could not be read (path and reason).
    pub unreadable: Vec<(PathBuf, String)>,
    /// `libssl.so*` files without any of the symbols.
    pub libssl_without_symbols: Vec<PathBuf>,
}

/// Finds the files to attach to, each once, by scanning `/proc`.
pub struct TlsScanner {
    proc_root: PathBuf,
    self_pid: u32,
    /// (pid, executable) pairs already read: a pid that execs is read again.
    seen_processes: HashSet<(u32, PathBuf)>,
    /// (device, inode) of the files examined.
    seen_files: HashSet<(String, u64)>,
}

impl TlsScanner {
    pub fn new() -> TlsScanner {
        TlsScanner::with_proc_root(Path::new("/proc"))
    }

    pub fn with_proc_root(proc_root: &Path) -> TlsScanner {
        TlsScanner {
            proc_root: proc_root.to_path_buf(),
            self_pid: std::process::id(),
            seen_processes: HashSet::new(),
            seen_files: HashSet::new(),
        }
    }

    /// Reads the mappings of every process not seen yet and examines the executable files
    /// not examined yet; returns those that define attach points.
    pub fn scan(&mut self, stats: &mut ScanStats) -> Vec<TlsTarget> {
        let Ok(entries) = fs::read_dir(&self.proc_root) else {
            return Vec::new();
        };
        let mut alive = HashSet::new();
        let mut targets = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == self.self_pid {
                continue;
            }
            let dir = entry.path();
            let Ok(exe) = fs::read_link(dir.join("exe")) else {
                continue; // a kernel thread, or gone
            };
            let key = (pid, exe);
            alive.insert(key.clone());
            if self.seen_processes.contains(&key) {
                continue;
            }
            let Ok(maps) = fs::read_to_string(dir.join("maps")) else {
                continue;
            };
            stats.processes += 1;
            self.seen_processes.insert(key);
            for mapping in executable_mappings(&maps) {
                if !self
                    .seen_files
                    .insert((mapping.dev.to_string(), mapping.inode))
                {
                    continue;
                }
                stats.files_examined += 1;
                let open_path = dir.join("root").join(mapping.path.trim_start_matches('/'));
                match symbols_in_file(&open_path) {
                    Ok(symbols) if !symbols.is_empty() => targets.push(TlsTarget {
                        path: PathBuf::from(mapping.path),
                        open_path,
                        symbols,
                    }),
                    Ok(_) => {
                        if is_libssl(mapping.path) {
                            stats
                                .libssl_without_symbols
                                .push(PathBuf::from(mapping.path));
                        }
                    }
                    Err(reason) => stats.unreadable.push((PathBuf::from(mapping.path), reason)),
                }
            }
        }
        // Forget processes that are gone (their pid may come back as another program).
        self.seen_processes.retain(|k| alive.contains(k));
        targets
    }
}

impl Default for TlsScanner {
    fn default() -> Self {
        TlsScanner::new()
    }
}

fn is_libssl(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("libssl.so"))
}

/// A file-backed executable mapping of `/proc/PID/maps`.
#[derive(Debug, PartialEq, Eq)]
struct Mapping<'a> {
    dev: &'a str,
    inode: u64,
    path: &'a str,
}

/// The executable mappings of files (`r-xp ... /path`) in a `maps` text.
fn executable_mappings(maps: &str) -> impl Iterator<Item = Mapping<'_>> {
    maps.lines().filter_map(|line| {
        // address perms offset dev inode path
        let mut fields = line.splitn(6, ' ');
        let _range = fields.next()?;
        let perms = fields.next()?;
        let _offset = fields.next()?;
        let dev = fields.next()?;
        let inode: u64 = fields.next()?.parse().ok()?;
        let path = fields.next()?.trim_start();
        if inode == 0
            || !perms.contains('x')
            || !path.starts_with('/')
            || path.ends_with(" (deleted)")
        {
            return None;
        }
        Some(Mapping { dev, inode, path })
    })
}

/// The attach points defined in an ELF file, with their file offsets; empty if none.
///
/// Only the headers and the symbol and string tables are read, not the whole file: the scan
/// examines every new executable on the host (a test binary of a build, a compiler's library:
/// 150-330 MiB, of which the tables are 3-20 MiB), and reading each whole raised the capture's
/// heap by that much at once (328 MiB, seen in a soak).
pub fn symbols_in_file(path: &Path) -> Result<Vec<(AttachPoint, u64)>, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    symbols_in_stream(file)
}

/// [`symbols_in_file`] on any seekable stream.
fn symbols_in_stream<S: Read + Seek>(stream: S) -> Result<Vec<(AttachPoint, u64)>, String> {
    symbols_in_elf(&ReadCache::new(stream))
}

/// The attach points an ELF image defines (`.symtab` or `.dynsym`), at file offsets: the
/// symbol's address translated through its section's address and file offset.
pub fn symbols_in_elf<'data, R: ReadRef<'data>>(
    data: R,
) -> Result<Vec<(AttachPoint, u64)>, String> {
    let magic = data.read_bytes_at(0, 4).unwrap_or_default();
    if magic != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    let mut found: HashMap<&'static str, u64> = HashMap::new();
    for symbol in file.symbols().chain(file.dynamic_symbols()) {
        if symbol.is_undefined() || symbol.kind() != object::SymbolKind::Text {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        // .dynsym names may carry a version (`SSL_read@@OPENSSL_3.0.0`).
        let name = name.split('@').next().unwrap_or(name);
        let Some(point) = TLS_ATTACH_POINTS.iter().find(|p| p.symbol == name) else {
            continue;
        };
        if found.contains_key(point.symbol) {
            continue;
        }
        let Some(index) = symbol.section_index() else {
            continue;
        };
        let Ok(section) = file.section_by_index(index) else {
            continue;
        };
        let Some((section_offset, _)) = section.file_range() else {
            continue;
        };
        let Some(offset) = symbol
            .address()
            .checked_sub(section.address())
            .map(|within| within + section_offset)
        else {
            continue;
        };
        found.insert(point.symbol, offset);
    }
    Ok(TLS_ATTACH_POINTS
        .iter()
        .filter_map(|p| found.get(p.symbol).map(|&offset| (*p, offset)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attach_point_names_its_programs_and_each_program_is_listed_once() {
        let programs = tls_programs();
        assert_eq!(
            programs,
            [
                "tls_write_enter",
                "tls_return",
                "tls_read_enter",
                "tls_write_ex_enter",
                "tls_read_ex_enter"
            ]
        );
    }

    #[test]
    fn executable_file_mappings_only() {
        let maps = "\
7f0000000000-7f0000001000 r--p 00000000 fd:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000001000-7f0000002000 r-xp 00001000 fd:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000003000-7f0000004000 rw-p 00000000 00:00 0
7f0000004000-7f0000005000 r-xp 00000000 00:00 0                          [vdso]
7f0000005000-7f0000006000 r-xp 00000000 fd:01 99 /tmp/gone (deleted)
7f0000006000-7f0000007000 r-xp 00000000 fd:01 77 /opt/with space/bin
";
        let found: Vec<_> = executable_mappings(maps).collect();
        assert_eq!(
            found,
            [
                Mapping {
                    dev: "fd:01",
                    inode: 1234,
                    path: "/usr/lib/x86_64-linux-gnu/libssl.so.3"
                },
                Mapping {
                    dev: "fd:01",
                    inode: 77,
                    path: "/opt/with space/bin"
                },
            ]
        );
    }

    /// Counts the bytes read through it.
    struct CountingReader<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for CountingReader<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for CountingReader<R> {
        fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    /// Bytes [`symbols_in_stream`] reads of `path`, with what it found.
    fn bytes_read_for_symbols(path: &Path) -> (u64, Vec<(AttachPoint, u64)>) {
        let mut reader = CountingReader {
            inner: fs::File::open(path).unwrap(),
            read: 0,
        };
        let found = symbols_in_stream(&mut reader).unwrap();
        (reader.read, found)
    }

    /// An executable is examined by its headers and symbol tables, not read whole: this test
    /// binary (tens of MiB of code and debug information) is read to a small fraction.
    #[test]
    fn examining_a_file_reads_its_symbol_tables_not_the_whole_file() {
        let exe = std::env::current_exe().unwrap();
        let len = fs::metadata(&exe).unwrap().len();
        let (read, found) = bytes_read_for_symbols(&exe);
        assert_eq!(found, []);
        assert!(read > 0 && read < len / 4, "read {read} of {len} bytes");
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error() {
        assert!(symbols_in_elf(&b"#!/bin/sh\n"[..]).is_err());
    }

    /// The system's libssl (Debian 12: OpenSSL 3) defines all four functions, at file
    /// offsets inside the file; libc defines none.
    #[test]
    fn the_system_libssl_defines_every_attach_point() {
        let libssl = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let libc = Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6");
        if !libssl.exists() {
            eprintln!("skipped: no {}", libssl.display());
            return;
        }
        let len = fs::metadata(libssl).unwrap().len();
        let found = symbols_in_file(libssl).unwrap();
        let names: Vec<_> = found.iter().map(|(p, _)| p.symbol).collect();
        assert_eq!(
            names,
            ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"]
        );
        assert!(found.iter().all(|&(_, off)| off > 0 && off < len));
        let offsets: HashSet<_> = found.iter().map(|&(_, off)| off).collect();
        assert_eq!(offsets.len(), 4, "distinct functions");
        assert_eq!(symbols_in_file(libc).unwrap(), []);
        let (read, through_stream) = bytes_read_for_symbols(libssl);
        assert_eq!(through_stream, found);
        assert!(read < len / 2, "read {read} of {len} bytes");
    }
}
