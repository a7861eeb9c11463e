//! Clients that replay recorded requests byte for byte (no protocol library), so the client
//! costs little CPU and l7tap can be loaded at tens of thousands of requests per second.
//!
//! - ClickHouse: the [`ClickHouseScript`] handshake, then its request over and over, one at a
//!   time per connection (the native protocol does not pipeline); an answer is complete when
//!   the recorded number of bytes has arrived.
//! - ZooKeeper: the recorded ConnectRequest, then the recorded getData request with a fresh
//!   xid each time, up to `in_flight` outstanding per connection (a writer thread sends, the
//!   connection's thread reads the replies and pairs them by xid).
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::pacing::Pacer;
use crate::report::{LoadReport, RunSpec, Tally};
use crate::responder::read_frame;
use crate::script::{be_i32, opcode, ClickHouseScript, ZooKeeperScript};
use crate::LoadError;

/// How long replies may still arrive after the deadline before the missing ones count as
/// failed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Most requests one write carries when flat out.
const MAX_BATCH: usize = 64;

#[derive(Clone, Debug)]
pub struct RawOptions {
    pub target: SocketAddr,
    pub connections: usize,
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Requests outstanding per connection (ZooKeeper only; ClickHouse is always 1).
    pub in_flight: usize,
}

fn spec(workload: &str, opts: &RawOptions, in_flight: usize) -> RunSpec {
    RunSpec {
        workload: workload.into(),
        target: opts.target.to_string(),
        connections: opts.connections,
        rate: opts.rate,
        in_flight,
        duration_s: 0.0,
    }
}

fn connect(target: SocketAddr) -> Result<TcpStream, LoadError> {
    let stream =
        TcpStream::connect(target).map_err(LoadError::io(format!("connecting to {target}")))?;
    stream
        .set_nodelay(true)
        .map_err(LoadError::io("setting TCP_NODELAY"))?;
    Ok(stream)
}

/// Runs one worker per connection on its own thread and merges their tallies.
fn run_workers<F>(connections: usize, worker: F) -> Result<Tally, LoadError>
where
    F: Fn(usize) -> Result<Tally, LoadError> + Send + Sync + 'static,
{
    let worker = Arc::new(worker);
    let handles: Vec<_> = (0..connections)
        .map(|i| {
            let worker = worker.clone();
            std::thread::spawn(move || worker(i))
        })
        .collect();
    let mut tally = Tally::default();
    for h in handles {
        tally.merge(&h.join().map_err(|_| LoadError::WorkerPanicked)??);
    }
    Ok(tally)
}

/// Replays the ClickHouse script's request against `opts.target`.
pub fn run_clickhouse(
    opts: &RawOptions,
    script: ClickHouseScript,
) -> Result<LoadReport, LoadError> {
    let script = Arc::new(script);
    let deadline = Instant::now() + opts.duration;
    let shared = opts.clone();
    let tally = run_workers(opts.connections, move |worker| {
        clickhouse_worker(&shared, &script, worker, deadline)
    })?;
    Ok(LoadReport::new(
        spec("raw/clickhouse", opts, 1),
        &tally,
        opts.duration,
    ))
}

fn clickhouse_worker(
    opts: &RawOptions,
    script: &ClickHouseScript,
    worker: usize,
    deadline: Instant,
) -> Result<Tally, LoadError> {
    let mut stream = connect(opts.target)?;
    let longest = script
        .handshake
        .iter()
        .chain(std::iter::once(&script.request))
        .map(|e| e.server_len())
        .max()
        .unwrap_or(0);
    let mut answer = vec![0u8; longest];
    let mut exchange = |stream: &mut TcpStream, e: &crate::script::Exchange| {
        for chunk in &e.client {
            stream.write_all(chunk)?;
        }
        stream.read_exact(&mut answer[..e.server_len()])
    };
    for e in &script.handshake {
        exchange(&mut stream, e).map_err(LoadError::io("ClickHouse handshake"))?;
    }
    let mut pacer = Pacer::new(opts.rate, opts.connections, worker);
    let mut tally = Tally::default();
    loop {
        pacer.wait_blocking();
        let sent_at = Instant::now();
        if sent_at >= deadline {
            break;
        }
        tally.sent += 1;
        match exchange(&mut stream, &script.request) {
            Ok(()) => {
                let now = Instant::now();
                tally.answered(now - sent_at, now <= deadline);
            }
            Err(_) => {
                tally.failed += 1;
                break;
            }
        }
    }
    Ok(tally)
}

