//! The kernel's classifiers, compiled for the host from `probes/bpf/classify_<protocol>.h`
//! (build.rs, `c/classify_host.c`), called on a pcap's stream bytes the way the kernel calls
//! them on a syscall's payload: the first bytes of each in-order chunk, a JVM server's
//! 4-byte length held for the next chunk, a budget of payloads per connection.
use l7tap_abi::events::layout::{CLICKHOUSE_HTTP_MAX_PORTS, ROLE_CLIENT, ROLE_SERVER};
use l7tap_abi::Protocol;

/// Bytes of a payload the classifiers look at (`WINDOW` in classify_window.h).
const WINDOW: usize = 256;
/// Payloads (longer than one byte) a connection direction is classified on before it is
/// ignored: the kernel's `classify_budget` default.
pub const CLASSIFY_BUDGET: u32 = 16;

/// `struct l7_host_verdict` of classify_host.c.
#[repr(C)]
#[derive(Default)]
struct HostVerdict {
    detect: u8,
    protocol: u8,
    role: u8,
    hold_len: u32,
}

extern "C" {
    fn l7_classify(
        window: *const u8,
        n: u32,
        len: u64,
        frame: u64,
        ingress: u8,
        local_port: u16,
        remote_port: u16,
        http_ports: *const u16,
        out: *mut HostVerdict,
    );
}

/// A connection was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detected {
    pub protocol: Protocol,
    /// `enum l7_detect`.
    pub detect: u8,
    /// The receiver of the classified bytes is the server (else the client).
    pub receiver_is_server: bool,
    /// The 4 bytes held from the direction's previous chunk are the start of the classified
    /// frame.
    pub with_held_prefix: bool,
}

/// The classifiers' settings (what the loader sets in the kernel).
#[derive(Clone, Debug)]
pub struct Classifier {
    http_ports: [u16; CLICKHOUSE_HTTP_MAX_PORTS as usize],
}

/// What classification remembers of one direction of a connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectionState {
    held_len: u32,
    attempts: u32,
}

impl DirectionState {
    /// The budget is spent: the direction is not classified any more.
    pub fn gave_up(&self) -> bool {
        self.attempts >= CLASSIFY_BUDGET
    }
}

impl Classifier {
    /// `http_ports`: ClickHouse's HTTP server ports (at most 8, as `--clickhouse-http-ports`).
    pub fn new(http_ports: &[u16]) -> Classifier {
        let mut ports = [0; CLICKHOUSE_HTTP_MAX_PORTS as usize];
        for (slot, port) in ports.iter_mut().zip(http_ports) {
            *slot = *port;
        }
        Classifier { http_ports: ports }
    }

