//! TLS library attach points: the registry of the uprobes that read plaintext
//! ([`TLS_ATTACH_POINTS`]), and the scan that finds the files holding them: every
//! executable or library a process maps (a shared `libssl.so*`, a binary with OpenSSL
//! linked in statically, a Go binary using crypto/tls) whose ELF symbol tables (`.symtab`,
//! `.dynsym`) define them.
//!
//! Uprobes attach per file (inode), for every process that maps it, now or later: a process
//! started after the capture began is covered at once if it maps a file already attached;
//! a new file is found by the next scan ([`TlsScanner::scan`], new processes only).
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use memchr::memmem;
use object::elf;
use object::read::elf::{FileHeader, SectionHeader};
use object::read::ReadCache;
use object::{Endianness, Object, ObjectSection, ObjectSymbol, ReadRef};

use crate::go_tls::{self, GoBinary, GoFunction};

/// Which TLS implementation an attach point belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsLibrary {
    /// OpenSSL's API (also BoringSSL's and LibreSSL's), C calling convention.
    OpenSsl,
    /// Go's crypto/tls (register ABI, Go >= 1.17; `bpf/go_tls.h`, `go_tls.rs`).
    GoCryptoTls,
}

/// How an attach point's return is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnProbe {
    /// A uretprobe (rewrites the return address: C code only).
    Uretprobe(&'static str),
    /// A uprobe on each RET instruction of the function (Go: a uretprobe's rewritten return
    /// address breaks when the goroutine's stack moves).
    AtEachRet(&'static str),
}

impl ReturnProbe {
    pub fn program(self) -> &'static str {
        match self {
            ReturnProbe::Uretprobe(name) | ReturnProbe::AtEachRet(name) => name,
        }
    }
}

/// One attach point: a function of a TLS library, the program at its entry and the one at
/// its return. Adding one touches this list and the programs it names (`bpf/tls.h`,
/// `bpf/go_tls.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachPoint {
    pub library: TlsLibrary,
    pub symbol: &'static str,
    /// The uprobe at the function's first instruction (its arguments).
    pub entry: &'static str,
    /// The program at its return (the plaintext is read then).
    pub ret: ReturnProbe,
}

/// Go's `crypto/tls.(*Conn).Write`.
pub const GO_TLS_WRITE: &str = "crypto/tls.(*Conn).Write";
/// Go's `crypto/tls.(*Conn).Read`.
pub const GO_TLS_READ: &str = "crypto/tls.(*Conn).Read";

/// Every TLS attach point.
pub const TLS_ATTACH_POINTS: &[AttachPoint] = &[
    AttachPoint {
        library: TlsLibrary::OpenSsl,
        symbol: "SSL_write",
        entry: "tls_write_enter",
        ret: ReturnProbe::Uretprobe("tls_return"),
    },
    AttachPoint {
        library: TlsLibrary::OpenSsl,
        symbol: "SSL_read",
        entry: "tls_read_enter",
        ret: ReturnProbe::Uretprobe("tls_return"),
    },
    AttachPoint {
        library: TlsLibrary::OpenSsl,
        symbol: "SSL_write_ex",
        entry: "tls_write_ex_enter",
        ret: ReturnProbe::Uretprobe("tls_return"),
    },
    AttachPoint {
        library: TlsLibrary::OpenSsl,
        symbol: "SSL_read_ex",
        entry: "tls_read_ex_enter",
        ret: ReturnProbe::Uretprobe("tls_return"),
    },
    AttachPoint {
        library: TlsLibrary::GoCryptoTls,
        symbol: GO_TLS_WRITE,
        entry: "go_tls_write_enter",
        ret: ReturnProbe::AtEachRet("go_tls_return"),
    },
    AttachPoint {
        library: TlsLibrary::GoCryptoTls,
        symbol: GO_TLS_READ,
        entry: "go_tls_read_enter",
        ret: ReturnProbe::AtEachRet("go_tls_return"),
    },
];