/// Sends recorded getData requests with fresh xids against `opts.target`.
pub fn run_zookeeper(opts: &RawOptions, script: ZooKeeperScript) -> Result<LoadReport, LoadError> {
    let request = script.request(opcode::GET_DATA)?.to_vec();
    let connect_request = script.connect_request.clone();
    let deadline = Instant::now() + opts.duration;
    let shared = opts.clone();
    let tally = run_workers(opts.connections, move |worker| {
        zookeeper_worker(&shared, &connect_request, &request, worker, deadline)
    })?;
    Ok(LoadReport::new(
        spec("raw/zookeeper", opts, opts.in_flight.max(1)),
        &tally,
        opts.duration,
    ))
}

/// What a ZooKeeper connection's writer and reader share.
struct Pipeline {
    /// Requests sent and not yet answered (guarded so the writer can wait for room).
    outstanding: Mutex<usize>,
    room: Condvar,
    /// Send time (ns since `epoch`) of each outstanding request, by xid modulo the window.
    sent_at_ns: Vec<AtomicU64>,
    epoch: Instant,
    sent: AtomicU64,
    writer_done: AtomicBool,
    broken: AtomicBool,
}

fn zookeeper_worker(
    opts: &RawOptions,
    connect_request: &[u8],
    request: &[u8],
    worker: usize,
    deadline: Instant,
) -> Result<Tally, LoadError> {
    let window = opts.in_flight.max(1);
    let mut stream = connect(opts.target)?;
    stream
        .write_all(connect_request)
        .map_err(LoadError::io("sending ConnectRequest"))?;
    let mut body = Vec::new();
    if !read_frame(&mut stream, &mut body).map_err(LoadError::io("reading ConnectResponse"))? {
        return Err(LoadError::Protocol(
            "ZooKeeper closed before ConnectResponse".into(),
        ));
    }
    let pipeline = Arc::new(Pipeline {
        outstanding: Mutex::new(0),
        room: Condvar::new(),
        sent_at_ns: (0..window).map(|_| AtomicU64::new(0)).collect(),
        epoch: Instant::now(),
        sent: AtomicU64::new(0),
        writer_done: AtomicBool::new(false),
        broken: AtomicBool::new(false),
    });
    let writer = {
        let stream = stream
            .try_clone()
            .map_err(LoadError::io("cloning the socket"))?;
        let pipeline = pipeline.clone();
        let request = request.to_vec();
        let pacer = Pacer::new(opts.rate, opts.connections, worker);
        std::thread::spawn(move || zookeeper_writer(stream, &pipeline, &request, pacer, deadline))
    };
    let mut tally = Tally::default();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(LoadError::io("setting a read timeout"))?;
    let mut reader = std::io::BufReader::with_capacity(64 << 10, stream);
    let mut answered = 0u64;
    loop {
        let done = pipeline.writer_done.load(Ordering::Acquire);
        if done && answered >= pipeline.sent.load(Ordering::Acquire) {
            break;
        }
        if Instant::now() > deadline + DRAIN_GRACE || pipeline.broken.load(Ordering::Acquire) {
            break;
        }
        match read_frame(&mut reader, &mut body) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        }
        let xid = be_i32(&body, 0);
        if xid <= 0 {
            continue; // pings and watch events
        }
        let now = Instant::now();
        let sent_ns = pipeline.sent_at_ns[xid as usize % window].load(Ordering::Acquire);
        let sent_at = pipeline.epoch + Duration::from_nanos(sent_ns);
        tally.answered(now.saturating_duration_since(sent_at), now <= deadline);
        answered += 1;
        let mut outstanding = pipeline.outstanding.lock().expect("lock poisoned");
        *outstanding = outstanding.saturating_sub(1);
        pipeline.room.notify_one();
    }
    pipeline.broken.store(true, Ordering::Release);
    pipeline.room.notify_one();
    writer.join().map_err(|_| LoadError::WorkerPanicked)?;
    tally.sent = pipeline.sent.load(Ordering::Acquire);
    tally.failed = tally.sent.saturating_sub(tally.ok);
    Ok(tally)
}