    /// Classifies a chunk of `len` stream bytes (of which `kept` are in the file) that
    /// travelled from `src_port` to `dst_port`, from the receiver's point of view.
    pub fn classify(
        &self,
        state: &mut DirectionState,
        kept: &[u8],
        len: u64,
        src_port: u16,
        dst_port: u16,
    ) -> Option<Detected> {
        if state.gave_up() {
            return None;
        }
        let mut held = std::mem::take(&mut state.held_len);
        if held != 0 && len != u64::from(held) {
            held = 0;
        }
        let mut window = [0u8; WINDOW];
        let mut n = 0;
        if held != 0 {
            window[..4].copy_from_slice(&held.to_be_bytes());
            n = 4;
        }
        let take = kept.len().min(WINDOW - 4);
        window[n..n + take].copy_from_slice(&kept[..take]);
        n += take;
        let mut verdict = HostVerdict::default();
        // SAFETY: `window` holds WINDOW readable bytes (n <= WINDOW), `http_ports` holds
        // CLICKHOUSE_HTTP_MAX_PORTS entries, `verdict` is a valid struct l7_host_verdict
        // (repr(C), same fields); the C function keeps no pointer after it returns.
        unsafe {
            l7_classify(
                window.as_ptr(),
                n as u32,
                len,
                len + if held != 0 { 4 } else { 0 },
                1,
                dst_port,
                src_port,
                self.http_ports.as_ptr(),
                &mut verdict,
            )
        };
        if verdict.hold_len != 0 {
            state.held_len = verdict.hold_len;
            return None;
        }
        let Some(protocol) = Protocol::from_wire_id(verdict.protocol) else {
            // 1-byte payloads (ClickHouse pings) do not use up the budget.
            if len > 1 {
                state.attempts += 1;
            }
            return None;
        };
        let receiver_is_server = match u32::from(verdict.role) {
            ROLE_SERVER => true,
            ROLE_CLIENT => false,
            // A classifier that detects sets the role: a verdict without one is not used.
            _ => return None,
        };
        Some(Detected {
            protocol,
            detect: verdict.detect,
            receiver_is_server,
            with_held_prefix: held != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use l7tap_abi::events::layout::*;

    fn classify(bytes: &[u8], src_port: u16, dst_port: u16) -> Option<Detected> {
        let mut state = DirectionState::default();
        Classifier::new(&[8123]).classify(&mut state, bytes, bytes.len() as u64, src_port, dst_port)
    }

    /// A ZooKeeper request frame: length, xid, opcode, then `body`.
    fn zk_request(xid: i32, op: i32, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
        f.extend_from_slice(&xid.to_be_bytes());
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn zk_path(path: &str) -> Vec<u8> {
        let mut b = (path.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(path.as_bytes());
        b.push(0); // watch flag
        b
    }

    #[test]
    fn a_zookeeper_get_data_request_is_zookeeper_received_by_the_server() {
        let d = classify(&zk_request(7, 4, &zk_path("/zookeeper")), 40000, 2181).unwrap();
        assert_eq!(d.protocol, Protocol::ZooKeeper);
        assert_eq!(u32::from(d.detect), DETECT_ZK_REQUEST);
        assert!(d.receiver_is_server);
    }

    #[test]
    fn an_http_request_counts_only_to_a_clickhouse_http_port() {
        let req = b"POST /?query_id=q1 HTTP/1.1\r\nHost: localhost:8123\r\n\r\n";
        let d = classify(req, 40000, 8123).unwrap();
        assert_eq!(d.protocol, Protocol::ClickHouseHttp);
        assert!(d.receiver_is_server);
        assert_eq!(classify(req, 40000, 8080), None);
        let other = Classifier::new(&[8080]);
        let mut state = DirectionState::default();
        let d = other.classify(&mut state, req, req.len() as u64, 40000, 8080);
        assert_eq!(d.map(|d| d.protocol), Some(Protocol::ClickHouseHttp));
    }

    #[test]
    fn other_protocols_are_refused_and_spend_the_budget() {
        let c = Classifier::new(&[8123]);
        let mut state = DirectionState::default();
        for _ in 0..CLASSIFY_BUDGET {
            assert_eq!(
                c.classify(&mut state, b"*1\r\n$4\r\nPING\r\n", 14, 4000, 6379),
                None
            );
        }
        assert!(state.gave_up());
        let zk = zk_request(7, 4, &zk_path("/a"));
        assert_eq!(
            c.classify(&mut state, &zk, zk.len() as u64, 4000, 2181),
            None
        );
    }

    #[test]
    fn a_length_received_alone_is_held_for_the_next_chunk() {
        let c = Classifier::new(&[8123]);
        let mut state = DirectionState::default();
        let frame = zk_request(7, 4, &zk_path("/zookeeper"));
        assert_eq!(c.classify(&mut state, &frame[..4], 4, 40000, 2181), None);
        let body = &frame[4..];
        let d = c
            .classify(&mut state, body, body.len() as u64, 40000, 2181)
            .unwrap();
        assert_eq!(d.protocol, Protocol::ZooKeeper);
        assert!(d.with_held_prefix);
    }
}
