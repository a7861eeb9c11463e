//! Identities at connection open, and the join of both ends of a local TCP connection: a
//! live capture's router hands every open event here and sends the frames it returns.
//!
//! Both ends of a loopback (or same-node container) connection are sockets of this host,
//! each seen as its own connection with the addresses swapped. The join key is the socket's
//! network namespace with both addresses, so equal addresses in different namespaces are
//! never joined. The end opened second learns its peer at once; the end opened first learns
//! it by a second frame, sent when its peer opens.
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use l7tap_abi::events::{ConnId, OpenEvent, Role};

use crate::app_name::{application_name, chosen_cgroup_path, parse_cgroup_file, process_name};
use crate::identity::{IdentityFrame, PeerIdentity, ProcessIdentity};
use crate::procfs::{ProcessCache, ProcessSource};

/// What the router asks at each open and close (a trait so the router need not know the
/// process source).
pub trait ConnectionIdentities: Send {
    /// The identity frames to send for a newly opened connection (its own, first).
    fn opened(&mut self, open: &OpenEvent, frames: &mut Vec<IdentityFrame>);
    fn closed(&mut self, conn: &ConnId);
}

type EndKey = (u32, SocketAddr, SocketAddr);

struct OpenEnd {
    conn: ConnId,
    own: Arc<ProcessIdentity>,
}

/// Open connections beyond which the join table is emptied (closes that were never seen).
const OPEN_LIMIT: usize = 1 << 17;

pub struct Identities<S> {
    processes: ProcessCache<S>,
    ends: HashMap<EndKey, OpenEnd>,
    keys: HashMap<ConnId, EndKey>,
    /// Ports each process served watched connections on, by (protocol wire id, port): the
    /// port a process that also listens is named by.
    served: HashMap<u32, BTreeSet<(u8, u16)>>,
    /// Ports that name no process when it listens on others (ClickHouse's HTTP ports: a
    /// server is named by its native port).
    secondary_ports: Vec<u16>,
}

impl<S: ProcessSource> Identities<S> {
    pub fn new(source: S) -> Self {
        Identities {
            processes: ProcessCache::new(source),
            ends: HashMap::new(),
            keys: HashMap::new(),
            served: HashMap::new(),
            secondary_ports: Vec::new(),
        }
    }

    /// Ports not to name a listening process by unless it listens on no other.
    pub fn naming_no_process_by(mut self, ports: &[u16]) -> Self {
        self.secondary_ports = ports.to_vec();
        self
    }

    /// The port a listening process is named by, among its listening ports less the
    /// secondary ones (unless those are all): one it served a watched protocol on (the
    /// protocol first in the list, then the lowest port), else its lowest. A name must not
    /// change with what was seen first, so the secondary ports are left out of both.
    fn naming_port(&self, pid: u32, listening: &[u16]) -> Option<u16> {
        let primary: Vec<u16> = listening
            .iter()
            .copied()
            .filter(|port| !self.secondary_ports.contains(port))
            .collect();
        let candidates = if primary.is_empty() {
            listening
        } else {
            &primary
        };
        let served = self.served.get(&pid).into_iter().flatten();
        served
            .map(|&(_, port)| port)
            .find(|port| candidates.contains(port))
            .or(candidates.first().copied())
    }

    /// `kernel_argv0`: the start of argv[0] as the probe read it (the process may have
    /// exited since, or be a zombie whose cmdline reads empty).
    fn resolve(&mut self, pid: u32, kernel_comm: &str, kernel_argv0: &str) -> ProcessIdentity {
        let Some(facts) = self.processes.get(pid) else {
            let process = process_name(kernel_comm, kernel_argv0);
            return ProcessIdentity {
                pid,
                resolved: false,
                app: process.clone(),
                process,
                exe: String::new(),
                cgroup: String::new(),
            };
        };
        let lines = parse_cgroup_file(&facts.cgroup_file);
        let argv0 = if facts.argv0.is_empty() {
            kernel_argv0
        } else {
            &facts.argv0
        };
        let process = process_name(&facts.comm, argv0);
        let port = self.naming_port(pid, &facts.listening_ports);
        ProcessIdentity {
            pid,
            resolved: true,
            app: application_name(&lines, &process, port),
            process,
            exe: facts.exe.clone(),
            cgroup: chosen_cgroup_path(&lines).to_string(),
        }
    }
}

fn peer_of(own: &ProcessIdentity) -> PeerIdentity {
    PeerIdentity {
        pid: own.pid,
        process: own.process.clone(),
        app: own.app.clone(),
    }
}

impl<S: ProcessSource + Send> ConnectionIdentities for Identities<S> {
    fn opened(&mut self, open: &OpenEvent, frames: &mut Vec<IdentityFrame>) {
        let conn = open.header.conn;
        if let (Role::Server, Some(protocol)) = (open.header.role, open.header.protocol) {
            self.served
                .entry(conn.tgid)
                .or_default()
                .insert((protocol.wire_id(), open.local.port()));
        }
        let own = Arc::new(self.resolve(conn.tgid, &open.comm, &open.argv0));
        let key = (open.netns, open.local, open.remote);
        let peer = self.ends.get(&(open.netns, open.remote, open.local));
        frames.push(IdentityFrame {
            conn,
            own: (*own).clone(),
            peer: peer.map(|p| peer_of(&p.own)),
        });
        if let Some(peer) = peer {
            frames.push(IdentityFrame {
                conn: peer.conn,
                own: (*peer.own).clone(),
                peer: Some(peer_of(&own)),
            });
        }
        if self.ends.len() >= OPEN_LIMIT {
            self.ends.clear();
            self.keys.clear();
        }
        if let Some(replaced) = self.ends.insert(key, OpenEnd { conn, own }) {
            self.keys.remove(&replaced.conn);
        }
        self.keys.insert(conn, key);
    }

