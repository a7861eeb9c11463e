//! The records parsers produce: one per ClickHouse query or ZooKeeper request (or watch
//! notification). Connection facts (pid, comm, addresses, side) are added by the actor.
//!
//! Records own no heap memory: their text (query, path, ids, error message) is a [`Text`]
//! span of the [`TextArena`] of the [`Records`] batch they were appended to. A parser in
//! steady state therefore allocates nothing per request, and the sink copies each text once,
//! from the arena into its Arrow column.
use std::sync::Arc;

use crate::fingerprint::{Fingerprint, Fingerprinter};

/// The protocol of a record: the one enum, generated from the kernel ABI's protocol list.
pub use l7tap_abi::Protocol;

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
    pub operation: &'static str,
    pub status: Status,
    pub error_code: Option<i32>,
    /// Symbolic error name (`UNKNOWN_TABLE`, `NoNode`, ...); none for a code the parser
    /// does not know (`error_code` has it).
    pub error_name: Option<&'static str>,
    /// First line of the error message, bounded.
    pub error_message: Option<Text>,
    /// ClickHouse query text or ZooKeeper path, bounded by the parser's limit.
    pub query: Option<Text>,
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
    ClickHouse(ClickHouseDetails),
    ZooKeeper(ZooKeeperDetails),
}

/// ClickHouse fields of a record; empty texts were not sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClickHouseDetails {
    pub query_id: Text,
    pub query_kind: Option<QueryKind>,
    pub initial_query_id: Text,
    pub user: Text,
    pub client_name: Text,
    /// `major.minor.patch` or `major.minor` as sent in the Hello / ClientInfo.
    pub client_version: Text,
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
    /// Database the query ran in, where the request named it (HTTP: `database=`).
    pub database: Text,
    /// Output format the request asked for or the server reported (HTTP: `default_format=`,
    /// `X-ClickHouse-Format`).
    pub format: Text,
    /// HTTP status of the response (0: not HTTP, or no status seen).
    pub http_status: u16,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ZooKeeperDetails {
    pub xid: i32,
    /// Zxid of the reply (-1 for notifications).
    pub zxid: i64,
    pub session_id: Option<i64>,
    pub watch: bool,
    /// Op names of a multi's sub-operations, in order, joined by `,` (empty: not a multi);
    /// [`CapturedRequest::multi_ops`] splits them.
    pub multi_ops: Text,
    /// For a watch notification: event type and keeper state.
    pub notification: Option<(i32, i32)>,
    /// Expected znode version a delete / setData / setACL / check carried (-1 = any).
    pub version: Option<i32>,
    /// For the session handshake (operation `connect`): what was asked and granted. (Inline:
    /// it fits in the space ClickHouse details take anyway.)
    pub connect: Option<ZooKeeperConnect>,
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
    /// The connection is encrypted (its records come from TLS plaintext).
    pub tls: bool,
    /// Who the observed process is and, for a local connection whose other end is watched
    /// too, who that end is; empty when the input carried no identity.
    pub identity: ConnectionIdentity,
}

/// The identity of a connection's ends as resolved at its open (see the ingest crate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnectionIdentity {
    /// `/proc` was read for the observed process; false: it had exited (the kernel's comm
    /// stands for its name), or no identity was resolved.
    pub resolved: bool,
    /// Process name of the observed process.
    pub process: String,
    pub exe: String,
    pub cgroup: String,
    /// Application name of the observed process; empty when unknown.
    pub app: String,
    /// The other end, when it is a watched process of this host.
    pub peer: Option<PeerIdentity>,
}

/// The other end of a local connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub pid: u32,
    pub process: String,
    pub app: String,
}

/// One end of a connection as the tables show it: known when it is the observed process or
/// a joined local peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndIdentity<'a> {
    pub pid: u32,
    pub process: &'a str,
    pub app: &'a str,
}

