//! `l7tap-loadgen`: load generators, the fixture responder and the benchmark table of
//! `ci/bench.sh`. Every load subcommand prints one JSON line (see `LoadReport`).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use l7tap_loadgen::script::{ClickHouseScript, ZooKeeperScript};
use l7tap_loadgen::{clickhouse, echo, raw, responder, suite, zookeeper};

#[derive(Parser)]
#[command(
    name = "l7tap-loadgen",
    version,
    about = "Load generators for l7tap's benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a ClickHouse server through the native protocol (klickhouse).
    Clickhouse(ClickHouseArgs),
    /// Load a ZooKeeper server (zookeeper-client).
    Zookeeper(ZooKeeperArgs),
    /// A loopback echo server and its clients: traffic l7tap must ignore.
    Echo(EchoArgs),
    /// Replay recorded requests byte for byte against the responder (or a real server).
    Raw(RawArgs),
    /// Serve recorded ClickHouse and ZooKeeper answers (until killed or --duration).
    Responder(ResponderArgs),
    /// Print the benchmark table from ci/bench.sh's results (exit 1 if a row is missing).
    Report(ReportArgs),
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Connections to the server.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Target rate in requests/s over all connections; absent: flat out.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to send (e.g. 10s, 500ms, 1m).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
}

#[derive(Args)]
struct ClickHouseArgs {
    #[arg(long, default_value = "127.0.0.1:9000")]
    target: String,
    #[arg(long, default_value = "default")]
    user: String,
    #[arg(long, default_value = "")]
    password: String,
    /// Table the insert and mixed profiles write (created if missing).
    #[arg(long, default_value = "default.l7tap_loadgen")]
    table: String,
    #[arg(long, value_enum, default_value_t = clickhouse::Profile::Select1)]
    profile: clickhouse::Profile,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct ZooKeeperArgs {
    #[arg(long, default_value = "127.0.0.1:2181")]
    target: String,
    /// Parent node of everything the generator creates.
    #[arg(long, default_value = "/l7tap-loadgen")]
    root: String,
    #[arg(long, value_enum, default_value_t = zookeeper::Profile::Mixed)]
    profile: zookeeper::Profile,
    /// Concurrent requests per connection (pipelined-get).
    #[arg(long, default_value_t = 100)]
    in_flight: usize,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct EchoArgs {
    /// Where the echo server listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 64)]
    message_bytes: usize,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    Clickhouse,
    Zookeeper,
}

#[derive(Args)]
struct RawArgs {
    #[arg(long, value_enum)]
    protocol: Protocol,
    #[arg(long)]
    target: SocketAddr,
    /// The `.chunks` recording to replay (default: the responder's for the protocol).
    #[arg(long)]
    script: Option<PathBuf>,
    /// Requests outstanding per connection (ZooKeeper).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct ResponderArgs {
    #[arg(long, default_value = "127.0.0.1:19900")]
    clickhouse_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:19981")]
    zookeeper_listen: SocketAddr,
    /// ClickHouse recording (default: tests/fixtures/responder/clickhouse-select1.chunks).
    #[arg(long)]
    clickhouse_script: Option<PathBuf>,
    /// ZooKeeper recording (default: tests/fixtures/responder/zookeeper.chunks).
    #[arg(long)]
    zookeeper_script: Option<PathBuf>,
    /// Stop after this long; default: until killed.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Create FILE once both listeners are bound.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// JSON lines written by ci/bench.sh.
    results: PathBuf,
    /// Workloads that must each produce a row, comma-separated, in table order.
    #[arg(long, value_delimiter = ',')]
    expect: Vec<String>,
    /// Also write the table to FILE.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Text put above the table in FILE (e.g. the machine and the command).
    #[arg(long, default_value = "")]
    title: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The repository's fixture directory for the responder.
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/responder")
        .join(name)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let report = match cli.command {
        Command::Clickhouse(a) => {
            runtime()?.block_on(clickhouse::run(clickhouse::ClickHouseOptions {
                target: a.target,
                user: a.user,
                password: a.password,
                table: a.table,
                profile: a.profile,
                connections: a.load.connections,
                rate: a.load.rate,
                duration: a.load.duration,
            }))?
        }
        Command::Zookeeper(a) => {
            runtime()?.block_on(zookeeper::run(zookeeper::ZooKeeperOptions {
                target: a.target,
                root: a.root,
                profile: a.profile,
                connections: a.load.connections,
                in_flight: a.in_flight,
                rate: a.load.rate,
                duration: a.load.duration,
            }))?
        }
        Command::Echo(a) => echo::run(&echo::EchoOptions {
            listen: a.listen,
            connections: a.load.connections,
            rate: a.load.rate,
            duration: a.load.duration,
            message_bytes: a.message_bytes,
        })?,
        Command::Raw(a) => {
            let opts = raw::RawOptions {
                target: a.target,
                connections: a.load.connections,
                rate: a.load.rate,
                duration: a.load.duration,
                in_flight: a.in_flight,
            };
            match a.protocol {
                Protocol::Clickhouse => {
                    let path = a
                        .script
                        .unwrap_or_else(|| fixture("clickhouse-select1.chunks"));
                    raw::run_clickhouse(&opts, ClickHouseScript::load(&path)?)?
                }
                Protocol::Zookeeper => {
                    let path = a.script.unwrap_or_else(|| fixture("zookeeper.chunks"));
                    raw::run_zookeeper(&opts, ZooKeeperScript::load(&path)?)?
                }
            }
        }
        Command::Responder(a) => return serve(a),
        Command::Report(a) => return print_report(a),
    };
    println!("{}", report.to_json_line());
    Ok(())
}

fn serve(a: ResponderArgs) -> Result<()> {
    let ch_script = a
        .clickhouse_script
        .unwrap_or_else(|| fixture("clickhouse-select1.chunks"));
    let zk_script = a
        .zookeeper_script
        .unwrap_or_else(|| fixture("zookeeper.chunks"));
    let ch = responder::start_clickhouse(a.clickhouse_listen, ClickHouseScript::load(&ch_script)?)?;
    let zk = responder::start_zookeeper(a.zookeeper_listen, ZooKeeperScript::load(&zk_script)?)?;
    eprintln!("l7tap-loadgen responder: clickhouse on {ch}, zookeeper on {zk}");
    if let Some(path) = &a.ready_file {
        std::fs::write(path, format!("clickhouse {ch}\nzookeeper {zk}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match a.duration {
        Some(d) => std::thread::sleep(d),
        None => loop {
            std::thread::park();
        },
    }
    Ok(())
}

fn print_report(a: ReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.results)
        .with_context(|| format!("reading {}", a.results.display()))?;
    let results = suite::parse_results(&text)?;
    let table = suite::table(&results, &a.expect);
    print!("{}", table.markdown);
    if let Some(out) = &a.out {
        let body = if a.title.is_empty() {
            table.markdown.clone()
        } else {
            format!("{}\n\n{}", a.title, table.markdown)
        };
        std::fs::write(out, body).with_context(|| format!("writing {}", out.display()))?;
    }
    if !table.missing.is_empty() {
        bail!("no row for: {}", table.missing.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2h").is_err());
    }
}
