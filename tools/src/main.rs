//! `l7tap`: capture ClickHouse-native and ZooKeeper traffic with eBPF, or replay a recording.
mod allocator;
mod diff;
mod dump;
mod hdr_sum;
mod heatmap;
mod outdir;
mod output;
mod pipeline;
mod report;
mod stats;
mod tls_attach;
mod untrusted;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use l7tap_probes::PerProtocol;
use l7tap_protocols::Protocol;
use validate::parse_duration;

#[derive(Parser)]
#[command(
    name = "l7tap",
    version,
    about = "Watch ClickHouse native and ZooKeeper traffic with eBPF"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture live traffic (needs root, or CAP_BPF and CAP_PERFMON).
    Capture(CaptureArgs),
    /// Feed a recording made with `capture --record`, or a pcap or pcapng file, through the
    /// same pipeline; no kernel, no root.
    Replay(ReplayArgs),
    /// Write each connection of a recording as a `.chunks` parser fixture.
    Dump {
        /// A recording made with `l7tap capture --record FILE`.
        file: PathBuf,
        /// Directory for the `.chunks` files (created private: they hold raw payloads).
        #[arg(long, default_value = "l7tap-chunks")]
        out: PathBuf,
        /// Replace the known credential fields (ClickHouse Hello password, ZooKeeper auth
        /// data and session password) with filler of the same length, so that the fixtures
        /// can be shared.
        #[arg(long)]
        scrub: bool,
    },
    /// Per-server client tables, SLIs and capture health from an output directory.
    Report(report::ReportArgs),
    /// Latency heatmap (time × latency bucket, colour = requests) as PNG or HTML.
    Heatmap(heatmap::HeatmapArgs),
    /// What changed between two outputs, per query fingerprint: counts, error rates and
    /// latency quantiles, with whether each change is beyond noise.
    Diff(diff::DiffArgs),
}

