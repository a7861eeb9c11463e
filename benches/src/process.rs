//! Running the `l7tap` binary from a benchmark or a test and measuring that one child: wall
//! time, CPU time and peak RSS from `wait4` (per child, unlike `RUSAGE_CHILDREN`, whose peak
//! RSS is the largest of every child ever waited for), and, exactly, the peak memory of the
//! child alone, in a memory cgroup of its own ([`MemoryCgroup`]).
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The release `l7tap` binary: `$L7TAP_BIN`, else `$CARGO_TARGET_DIR/release/l7tap`, else
/// `target/release/l7tap` of this workspace. Build it first (`cargo build --release -p l7tap`).
pub fn l7tap_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("L7TAP_BIN") {
        return bin.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/l7tap")
}

/// [`l7tap_bin`], which must have been built (panics with the command that builds it).
pub fn built_l7tap_bin() -> PathBuf {
    let bin = l7tap_bin();
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p l7tap",
        bin.display()
    );
    bin
}

/// What one child used.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub wall: Duration,
    /// User + system CPU time of all its threads.
    pub cpu: Duration,
    pub max_rss_bytes: u64,
    pub exit_code: i32,
}

/// A CPU this process may run on (the last one allowed), for pinning children to one core.
pub fn last_allowed_cpu() -> usize {
    // SAFETY: `set` is a plain bitmask the kernel fills; sched_getaffinity writes only into
    // it, and at most `size_of::<cpu_set_t>()` bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 0;
        }
        (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))
            .unwrap_or(0)
    }
}

/// Runs `command` to its end, all its threads on `cpu` if given, and measures it.
pub fn run_measured(command: &mut Command, cpu: Option<usize>) -> io::Result<Usage> {
    if let Some(cpu) = cpu {
        // SAFETY: the closure runs in the forked child before exec and only calls
        // sched_setaffinity, a plain system call (async-signal-safe, no allocation); `set`
        // lives on the child's stack.
        unsafe {
            command.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let child = command.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it and `status`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for (the `Child` handle is dropped
    // without waiting); both pointers are valid for writes.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(child);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    Ok(Usage {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
        exit_code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
    })
}

/// Where the cgroup v1 memory controller is mounted on the machines l7tap is tested on
/// (hybrid hierarchy: v2 at `/sys/fs/cgroup/unified` has no memory controller).
const MEMORY_CONTROLLER: &str = "/sys/fs/cgroup/memory";

/// A memory cgroup (v1) of its own for one child, from before its exec to its end, removed on
/// drop. Why not wait4's `ru_maxrss`: at exec the kernel records the peak RSS of the address
/// space being left, which for a child spawned by a large test process is the parent's (a
/// rejected flag measured 166 MiB that way). The cgroup charges only what the child itself
/// faults in after it joins: its own memory, and the page cache of files it reads first.
pub struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    /// Creates the cgroup (needs root and the v1 memory controller).
    pub fn create(label: &str) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = PathBuf::from(MEMORY_CONTROLLER).join(format!(
            "l7tap-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        Ok(MemoryCgroup { dir })
    }

    /// Makes `command`'s child join this cgroup before it execs.
    pub fn join_before_exec(&self, command: &mut Command) {
        let procs = CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes())
            .expect("a cgroup path has no NUL");
        // SAFETY: the closure runs in the forked child before exec and calls only open, write
        // and close (async-signal-safe, no allocation: the path was made before the fork).
        // Writing "0" to cgroup.procs moves the writing process.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                let error = io::Error::last_os_error();
                libc::close(fd);
                if written != 2 {
                    return Err(error);
                }
                Ok(())
            });
        }
    }

    /// The most memory charged to the cgroup at any time since it was made, bytes.
    pub fn peak_bytes(&self) -> io::Result<u64> {
        let text = std::fs::read_to_string(self.dir.join("memory.max_usage_in_bytes"))?;
        text.trim()
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{text:?}: {e}")))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Once its processes have ended, a v1 cgroup is removed with rmdir (its leftover page
        // cache charges move to the parent).
        let _ = std::fs::remove_dir(&self.dir);
    }
}
