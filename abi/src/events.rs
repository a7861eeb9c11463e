//! Decoding of the events the kernel probes send, from their raw bytes.
//!
//! Field offsets come from `c/l7tap_events.h` through the generated `layout` module (see
//! build.rs): the C header is the only definition of the layout. Decoding reads fields at
//! those offsets, so no `repr(C)` mirror exists to drift and no unsafe cast is needed.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Constants and the [`Protocol`] enum generated from the C header.
#[allow(clippy::all)]
pub mod layout {
    include!(concat!(env!("OUT_DIR"), "/layout.rs"));
}

/// Identity of a connection: a reused fd gets a new `start_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub tgid: u32,
    pub fd: i32,
    pub start_ns: u64,
}

pub use layout::Protocol;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Unknown,
    Client,
    Server,
}

/// Egress: the observed process sent the bytes; ingress: it received them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    Egress,
    Ingress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Data,
    Open,
    Close,
    Unknown(u8),
}

/// Fields every event starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: EventKind,
    pub ts_ns: u64,
    pub conn: ConnId,
    pub tid: u32,
    /// The classified protocol; none when the event names a wire id this build does not
    /// know (an unclassified connection's close, or a recording from a newer build).
    pub protocol: Option<Protocol>,
    pub role: Role,
    pub flow: Flow,
}

/// One syscall's (or iovec segment's) bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataEvent<'a> {
    pub header: Header,
    /// Bytes the syscall moved in this segment (for a tail: in this last part of it).
    pub total: u64,
    pub segment: u16,
    /// The event holds the last bytes of a segment whose middle was cut; the event just
    /// before it (same connection and timestamp) holds the segment's first bytes and counts
    /// the middle as cut.
    pub tail: bool,
    /// The payload is TLS plaintext of an encrypted connection (`L7_DATA_TLS`).
    pub tls: bool,
    /// The captured prefix (of a tail: the whole tail, or nothing when it was unreadable);
    /// `total - payload.len()` bytes were cut.
    pub payload: &'a [u8],
}

impl DataEvent<'_> {
    pub fn cut(&self) -> u64 {
        self.total.saturating_sub(self.payload.len() as u64)
    }
}

/// A connection was classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenEvent {
    pub header: Header,
    pub cgroup_id: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// How it was detected (`enum l7_detect`).
    pub detect: u8,
    /// The connection is encrypted: its payload is TLS plaintext read from the TLS library
    /// (`L7_OPEN_TLS`).
    pub tls: bool,
    pub comm: String,
    /// Inode of the socket's network namespace; 0 when unknown (events recorded before the
    /// field existed are shorter and decode with 0).
    pub netns: u32,
    /// The start of the process's argv[0] (up to 31 bytes); empty when unknown.
    pub argv0: String,
}