#[derive(Args)]
struct CaptureArgs {
    /// Stop after this long (e.g. 10s, 5m, 2h, 1d); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Write the raw event stream to FILE for `l7tap replay`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Payload bytes captured per syscall on ClickHouse connections (at most 65536). Large
    /// result blocks need not be captured: the parser skips them by their sizes.
    #[arg(long, default_value_t = Protocol::ClickHouse.default_capture_bytes())]
    capture_bytes_clickhouse: u32,
    /// Payload bytes captured per syscall on ZooKeeper connections (at most 65536): a
    /// server answers pipelined requests in one large write, and every reply counts.
    #[arg(long, default_value_t = Protocol::ZooKeeper.default_capture_bytes())]
    capture_bytes_zookeeper: u32,
    /// Last bytes of a cut syscall on ClickHouse connections sent on their own (at most
    /// 8192; 0: none): a client's large read of a result ends with the query's last packets.
    #[arg(long, default_value_t = Protocol::ClickHouse.default_tail_bytes())]
    tail_bytes_clickhouse: u32,
    /// Payload bytes captured per syscall on one protocol's connections, as NAME=BYTES with
    /// a name of --protocols (at most 65536; default: each protocol's own). Overrides the
    /// per-protocol flags above.
    #[arg(long, value_name = "NAME=BYTES", value_delimiter = ',', value_parser = protocol_bytes)]
    capture_bytes: Vec<(Protocol, u32)>,
    /// Last bytes of a cut syscall on one protocol's connections sent on their own, as
    /// NAME=BYTES (at most 8192; 0: none; default: each protocol's own). Overrides
    /// --tail-bytes-clickhouse.
    #[arg(long, value_name = "NAME=BYTES", value_delimiter = ',', value_parser = protocol_bytes)]
    tail_bytes: Vec<(Protocol, u32)>,
    /// Server ports of ClickHouse's HTTP interface (at most 8): HTTP/1.x requests to them
    /// are classified as ClickHouse over HTTP.
    #[arg(long, value_delimiter = ',', default_value = "8123")]
    clickhouse_http_ports: Vec<u16>,
    /// Kernel-to-user transport: the shared BPF ring buffer, read without per-event
    /// wakeups, or per-CPU perf buffers (each event wakes the reader: several times the
    /// CPU per request, see ARCHITECTURE.md).
    #[arg(long, value_enum, default_value_t = TransportArg::Ringbuf)]
    transport: TransportArg,
    /// Pages per CPU of each perf buffer (a power of two; 1024 = 4 MiB).
    #[arg(long, default_value_t = 1024)]
    perf_pages: usize,
    /// Create FILE once the probes are attached (for scripts that wait for the capture).
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct ReplayArgs {
    /// A recording made with `l7tap capture --record FILE`, or a packet capture (pcap or
    /// pcapng, as tcpdump writes them; told apart by their first bytes).
    file: PathBuf,
    /// For a packet capture: server ports of ClickHouse's HTTP interface (at most 8), as in
    /// `capture` (a recording's connections were classified when it was made).
    #[arg(long, value_delimiter = ',', default_value = "8123")]
    clickhouse_http_ports: Vec<u16>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Output: a directory, object storage as s3://BUCKET/PREFIX (files are finished in
    /// --spool, then uploaded; endpoint and credentials from the AWS_* environment variables),
    /// or ClickHouse as clickhouse://[USER@]HOST:HTTP_PORT/DATABASE (rows inserted from
    /// --spool every second; password from L7TAP_CLICKHOUSE_PASSWORD or
    /// L7TAP_CLICKHOUSE_PASSWORD_FILE); see README. `--sink` is the same flag.
    #[arg(long, visible_alias = "sink", default_value = "l7tap-out")]
    out: PathBuf,
    /// Host name in file names (and the `host=` level of object-storage outputs), so that
    /// hosts can share one output [default: this machine's host name].
    #[arg(long)]
    host: Option<String>,
    /// Spool directory of object-storage and ClickHouse outputs: files wait here until uploaded, and files
    /// left by a crash or an outage are uploaded at the next start [default:
    /// $STATE_DIRECTORY, /var/lib/l7tap/spool as root, else $XDG_STATE_HOME/l7tap/spool].
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Bytes of files waiting to upload at most; a file published past it is dropped and
    /// counted (capture_stats counter `upload.dropped_rows`).
    #[arg(long, default_value_t = l7tap_sinks::output::uploader::DEFAULT_SPOOL_MAX_BYTES)]
    spool_max_bytes: u64,
    /// How long the end of a run waits for the last uploads of an object-storage output;
    /// what is not uploaded by then stays in --spool for the next run.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    upload_wait: Duration,
    /// Write into --out even though it holds earlier runs: each run's files carry its run id,
    /// which `report --run` and `heatmap --run` select (without it, they add up every run).
    #[arg(long)]
    append: bool,
    /// Also write the summary counters as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Actor threads (default: one per core but one, at least one; at most 256).
    #[arg(long)]
    actors: Option<usize>,
    /// Only count frames; do not run the protocol parsers.
    #[arg(long)]
    frames_only: bool,
    /// Query text / ZooKeeper path bytes kept per record (at least 64: a ZooKeeper request is
    /// recognised by its path).
    #[arg(long, default_value_t = 4096)]
    max_query_bytes: usize,
    /// Protocols to keep (default: every one l7tap knows).
    #[arg(long, value_delimiter = ',', value_parser = protocol_arg())]
    protocols: Vec<Protocol>,
    /// Keep only connections of these process ids.
    #[arg(long = "pid", value_delimiter = ',')]
    pids: Vec<u32>,
    /// Keep only connections of these process names.
    #[arg(long = "comm", value_delimiter = ',')]
    comms: Vec<String>,
    /// Keep only connections of these cgroup ids.
    #[arg(long = "cgroup", value_delimiter = ',')]
    cgroups: Vec<u64>,
    /// Keep only connections of processes with these application names (container, systemd
    /// unit or process name, ` :PORT` for a listening process; see `requests.client_app`).
    #[arg(long = "app", value_delimiter = ',')]
    apps: Vec<String>,
    /// Keep only connections with one of these ports at either end.
    #[arg(long = "port", value_delimiter = ',')]
    ports: Vec<u16>,
    /// Aggregation window of the `intervals` table (at most one day).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// Time resolution of the latency heatmap in `intervals` (divides --interval, at most
    /// 3600 per --interval).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heatmap_resolution: Duration,
    /// Replace literals in query text and in ClickHouse error messages (which quote them)
    /// with `?` (queries can contain secrets).
    #[arg(long)]
    redact: bool,
    /// Publish a Parquet file and start the next once it holds this many encoded bytes.
    #[arg(long, default_value_t = l7tap_sinks::sink::DEFAULT_ROLL_BYTES)]
    roll_bytes: u64,
    /// Publish a Parquet file and start the next once it is this old (wall clock), so a
    /// slow trickle of rows still becomes readable (1ms to 24h); also the longest a row waits
    /// in memory before it is in a published file [default: 5m for a directory, 10s for
    /// object storage].
    #[arg(long, value_parser = parse_duration)]
    roll_age: Option<Duration>,
}

impl CaptureArgs {
    /// Capture and tail bytes per protocol: each protocol's default, then the per-protocol
    /// flags, then `--capture-bytes` / `--tail-bytes`.
    fn probe_limits(&self) -> (PerProtocol<u32>, PerProtocol<u32>) {
        let mut capture = PerProtocol::from_fn(Protocol::default_capture_bytes);
        let mut tail = PerProtocol::from_fn(Protocol::default_tail_bytes);
        capture[Protocol::ClickHouse] = self.capture_bytes_clickhouse;
        capture[Protocol::ZooKeeper] = self.capture_bytes_zookeeper;
        tail[Protocol::ClickHouse] = self.tail_bytes_clickhouse;
        for &(protocol, bytes) in &self.capture_bytes {
            capture[protocol] = bytes;
        }
        for &(protocol, bytes) in &self.tail_bytes {
            tail[protocol] = bytes;
        }
        (capture, tail)
    }
}

/// A `NAME=BYTES` argument: a protocol of the registry and a byte count.
fn protocol_bytes(arg: &str) -> Result<(Protocol, u32), String> {
    let (name, bytes) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=BYTES, got {arg:?}"))?;
    let protocol = Protocol::from_name(name).ok_or_else(|| {
        format!(
            "unknown protocol {name:?} (one of {})",
            Protocol::NAMES.join(", ")
        )
    })?;
    let bytes = bytes
        .parse()
        .map_err(|e| format!("bad byte count {bytes:?}: {e}"))?;
    Ok((protocol, bytes))
}

/// `--protocols` takes the registry's protocol names.
fn protocol_arg() -> impl clap::builder::TypedValueParser<Value = Protocol> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Protocol::NAMES)
        .map(|name| Protocol::from_name(&name).expect("a possible value is a protocol name"))
}