fn zookeeper_writer(
    mut stream: TcpStream,
    pipeline: &Pipeline,
    request: &[u8],
    mut pacer: Pacer,
    deadline: Instant,
) {
    let window = pipeline.sent_at_ns.len();
    let flat_out = pacer.is_flat_out();
    let mut xid: i32 = 0;
    let mut batch = Vec::with_capacity(request.len() * MAX_BATCH);
    'sending: loop {
        pacer.wait_blocking();
        if Instant::now() >= deadline || pipeline.broken.load(Ordering::Acquire) {
            break;
        }
        // Wait for room in the window, then take as much of it as one batch may carry.
        let n = {
            let mut outstanding = pipeline.outstanding.lock().expect("lock poisoned");
            while *outstanding >= window {
                let (guard, _) = pipeline
                    .room
                    .wait_timeout(outstanding, Duration::from_millis(10))
                    .expect("lock poisoned");
                outstanding = guard;
                if Instant::now() >= deadline || pipeline.broken.load(Ordering::Acquire) {
                    break 'sending;
                }
            }
            let n = if flat_out {
                (window - *outstanding).min(MAX_BATCH)
            } else {
                1
            };
            *outstanding += n;
            n
        };
        batch.clear();
        let now_ns = pipeline.epoch.elapsed().as_nanos() as u64;
        for _ in 0..n {
            xid = if xid == i32::MAX { 1 } else { xid + 1 };
            pipeline.sent_at_ns[xid as usize % window].store(now_ns, Ordering::Release);
            let at = batch.len();
            batch.extend_from_slice(request);
            batch[at + 4..at + 8].copy_from_slice(&xid.to_be_bytes());
        }
        if stream.write_all(&batch).is_err() {
            pipeline.broken.store(true, Ordering::Release);
            break;
        }
        pipeline.sent.fetch_add(n as u64, Ordering::AcqRel);
    }
    pipeline.writer_done.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responder;
    use crate::script::{Chunk, Exchange, Sender};

    #[test]
    fn clickhouse_replay_against_the_responder() {
        let script = ClickHouseScript {
            handshake: vec![Exchange {
                client: vec![vec![0, 1]],
                server: vec![vec![0, 9]],
            }],
            request: Exchange {
                client: vec![vec![1], vec![2, 2]],
                server: vec![vec![1], vec![5]],
            },
        };
        let addr =
            responder::start_clickhouse("127.0.0.1:0".parse().unwrap(), script.clone()).unwrap();
        let opts = RawOptions {
            target: addr,
            connections: 2,
            rate: None,
            duration: Duration::from_millis(300),
            in_flight: 1,
        };
        let r = run_clickhouse(&opts, script).unwrap();
        assert!(r.ok > 100, "{r:?}");
        assert_eq!(r.failed, 0);
    }

    #[test]
    fn zookeeper_pipelined_replay_against_the_responder() {
        let frame = |body: Vec<u8>| [(body.len() as i32).to_be_bytes().to_vec(), body].concat();
        let header = |a: i32, b: i32| [a.to_be_bytes(), b.to_be_bytes()].concat();
        let get = frame([header(1, opcode::GET_DATA), vec![7]].concat());
        let reply = frame([header(1, 0), vec![0, 0, 0, 3, 0, 0, 0, 0, 0xab]].concat());
        let chunks = vec![
            Chunk {
                sender: Sender::Client,
                bytes: [frame(vec![0; 8]), get].concat(),
            },
            Chunk {
                sender: Sender::Server,
                bytes: [frame(vec![1; 4]), reply].concat(),
            },
        ];
        let script = ZooKeeperScript::from_chunks(&chunks, "t").unwrap();
        let addr =
            responder::start_zookeeper("127.0.0.1:0".parse().unwrap(), script.clone()).unwrap();
        for (rate, in_flight) in [(None, 32), (Some(500.0), 4)] {
            let opts = RawOptions {
                target: addr,
                connections: 2,
                rate,
                duration: Duration::from_millis(400),
                in_flight,
            };
            let r = run_zookeeper(&opts, script.clone()).unwrap();
            assert_eq!(r.failed, 0, "{r:?}");
            assert_eq!(r.sent, r.ok, "{r:?}");
            assert!(r.ok > 150, "{r:?}");
        }
    }
}
