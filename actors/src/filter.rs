//! Which connections a capture keeps (`--protocols`, `--pid`, `--comm`, `--cgroup`,
//! `--app`, `--port`). Decided once per connection, when it opens; the rest of its events are
//! dropped before any parsing.
use l7tap_protocols::{ConnectionInfo, Protocol};

#[derive(Clone, Debug, Default)]
pub struct ConnFilter {
    /// Empty: every protocol.
    pub protocols: Vec<Protocol>,
    pub pids: Vec<u32>,
    /// Process names (as the kernel shows them: at most 15 bytes).
    pub comms: Vec<String>,
    pub cgroups: Vec<u64>,
    /// Application names (see the ingest crate's `app_name.rs`) of the observed process.
    pub apps: Vec<String>,
    /// Server (or client) ports.
    pub ports: Vec<u16>,
}

impl ConnFilter {
    pub fn is_empty(&self) -> bool {
        self.protocols.is_empty()
            && self.pids.is_empty()
            && self.comms.is_empty()
            && self.cgroups.is_empty()
            && self.apps.is_empty()
            && self.ports.is_empty()
    }

    pub fn keeps(&self, protocol: Protocol, info: &ConnectionInfo) -> bool {
        fn any_or<T: PartialEq>(list: &[T], v: &T) -> bool {
            list.is_empty() || list.contains(v)
        }
        any_or(&self.protocols, &protocol)
            && any_or(&self.pids, &info.pid)
            && (self.comms.is_empty()
                || self
                    .comms
                    .iter()
                    .any(|c| c.get(..15).unwrap_or(c) == info.comm))
            && any_or(&self.cgroups, &info.cgroup_id)
            && any_or(&self.apps, &info.identity.app)
            && (self.ports.is_empty()
                || self.ports.contains(&info.server_addr.port())
                || self.ports.contains(&info.client_addr.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use l7tap_protocols::Side;

    fn info(pid: u32, comm: &str, server_port: u16) -> ConnectionInfo {
        ConnectionInfo {
            pid,
            comm: comm.into(),
            cgroup_id: 7,
            side: Side::Client,
            client_addr: "127.0.0.1:40000".parse().unwrap(),
            server_addr: format!("127.0.0.1:{server_port}").parse().unwrap(),
            identity: Default::default(),
            tls: false,
        }
    }

    #[test]
    fn every_given_criterion_must_match() {
        let ch = Protocol::ClickHouse;
        assert!(ConnFilter::default().keeps(ch, &info(1, "x", 9000)));
        let f = ConnFilter {
            protocols: vec![Protocol::ZooKeeper],
            ..Default::default()
        };
        assert!(!f.keeps(ch, &info(1, "x", 9000)));
        let f = ConnFilter {
            comms: vec!["clickhouse-server".into()],
            ports: vec![9000],
            ..Default::default()
        };
        assert!(f.keeps(ch, &info(1, "clickhouse-serv", 9000)));
        assert!(!f.keeps(ch, &info(1, "clickhouse-serv", 9001)));
        assert!(!f.keeps(ch, &info(1, "python3", 9000)));
    }

    #[test]
    fn an_application_filter_matches_the_resolved_application() {
        let ch = Protocol::ClickHouse;
        let f = ConnFilter {
            apps: vec!["nightly.service".into()],
            ..Default::default()
        };
        let mut batch = info(1, "python3", 9000);
        assert!(!f.keeps(ch, &batch));
        batch.identity.app = "nightly.service".into();
        assert!(f.keeps(ch, &batch));
    }
}
