//! Load on a real ClickHouse server through a real native-protocol client (klickhouse).
//!
//! Profiles: `select1` (`SELECT 1`), `insert` (INSERTs of [`ROWS_PER_INSERT`] rows (`INSERT INTO t VALUES` + a native block: 18.16 takes no `FORMAT Native` here) into a
//! MergeTree table created if missing), `mixed` (in turn: `SELECT 1`, an INSERT, a `count()`
//! of the table and a 10-row `SELECT` from it). One client per connection, one query at a
//! time on each (the native protocol does not pipeline).
use std::sync::Arc;
use std::time::{Duration, Instant};

use klickhouse::{Client, ClientOptions, Row};

use crate::pacing::Pacer;
use crate::report::{LoadReport, RunSpec, Tally};
use crate::LoadError;

/// Rows per INSERT of the `insert` and `mixed` profiles.
pub const ROWS_PER_INSERT: u64 = 10;
/// A query still unanswered after this long counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Select1,
    Insert,
    Mixed,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Select1 => "select1",
            Profile::Insert => "insert",
            Profile::Mixed => "mixed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClickHouseOptions {
    /// `host:port` of the native protocol.
    pub target: String,
    pub user: String,
    pub password: String,
    /// Table of the `insert` and `mixed` profiles (`database.table` or `table`).
    pub table: String,
    pub profile: Profile,
    pub connections: usize,
    pub rate: Option<f64>,
    pub duration: Duration,
}

/// One row of the load table.
#[derive(Row, Clone, Debug, Default)]
struct LoadRow {
    id: u64,
    name: String,
    value: f64,
}

async fn connect(opts: &ClickHouseOptions) -> Result<Client, LoadError> {
    let options = ClientOptions {
        username: opts.user.clone(),
        password: opts.password.clone(),
        ..ClientOptions::default()
    };
    Ok(Client::connect(opts.target.as_str(), options).await?)
}

/// Runs the profile; creates the table first when the profile writes.
pub async fn run(opts: ClickHouseOptions) -> Result<LoadReport, LoadError> {
    if opts.profile != Profile::Select1 {
        let client = connect(&opts).await?;
        client
            .execute(format!(
                "CREATE TABLE IF NOT EXISTS {} (id UInt64, name String, value Float64) \
                 ENGINE = MergeTree() ORDER BY id",
                opts.table
            ))
            .await?;
    }
    let mut clients = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        clients.push(connect(&opts).await?);
    }
    let opts = Arc::new(opts);
    let deadline = Instant::now() + opts.duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(worker, client)| tokio::spawn(worker_loop(opts.clone(), client, worker, deadline)))
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(&t.await.map_err(|_| LoadError::WorkerPanicked)?);
    }
    let spec = RunSpec {
        workload: format!("clickhouse/{}", opts.profile.name()),
        target: opts.target.clone(),
        connections: opts.connections,
        rate: opts.rate,
        in_flight: 1,
        duration_s: 0.0,
    };
    Ok(LoadReport::new(spec, &tally, opts.duration))
}

async fn one_query(
    client: &Client,
    opts: &ClickHouseOptions,
    worker: usize,
    n: u64,
) -> Result<(), LoadError> {
    let step = match opts.profile {
        Profile::Select1 => 0,
        Profile::Insert => 1,
        Profile::Mixed => n % 4,
    };
    match step {
        0 => client.execute("SELECT 1").await?,
        1 => {
            let rows = (0..ROWS_PER_INSERT)
                .map(|i| LoadRow {
                    id: ((worker as u64) << 40) | (n * ROWS_PER_INSERT + i),
                    name: format!("w{worker}-{n}-{i}"),
                    value: i as f64 * 0.5,
                })
                .collect();
            client
                .insert_native_block(format!("INSERT INTO {} VALUES", opts.table), rows)
                .await?
        }
        2 => {
            client
                .execute(format!("SELECT count() FROM {}", opts.table))
                .await?
        }
        _ => {
            client
                .execute(format!("SELECT id, name FROM {} LIMIT 10", opts.table))
                .await?
        }
    }
    Ok(())
}

async fn worker_loop(
    opts: Arc<ClickHouseOptions>,
    client: Client,
    worker: usize,
    deadline: Instant,
) -> Tally {
    let mut pacer = Pacer::new(opts.rate, opts.connections, worker);
    let mut tally = Tally::default();
    let mut n = 0u64;
    let mut first_error_shown = false;
    loop {
        pacer.wait().await;
        let sent_at = Instant::now();
        if sent_at >= deadline {
            break;
        }
        tally.sent += 1;
        let result =
            tokio::time::timeout(QUERY_TIMEOUT, one_query(&client, &opts, worker, n)).await;
        n += 1;
        match result {
            Ok(Ok(())) => {
                let now = Instant::now();
                tally.answered(now - sent_at, now <= deadline);
            }
            Ok(Err(e)) => {
                tally.failed += 1;
                if !first_error_shown {
                    eprintln!("l7tap-loadgen: clickhouse worker {worker}: {e}");
                    first_error_shown = true;
                }
                if client.is_closed() {
                    break;
                }
            }
            Err(_) => {
                tally.failed += 1;
                break;
            }
        }
    }
    tally
}