/// The programs of [`TLS_ATTACH_POINTS`], each once.
pub fn tls_programs() -> Vec<&'static str> {
    let mut names = Vec::new();
    for p in TLS_ATTACH_POINTS {
        for name in [p.entry, p.ret.program()] {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// An attach point a file defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundSymbol {
    pub point: AttachPoint,
    /// File offset of the function's first instruction.
    pub offset: u64,
    /// File offsets of its RET instructions ([`ReturnProbe::AtEachRet`] only).
    pub returns: Vec<u64>,
}

/// A Go executable the Go programs read, and what they need of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoTarget {
    pub binary: GoBinary,
    /// The executable file as the kernel names it (`task->mm->exe_file`): device (`major <<
    /// 20 | minor`) and inode.
    pub exe_dev: u32,
    pub exe_ino: u64,
    /// Link-time addresses of [`GO_TLS_WRITE`] and [`GO_TLS_READ`] (0: not defined).
    pub write_addr: u64,
    pub read_addr: u64,
}

/// A file that defines some of the attach points' symbols.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    /// The file as the process that maps it names it.
    pub path: PathBuf,
    /// The path the probes attach to (through that process's root).
    pub open_path: PathBuf,
    /// The symbols found and their file offsets, in registry order.
    pub symbols: Vec<FoundSymbol>,
    /// Set when Go attach points are among them.
    pub go: Option<GoTarget>,
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
    /// Go binaries without a symbol table (`-ldflags=-s`): their crypto/tls, if any, cannot
    /// be found.
    pub go_without_symbols: Vec<PathBuf>,
    /// Go binaries defining crypto/tls functions that cannot be attached: the functions and
    /// why (Go version not in the layout table, no build info, not x86-64...).
    pub go_unsupported: Vec<(PathBuf, Vec<&'static str>, String)>,
}

/// Finds the files to attach to, each once, by scanning `/proc`.
pub struct TlsScanner {
    proc_root: PathBuf,
    self_pid: u32,
    /// (pid, executable) pairs already read: a pid that execs is read again.
    seen_processes: HashSet<(u32, PathBuf)>,
    /// (device, inode) of the files examined.
    seen_files: HashSet<(String, u64)>,
    /// Kernel threads among the pids listed at the last scan: they have no executable and
    /// never get one, so they are not looked at again while listed (most of `/proc` on a
    /// quiet host: 64 of 72 pids on the test machine).
    kernel_threads: HashSet<u32>,
}

/// `PF_KTHREAD` in the flags of `/proc/PID/stat` (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether `/proc/PID/stat` text is a kernel thread's: the flags field (the 7th after the
/// command name, which may hold spaces and parentheses) has `PF_KTHREAD`. `None` if the text
/// is not a stat line.
fn stat_is_kernel_thread(stat: &str) -> Option<bool> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let flags: u64 = after_comm.split_ascii_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD != 0)
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
            kernel_threads: HashSet::new(),
        }
    }

    /// Reads the mappings of every process not seen yet and examines the executable files
    /// not examined yet; returns those that define attach points.
    pub fn scan(&mut self, stats: &mut ScanStats) -> Vec<TlsTarget> {
        let Ok(entries) = fs::read_dir(&self.proc_root) else {
            return Vec::new();
        };
        let mut alive = HashSet::new();
        let mut kernel_threads = HashSet::new();
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
            if self.kernel_threads.contains(&pid) {
                kernel_threads.insert(pid);
                continue;
            }
            let dir = entry.path();
            let Ok(exe) = fs::read_link(dir.join("exe")) else {
                // A kernel thread, or a process gone or exiting.
                let stat = fs::read_to_string(dir.join("stat")).unwrap_or_default();
                if stat_is_kernel_thread(&stat) == Some(true) {
                    kernel_threads.insert(pid);
                }
                continue;
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
                let path = PathBuf::from(mapping.path);
                let examined = match examine_file(&open_path) {
                    Ok(examined) => examined,
                    Err(reason) => {
                        stats.unreadable.push((path, reason));
                        continue;
                    }
                };
                let go = match examined.go {
                    GoFinding::NotGo => None,
                    GoFinding::WithoutSymbols => {
                        stats.go_without_symbols.push(path.clone());
                        None
                    }
                    GoFinding::Unsupported(symbols, reason) => {
                        stats.go_unsupported.push((path.clone(), symbols, reason));
                        None
                    }
                    GoFinding::Attachable(binary, write_addr, read_addr) => {
                        match exe_id(&open_path) {
                            Ok((exe_dev, exe_ino)) => Some(GoTarget {
                                binary,
                                exe_dev,
                                exe_ino,
                                write_addr,
                                read_addr,
                            }),
                            Err(reason) => {
                                let symbols = go_symbols(&examined.symbols);
                                stats.go_unsupported.push((path.clone(), symbols, reason));
                                None
                            }
                        }
                    }
                };
                let mut symbols = examined.symbols;
                if go.is_none() {
                    symbols.retain(|s| s.point.library != TlsLibrary::GoCryptoTls);
                }
                if !symbols.is_empty() {
                    targets.push(TlsTarget {
                        path,
                        open_path,
                        symbols,
                        go,
                    });
                } else if is_libssl(mapping.path) {
                    stats.libssl_without_symbols.push(path);
                }
            }
        }
        // Forget processes that are gone (their pid may come back as another program).
        self.seen_processes.retain(|k| alive.contains(k));
        self.kernel_threads = kernel_threads;
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