impl OpenEvent {
    /// What the kernel recognised; `*_hello`/`*_connect` mean the connection was seen from
    /// its start, the others that it was already open (classified mid-stream).
    pub fn detected_by(&self) -> &'static str {
        use layout::*;
        match self.detect as u32 {
            DETECT_CH_HELLO => "clickhouse_hello",
            DETECT_CH_QUERY => "clickhouse_query",
            DETECT_ZK_CONNECT => "zookeeper_connect",
            DETECT_ZK_REQUEST => "zookeeper_request",
            DETECT_ZK_REPLY => "zookeeper_reply",
            DETECT_ZK_4LW => "zookeeper_four_letter_word",
            DETECT_CH_HTTP_REQUEST => "clickhouse_http_request",
            DETECT_CH_HTTP_RESPONSE => "clickhouse_http_response",
            _ => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Data(DataEvent<'a>),
    Open(OpenEvent),
    Close(Header),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event of {len} bytes is shorter than its {need}-byte layout")]
    Short { len: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("data event claims {captured} captured bytes, {available} present")]
    PayloadMismatch { captured: usize, available: usize },
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes(b[off..off + 2].try_into().unwrap())
}

fn need(b: &[u8], n: usize) -> Result<(), EventError> {
    if b.len() < n {
        Err(EventError::Short {
            len: b.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

/// A raw event's timestamp alone, as [`peek_header`] reads it (the same length check): what
/// an actor needs to hold an event, without building the whole header.
#[inline]
pub fn peek_ts(b: &[u8]) -> Result<u64, EventError> {
    need(b, layout::HEADER_SIZE)?;
    Ok(u64_at(b, layout::HDR_TS_NS))
}

/// Kind byte of a raw event, for routing without a full decode.
pub fn peek_header(b: &[u8]) -> Result<Header, EventError> {
    use layout::*;
    need(b, HEADER_SIZE)?;
    Ok(Header {
        kind: match b[HDR_KIND] as u32 {
            EVENT_DATA => EventKind::Data,
            EVENT_OPEN => EventKind::Open,
            EVENT_CLOSE => EventKind::Close,
            other => EventKind::Unknown(other as u8),
        },
        ts_ns: u64_at(b, HDR_TS_NS),
        conn: ConnId {
            tgid: u32_at(b, HDR_CONN_TGID),
            fd: u32_at(b, HDR_CONN_FD) as i32,
            start_ns: u64_at(b, HDR_CONN_START_NS),
        },
        tid: u32_at(b, HDR_TID),
        protocol: Protocol::from_wire_id(b[HDR_PROTOCOL]),
        role: match b[HDR_ROLE] as u32 {
            ROLE_CLIENT => Role::Client,
            ROLE_SERVER => Role::Server,
            _ => Role::Unknown,
        },
        flow: if b[HDR_DIRECTION] as u32 == DIR_INGRESS {
            Flow::Ingress
        } else {
            Flow::Egress
        },
    })
}

fn addr(family: u16, raw: &[u8], port: u16) -> SocketAddr {
    let ip = if family == libc::AF_INET as u16 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(&raw[..16]).unwrap());
        // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d: report them as IPv4.
        v6.to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6))
    };
    SocketAddr::new(ip, port)
}

/// Decodes one raw event (perf records may carry trailing padding; it is ignored).
pub fn decode(b: &[u8]) -> Result<Event<'_>, EventError> {
    use layout::*;
    let header = peek_header(b)?;
    match header.kind {
        EventKind::Data => {
            need(b, DATA_PAYLOAD)?;
            let captured = u32_at(b, DATA_CAPTURED) as usize;
            let available = b.len() - DATA_PAYLOAD;
            if captured > available || captured > MAX_PAYLOAD as usize {
                return Err(EventError::PayloadMismatch {
                    captured,
                    available,
                });
            }
            Ok(Event::Data(DataEvent {
                header,
                total: u64_at(b, DATA_TOTAL),
                segment: u16_at(b, DATA_SEGMENT),
                tail: u32::from(u16_at(b, DATA_FLAGS)) & DATA_TAIL != 0,
                tls: u32::from(u16_at(b, DATA_FLAGS)) & DATA_TLS != 0,
                payload: &b[DATA_PAYLOAD..DATA_PAYLOAD + captured],
            }))
        }
        EventKind::Open => {
            // Open events recorded before `netns` existed end after `comm`.
            need(b, OPEN_COMM + 16)?;
            let family = u16_at(b, OPEN_FAMILY);
            let comm_raw = &b[OPEN_COMM..OPEN_COMM + 16];
            let end = comm_raw.iter().position(|&c| c == 0).unwrap_or(16);
            Ok(Event::Open(OpenEvent {
                header,
                cgroup_id: u64_at(b, OPEN_CGROUP_ID),
                local: addr(
                    family,
                    &b[OPEN_LOCAL_ADDR..OPEN_LOCAL_ADDR + 16],
                    u16_at(b, OPEN_LOCAL_PORT),
                ),
                remote: addr(
                    family,
                    &b[OPEN_REMOTE_ADDR..OPEN_REMOTE_ADDR + 16],
                    u16_at(b, OPEN_REMOTE_PORT),
                ),
                detect: b[OPEN_DETECT],
                tls: u32::from(b[OPEN_FLAGS]) & OPEN_TLS != 0,
                comm: String::from_utf8_lossy(&comm_raw[..end]).into_owned(),
                netns: if b.len() >= OPEN_NETNS + 4 {
                    u32_at(b, OPEN_NETNS)
                } else {
                    0
                },
                argv0: b
                    .get(OPEN_ARGV0..OPEN_ARGV0 + 32)
                    .map(|raw| {
                        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                        String::from_utf8_lossy(&raw[..end]).into_owned()
                    })
                    .unwrap_or_default(),
            }))
        }
        EventKind::Close => Ok(Event::Close(header)),
        EventKind::Unknown(other) => Err(EventError::UnknownKind(other)),
    }
}

/// Builders for raw events, the exact bytes the kernel sends; used by tests and benches
/// to make streams without a kernel.
pub mod build {
    use super::layout::*;
    use super::*;

