//! Load generators and a fixture responder for l7tap's benchmark suite (`ci/bench.sh`).
//!
//! Every generator drives one server with a fixed number of connections for a fixed time,
//! either flat out or paced to a target rate, and ends with one [`LoadReport`] (a JSON line):
//! achieved throughput, requests sent / answered / failed, client-side latency percentiles.
//!
//! - [`clickhouse`]: a real ClickHouse native client (klickhouse) running `SELECT 1`, small
//!   INSERTs into a MergeTree table, or a mix;
//! - [`zookeeper`]: a real ZooKeeper client (zookeeper-client) running get/set/create/delete or
//!   pipelined gets;
//! - [`echo`]: a loopback echo server and client, traffic l7tap must look at and ignore;
//! - [`responder`] + [`raw`]: a minimal server answering with bytes recorded from the real
//!   servers, and a client replaying recorded requests, to load l7tap far above what the real
//!   servers can serve;
//! - [`suite`]: the table `ci/bench.sh` prints from the runs' JSON lines.

pub mod clickhouse;
pub mod echo;
pub mod pacing;
pub mod raw;
pub mod report;
pub mod responder;
pub mod script;
pub mod suite;
pub mod zookeeper;

pub use report::{LoadReport, RunSpec, Tally};

/// Errors of the load generators and the responder.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Script(#[from] script::ScriptError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] klickhouse::KlickhouseError),
    #[error("zookeeper: {0}")]
    ZooKeeper(#[from] zookeeper_client::Error),
    #[error("{0}")]
    Protocol(String),
    #[error("a worker thread panicked")]
    WorkerPanicked,
}

impl LoadError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
        let what = what.into();
        move |source| LoadError::Io { what, source }
    }
}
