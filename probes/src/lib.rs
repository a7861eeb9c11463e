//! The kernel half of l7tap: C eBPF programs on syscall tracepoints and on TLS library
//! functions (uprobes; built by clang in build.rs and embedded here) and their aya loader. The events they send are decoded by the
//! `l7tap-abi` crate.
//!
//! Architecture invariant: this crate is the only one that talks to the kernel's BPF
//! subsystem. It hands out the perf (or ring) buffers; reading them is `ingest`'s job.
pub mod floor;
pub mod go_tls;
mod host;
mod limits;
pub mod tls;

use l7tap_abi::events;
use l7tap_abi::Protocol;

use aya::maps::perf::PerfEventArrayBuffer;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerfEventArray, RingBuf};
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::uprobe::UProbeLinkId;
use aya::programs::{TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};

pub use host::{check_privileges, ensure_tracefs, HostError};
pub use limits::PerProtocol;
pub use tls::{
    AttachPoint, FoundSymbol, GoTarget, ReturnProbe, ScanStats, TlsLibrary, TlsScanner, TlsTarget,
    TLS_ATTACH_POINTS,
};

/// The BPF object, built from `bpf/l7tap.bpf.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/l7tap.bpf.o"));

/// Every program in the object and the tracepoints it attaches to (a program named more than
/// once is loaded once and attached to each).
pub const PROGRAMS: &[(&str, &str, &str)] = &[
    ("exit_data_syscall", "syscalls", "sys_exit_write"),
    ("exit_data_syscall", "syscalls", "sys_exit_read"),
    ("exit_data_syscall", "syscalls", "sys_exit_sendto"),
    ("exit_data_syscall", "syscalls", "sys_exit_recvfrom"),
    ("exit_data_syscall", "syscalls", "sys_exit_writev"),
    ("exit_data_syscall", "syscalls", "sys_exit_readv"),
    ("exit_data_syscall", "syscalls", "sys_exit_sendmsg"),
    ("exit_data_syscall", "syscalls", "sys_exit_recvmsg"),
    ("enter_connect", "syscalls", "sys_enter_connect"),
    ("exit_connect", "syscalls", "sys_exit_connect"),
    ("exit_accept_", "syscalls", "sys_exit_accept"),
    ("exit_accept4", "syscalls", "sys_exit_accept4"),
    ("enter_close", "syscalls", "sys_enter_close"),
    ("sock_set_state", "sock", "inet_sock_set_state"),
];

/// Most payload bytes captured per syscall segment (sent as several events).
pub const MAX_CAPTURE_BYTES: u32 = events::layout::MAX_PAYLOAD * events::layout::MAX_PIECES;

/// Most ClickHouse HTTP server ports the kernel classifier checks.
pub const MAX_CLICKHOUSE_HTTP_PORTS: usize = events::layout::CLICKHOUSE_HTTP_MAX_PORTS as usize;

/// Most bytes of a cut syscall's tail sent as their own event.
pub const MAX_TAIL_BYTES: u32 = events::layout::MAX_TAIL;

/// How events leave the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One perf event array buffer per CPU (the default). aya opens them with
    /// `wakeup_events = 1`: every event wakes the reader, a self-interrupt inside the traced
    /// syscall.
    PerfArray,
    /// One BPF ring buffer shared by all CPUs: events are written without a wakeup and the
    /// reader polls every few milliseconds, woken early only by a new connection's open
    /// event or when the buffer is a quarter full.
    RingBuf,
}

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Payload bytes captured per syscall segment of each protocol's connections (at most
    /// [`MAX_CAPTURE_BYTES`]; default: the protocol list's).
    pub capture_bytes: PerProtocol<u32>,
    /// Last bytes of a cut syscall segment sent as a tail event, per protocol (0: none; at
    /// most [`MAX_TAIL_BYTES`]; default: the protocol list's). ClickHouse's: where a
    /// client's large read ends with the query's final packets (an 18.16 Exception with its
    /// stack trace is 2-5.4 KiB in the fixtures).
    pub tail_bytes: PerProtocol<u32>,
    /// Server ports of ClickHouse's HTTP interface: an HTTP/1.x request to one of them
    /// classifies its connection as ClickHouse over HTTP (at most
    /// [`MAX_CLICKHOUSE_HTTP_PORTS`]).
    pub clickhouse_http_ports: Vec<u16>,
    /// Payloads of an unclassified socket inspected before it is ignored.
    pub classify_budget: u32,
    pub transport: Transport,
    /// Entries of the kernel connection table (LRU).
    pub max_tracked_fds: u32,
    /// Size of the BPF ring buffer (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
}