    fn header(buf: &mut [u8], kind: u32, h: &Header) {
        buf[HDR_TS_NS..HDR_TS_NS + 8].copy_from_slice(&h.ts_ns.to_ne_bytes());
        buf[HDR_CONN_START_NS..HDR_CONN_START_NS + 8]
            .copy_from_slice(&h.conn.start_ns.to_ne_bytes());
        buf[HDR_CONN_TGID..HDR_CONN_TGID + 4].copy_from_slice(&h.conn.tgid.to_ne_bytes());
        buf[HDR_CONN_FD..HDR_CONN_FD + 4].copy_from_slice(&h.conn.fd.to_ne_bytes());
        buf[HDR_TID..HDR_TID + 4].copy_from_slice(&h.tid.to_ne_bytes());
        buf[HDR_KIND] = kind as u8;
        buf[HDR_PROTOCOL] = h.protocol.map_or(0, Protocol::wire_id);
        buf[HDR_ROLE] = match h.role {
            Role::Client => ROLE_CLIENT as u8,
            Role::Server => ROLE_SERVER as u8,
            Role::Unknown => 0,
        };
        buf[HDR_DIRECTION] = match h.flow {
            Flow::Egress => DIR_EGRESS as u8,
            Flow::Ingress => DIR_INGRESS as u8,
        };
    }

    pub fn data(h: &Header, total: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; DATA_PAYLOAD + payload.len()];
        header(&mut buf, EVENT_DATA, h);
        buf[DATA_TOTAL..DATA_TOTAL + 8].copy_from_slice(&total.to_ne_bytes());
        buf[DATA_CAPTURED..DATA_CAPTURED + 4]
            .copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        buf[DATA_PAYLOAD..].copy_from_slice(payload);
        buf
    }

    /// The tail event of a cut segment: its last bytes, `payload`.
    pub fn tail(h: &Header, payload: &[u8]) -> Vec<u8> {
        let mut buf = data(h, payload.len() as u64, payload);
        buf[DATA_FLAGS..DATA_FLAGS + 2].copy_from_slice(&(DATA_TAIL as u16).to_ne_bytes());
        buf
    }

    pub fn open(h: &Header, local: SocketAddr, remote: SocketAddr, comm: &str) -> Vec<u8> {
        open_in_netns(h, local, remote, comm, 0, "")
    }