/// The device (the kernel's `major << 20 | minor`) and inode of a file.
fn exe_id(path: &Path) -> Result<(u32, u64), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major >= 1 << 12 || minor >= 1 << 20 {
        return Err(format!(
            "device {major}:{minor} does not fit the kernel's dev_t"
        ));
    }
    Ok(((major << 20) | minor, meta.ino()))
}

/// The Go attach points among `symbols`.
fn go_symbols(symbols: &[FoundSymbol]) -> Vec<&'static str> {
    symbols
        .iter()
        .filter(|s| s.point.library == TlsLibrary::GoCryptoTls)
        .map(|s| s.point.symbol)
        .collect()
}

/// What a file holds of the attach points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Examined {
    /// The attach points defined, in registry order (Go ones whatever [`Examined::go`] says).
    pub symbols: Vec<FoundSymbol>,
    pub go: GoFinding,
}

/// What a file is to the Go programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GoFinding {
    /// No Go build info, no Go attach point.
    NotGo,
    /// A Go binary (build info) without a symbol table.
    WithoutSymbols,
    /// Defines Go attach points that cannot be attached: which, and why.
    Unsupported(Vec<&'static str>, String),
    /// Defines Go attach points that can be attached; the link-time addresses of
    /// [`GO_TLS_WRITE`] and [`GO_TLS_READ`] (0: not defined).
    Attachable(GoBinary, u64, u64),
}

/// The attach points defined in an ELF file (see [`examine_elf`]).
///
/// Only the headers, the symbol and string tables, the Go build info and the code of the
/// functions found are read, not the whole file: the scan examines every new executable on
/// the host (a test binary of a build, a compiler's library: 150-330 MiB, of which the tables
/// are 3-20 MiB), and reading each whole raised the capture's heap by that much at once
/// (328 MiB, seen in a soak).
pub fn examine_file(path: &Path) -> Result<Examined, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    examine_stream(file)
}

/// Bytes of a string table read at once when searching it for the attach points' names.
const STRING_TABLE_CHUNK: usize = 1 << 20;

/// [`examine_file`] on any seekable stream.
fn examine_stream<S: Read + Seek>(stream: S) -> Result<Examined, String> {
    examine_stream_in_chunks(stream, STRING_TABLE_CHUNK)
}

/// [`examine_stream`], reading string tables `chunk` bytes at a time.
///
/// Walking the symbols reads each name with its own seek and read (tens of thousands for a
/// binary built with debug information), and almost no file defines an attach point: the
/// string tables of the symbol tables are searched for the names first, and a file whose
/// tables hold none is examined without the walk.
fn examine_stream_in_chunks<S: Read + Seek>(
    mut stream: S,
    chunk: usize,
) -> Result<Examined, String> {
    let names_held = match symbol_string_tables(&ReadCache::new(&mut stream)) {
        // Not an ELF file whose sections can be read: `examine_elf` says why.
        None => true,
        // A read error: the walk reads what it can, as without the search.
        Some(tables) => strings_hold_attach_point_name(&mut stream, &tables, chunk).unwrap_or(true),
    };
    let data = ReadCache::new(stream);
    if names_held {
        examine_elf(&data)
    } else {
        examine_elf_without_attach_points(&data)
    }
}