impl ConnectionInfo {
    /// The observed process's end; none when no identity was resolved.
    fn own_end(&self) -> Option<EndIdentity<'_>> {
        let id = &self.identity;
        (!id.app.is_empty()).then_some(EndIdentity {
            pid: self.pid,
            process: &id.process,
            app: &id.app,
        })
    }

    fn peer_end(&self) -> Option<EndIdentity<'_>> {
        self.identity.peer.as_ref().map(|p| EndIdentity {
            pid: p.pid,
            process: &p.process,
            app: &p.app,
        })
    }

    /// Who the client end is: the observed process on the client side, the joined peer on
    /// the server side; none for a remote client (its address is all there is).
    pub fn client_end(&self) -> Option<EndIdentity<'_>> {
        match self.side {
            Side::Client => self.own_end(),
            Side::Server => self.peer_end(),
        }
    }

    /// Who the server end is (see [`ConnectionInfo::client_end`]).
    pub fn server_end(&self) -> Option<EndIdentity<'_>> {
        match self.side {
            Side::Client => self.peer_end(),
            Side::Server => self.own_end(),
        }
    }
}

impl RequestRecord {
    /// Calls `f` with every text span of the record (to move it to another arena).
    pub fn for_each_text_mut(&mut self, mut f: impl FnMut(&mut Text)) {
        if let Some(t) = &mut self.error_message {
            f(t);
        }
        if let Some(t) = &mut self.query {
            f(t);
        }
        match &mut self.details {
            Details::ClickHouse(ch) => {
                f(&mut ch.query_id);
                f(&mut ch.initial_query_id);
                f(&mut ch.user);
                f(&mut ch.client_name);
                f(&mut ch.client_version);
                f(&mut ch.database);
                f(&mut ch.format);
            }
            Details::ZooKeeper(zk) => f(&mut zk.multi_ops),
        }
    }
}

/// Where a record's text lies in its [`TextArena`]: a span of bytes. The default is the
/// empty text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Text {
    start: u32,
    len: u32,
}

impl Text {
    pub const EMPTY: Text = Text { start: 0, len: 0 };

    pub const fn len(self) -> usize {
        self.len as usize
    }

    pub const fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// `bytes` as text if they are all ASCII, as znode paths and names nearly always are:
/// checked a word at a time, where `str::from_utf8` walks a short input byte by byte (it
/// was a tenth of the ZooKeeper parser's time).
#[inline]
#[allow(unsafe_code)]
fn ascii_str(bytes: &[u8]) -> Option<&str> {
    match bytes.is_ascii() {
        // SAFETY: every ASCII byte is a one-byte UTF-8 character, so ASCII bytes are UTF-8.
        true => Some(unsafe { std::str::from_utf8_unchecked(bytes) }),
        false => None,
    }
}

/// Text appended back to back; a [`Text`] names a span of it. Clearing keeps the capacity,
/// so an arena reused batch after batch stops allocating once it has grown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextArena {
    text: String,
}

impl TextArena {
    pub fn with_capacity(bytes: usize) -> Self {
        TextArena {
            text: String::with_capacity(bytes),
        }
    }

    /// Appends `s`. Arenas are bounded far below 4 GiB by their users (batches, per-connection
    /// state); past that, the text is dropped (empty) rather than wrapped.
    #[inline]
    pub fn push(&mut self, s: &str) -> Text {
        let start = self.text.len();
        match u32::try_from(start + s.len()) {
            Ok(_) if !s.is_empty() => {
                self.text.push_str(s);
                Text {
                    start: start as u32,
                    len: s.len() as u32,
                }
            }
            _ => Text::EMPTY,
        }
    }

    /// Appends wire bytes as text: UTF-8 as is (the fast, common case); a character cut by a
    /// length bound at the end is dropped; other invalid bytes become U+FFFD.
    #[inline(always)]
    pub fn push_lossy(&mut self, bytes: &[u8]) -> Text {
        if let Some(ascii) = ascii_str(bytes) {
            return self.push(ascii);
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => self.push(s),
            Err(_) => self.push_invalid(bytes),
        }
    }