    /// An open event whose socket lives in the network namespace `netns`, of a process
    /// whose argv[0] starts with `argv0`.
    pub fn open_in_netns(
        h: &Header,
        local: SocketAddr,
        remote: SocketAddr,
        comm: &str,
        netns: u32,
        argv0: &str,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; OPEN_SIZE];
        header(&mut buf, EVENT_OPEN, h);
        let family = if local.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        } as u16;
        buf[OPEN_FAMILY..OPEN_FAMILY + 2].copy_from_slice(&family.to_ne_bytes());
        buf[OPEN_LOCAL_PORT..OPEN_LOCAL_PORT + 2].copy_from_slice(&local.port().to_ne_bytes());
        buf[OPEN_REMOTE_PORT..OPEN_REMOTE_PORT + 2].copy_from_slice(&remote.port().to_ne_bytes());
        for (at, a) in [(OPEN_LOCAL_ADDR, local), (OPEN_REMOTE_ADDR, remote)] {
            match a.ip() {
                IpAddr::V4(v4) => buf[at..at + 4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => buf[at..at + 16].copy_from_slice(&v6.octets()),
            }
        }
        let c = comm.as_bytes();
        let n = c.len().min(15);
        buf[OPEN_COMM..OPEN_COMM + n].copy_from_slice(&c[..n]);
        buf[OPEN_NETNS..OPEN_NETNS + 4].copy_from_slice(&netns.to_ne_bytes());
        let a = argv0.as_bytes();
        let n = a.len().min(31);
        buf[OPEN_ARGV0..OPEN_ARGV0 + n].copy_from_slice(&a[..n]);
        buf
    }

    /// The open event of an encrypted connection (`L7_OPEN_TLS`).
    pub fn open_tls(h: &Header, local: SocketAddr, remote: SocketAddr, comm: &str) -> Vec<u8> {
        let mut buf = open(h, local, remote, comm);
        buf[OPEN_FLAGS] = OPEN_TLS as u8;
        buf
    }

    pub fn close(h: &Header) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_SIZE];
        header(&mut buf, EVENT_CLOSE, h);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> Header {
        Header {
            kind: EventKind::Data,
            ts_ns: 42,
            conn: ConnId {
                tgid: 7,
                fd: 9,
                start_ns: 5,
            },
            tid: 8,
            protocol: Some(Protocol::ZooKeeper),
            role: Role::Server,
            flow: Flow::Ingress,
        }
    }

    #[test]
    fn data_event_round_trips_with_cut_bytes() {
        let raw = build::data(&hdr(), 10, b"abcd");
        let Event::Data(d) = decode(&raw).unwrap() else {
            panic!("not data")
        };
        assert_eq!(d.header, hdr());
        assert_eq!(d.payload, b"abcd");
        assert_eq!(d.cut(), 6);
        assert!(!d.tail);
    }

    #[test]
    fn peek_ts_reads_what_peek_header_reads_and_refuses_what_it_refuses() {
        let raw = build::data(&hdr(), 10, b"abcd");
        assert_eq!(peek_ts(&raw).unwrap(), peek_header(&raw).unwrap().ts_ns);
        assert_eq!(peek_ts(&raw).unwrap(), 42);
        let short = &raw[..layout::HEADER_SIZE - 1];
        assert!(peek_header(short).is_err());
        assert!(peek_ts(short).is_err());
    }

    #[test]
    fn tail_event_is_flagged() {
        let raw = build::tail(&hdr(), b"xyz");
        let Event::Data(d) = decode(&raw).unwrap() else {
            panic!("not data")
        };
        assert!(d.tail);
        assert!(!d.tls);
        assert_eq!((d.payload, d.total, d.cut()), (&b"xyz"[..], 3, 0));
    }

    #[test]
    fn tls_data_event_is_flagged_and_may_be_a_tail_too() {
        let mut raw = build::tail(&hdr(), b"xyz");
        let flags = (layout::DATA_TAIL | layout::DATA_TLS) as u16;
        raw[layout::DATA_FLAGS..layout::DATA_FLAGS + 2].copy_from_slice(&flags.to_ne_bytes());
        let Event::Data(d) = decode(&raw).unwrap() else {
            panic!("not data")
        };
        assert!(d.tail && d.tls);
    }

    #[test]
    fn perf_padding_after_the_payload_is_ignored() {
        let mut raw = build::data(&hdr(), 4, b"abcd");
        raw.extend_from_slice(&[0, 0, 0, 0]);
        let Event::Data(d) = decode(&raw).unwrap() else {
            panic!("not data")
        };
        assert_eq!(d.payload, b"abcd");
    }

    #[test]
    fn open_event_maps_dual_stack_addresses_to_ipv4() {
        let local: SocketAddr = "[::ffff:127.0.0.1]:2181".parse().unwrap();
        let remote: SocketAddr = "[::1]:40000".parse().unwrap();
        let raw = build::open(&hdr(), local, remote, "java");
        let Event::Open(o) = decode(&raw).unwrap() else {
            panic!("not open")
        };
        assert_eq!(o.local, "127.0.0.1:2181".parse().unwrap());
        assert_eq!(o.remote, remote);
        assert_eq!(o.comm, "java");
        assert!(!o.tls);
        assert_eq!(o.netns, 0);
    }

    #[test]
    fn open_event_carries_its_network_namespace_and_old_shorter_ones_decode() {
        let local: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let remote: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let raw = build::open_in_netns(
            &hdr(),
            local,
            remote,
            "clickhouse-serv",
            4026531840,
            "/usr/bin/clickhouse-server",
        );
        let Event::Open(o) = decode(&raw).unwrap() else {
            panic!("not open")
        };
        assert_eq!(o.netns, 4026531840);
        assert_eq!(o.argv0, "/usr/bin/clickhouse-server");
        // An open event written before the field existed ends after `comm`.
        let Event::Open(old) = decode(&raw[..layout::OPEN_COMM + 16]).unwrap() else {
            panic!("not open")
        };
        assert_eq!((old.netns, old.comm.as_str()), (0, "clickhouse-serv"));
        assert_eq!(old.argv0, "");
    }

    #[test]
    fn open_event_carries_the_tls_flag() {
        let a: SocketAddr = "127.0.0.1:9440".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let Event::Open(o) = decode(&build::open_tls(&hdr(), a, b, "clickhouse-serv")).unwrap()
        else {
            panic!("not open")
        };
        assert!(o.tls);
        assert_eq!((o.local, o.remote), (a, b));
    }

    #[test]
    fn malformed_events_are_errors_not_panics() {
        assert!(matches!(decode(&[0; 3]), Err(EventError::Short { .. })));
        let mut raw = build::data(&hdr(), 4, b"abcd");
        raw.truncate(raw.len() - 2);
        assert!(matches!(
            decode(&raw),
            Err(EventError::PayloadMismatch { .. })
        ));
        let mut raw = build::close(&hdr());
        raw[layout::HDR_KIND] = 99;
        assert_eq!(decode(&raw), Err(EventError::UnknownKind(99)));
    }
}