    fn closed(&mut self, conn: &ConnId) {
        if let Some(key) = self.keys.remove(conn) {
            if self.ends.get(&key).is_some_and(|end| end.conn == *conn) {
                self.ends.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::ProcessFacts;
    use l7tap_abi::events::{EventKind, Flow, Header};
    use l7tap_abi::Protocol;

    /// Processes by pid; a pid not in the table has exited.
    struct Table(HashMap<u32, ProcessFacts>);

    impl ProcessSource for Table {
        fn start_time(&mut self, pid: u32) -> Option<u64> {
            self.0.get(&pid).map(|f| f.start_time)
        }
        fn facts(&mut self, pid: u32, _start_time: u64) -> Option<ProcessFacts> {
            self.0.get(&pid).cloned()
        }
    }

    fn facts(comm: &str, cgroup: &str, listening: &[u16]) -> ProcessFacts {
        ProcessFacts {
            start_time: 1,
            comm: comm.into(),
            argv0: comm.into(),
            exe: format!("/usr/bin/{comm}"),
            cgroup_file: cgroup.into(),
            listening_ports: listening.to_vec(),
        }
    }

    fn open(tgid: u32, role: Role, local: &str, remote: &str, netns: u32) -> OpenEvent {
        OpenEvent {
            header: Header {
                kind: EventKind::Open,
                ts_ns: 1,
                conn: ConnId {
                    tgid,
                    fd: 5,
                    start_ns: 1,
                },
                tid: tgid,
                protocol: Some(Protocol::ClickHouse),
                role,
                flow: Flow::Egress,
            },
            cgroup_id: 1,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            detect: 0,
            comm: "clickhouse-clie".into(),
            netns,
            argv0: "clickhouse-client".into(),
            tls: false,
        }
    }

    fn identities() -> Identities<Table> {
        Identities::new(Table(HashMap::from([
            (10, facts("batch", "0::/nightly.service\n", &[])),
            (20, facts("clickhouse-serv", "0::/\n", &[8123, 9000])),
        ])))
    }

    #[test]
    fn both_ends_of_a_loopback_connection_learn_each_other() {
        let mut ids = identities();
        let mut frames = Vec::new();
        let client = open(10, Role::Client, "127.0.0.1:40000", "127.0.0.1:9000", 7);
        ids.opened(&client, &mut frames);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].own.app, "nightly.service");
        assert_eq!(frames[0].peer, None);
        frames.clear();
        let server = open(20, Role::Server, "127.0.0.1:9000", "127.0.0.1:40000", 7);
        ids.opened(&server, &mut frames);
        assert_eq!(frames.len(), 2);
        // The server's end: its own app (named by the port it serves) and its client's.
        assert_eq!(frames[0].conn, server.header.conn);
        assert_eq!(frames[0].own.app, "clickhouse-serv :9000");
        let peer = frames[0].peer.as_ref().unwrap();
        assert_eq!((peer.pid, peer.app.as_str()), (10, "nightly.service"));
        // The client's end learns its server.
        assert_eq!(frames[1].conn, client.header.conn);
        assert_eq!(frames[1].own.app, "nightly.service");
        assert_eq!(
            frames[1].peer.as_ref().unwrap().app,
            "clickhouse-serv :9000"
        );
    }

    #[test]
    fn ends_in_other_namespaces_or_closed_are_not_joined() {
        let mut ids = identities();
        let mut frames = Vec::new();
        ids.opened(
            &open(10, Role::Client, "127.0.0.1:40000", "127.0.0.1:9000", 7),
            &mut frames,
        );
        ids.opened(
            &open(20, Role::Server, "127.0.0.1:9000", "127.0.0.1:40000", 8),
            &mut frames,
        );
        assert!(frames.iter().all(|f| f.peer.is_none()));
        frames.clear();
        let client = open(10, Role::Client, "127.0.0.1:40001", "127.0.0.1:9000", 7);
        ids.opened(&client, &mut frames);
        ids.closed(&client.header.conn);
        ids.opened(
            &open(20, Role::Server, "127.0.0.1:9000", "127.0.0.1:40001", 7),
            &mut frames,
        );
        assert!(frames.iter().all(|f| f.peer.is_none()));
    }

    #[test]
    fn an_exited_process_is_named_by_what_the_kernel_read_and_says_it_was_not_resolved() {
        let mut ids = identities();
        let mut frames = Vec::new();
        ids.opened(
            &open(99, Role::Client, "127.0.0.1:40000", "127.0.0.1:9000", 7),
            &mut frames,
        );
        assert!(!frames[0].own.resolved);
        // comm is cut at 15 bytes; the probe's argv[0] completes it.
        assert_eq!(frames[0].own.app, "clickhouse-client");
        assert_eq!(frames[0].own.process, "clickhouse-client");
    }

    #[test]
    fn a_listening_process_not_yet_seen_serving_is_named_by_its_lowest_primary_port() {
        let mut frames = Vec::new();
        let zookeeper_session = open(20, Role::Client, "127.0.0.1:50000", "127.0.0.1:2181", 7);
        identities().opened(&zookeeper_session, &mut frames);
        assert_eq!(frames[0].own.app, "clickhouse-serv :8123");
        frames.clear();
        let mut ids = identities().naming_no_process_by(&[8123]);
        ids.opened(&zookeeper_session, &mut frames);
        assert_eq!(frames[0].own.app, "clickhouse-serv :9000");
        // Serving on the HTTP port later does not rename it.
        let http = open(20, Role::Server, "127.0.0.1:8123", "127.0.0.1:50001", 7);
        ids.opened(&http, &mut frames);
        assert_eq!(frames.last().unwrap().own.app, "clickhouse-serv :9000");
    }
}
