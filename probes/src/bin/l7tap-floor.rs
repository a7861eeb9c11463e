//! `l7tap-floor [--ready-file FILE]`: attaches the benchmark's floor program (a program that
//! returns at once) to every tracepoint the probes use, touches FILE once attached, and keeps
//! it attached until SIGINT or SIGTERM. Used by `ci/bench.sh`; needs root.
use std::process::ExitCode;

use l7tap_probes::floor::Floor;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ready_file = match args.as_slice() {
        [] => None,
        [flag, file] if flag == "--ready-file" => Some(file.clone()),
        _ => {
            eprintln!("usage: l7tap-floor [--ready-file FILE]");
            return ExitCode::from(2);
        }
    };
    // Block the stop signals before attaching, so none is lost between the attach and the
    // wait (sigwait takes a blocked signal).
    // SAFETY: `set` is a plain signal set the libc calls fill; sigprocmask only changes this
    // thread's mask (the only thread).
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let floor = match Floor::attach() {
        Ok(floor) => floor,
        Err(e) => {
            eprintln!("l7tap-floor: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("l7tap-floor: attached to {} tracepoints", floor.attached());
    if let Some(file) = ready_file {
        if let Err(e) = std::fs::write(&file, b"") {
            eprintln!("l7tap-floor: {file}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut signal = 0;
    // SAFETY: `set` holds blocked signals; sigwait writes the one taken into `signal`.
    unsafe { libc::sigwait(&set, &mut signal) };
    drop(floor);
    ExitCode::SUCCESS
}
