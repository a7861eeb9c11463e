//! The records parsers produce: one per ClickHouse query or ZooKeeper request (or watch
//! notification). Connection facts (pid, comm, addresses, side) are added by the actor.
use std::borrow::Cow;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    ClickHouse,
    ZooKeeper,
}

impl Protocol {
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::ClickHouse => "clickhouse",
            Protocol::ZooKeeper => "zookeeper",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Ok,
    /// The server answered with an error (ClickHouse Exception, ZooKeeper error code != 0).
    Error,
    /// The client cancelled it (ClickHouse Cancel packet).
    Cancelled,
    /// The connection closed, or the parser lost its position, before the answer was seen.
    Incomplete,
}

impl Status {
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Cancelled => "cancelled",
            Status::Incomplete => "incomplete",
        }
    }
}

/// ClickHouse query kind from ClientInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// Sent by a client (`initial`).
    Initial,
    /// Sent by a server on behalf of another query (`secondary`, e.g. a Distributed table).
    Secondary,
    /// Not known (ClientInfo absent or the kind byte was 0).
    Unknown,
}

impl QueryKind {
    pub const fn name(self) -> &'static str {
        match self {
            QueryKind::Initial => "initial",
            QueryKind::Secondary => "secondary",
            QueryKind::Unknown => "",
        }
    }
}

/// One request and its outcome, as seen on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    pub protocol: Protocol,
    /// Kernel timestamp (ns, CLOCK_MONOTONIC) of the syscall carrying the request's first byte.
    pub start_ns: u64,
    /// Kernel timestamp of the syscall carrying the last byte of the answer (for ClickHouse:
    /// EndOfStream or Exception). Equals `start_ns` for records without an answer.
    pub end_ns: u64,
    /// Statement type (`SELECT`, `INSERT`, ...) or ZooKeeper op name (`getData`, ...).
    pub operation: Cow<'static, str>,
    pub status: Status,
    pub error_code: Option<i32>,
    /// Symbolic error name (`UNKNOWN_TABLE`, `NoNode`, ...).
    pub error_name: Option<Cow<'static, str>>,
    /// First line of the error message, bounded.
    pub error_message: Option<String>,
    /// ClickHouse query text or ZooKeeper path, bounded by the parser's limit.
    pub query: Option<String>,
    /// `query` was cut at the limit.
    pub query_truncated: bool,
    /// Bytes of this request's messages client → server.
    pub bytes_sent: u64,
    /// Bytes of this request's answer server → client.
    pub bytes_received: u64,
    pub details: Details,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Details {
    /// Boxed: a ClickHouse query's strings would otherwise make every record (and every
    /// move of one, ZooKeeper's included) several times larger.
    ClickHouse(Box<ClickHouseDetails>),
    ZooKeeper(ZooKeeperDetails),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClickHouseDetails {
    pub query_id: String,
    pub query_kind: Option<QueryKind>,
    pub initial_query_id: String,
    pub user: String,
    pub client_name: String,
    /// `major.minor.patch` or `major.minor` as sent in the Hello / ClientInfo.
    pub client_version: String,
    /// Protocol revision in use (negotiated, or inferred from the Query packet).
    pub revision: u64,
    pub rows_read: u64,
    pub bytes_read: u64,
    pub rows_written: u64,
    pub bytes_written: u64,
    /// Rows the server sent back in Data packets, where counted.
    pub result_rows: u64,
    /// The session compresses Data packets.
    pub compressed: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ZooKeeperDetails {
    pub xid: i32,
    /// Zxid of the reply (-1 for notifications).
    pub zxid: i64,
    pub session_id: Option<i64>,
    pub watch: bool,
    /// Op names of a multi's sub-operations, in order.
    pub multi_ops: Vec<&'static str>,
    /// For a watch notification: event type and keeper state.
    pub notification: Option<(i32, i32)>,
    /// Expected znode version a delete / setData / setACL / check carried (-1 = any).
    pub version: Option<i32>,
    /// For the session handshake (operation `connect`): what was asked and granted.
    /// Boxed: one record per session has it, every record would carry its size.
    pub connect: Option<Box<ZooKeeperConnect>>,
}

/// The session handshake of a ZooKeeper connection (ConnectRequest / ConnectResponse).
/// The session password is never kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZooKeeperConnect {
    /// 0 for ZooKeeper; ClickHouse Keeper extensions: 10 compression, 11 64-bit xids.
    pub protocol_version: i32,
    /// Session timeout the client asked for (ms).
    pub requested_timeout_ms: i32,
    /// Session timeout the server granted (ms); 0 if no answer was seen.
    pub negotiated_timeout_ms: i32,
    /// Session the client asked to resume (0: a new session).
    pub resumed_session_id: i64,
    /// Last zxid the client had seen (0 on a first connect).
    pub last_zxid_seen: i64,
    /// The client accepts a read-only server.
    pub read_only: bool,
}

/// What parsers emit.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Request(RequestRecord),
}

/// Which end of the connection the observed process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The observed process connected (a client, or a server acting as one).
    Client,
    /// The observed process accepted.
    Server,
}

impl Side {
    pub const fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// Facts about the connection a record was seen on, added by the actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionInfo {
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub side: Side,
    pub client_addr: std::net::SocketAddr,
    pub server_addr: std::net::SocketAddr,
}

/// A record with the connection it was seen on: one row of the `requests` table.
#[derive(Clone, Debug, PartialEq)]
pub struct CapturedRequest {
    pub conn: std::sync::Arc<ConnectionInfo>,
    pub record: RequestRecord,
}