    /// [`Self::push_lossy`] of bytes that are not UTF-8.
    #[cold]
    fn push_invalid(&mut self, bytes: &[u8]) -> Text {
        let start = self.text.len();
        let mut chunks = bytes.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            self.text.push_str(chunk.valid());
            let invalid = chunk.invalid();
            // The start of a character at the very end was cut, not garbled: dropped.
            let cut_at_end = chunks.peek().is_none()
                && std::str::from_utf8(invalid).is_err_and(|e| e.error_len().is_none());
            if !invalid.is_empty() && !cut_at_end {
                self.text.push(char::REPLACEMENT_CHARACTER);
            }
        }
        self.span_from(start)
    }

    /// Appends `parts` joined by `separator`, as one text.
    pub fn push_joined<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a str>,
        separator: char,
    ) -> Text {
        let start = self.text.len();
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                self.text.push(separator);
            }
            self.text.push_str(part);
        }
        self.span_from(start)
    }

    fn span_from(&mut self, start: usize) -> Text {
        match u32::try_from(self.text.len()) {
            Ok(end) => Text {
                start: start as u32,
                len: end - start as u32,
            },
            Err(_) => {
                self.text.truncate(start);
                Text::EMPTY
            }
        }
    }

    /// The text of `span` (empty if it is not a span of this arena).
    #[inline]
    pub fn get(&self, span: Text) -> &str {
        let start = span.start as usize;
        self.text.get(start..start + span.len()).unwrap_or("")
    }

    /// Copies `span` of `other` into this arena.
    pub fn copy_from(&mut self, other: &TextArena, span: Text) -> Text {
        self.push(other.get(span))
    }

    /// `record`, its text copied from `from` into this arena (its spans rebased).
    pub fn adopt(&mut self, mut record: RequestRecord, from: &TextArena) -> RequestRecord {
        record.for_each_text_mut(|span| *span = self.copy_from(from, *span));
        record
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn clear(&mut self) {
        self.text.clear();
    }

    /// Drops the first `len` bytes; spans after them must be rebased with [`Text::shifted_back`].
    pub fn drain_front(&mut self, len: usize) {
        self.text.drain(..len.min(self.text.len()));
    }

    pub fn capacity(&self) -> usize {
        self.text.capacity()
    }

    pub fn shrink_to(&mut self, bytes: usize) {
        self.text.shrink_to(bytes);
    }
}

impl Text {
    /// Where this span lies once the arena dropped its first `by` bytes (which must all
    /// precede it).
    pub fn shifted_back(self, by: usize) -> Text {
        Text {
            start: self.start - by as u32,
            len: self.len,
        }
    }

    /// Offset of the span's first byte in its arena.
    pub fn start(self) -> usize {
        self.start as usize
    }
}

/// What parsers append to: records, and the arena their text lives in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Records {
    records: Vec<RequestRecord>,
    pub text: TextArena,
}

impl Records {
    pub fn with_capacity(records: usize, text_bytes: usize) -> Self {
        Records {
            records: Vec::with_capacity(records),
            text: TextArena::with_capacity(text_bytes),
        }
    }

    /// Appends a record whose text is already in this batch's arena. Inlined, with the room
    /// reserved first: the record is built where the caller's fields already are, and the
    /// push cannot branch off to grow in between (records are large, every extra move of
    /// one costs).
    #[inline(always)]
    pub fn push(&mut self, record: RequestRecord) {
        self.records.reserve(1);
        self.records.push(record);
    }

    /// Appends a record whose text lies in `from`, copying the text into this batch.
    pub fn push_from(&mut self, record: RequestRecord, from: &TextArena) {
        let record = self.text.adopt(record, from);
        self.push(record);
    }

    /// The text of `span`.
    #[inline]
    pub fn str(&self, span: Text) -> &str {
        self.text.get(span)
    }