/// The file ranges (offset, size) of the string tables that the symbol tables (`.symtab`,
/// `.dynsym`) name their symbols in, as the section headers give them; `None` if the file
/// is not ELF or its section headers cannot be read.
fn symbol_string_tables<'data, R: ReadRef<'data>>(data: R) -> Option<Vec<(u64, u64)>> {
    match object::FileKind::parse(data).ok()? {
        object::FileKind::Elf32 => {
            elf_symbol_string_tables::<elf::FileHeader32<Endianness>, R>(data)
        }
        object::FileKind::Elf64 => {
            elf_symbol_string_tables::<elf::FileHeader64<Endianness>, R>(data)
        }
        _not_elf => None,
    }
}

fn elf_symbol_string_tables<'data, Elf, R>(data: R) -> Option<Vec<(u64, u64)>>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let mut tables: Vec<(u64, u64)> = sections
        .iter()
        .filter(|s| matches!(s.sh_type(endian), elf::SHT_SYMTAB | elf::SHT_DYNSYM))
        .filter_map(|s| sections.section(s.link(endian)).ok())
        .filter_map(|strings| strings.file_range(endian))
        .collect();
    tables.sort_unstable();
    tables.dedup();
    Some(tables)
}

/// Whether a string table among `tables` (file ranges) holds an attach point's name ended
/// by a NUL or by a version (`SSL_read@@OPENSSL_3.0.0`), as a symbol named so needs.
///
/// Reads `chunk` bytes at a time, keeping the longest name's length of the chunk before so
/// that a name across two chunks is found; only what lies in the file is read, whatever
/// size the section header gives.
fn strings_hold_attach_point_name<S: Read + Seek>(
    stream: &mut S,
    tables: &[(u64, u64)],
    chunk: usize,
) -> std::io::Result<bool> {
    let names: Vec<memmem::Finder<'static>> = TLS_ATTACH_POINTS
        .iter()
        .map(|p| memmem::Finder::new(p.symbol.as_bytes()))
        .collect();
    let longest = TLS_ATTACH_POINTS
        .iter()
        .map(|p| p.symbol.len())
        .max()
        .unwrap_or(0);
    let chunk = chunk.max(1) as u64;
    let file_len = stream.seek(SeekFrom::End(0))?;
    let mut window = Vec::new();
    for &(offset, size) in tables {
        let end = offset.saturating_add(size).min(file_len);
        if offset >= end {
            continue;
        }
        stream.seek(SeekFrom::Start(offset))?;
        window.clear();
        let mut at = offset;
        while at < end {
            let read = (end - at).min(chunk);
            let kept = window.len();
            // `read` is at most `chunk`, a usize.
            window.resize(kept + read as usize, 0);
            stream.read_exact(&mut window[kept..])?;
            at += read;
            let held = names.iter().any(|name| {
                name.find_iter(&window)
                    .any(|found| matches!(window.get(found + name.needle().len()), Some(0 | b'@')))
            });
            if held {
                return Ok(true);
            }
            window.drain(..window.len().saturating_sub(longest));
        }
    }
    Ok(false)
}

/// The ELF image in `data`.
fn parse_elf<'data, R: ReadRef<'data>>(data: R) -> Result<object::File<'data, R>, String> {
    let magic = data.read_bytes_at(0, 4).unwrap_or_default();
    if magic != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    object::File::parse(data).map_err(|e| e.to_string())
}

/// What [`examine_elf`] finds in an ELF image none of whose symbols is named as an attach
/// point, without walking the symbols.
fn examine_elf_without_attach_points<'data, R: ReadRef<'data>>(
    data: R,
) -> Result<Examined, String> {
    let file = parse_elf(data)?;
    Ok(Examined {
        symbols: Vec::new(),
        go: go_finding_without_attach_points(&file),
    })
}

/// What an ELF image that defines no Go attach point is to the Go programs.
fn go_finding_without_attach_points<'data, R: ReadRef<'data>>(
    file: &object::File<'data, R>,
) -> GoFinding {
    if file.section_by_name(".symtab").is_some() {
        return GoFinding::NotGo;
    }
    match go_tls::go_version(file) {
        Ok(Some(_)) => GoFinding::WithoutSymbols,
        Ok(None) | Err(_) => GoFinding::NotGo,
    }
}

