//! A loopback echo: the server echoes fixed-size messages back, the clients time each round
//! trip. Neither ClickHouse nor ZooKeeper, so l7tap must look at every one of these
//! syscalls and ignore them: its worst case of unwatched traffic.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pacing::Pacer;
use crate::report::{LoadReport, RunSpec, Tally};
use crate::LoadError;

#[derive(Clone, Debug)]
pub struct EchoOptions {
    /// Where the server listens (port 0: any free port).
    pub listen: SocketAddr,
    pub connections: usize,
    pub rate: Option<f64>,
    pub duration: Duration,
    pub message_bytes: usize,
}

/// Starts the echo server on its own threads (one per connection); returns its address.
pub fn start_server(listen: SocketAddr, message_bytes: usize) -> Result<SocketAddr, LoadError> {
    let listener = TcpListener::bind(listen).map_err(LoadError::io(format!("binding {listen}")))?;
    let addr = listener
        .local_addr()
        .map_err(LoadError::io("reading the echo server's address"))?;
    std::thread::Builder::new()
        .name("echo-accept".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("echo-conn".into())
                    .spawn(move || echo_connection(stream, message_bytes));
            }
        })
        .map_err(LoadError::io("spawning the echo server"))?;
    Ok(addr)
}

fn echo_connection(mut stream: TcpStream, message_bytes: usize) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; message_bytes];
    while stream.read_exact(&mut buf).is_ok() {
        if stream.write_all(&buf).is_err() {
            break;
        }
    }
}

/// Runs the server and `connections` clients for `duration`.
pub fn run(opts: &EchoOptions) -> Result<LoadReport, LoadError> {
    let addr = start_server(opts.listen, opts.message_bytes)?;
    let start = Instant::now();
    let deadline = start + opts.duration;
    let opts_shared = Arc::new(opts.clone());
    let workers: Vec<_> = (0..opts.connections)
        .map(|worker| {
            let opts = opts_shared.clone();
            std::thread::spawn(move || echo_client(addr, &opts, worker, deadline))
        })
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(&w.join().map_err(|_| LoadError::WorkerPanicked)??);
    }
    let spec = RunSpec {
        workload: "echo".into(),
        target: addr.to_string(),
        connections: opts.connections,
        rate: opts.rate,
        in_flight: 1,
        duration_s: 0.0,
    };
    Ok(LoadReport::new(spec, &tally, opts.duration))
}

fn echo_client(
    addr: SocketAddr,
    opts: &EchoOptions,
    worker: usize,
    deadline: Instant,
) -> Result<Tally, LoadError> {
    let mut stream =
        TcpStream::connect(addr).map_err(LoadError::io(format!("connecting to {addr}")))?;
    stream
        .set_nodelay(true)
        .map_err(LoadError::io("setting TCP_NODELAY"))?;
    let message = vec![b'p'; opts.message_bytes];
    let mut answer = vec![0u8; opts.message_bytes];
    let mut pacer = Pacer::new(opts.rate, opts.connections, worker);
    let mut tally = Tally::default();
    loop {
        pacer.wait_blocking();
        let sent_at = Instant::now();
        if sent_at >= deadline {
            break;
        }
        tally.sent += 1;
        let round_trip = stream
            .write_all(&message)
            .and_then(|()| stream.read_exact(&mut answer));
        match round_trip {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_at_a_paced_rate() {
        let opts = EchoOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            connections: 2,
            rate: Some(200.0),
            duration: Duration::from_millis(500),
            message_bytes: 64,
        };
        let r = run(&opts).unwrap();
        assert_eq!(r.failed, 0);
        assert!(r.ok >= 80 && r.ok <= 110, "{} round trips", r.ok);
        assert!(r.p50_us > 0.0);
    }
}