impl ProbeConfig {
    /// The most payload bytes one syscall segment of any protocol is captured with.
    pub fn max_capture_bytes(&self) -> u32 {
        self.capture_bytes
            .iter()
            .map(|(_, bytes)| bytes.min(MAX_CAPTURE_BYTES))
            .max()
            .unwrap_or(0)
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            capture_bytes: PerProtocol::from_fn(Protocol::default_capture_bytes),
            tail_bytes: PerProtocol::from_fn(Protocol::default_tail_bytes),
            clickhouse_http_ports: vec![8123],
            classify_budget: 16,
            transport: Transport::PerfArray,
            max_tracked_fds: 65536,
            ringbuf_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("loading the BPF programs failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("BPF program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("BPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("BPF map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("{given} ClickHouse HTTP ports given, the probes check at most {max}")]
    TooManyClickHouseHttpPorts { given: usize, max: usize },
    #[error("cannot list online CPUs: {0}")]
    Cpus(String),
    #[error("opening the perf buffer of CPU {cpu}: {source}")]
    PerfBuffer {
        cpu: u32,
        #[source]
        source: aya::maps::perf::PerfBufferError,
    },
}

/// Per-CPU counters kept by the BPF programs (`struct l7_counters`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub events_emitted: u64,
    pub bytes_emitted: u64,
    pub events_failed: u64,
    pub bytes_failed: u64,
    pub classify_checks: u64,
    pub classified: u64,
    pub ignored: u64,
    pub last_error: i64,
    pub tls_payloads: u64,
    pub tls_lost: u64,
}

const _: () = assert!(std::mem::size_of::<KernelCounters>() == events::layout::COUNTERS_SIZE);

// SAFETY: KernelCounters is repr(C), made only of 8-byte integers (no padding, every bit
// pattern valid), and its size is checked against the C struct above.
unsafe impl aya::Pod for KernelCounters {}

impl KernelCounters {
    pub fn add(&mut self, o: &KernelCounters) {
        self.events_emitted += o.events_emitted;
        self.bytes_emitted += o.bytes_emitted;
        self.events_failed += o.events_failed;
        self.bytes_failed += o.bytes_failed;
        self.classify_checks += o.classify_checks;
        self.classified += o.classified;
        self.ignored += o.ignored;
        if o.last_error != 0 {
            self.last_error = o.last_error;
        }
        self.tls_payloads += o.tls_payloads;
        self.tls_lost += o.tls_lost;
    }
}

/// What attaching the TLS programs to one file did.
#[derive(Debug)]
pub struct TlsAttach {
    /// Symbols attached (entry and return).
    pub attached: Vec<&'static str>,
    /// Symbols that could not be attached, and why.
    pub failed: Vec<(&'static str, String)>,
}

/// Loaded probes. [`Probes::attach`] starts them, [`Probes::detach`] (or dropping) stops
/// them.
pub struct Probes {
    ebpf: Ebpf,
    transport: Transport,
    links: Vec<(&'static str, TracePointLinkId)>,
    tls_links: Vec<(&'static str, UProbeLinkId)>,
}

impl Probes {
    /// Checks the host and loads the object and its programs (not attached yet: open the
    /// buffers first, so no event is emitted before they are read).
    pub fn load(config: &ProbeConfig) -> Result<Probes, ProbeError> {
        check_privileges()?;
        ensure_tracefs()?;
        let self_tgid = std::process::id();
        let capture_bytes = config.capture_bytes.by_wire_id(MAX_CAPTURE_BYTES);
        let tail_bytes = config.tail_bytes.by_wire_id(MAX_TAIL_BYTES);
        let clickhouse_http_ports = clickhouse_http_ports(&config.clickhouse_http_ports)?;
        let transport = match config.transport {
            Transport::PerfArray => events::layout::TRANSPORT_PERF,
            Transport::RingBuf => events::layout::TRANSPORT_RINGBUF,
        };
        // The unused transport's ring buffer is shrunk to one page.
        let ring = match config.transport {
            Transport::RingBuf => config.ringbuf_bytes,
            Transport::PerfArray => 4096,
        };
        let mut ebpf = EbpfLoader::new()
            .set_global("self_tgid", &self_tgid, true)
            .set_global("capture_bytes", &capture_bytes, true)
            .set_global("tail_bytes", &tail_bytes, true)
            .set_global("clickhouse_http_ports", &clickhouse_http_ports, true)
            .set_global("classify_budget", &config.classify_budget, true)
            .set_global("transport", &transport, true)
            .set_global("ring_wakeup_bytes", &(u64::from(ring) / 4), true)
            .set_max_entries("conns", config.max_tracked_fds)
            .set_max_entries("socks", config.max_tracked_fds)
            .set_max_entries("ring", ring)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        for (i, &(name, _, _)) in PROGRAMS.iter().enumerate() {
            if PROGRAMS[..i].iter().any(|&(earlier, _, _)| earlier == name) {
                continue; // loaded already
            }
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram { name })?
                .try_into()
                .map_err(|source| ProbeError::Program { name, source })?;
            program
                .load()
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        for name in tls::tls_programs() {
            uprobe_program(&mut ebpf, name)?
                .load()
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        Ok(Probes {
            ebpf,
            transport: config.transport,
            links: Vec::new(),
            tls_links: Vec::new(),
        })
    }

    /// Attaches every program to its tracepoint.
    pub fn attach(&mut self) -> Result<(), ProbeError> {
        for &(name, category, tracepoint) in PROGRAMS {
            let link = tracepoint_program(&mut self.ebpf, name)?
                .attach(category, tracepoint)
                .map_err(|source| ProbeError::Program { name, source })?;
            self.links.push((name, link));
        }
        Ok(())
    }

    /// Attaches the TLS programs to the attach points `target` defines (system-wide: every
    /// process mapping the file, now or later). A symbol is attached at its entry and its
    /// return(s), or not at all. A Go binary's layout is written for the programs first.
    pub fn attach_tls(&mut self, target: &TlsTarget) -> Result<TlsAttach, ProbeError> {
        let mut report = TlsAttach {
            attached: Vec::new(),
            failed: Vec::new(),
        };
        let go_ready = match &target.go {
            Some(go) => self.set_go_binary(go).map_err(|e| e.to_string()),
            None => Err("no Go layout for this file".to_string()),
        };
        for found in &target.symbols {
            let point = found.point;
            if point.library == TlsLibrary::GoCryptoTls {
                if let Err(reason) = &go_ready {
                    report.failed.push((point.symbol, reason.clone()));
                    continue;
                }
            }
            let returns: &[u64] = match point.ret {
                ReturnProbe::Uretprobe(_) => std::slice::from_ref(&found.offset),
                ReturnProbe::AtEachRet(_) => &found.returns,
            };
            let mut links = Vec::new();
            let mut failure = None;
            for (program, offset) in std::iter::once((point.entry, found.offset))
                .chain(returns.iter().map(|&r| (point.ret.program(), r)))
            {
                match uprobe_program(&mut self.ebpf, program)?.attach(
                    None,
                    offset,
                    &target.open_path,
                    None,
                ) {
                    Ok(link) => links.push((program, link)),
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            match failure {
                None if returns.is_empty() => {
                    // Never: the scan finds at least one RET of every Go function it keeps.
                    for (program, link) in links {
                        detach_uprobe(&mut self.ebpf, program, link)?;
                    }
                    report
                        .failed
                        .push((point.symbol, "no return to probe".into()));
                }
                None => {
                    self.tls_links.extend(links);
                    report.attached.push(point.symbol);
                }
                Some(reason) => {
                    for (program, link) in links {
                        detach_uprobe(&mut self.ebpf, program, link)?;
                    }
                    report.failed.push((point.symbol, reason));
                }
            }
        }
        Ok(report)
    }

    /// Writes what the Go programs need of a Go executable (`go_tls_binaries`).
    fn set_go_binary(&mut self, go: &GoTarget) -> Result<(), ProbeError> {
        let name = "go_tls_binaries";
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap { name })?;
        let mut binaries: BpfHashMap<_, GoExeKey, GoTlsBinary> =
            BpfHashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        let key = GoExeKey {
            ino: go.exe_ino,
            dev: go.exe_dev,
            _pad: 0,
        };
        let layout = go.binary.layout;
        let value = GoTlsBinary {
            write_addr: go.write_addr,
            read_addr: go.read_addr,
            tcp_conn_itab: go.binary.tcp_conn_itab,
            conn_iface: layout.conn_iface,
            tcp_conn_fd: layout.tcp_conn_fd,
            netfd_sysfd: layout.netfd_sysfd,
            _pad: 0,
        };
        binaries
            .insert(key, value, 0)
            .map_err(|source| ProbeError::Map { name, source })
    }

    /// Detaches every program; events stop. Maps (counters) stay readable.
    pub fn detach(&mut self) -> Result<(), ProbeError> {
        for (name, link) in self.tls_links.drain(..) {
            uprobe_program(&mut self.ebpf, name)?
                .detach(link)
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        for (name, link) in self.links.drain(..) {
            tracepoint_program(&mut self.ebpf, name)?
                .detach(link)
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        Ok(())
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Opens one perf buffer per online CPU (`pages` a power of two). Call once.
    pub fn take_perf_buffers(
        &mut self,
        pages: usize,
    ) -> Result<Vec<(u32, PerfEventArrayBuffer<MapData>)>, ProbeError> {
        let map = self
            .ebpf
            .take_map("events")
            .ok_or(ProbeError::MissingMap { name: "events" })?;
        let mut array = PerfEventArray::try_from(map).map_err(|source| ProbeError::Map {
            name: "events",
            source,
        })?;
        let cpus = online_cpus()?;
        cpus.into_iter()
            .map(|cpu| {
                array
                    .open(cpu, Some(pages))
                    .map(|b| (cpu, b))
                    .map_err(|source| ProbeError::PerfBuffer { cpu, source })
            })
            .collect()
    }

    /// The shared BPF ring buffer. Call once.
    pub fn take_ringbuf(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map("ring")
            .ok_or(ProbeError::MissingMap { name: "ring" })?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: "ring",
            source,
        })
    }

    /// The kernel-side counters, one entry per possible CPU.
    pub fn counters(&self) -> Result<Vec<KernelCounters>, ProbeError> {
        let map = self
            .ebpf
            .map("counters")
            .ok_or(ProbeError::MissingMap { name: "counters" })?;
        let array: PerCpuArray<_, KernelCounters> =
            PerCpuArray::try_from(map).map_err(|source| ProbeError::Map {
                name: "counters",
                source,
            })?;
        let values = array.get(&0, 0).map_err(|source| ProbeError::Map {
            name: "counters",
            source,
        })?;
        Ok(values.iter().copied().collect())
    }
}

/// The kernel's port table: the ports, then zeros (unused entries).
fn clickhouse_http_ports(ports: &[u16]) -> Result<[u16; MAX_CLICKHOUSE_HTTP_PORTS], ProbeError> {
    let mut table = [0; MAX_CLICKHOUSE_HTTP_PORTS];
    if ports.len() > table.len() {
        return Err(ProbeError::TooManyClickHouseHttpPorts {
            given: ports.len(),
            max: table.len(),
        });
    }
    table[..ports.len()].copy_from_slice(ports);
    Ok(table)
}

pub fn online_cpus() -> Result<Vec<u32>, ProbeError> {
    aya::util::online_cpus().map_err(|(what, e)| ProbeError::Cpus(format!("{what}: {e}")))
}

/// The loaded tracepoint program `name`.
fn tracepoint_program<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut TracePoint, ProbeError> {
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram { name })?
        .try_into()
        .map_err(|source| ProbeError::Program { name, source })
}

/// Detaches one uprobe link of program `name`.
fn detach_uprobe(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    link: UProbeLinkId,
) -> Result<(), ProbeError> {
    uprobe_program(ebpf, name)?
        .detach(link)
        .map_err(|source| ProbeError::Program { name, source })
}

/// `struct go_exe_key` (`bpf/go_tls.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct GoExeKey {
    ino: u64,
    dev: u32,
    _pad: u32,
}

/// `struct go_tls_binary` (`bpf/go_tls.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct GoTlsBinary {
    write_addr: u64,
    read_addr: u64,
    tcp_conn_itab: u64,
    conn_iface: u32,
    tcp_conn_fd: u32,
    netfd_sysfd: u32,
    _pad: u32,
}

// SAFETY: both are repr(C) with explicit padding fields (no implicit padding: 16 and 40 bytes
// of u64/u32 fields in order), every bit pattern valid; they mirror the C structs.
unsafe impl aya::Pod for GoExeKey {}
// SAFETY: as above.
unsafe impl aya::Pod for GoTlsBinary {}

/// The loaded uprobe program `name`.
fn uprobe_program<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut UProbe, ProbeError> {
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram { name })?
        .try_into()
        .map_err(|source| ProbeError::Program { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickhouse_http_port_table_is_padded_with_zeros_and_bounded() {
        let table = clickhouse_http_ports(&[8123, 8124]).unwrap();
        assert_eq!(table[..2], [8123, 8124]);
        assert!(table[2..].iter().all(|&p| p == 0));
        let too_many = vec![1; MAX_CLICKHOUSE_HTTP_PORTS + 1];
        assert!(matches!(
            clickhouse_http_ports(&too_many),
            Err(ProbeError::TooManyClickHouseHttpPorts { given, max })
                if given == MAX_CLICKHOUSE_HTTP_PORTS + 1 && max == MAX_CLICKHOUSE_HTTP_PORTS
        ));
    }

    #[test]
    fn default_limits_are_the_protocol_lists() {
        let config = ProbeConfig::default();
        for p in Protocol::ALL {
            assert_eq!(config.capture_bytes[p], p.default_capture_bytes(), "{p}");
            assert_eq!(config.tail_bytes[p], p.default_tail_bytes(), "{p}");
        }
        let largest = Protocol::ALL
            .iter()
            .map(|p| p.default_capture_bytes().min(MAX_CAPTURE_BYTES))
            .max();
        assert_eq!(Some(config.max_capture_bytes()), largest);
    }
}