/// The attach points an ELF image defines (`.symtab` or `.dynsym`), at file offsets (the
/// symbol's address translated through its section's address and file offset); for Go
/// functions also their RET instructions, and what the Go programs need of the binary.
pub fn examine_elf<'data, R: ReadRef<'data>>(data: R) -> Result<Examined, String> {
    let file = parse_elf(data)?;
    // symbol -> (file offset, function, its code)
    let mut found: HashMap<&'static str, (u64, GoFunction, &[u8])> = HashMap::new();
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
        let Some(within) = symbol.address().checked_sub(section.address()) else {
            continue;
        };
        // Only the function's own bytes (read on demand), not its whole section.
        let code = match point.ret {
            ReturnProbe::Uretprobe(_) => &[][..],
            ReturnProbe::AtEachRet(_) => section
                .file_range()
                .filter(|&(_, size)| within.saturating_add(symbol.size()) <= size)
                .and_then(|_| {
                    data.read_bytes_at(section_offset + within, symbol.size())
                        .ok()
                })
                .unwrap_or(&[]),
        };
        let function = GoFunction {
            address: symbol.address(),
            size: symbol.size(),
        };
        found.insert(point.symbol, (within + section_offset, function, code));
    }
    let go_points: Vec<&'static str> = TLS_ATTACH_POINTS
        .iter()
        .filter(|p| p.library == TlsLibrary::GoCryptoTls && found.contains_key(p.symbol))
        .map(|p| p.symbol)
        .collect();
    let mut go = if go_points.is_empty() {
        go_finding_without_attach_points(&file)
    } else {
        match go_tls::go_version(&file).and_then(|v| go_tls::go_binary(&file, v)) {
            Ok(binary) => {
                let address = |symbol| found.get(symbol).map_or(0, |f| f.1.address);
                GoFinding::Attachable(binary, address(GO_TLS_WRITE), address(GO_TLS_READ))
            }
            Err(reason) => GoFinding::Unsupported(go_points.clone(), reason),
        }
    };
    let mut symbols = Vec::new();
    for point in TLS_ATTACH_POINTS {
        let Some(&(offset, function, code)) = found.get(point.symbol) else {
            continue;
        };
        let returns = match point.ret {
            ReturnProbe::Uretprobe(_) => Vec::new(),
            ReturnProbe::AtEachRet(_) if !matches!(go, GoFinding::Attachable(..)) => Vec::new(),
            ReturnProbe::AtEachRet(_) => {
                let decoded = if code.len() as u64 == function.size && !code.is_empty() {
                    go_tls::ret_offsets(code, function, offset)
                } else {
                    Err("the function's code is not in the file".to_string())
                };
                match decoded {
                    Ok(returns) => returns,
                    Err(reason) => {
                        go = GoFinding::Unsupported(
                            go_points.clone(),
                            format!("{}: {reason}", point.symbol),
                        );
                        Vec::new()
                    }
                }
            }
        };
        symbols.push(FoundSymbol {
            point: *point,
            offset,
            returns,
        });
    }
    Ok(Examined { symbols, go })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_thread_is_told_by_its_stat_flags() {
        let kthreadd = fs::read_to_string("/proc/2/stat").unwrap();
        assert_eq!(stat_is_kernel_thread(&kthreadd), Some(true), "{kthreadd}");
        let this = fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(stat_is_kernel_thread(&this), Some(false), "{this}");
        // The command name may hold spaces and parentheses: the fields start after the last.
        let odd = "7 (a) b (c)) S 1 7 7 0 -1 2129984 0 0 0 0";
        assert_eq!(stat_is_kernel_thread(odd), Some(true));
        assert_eq!(
            stat_is_kernel_thread("7 (x) S 1 7 7 0 -1 4194560 0"),
            Some(false)
        );
        for garbage in ["", "7 (x", "7 (x) S 1 2", "7 (x) S 1 7 7 0 -1 flags"] {
            assert_eq!(stat_is_kernel_thread(garbage), None, "{garbage:?}");
        }
    }

    /// A fake `/proc` entry: `stat` with `flags`, and an executable with empty mappings when
    /// `exe` is set.
    fn fake_process(root: &Path, pid: u32, flags: u64, exe: bool) {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("stat"),
            format!("{pid} (p) S 1 1 1 0 -1 {flags} 0 0 0"),
        )
        .unwrap();
        if exe {
            std::os::unix::fs::symlink("/usr/bin/true", dir.join("exe")).unwrap();
            fs::write(dir.join("maps"), "").unwrap();
        }
    }

    #[test]
    fn kernel_threads_are_not_read_again_while_listed() {
        let root = std::env::temp_dir().join(format!("l7tap-fake-proc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fake_process(&root, 100, PF_KTHREAD | 0x40, false);
        fake_process(&root, 200, 0x40_0140, false); // exiting: no executable, not a kthread
        let mut scanner = TlsScanner::with_proc_root(&root);
        let scan = |scanner: &mut TlsScanner| {
            let mut stats = ScanStats::default();
            scanner.scan(&mut stats);
            stats.processes
        };
        assert_eq!(scan(&mut scanner), 0);
        // Both get an executable: only the one that was not a kernel thread is read. (A
        // kernel thread never gets one: this shows that it is not looked at.)
        for pid in [100, 200] {
            let dir = root.join(pid.to_string());
            std::os::unix::fs::symlink("/usr/bin/true", dir.join("exe")).unwrap();
            fs::write(dir.join("maps"), "").unwrap();
        }
        assert_eq!(scan(&mut scanner), 1);
        // The pid leaves the listing and comes back as a process: it is read.
        fs::remove_dir_all(root.join("100")).unwrap();
        assert_eq!(scan(&mut scanner), 0);
        fake_process(&root, 100, 0x40_0100, true);
        assert_eq!(scan(&mut scanner), 1);
        fs::remove_dir_all(&root).unwrap();
    }

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
                "tls_read_ex_enter",
                "go_tls_write_enter",
                "go_tls_return",
                "go_tls_read_enter"
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

    /// Counts the bytes read through it, and the reads.
    struct CountingReader<R> {
        inner: R,
        read: u64,
        reads: u64,
    }

    impl<R> CountingReader<R> {
        fn new(inner: R) -> CountingReader<R> {
            CountingReader {
                inner,
                read: 0,
                reads: 0,
            }
        }
    }

    impl<R: Read> Read for CountingReader<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            self.reads += 1;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for CountingReader<R> {
        fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    /// Bytes [`examine_stream`] reads of `path`, with what it found.
    fn bytes_read_to_examine(path: &Path) -> (u64, Examined) {
        let mut reader = CountingReader::new(fs::File::open(path).unwrap());
        let found = examine_stream(&mut reader).unwrap();
        (reader.read, found)
    }

    /// An executable is examined by its headers and symbol tables, not read whole: this test
    /// binary (tens of MiB of code and debug information) is read to a small fraction.
    #[test]
    fn examining_a_file_reads_its_symbol_tables_not_the_whole_file() {
        let exe = std::env::current_exe().unwrap();
        let len = fs::metadata(&exe).unwrap().len();
        let (read, found) = bytes_read_to_examine(&exe);
        assert_eq!(found.symbols, []);
        assert!(read > 0 && read < len / 4, "read {read} of {len} bytes");
    }

    /// A file whose string tables name no attach point is examined without walking its
    /// symbols: this test binary (thousands of functions, each name one read in the walk)
    /// takes a few dozen reads, and is found as the walk finds it.
    #[test]
    fn a_file_naming_no_attach_point_is_examined_without_the_symbol_walk() {
        let exe = std::env::current_exe().unwrap();
        let data = fs::read(&exe).unwrap();
        let file = object::File::parse(&data[..]).unwrap();
        // The walk reads the names of the functions defined.
        let n_functions = file
            .symbols()
            .filter(|s| !s.is_undefined() && s.kind() == object::SymbolKind::Text)
            .count();
        // Over 2,000 in a release build, over 10,000 in a debug one: either way ten times the
        // reads the search may take.
        assert!(n_functions > 1_000, "{n_functions} functions");
        let mut reader = CountingReader::new(fs::File::open(&exe).unwrap());
        let examined = examine_stream(&mut reader).unwrap();
        assert_eq!(examined.symbols, []);
        assert_eq!(examined.go, GoFinding::NotGo);
        assert_eq!(examined, examine_elf(&data[..]).unwrap());
        assert!(reader.reads < 100, "{} reads", reader.reads);
        let mut walked = CountingReader::new(fs::File::open(&exe).unwrap());
        assert_eq!(examine_elf(&ReadCache::new(&mut walked)).unwrap(), examined);
        assert!(walked.reads >= n_functions as u64, "{} reads", walked.reads);
    }

    /// Through a stream, in chunks of any size, a file is found as the walk over its bytes
    /// finds it.
    #[test]
    fn a_stream_in_any_chunks_is_found_as_the_walk_finds_it() {
        let small = [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/bin/ls",
        ];
        let exe = std::env::current_exe().unwrap();
        let files = small.iter().map(PathBuf::from).chain([exe.clone()]);
        for path in files.filter(|p| p.exists()) {
            let data = fs::read(&path).unwrap();
            let walked = examine_elf(&data[..]).unwrap();
            let chunks: &[usize] = if path == exe {
                &[4096, STRING_TABLE_CHUNK]
            } else {
                &[1, 7, 4096, STRING_TABLE_CHUNK]
            };
            for &chunk in chunks {
                let file = fs::File::open(&path).unwrap();
                let examined = examine_stream_in_chunks(file, chunk).unwrap();
                assert_eq!(examined, walked, "{} in chunks of {chunk}", path.display());
            }
        }
    }

    /// Whether a one-table image holds an attach point name, read `chunk` bytes at a time.
    fn holds_name(image: &[u8], chunk: usize) -> bool {
        let mut stream = std::io::Cursor::new(image);
        let table = (0, image.len() as u64);
        strings_hold_attach_point_name(&mut stream, &[table], chunk).unwrap()
    }

    /// A name is found wherever the chunks cut it, ended by a NUL or a version; not as a
    /// prefix of another name, nor without its end.
    #[test]
    fn a_name_across_chunks_is_found() {
        for point in TLS_ATTACH_POINTS {
            let name = point.symbol.as_bytes();
            for chunk in 1..=name.len() + 2 {
                for pad in 0..=chunk {
                    let image = |ending: &[u8]| {
                        let mut image = b"\0_ZN4core3fmt5write17h0\0".to_vec();
                        image.extend(std::iter::repeat_n(b'x', pad));
                        image.extend_from_slice(name);
                        image.extend_from_slice(ending);
                        image
                    };
                    let case = format!("{} chunk {chunk} pad {pad}", point.symbol);
                    assert!(holds_name(&image(b"\0main\0"), chunk), "{case}");
                    assert!(holds_name(&image(b"@@OPENSSL_3.0.0\0"), chunk), "{case}");
                    assert!(!holds_name(&image(b"_extra\0"), chunk), "{case}");
                    assert!(!holds_name(&image(b""), chunk), "{case}");
                }
            }
        }
    }

    /// Sets the size a section header of a 64-bit little-endian ELF image gives; returns
    /// the section's file offset.
    fn set_section_size(image: &mut [u8], section: &str, size: u64) -> u64 {
        let file = object::File::parse(&*image).unwrap();
        let section = file.section_by_name(section).unwrap();
        let (offset, _) = section.file_range().unwrap();
        let index = section.index().0;
        let header = elf::FileHeader64::<Endianness>::parse(&*image).unwrap();
        let endian = header.endian().unwrap();
        let at = header.e_shoff.get(endian) as usize
            + index * usize::from(header.e_shentsize.get(endian))
            // sh_name, sh_type (4 bytes each), sh_flags, sh_addr, sh_offset (8 each)
            + 32;
        image[at..at + 8].copy_from_slice(&size.to_le_bytes());
        offset
    }

    /// A string table whose header claims far more than the file holds (1 EiB) is read to
    /// the file's end only, in bounded chunks: no panic, no allocation of that size, and
    /// the file is found as the walk finds it.
    #[test]
    fn a_string_table_larger_than_the_file_is_read_to_its_end_only() {
        let claimed = 1 << 60;
        let exe = std::env::current_exe().unwrap();
        let libssl = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let cases = [(exe.as_path(), ".strtab", false), (libssl, ".dynstr", true)];
        for (path, section, names) in cases {
            if !path.exists() {
                eprintln!("skipped: no {}", path.display());
                continue;
            }
            let mut image = fs::read(path).unwrap();
            let len = image.len() as u64;
            let offset = set_section_size(&mut image, section, claimed);
            let mut stream = std::io::Cursor::new(&image[..]);
            let held = strings_hold_attach_point_name(&mut stream, &[(offset, claimed)], 4096);
            assert_eq!(held.unwrap(), names, "{}", path.display());
            let beyond = [(len + 1, claimed), (u64::MAX - 1, claimed)];
            let held = strings_hold_attach_point_name(&mut stream, &beyond, 4096);
            assert!(!held.unwrap());
            let mut reader = CountingReader::new(std::io::Cursor::new(&image[..]));
            let examined = examine_stream(&mut reader).unwrap();
            assert_eq!(
                examined,
                examine_elf(&image[..]).unwrap(),
                "{}",
                path.display()
            );
            assert!(reader.read < 2 * len, "read {} of {len} bytes", reader.read);
        }
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error() {
        assert!(examine_elf(&b"#!/bin/sh\n"[..]).is_err());
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
        let examined = examine_file(libssl).unwrap();
        assert_eq!(examined.go, GoFinding::NotGo);
        let found = examined.symbols;
        let names: Vec<_> = found.iter().map(|s| s.point.symbol).collect();
        assert_eq!(
            names,
            ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"]
        );
        assert!(found
            .iter()
            .all(|s| s.offset > 0 && s.offset < len && s.returns.is_empty()));
        let offsets: HashSet<_> = found.iter().map(|s| s.offset).collect();
        assert_eq!(offsets.len(), 4, "distinct functions");
        assert_eq!(examine_file(libc).unwrap().symbols, []);
        let (read, through_stream) = bytes_read_to_examine(libssl);
        assert_eq!(through_stream, examine_file(libssl).unwrap());
        assert!(read < len / 2, "read {read} of {len} bytes");
    }

    /// The Go client of the TLS checks (ci/tls-go-client.sh, Debian's Go 1.19, position
    /// independent): both functions found with their RET instructions (each a RET opcode in
    /// the file), the Go version and the itab; the same binary without its symbol table is
    /// a Go binary whose crypto/tls cannot be found.
    #[test]
    fn a_go_binary_is_attachable_and_a_stripped_one_is_named() {
        let Ok(go) = std::process::Command::new("go").arg("version").output() else {
            eprintln!("skipped: no go");
            return;
        };
        assert!(go.status.success());
        let dir = std::env::temp_dir().join("l7tap-probes-go-client");
        let built = std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../ci/tls-go-client.sh"
            ))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let binary = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());
        let data = fs::read(&binary).unwrap();
        let examined = examine_elf(&data[..]).unwrap();
        assert_eq!(examine_file(&binary).unwrap(), examined);
        let GoFinding::Attachable(go_binary, write_addr, read_addr) = &examined.go else {
            panic!("not attachable: {:?}", examined.go);
        };
        assert!(
            go_binary.version.starts_with("go1."),
            "{}",
            go_binary.version
        );
        assert_eq!(
            Some(go_binary.layout),
            go_tls::layout_for(&go_binary.version)
        );
        assert!(go_binary.tcp_conn_itab != 0 && *write_addr != 0 && *read_addr != 0);
        let names: Vec<_> = examined.symbols.iter().map(|s| s.point.symbol).collect();
        assert_eq!(names, [GO_TLS_WRITE, GO_TLS_READ]);
        for found in &examined.symbols {
            assert!(!found.returns.is_empty(), "{}", found.point.symbol);
            for &ret in &found.returns {
                assert!(ret > found.offset, "{}", found.point.symbol);
                assert!(matches!(data[ret as usize], 0xc3 | 0xc2));
            }
        }
        let stripped = dir.join("tls-go-client.stripped");
        let status = std::process::Command::new("objcopy")
            .arg("--strip-all")
            .arg(&binary)
            .arg(&stripped)
            .status()
            .unwrap();
        assert!(status.success());
        let examined = examine_file(&stripped).unwrap();
        assert_eq!(examined.go, GoFinding::WithoutSymbols);
        assert_eq!(examined.symbols, []);
    }
}
