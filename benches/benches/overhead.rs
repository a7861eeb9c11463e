//! Overhead of l7tap on traffic it must ignore: a tiny loopback request/response loop
//! (not ClickHouse, not ZooKeeper) timed without and with `l7tap capture` attached, in
//! alternated pairs in one run, reporting the ratio of the medians.
//!
//! Needs root and a release build of the binary:
//! `cargo build --release -p l7tap && cargo bench -p l7tap-benches --bench overhead`
//! Environment: L7TAP_BIN (default target/release/l7tap), OVERHEAD_PAIRS (default 7),
//! OVERHEAD_SECONDS per run (default 3).
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const MESSAGE: usize = 64;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Round trips per second of a 64-byte echo over loopback for `secs`.
fn echo_rate(secs: f64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; MESSAGE];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let msg = [b'p'; MESSAGE];
    let mut buf = [0u8; MESSAGE];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while Instant::now() < deadline {
        for _ in 0..100 {
            c.write_all(&msg).unwrap();
            c.read_exact(&mut buf).unwrap();
        }
        n += 100;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(c);
    server.join().unwrap();
    rate
}

fn start_agent(bin: &PathBuf, ready: &PathBuf) -> Child {
    let _ = std::fs::remove_file(ready);
    // Each run writes a fresh output directory: l7tap refuses one that holds an earlier run.
    let out = ready.with_extension("out");
    let _ = std::fs::remove_dir_all(&out);
    let child = Command::new(bin)
        .args(["capture", "--ready-file"])
        .arg(ready)
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "l7tap did not attach in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn stop_agent(mut child: Child) {
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "l7tap exited with {status}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    // cargo bench passes --bench; a plain `cargo test` build of benches passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin: PathBuf = std::env::var_os("L7TAP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/l7tap"));
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --release -p l7tap` first (or set L7TAP_BIN)",
        bin.display()
    );
    let pairs: usize = env_or("OVERHEAD_PAIRS", 7);
    let secs: f64 = env_or("OVERHEAD_SECONDS", 3.0);
    let ready = std::env::temp_dir().join(format!("l7tap-overhead-{}.ready", std::process::id()));

    echo_rate(0.5); // warm up
    let (mut without, mut with) = (Vec::new(), Vec::new());
    println!("pair  without (rt/s)  with (rt/s)  ratio");
    for pair in 0..pairs {
        // Alternate which side goes first so drift cancels.
        let run_with = || {
            let agent = start_agent(&bin, &ready);
            let r = echo_rate(secs);
            stop_agent(agent);
            r
        };
        let (a, b) = if pair % 2 == 0 {
            let a = echo_rate(secs);
            (a, run_with())
        } else {
            let b = run_with();
            (echo_rate(secs), b)
        };
        println!("{pair:>4}  {a:>14.0}  {b:>11.0}  {:.3}", b / a);
        without.push(a);
        with.push(b);
    }
    let (mw, mx) = (median(&mut without), median(&mut with));
    println!(
        "median without {mw:.0} rt/s, with l7tap {mx:.0} rt/s: ratio {:.3} (goal >= 0.95)",
        mx / mw
    );
}