    /// The text of an optional span.
    pub fn opt_str(&self, span: Option<Text>) -> Option<&str> {
        span.map(|t| self.text.get(t))
    }

    pub fn records(&self) -> &[RequestRecord] {
        &self.records
    }

    pub fn records_mut(&mut self) -> &mut [RequestRecord] {
        &mut self.records
    }

    pub fn iter(&self) -> std::slice::Iter<'_, RequestRecord> {
        self.records.iter()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.text.clear();
    }

    /// Moves every record of `other` (and its text) to the end of this batch.
    pub fn append(&mut self, other: &mut Records) {
        if other.records.is_empty() {
            other.text.clear();
            return;
        }
        for record in other.records.drain(..) {
            let record = self.text.adopt(record, &other.text);
            self.records.push(record);
        }
        other.text.clear();
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = &'a RequestRecord;
    type IntoIter = std::slice::Iter<'a, RequestRecord>;

    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}

/// Requests with the connection each was seen on: what an actor hands to the sink, one
/// batch at a time. `conns[i]` is the connection of record `i`.
#[derive(Clone, Debug, Default)]
pub struct CapturedBatch {
    pub records: Records,
    pub conns: Vec<Arc<ConnectionInfo>>,
    /// `fingerprints[i]` is record `i`'s fingerprint, computed when its connection is
    /// assigned (an actor then folds it past the cap: [`crate::fingerprint::table`]).
    pub fingerprints: Vec<Fingerprint>,
    fingerprinter: Fingerprinter,
}

impl CapturedBatch {
    pub fn with_capacity(records: usize, text_bytes: usize) -> Self {
        CapturedBatch {
            records: Records::with_capacity(records, text_bytes),
            conns: Vec::with_capacity(records),
            fingerprints: Vec::with_capacity(records),
            fingerprinter: Fingerprinter::default(),
        }
    }

    /// Appends a record (text already in this batch's arena) seen on `conn`.
    pub fn push(&mut self, conn: Arc<ConnectionInfo>, record: RequestRecord) {
        self.records.push(record);
        self.assign_new(&conn);
    }

    /// Moves every request of `other` to the end of this batch.
    pub fn append(&mut self, mut other: CapturedBatch) {
        self.records.append(&mut other.records);
        self.conns.append(&mut other.conns);
        self.fingerprints.append(&mut other.fingerprints);
    }

    /// Gives the records appended to `records` since the last call the connection `conn`,
    /// and their fingerprints.
    pub fn assign_new(&mut self, conn: &Arc<ConnectionInfo>) {
        let first_new = self.conns.len();
        let new = self.records.len().saturating_sub(first_new);
        self.conns.extend(std::iter::repeat_n(conn, new).cloned());
        for record in &self.records.records[first_new..] {
            let fingerprint = self.fingerprinter.fingerprint(record, &self.records.text);
            self.fingerprints.push(fingerprint);
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.conns.clear();
        self.fingerprints.clear();
    }

    /// The requests, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = CapturedRequest<'_>> + '_ {
        self.records
            .records
            .iter()
            .zip(&self.conns)
            .zip(&self.fingerprints)
            .map(|((record, conn), &fingerprint)| CapturedRequest {
                conn,
                record,
                text: &self.records.text,
                fingerprint,
            })
    }

    pub fn get(&self, i: usize) -> Option<CapturedRequest<'_>> {
        Some(CapturedRequest {
            conn: self.conns.get(i)?,
            record: self.records.records.get(i)?,
            text: &self.records.text,
            fingerprint: *self.fingerprints.get(i)?,
        })
    }
}

impl FromIterator<CapturedBatch> for CapturedBatch {
    fn from_iter<I: IntoIterator<Item = CapturedBatch>>(batches: I) -> Self {
        let mut all = CapturedBatch::default();
        for batch in batches {
            all.append(batch);
        }
        all
    }
}