impl CommonArgs {
    /// `--out`, parsed (checked by `validate` before any command runs).
    pub fn output(&self) -> l7tap_sinks::Output {
        l7tap_sinks::Output::parse(&self.out).expect("--out is checked before any command runs")
    }

    /// `--host`, or this machine's host name.
    pub fn host(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(l7tap_sinks::default_host_name)
    }

    /// `--spool`, or the default spool root.
    pub fn spool_root(&self) -> PathBuf {
        self.spool
            .clone()
            .unwrap_or_else(l7tap_sinks::output::spool::default_root)
    }

    /// `--roll-age`, or the output's default.
    pub fn roll_age(&self) -> Duration {
        self.roll_age
            .unwrap_or_else(|| self.output().default_roll_age())
    }

    pub fn filter(&self) -> l7tap_actors::ConnFilter {
        l7tap_actors::ConnFilter {
            protocols: self.protocols.clone(),
            pids: self.pids.clone(),
            comms: self.comms.clone(),
            cgroups: self.cgroups.clone(),
            apps: self.apps.clone(),
            ports: self.ports.clone(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Perf,
    Ringbuf,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("L7TAP_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Every flag is checked before the command does anything.
    if let Err(e) = cli.command.validate() {
        fail(e);
    }
    let result = match cli.command {
        Command::Capture(a) => {
            let (capture_bytes, tail_bytes) = a.probe_limits();
            pipeline::capture(pipeline::CaptureOptions {
                duration: a.duration,
                record: a.record,
                capture_bytes,
                tail_bytes,
                clickhouse_http_ports: a.clickhouse_http_ports,
                ringbuf: matches!(a.transport, TransportArg::Ringbuf),
                perf_pages: a.perf_pages,
                ready_file: a.ready_file,
                common: a.common,
            })
        }
        Command::Replay(a) => pipeline::replay(&a.file, &a.clickhouse_http_ports, a.common),
        Command::Dump { file, out, scrub } => dump::dump(&file, &out, scrub),
        Command::Report(a) => report::run(a),
        Command::Heatmap(a) => heatmap::run(a),
        Command::Diff(a) => diff::run(a),
    };
    if let Err(e) = result {
        fail(e);
    }
}

/// Prints one line that says what went wrong, with its causes (which can quote file names and
/// text from the input), and exits with status 1.
fn fail(e: anyhow::Error) -> ! {
    eprintln!("l7tap: {}", untrusted::for_terminal(&format!("{e:#}")));
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture_args(args: &[&str]) -> CaptureArgs {
        let cli = Cli::try_parse_from(["l7tap", "capture"].iter().chain(args)).unwrap();
        let Command::Capture(args) = cli.command else {
            panic!("`l7tap capture` parses as a capture command");
        };
        args
    }

    #[test]
    fn limits_default_to_the_protocol_list() {
        let (capture, tail) = capture_args(&[]).probe_limits();
        for p in Protocol::ALL {
            assert_eq!(capture[p], p.default_capture_bytes(), "{p}");
            assert_eq!(tail[p], p.default_tail_bytes(), "{p}");
        }
    }

    #[test]
    fn per_protocol_flags_and_name_equals_bytes_set_limits() {
        let (capture, tail) = capture_args(&[
            "--capture-bytes-clickhouse",
            "4096",
            "--capture-bytes-zookeeper",
            "8192",
            "--tail-bytes-clickhouse",
            "0",
        ])
        .probe_limits();
        assert_eq!(capture[Protocol::ClickHouse], 4096);
        assert_eq!(capture[Protocol::ZooKeeper], 8192);
        assert_eq!(tail[Protocol::ClickHouse], 0);
        let (capture, tail) = capture_args(&[
            "--capture-bytes-clickhouse",
            "4096",
            "--capture-bytes",
            "clickhouse=1000,zookeeper=2000",
            "--tail-bytes",
            "zookeeper=512",
        ])
        .probe_limits();
        assert_eq!(capture[Protocol::ClickHouse], 1000);
        assert_eq!(capture[Protocol::ZooKeeper], 2000);
        assert_eq!(tail[Protocol::ZooKeeper], 512);
        assert_eq!(
            tail[Protocol::ClickHouse],
            Protocol::ClickHouse.default_tail_bytes()
        );
    }

    #[test]
    fn name_equals_bytes_takes_registry_names_only() {
        assert_eq!(
            protocol_bytes("zookeeper=100"),
            Ok((Protocol::ZooKeeper, 100))
        );
        assert!(protocol_bytes("ZooKeeper=100").is_err());
        assert!(protocol_bytes("redis=100").is_err());
        assert!(protocol_bytes("clickhouse").is_err());
        assert!(protocol_bytes("clickhouse=-1").is_err());
    }
}
