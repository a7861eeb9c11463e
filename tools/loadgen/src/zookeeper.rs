//! Load on a real ZooKeeper server (or the responder) through a real client
//! (zookeeper-client).
//!
//! Profiles: `mixed` (each worker in turn creates a node, sets its data, reads it and deletes
//! it: four requests) and `pipelined-get` (`in_flight` concurrent getData loops per
//! connection on one node, so hundreds of requests are outstanding).
use std::sync::Arc;
use std::time::{Duration, Instant};

use zookeeper_client::{Acls, Client, CreateMode, CreateOptions};

use crate::pacing::Pacer;
use crate::report::{LoadReport, RunSpec, Tally};
use crate::LoadError;

/// A request still unanswered after this long counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of data in the nodes the generator writes and reads.
const NODE_DATA: &[u8] = &[b'z'; 64];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Mixed,
    PipelinedGet,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Mixed => "mixed",
            Profile::PipelinedGet => "pipelined-get",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ZooKeeperOptions {
    /// `host:port`.
    pub target: String,
    /// Parent node of everything the generator creates.
    pub root: String,
    pub profile: Profile,
    pub connections: usize,
    /// Concurrent requests per connection (`pipelined-get`).
    pub in_flight: usize,
    pub rate: Option<f64>,
    pub duration: Duration,
}

fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

async fn ensure_node(client: &Client, path: &str) -> Result<(), LoadError> {
    match client.create(path, NODE_DATA, &persistent()).await {
        Ok(_) | Err(zookeeper_client::Error::NodeExists) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs the profile.
pub async fn run(opts: ZooKeeperOptions) -> Result<LoadReport, LoadError> {
    let mut clients = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections.max(1) {
        clients.push(
            Client::connector()
                .with_session_timeout(Duration::from_secs(20))
                .connect(&opts.target)
                .await?,
        );
    }
    ensure_node(&clients[0], &opts.root).await?;
    let data_node = format!("{}/data", opts.root);
    ensure_node(&clients[0], &data_node).await?;

    let per_connection = match opts.profile {
        Profile::Mixed => 1,
        Profile::PipelinedGet => opts.in_flight.max(1),
    };
    let workers = clients.len() * per_connection;
    let opts = Arc::new(opts);
    let deadline = Instant::now() + opts.duration;
    let mut tasks = Vec::with_capacity(workers);
    for (c, client) in clients.iter().enumerate() {
        for k in 0..per_connection {
            let worker = c * per_connection + k;
            let pacer = Pacer::new(opts.rate, workers, worker);
            tasks.push(tokio::spawn(worker_loop(
                opts.clone(),
                client.clone(),
                pacer,
                worker,
                deadline,
            )));
        }
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(&t.await.map_err(|_| LoadError::WorkerPanicked)?);
    }
    let spec = RunSpec {
        workload: format!("zookeeper/{}", opts.profile.name()),
        target: opts.target.clone(),
        connections: opts.connections,
        rate: opts.rate,
        in_flight: per_connection,
        duration_s: 0.0,
    };
    Ok(LoadReport::new(spec, &tally, opts.duration))
}

/// One request of the profile; `n` counts the worker's requests.
async fn one_request(
    client: &Client,
    opts: &ZooKeeperOptions,
    worker: usize,
    n: u64,
) -> Result<(), zookeeper_client::Error> {
    match opts.profile {
        Profile::PipelinedGet => client
            .get_data(&format!("{}/data", opts.root))
            .await
            .map(drop),
        Profile::Mixed => {
            let node = format!("{}/w{worker}-{}", opts.root, n / 4);
            match n % 4 {
                0 => client
                    .create(&node, NODE_DATA, &persistent())
                    .await
                    .map(drop),
                1 => client.set_data(&node, b"updated", None).await.map(drop),
                2 => client.get_data(&node).await.map(drop),
                _ => client.delete(&node, None).await,
            }
        }
    }
}

async fn worker_loop(
    opts: Arc<ZooKeeperOptions>,
    client: Client,
    mut pacer: Pacer,
    worker: usize,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut first_error_shown = false;
    for n in 0.. {
        // A mixed cycle is finished even past the deadline, so no node is left behind.
        let finishing_cycle = opts.profile == Profile::Mixed && n % 4 != 0;
        if !finishing_cycle {
            pacer.wait().await;
        }
        let sent_at = Instant::now();
        if sent_at >= deadline && !finishing_cycle {
            break;
        }
        tally.sent += 1;
        let result =
            tokio::time::timeout(REQUEST_TIMEOUT, one_request(&client, &opts, worker, n)).await;
        match result {
            Ok(Ok(())) => {
                let now = Instant::now();
                tally.answered(now - sent_at, now <= deadline);
            }
            Ok(Err(e)) => {
                tally.failed += 1;
                if !first_error_shown {
                    eprintln!("l7tap-loadgen: zookeeper worker {worker}: {e}");
                    first_error_shown = true;
                }
                if matches!(
                    e,
                    zookeeper_client::Error::SessionExpired | zookeeper_client::Error::ClientClosed
                ) {
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