/// A record with the connection it was seen on: one row of the `requests` table, borrowed
/// from its [`CapturedBatch`].
#[derive(Clone, Copy, Debug)]
pub struct CapturedRequest<'a> {
    pub conn: &'a Arc<ConnectionInfo>,
    pub record: &'a RequestRecord,
    pub text: &'a TextArena,
    /// The record's fingerprint (`requests.fingerprint`, a key of `intervals`).
    pub fingerprint: Fingerprint,
}

impl<'a> CapturedRequest<'a> {
    /// The text of `span`.
    #[inline]
    pub fn str(&self, span: Text) -> &'a str {
        self.text.get(span)
    }

    pub fn opt_str(&self, span: Option<Text>) -> Option<&'a str> {
        span.map(|t| self.text.get(t))
    }

    /// The query text or ZooKeeper path.
    pub fn query(&self) -> Option<&'a str> {
        self.opt_str(self.record.query)
    }

    /// The op names of a ZooKeeper multi (none for other records).
    pub fn multi_ops(&self) -> impl Iterator<Item = &'a str> + 'a {
        multi_op_names(self.record, self.text)
    }
}

/// One record with its own copy of its text, apart from any batch: for tests, and for code
/// that keeps a few records around. Derefs to the record.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedRecord {
    pub record: RequestRecord,
    pub text: TextArena,
}

impl std::ops::Deref for OwnedRecord {
    type Target = RequestRecord;

    fn deref(&self) -> &RequestRecord {
        &self.record
    }
}

impl std::ops::DerefMut for OwnedRecord {
    fn deref_mut(&mut self) -> &mut RequestRecord {
        &mut self.record
    }
}

impl OwnedRecord {
    /// The text of `span`.
    pub fn str(&self, span: Text) -> &str {
        self.text.get(span)
    }

    /// The query text or ZooKeeper path.
    pub fn query(&self) -> Option<&str> {
        self.record.query.map(|t| self.text.get(t))
    }

    pub fn error_message(&self) -> Option<&str> {
        self.record.error_message.map(|t| self.text.get(t))
    }

    /// The op names of a ZooKeeper multi (empty for other records).
    pub fn multi_ops(&self) -> Vec<&str> {
        multi_op_names(&self.record, &self.text).collect()
    }
}

impl Records {
    /// Every record with its own copy of its text.
    pub fn to_owned_records(&self) -> Vec<OwnedRecord> {
        self.records
            .iter()
            .map(|record| {
                let mut text = TextArena::default();
                let record = text.adopt(record.clone(), &self.text);
                OwnedRecord { record, text }
            })
            .collect()
    }
}

/// The op names of a ZooKeeper multi record, stored joined by `,` (none for other records).
fn multi_op_names<'a>(
    record: &RequestRecord,
    text: &'a TextArena,
) -> impl Iterator<Item = &'a str> + 'a {
    let joined = match &record.details {
        Details::ZooKeeper(zk) => text.get(zk.multi_ops),
        Details::ClickHouse(_) => "",
    };
    joined.split(',').filter(|op| !op.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lossy(bytes: &[u8]) -> String {
        let mut arena = TextArena::default();
        arena.push("before|");
        let span = arena.push_lossy(bytes);
        arena.get(span).to_owned()
    }

    #[test]
    fn push_lossy_keeps_utf8_and_marks_what_is_not() {
        assert_eq!(
            lossy(b"/clickhouse/tables/01/replicas"),
            "/clickhouse/tables/01/replicas"
        );
        assert_eq!(lossy("/zk/ключ/名前".as_bytes()), "/zk/ключ/名前");
        assert_eq!(lossy(b""), "");
        // A character cut by a length bound at the end is dropped, not replaced.
        let cut = "/ключ".as_bytes();
        assert_eq!(lossy(&cut[..cut.len() - 1]), "/клю");
        // Invalid bytes inside become U+FFFD.
        assert_eq!(lossy(b"/a\xffb/\xc3"), "/a\u{fffd}b/");
        assert_eq!(lossy(b"\x80\x80x"), "\u{fffd}\u{fffd}x");
    }
}
