//! Reads what `/proc` says of a process at a connection's open (its name, executable, every
//! cgroup line, the TCP ports it listens on), cached by pid and start time: a short-lived
//! client exits within milliseconds, so it is read at once, and a long-lived one only once.
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `/proc` showed of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Clock ticks since boot at which the process started (`stat` field 22): with the pid,
    /// what tells a process from a later one that reuses its pid.
    pub start_time: u64,
    pub comm: String,
    /// `argv[0]` (empty for kernel threads or when unreadable).
    pub argv0: String,
    pub exe: String,
    /// `/proc/PID/cgroup` as read.
    pub cgroup_file: String,
    /// TCP ports it listens on (IPv4 and IPv6), ascending.
    pub listening_ports: Vec<u16>,
}

/// The source of [`ProcessFacts`]: `/proc`, or a table in tests.
pub trait ProcessSource {
    /// The process's start time; none when it no longer exists.
    fn start_time(&mut self, pid: u32) -> Option<u64>;
    /// Everything else; none when it exited meanwhile.
    fn facts(&mut self, pid: u32, start_time: u64) -> Option<ProcessFacts>;
}

/// Reads `/proc` (or another procfs mount, for tests).
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        ProcFs {
            root: PathBuf::from("/proc"),
        }
    }
}

/// Field 22 (starttime) of `/proc/PID/stat`; the name field may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn start_time_of_stat(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the name: starttime is the 20th of them.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Socket inodes in LISTEN state (`st` 0A) of a `/proc/net/tcp{,6}` table, with their ports.
pub fn listening_sockets(table: &str) -> impl Iterator<Item = (u64, u16)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        if *state != "0A" {
            return None;
        }
        let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        Some((inode.parse().ok()?, port))
    })
}

impl ProcFs {
    pub fn at(root: PathBuf) -> Self {
        ProcFs { root }
    }

    fn read(&self, pid: u32, name: &str) -> Option<String> {
        fs::read_to_string(self.root.join(pid.to_string()).join(name)).ok()
    }

    /// TCP ports on which one of the process's sockets listens. Only processes holding a
    /// socket read the (namespace's) tables.
    fn listening_ports(&self, pid: u32) -> Vec<u16> {
        let dir = self.root.join(pid.to_string());
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            return Vec::new();
        };
        let inodes: std::collections::HashSet<u64> = fds
            .filter_map(|fd| {
                let target = fs::read_link(fd.ok()?.path()).ok()?;
                let target = target.to_str()?;
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect();
        if inodes.is_empty() {
            return Vec::new();
        }
        let mut ports: Vec<u16> = self
            .listening_sockets(pid)
            .into_iter()
            .filter(|(inode, _)| inodes.contains(inode))
            .map(|(_, port)| port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// (inode, port) of the TCP sockets listening in the network namespace of `pid`: from a
    /// sock_diag dump when that is l7tap's own namespace of the live `/proc`, else (another
    /// namespace, or the dump refused) from the namespace's `/proc/PID/net/tcp{,6}`.
    fn listening_sockets(&self, pid: u32) -> Vec<(u64, u16)> {
        if self.shares_network_namespace(pid) {
            let dumped: std::io::Result<Vec<_>> = [libc::AF_INET, libc::AF_INET6]
                .into_iter()
                .map(crate::sock_diag::listening_sockets)
                .collect();
            if let Ok(tables) = dumped {
                return tables.into_iter().flatten().collect();
            }
        }
        let dir = self.root.join(pid.to_string());
        ["net/tcp", "net/tcp6"]
            .iter()
            .filter_map(|table| fs::read_to_string(dir.join(table)).ok())
            .flat_map(|table| listening_sockets(&table).collect::<Vec<_>>())
            .collect()
    }

    /// `pid` is in l7tap's network namespace, and this is the live `/proc`.
    fn shares_network_namespace(&self, pid: u32) -> bool {
        if self.root != Path::new("/proc") {
            return false;
        }
        let theirs = fs::read_link(self.root.join(pid.to_string()).join("ns/net"));
        let ours = fs::read_link("/proc/self/ns/net");
        matches!((theirs, ours), (Ok(a), Ok(b)) if a == b)
    }
}

impl ProcessSource for ProcFs {
    fn start_time(&mut self, pid: u32) -> Option<u64> {
        start_time_of_stat(&self.read(pid, "stat")?)
    }

    fn facts(&mut self, pid: u32, start_time: u64) -> Option<ProcessFacts> {
        let comm = self.read(pid, "comm")?.trim_end_matches('\n').to_string();
        let cgroup_file = self.read(pid, "cgroup").unwrap_or_default();
        let exe = fs::read_link(self.root.join(pid.to_string()).join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let argv0 = fs::read(self.root.join(pid.to_string()).join("cmdline"))
            .ok()
            .and_then(|b| {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                String::from_utf8(b[..end].to_vec()).ok()
            })
            .unwrap_or_default();
        let listening_ports = self.listening_ports(pid);
        // The process may have exited while it was read, and its pid been reused: then what
        // was read is not all of one process.
        (self.start_time(pid) == Some(start_time)).then_some(ProcessFacts {
            start_time,
            comm,
            argv0,
            exe,
            cgroup_file,
            listening_ports,
        })
    }
}

/// Entries kept before the cache is emptied (a bound, not a working set: entries are small).
const CACHE_LIMIT: usize = 16_384;

/// [`ProcessFacts`] by pid, valid while the pid's start time is the same.
pub struct ProcessCache<S> {
    source: S,
    by_pid: HashMap<u32, Arc<ProcessFacts>>,
}

impl<S: ProcessSource> ProcessCache<S> {
    pub fn new(source: S) -> Self {
        ProcessCache {
            source,
            by_pid: HashMap::new(),
        }
    }

    /// The process `pid` now; none when it has exited.
    pub fn get(&mut self, pid: u32) -> Option<Arc<ProcessFacts>> {
        let start_time = self.source.start_time(pid)?;
        if let Some(facts) = self.by_pid.get(&pid) {
            if facts.start_time == start_time {
                return Some(facts.clone());
            }
        }
        let facts = Arc::new(self.source.facts(pid, start_time)?);
        if self.by_pid.len() >= CACHE_LIMIT {
            self.by_pid.clear();
        }
        self.by_pid.insert(pid, facts.clone());
        Some(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_time_of_stat(stat), Some(987654));
        assert_eq!(start_time_of_stat("1 (x) S"), None);
    }

    #[test]
    fn listening_sockets_are_the_rows_in_listen_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000   105        0 4242 1 0000 100 0 0 10 0\n   1: 0100007F:2328 0100007F:A000 01 00000000:00000000 00:00000000 00000000   105        0 4343 1 0000 100 0 0 10 0\n";
        assert_eq!(
            listening_sockets(table).collect::<Vec<_>>(),
            vec![(4242, 9000)]
        );
    }

    #[test]
    fn this_process_is_read_from_proc_and_cached_by_start_time() {
        let mut cache = ProcessCache::new(ProcFs::default());
        let pid = std::process::id();
        let facts = cache.get(pid).expect("this process exists");
        assert!(facts.cgroup_file.contains("0::"), "{}", facts.cgroup_file);
        assert!(!facts.exe.is_empty());
        assert!(Arc::ptr_eq(&facts, &cache.get(pid).unwrap()));
        // A listener of this process is found among its sockets.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ports = ProcFs::default().listening_ports(pid);
        assert!(ports.contains(&port), "{ports:?} lacks {port}");
    }
}
