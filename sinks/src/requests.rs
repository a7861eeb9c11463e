//! Builds the `requests` table's Arrow columns directly from [`CapturedRequest`]s: one builder
//! per column, fed field by field, no intermediate row struct; text is copied once, from the
//! batch's arena into its column.
//!
//! Mapping choices: ClickHouse-only columns are null on ZooKeeper rows and vice versa; empty
//! ClickHouse strings (query id, user, ...) are stored as null; addresses are formatted once per
//! connection (consecutive requests of the same connection reuse the text).
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use l7tap_aggregate::canonical_socket_addr;
use l7tap_protocols::{CapturedRequest, ConnectionInfo, Details, Protocol};

use crate::schema::Table;
use crate::table::TableColumns;
use crate::time::monotonic_ns_to_unix_micros;
use l7tap_protocols::fingerprint::redact_query_into;

/// Slots of the formatted-address cache (direct-mapped by connection pointer).
const ADDRESS_CACHE_SLOTS: usize = 1024;

/// `ip:port` texts of recently seen connections. Each slot holds a clone of the connection's
/// `Arc`, so a pointer cannot be reused by another connection while it is cached.
struct AddressCache {
    slots: Vec<Option<(Arc<ConnectionInfo>, String, String)>>,
}

impl Default for AddressCache {
    fn default() -> Self {
        AddressCache {
            slots: vec![None; ADDRESS_CACHE_SLOTS],
        }
    }
}

impl AddressCache {
    /// Client and server address texts of `conn`.
    #[inline]
    fn get(&mut self, conn: &Arc<ConnectionInfo>) -> (&str, &str) {
        let pointer = Arc::as_ptr(conn) as usize;
        let slot = (pointer >> 4 ^ pointer >> 14) % ADDRESS_CACHE_SLOTS;
        let entry = &mut self.slots[slot];
        if !entry
            .as_ref()
            .is_some_and(|(cached, _, _)| Arc::ptr_eq(cached, conn))
        {
            let (_, client, server) = entry.get_or_insert_with(|| {
                (
                    conn.clone(),
                    String::with_capacity(24),
                    String::with_capacity(24),
                )
            });
            client.clear();
            server.clear();
            let _ = write!(client, "{}", canonical_socket_addr(conn.client_addr));
            let _ = write!(server, "{}", canonical_socket_addr(conn.server_addr));
            entry.as_mut().expect("filled above").0 = conn.clone();
        }
        let (_, client, server) = entry.as_ref().expect("filled above");
        (client, server)
    }
}

/// Average bytes of string data per row assumed when pre-sizing string builders.
const STRING_BYTES_PER_ROW_HINT: usize = 16;

/// Column builders of the `requests` table, in schema order.
pub struct RequestColumns {
    monotonic_to_unix_offset_ns: i64,
    redact_queries: bool,
    capacity: usize,
    rows: usize,
    addresses: AddressCache,
    redacted_query: String,
    /// Rows (of the other protocol) whose ClickHouse-only / ZooKeeper-only columns are still
    /// to be filled with nulls: appended in one call per run, before the column's next value
    /// or when the batch is finished. Runs are long: the sink writes a batch's rows grouped
    /// by protocol.
    clickhouse_nulls_due: usize,
    zookeeper_nulls_due: usize,

    ts: TimestampMicrosecondBuilder,
    duration_ns: Int64Builder,
    protocol: StringBuilder,
    side: StringBuilder,
    pid: Int32Builder,
    comm: StringBuilder,
    client_addr: StringBuilder,
    server_addr: StringBuilder,
    operation: StringBuilder,
    status: StringBuilder,
    error_code: Int32Builder,
    error_name: StringBuilder,
    query: StringBuilder,
    query_id: StringBuilder,
    query_kind: StringBuilder,
    initial_query_id: StringBuilder,
    user: StringBuilder,
    client_name: StringBuilder,
    rows_read: Int64Builder,
    bytes_read: Int64Builder,
    zk_xid: Int32Builder,
    zk_zxid: Int64Builder,
    zk_session_id: Int64Builder,
    bytes_sent: Int64Builder,
    bytes_received: Int64Builder,
    error_message: StringBuilder,
    query_truncated: BooleanBuilder,
    cgroup_id: Int64Builder,
    client_version: StringBuilder,
    rows_written: Int64Builder,
    bytes_written: Int64Builder,
    result_rows: Int64Builder,
    zk_watch: BooleanBuilder,
    zk_multi_ops: ListBuilder<StringBuilder>,
    zk_event_type: Int32Builder,
    zk_keeper_state: Int32Builder,
    interface: StringBuilder,
    database: StringBuilder,
    format: StringBuilder,
    http_status: Int32Builder,
    client_app: StringBuilder,
    client_pid: Int32Builder,
    client_process: StringBuilder,
    server_app: StringBuilder,
    server_pid: Int32Builder,
    server_process: StringBuilder,
    exe: StringBuilder,
    cgroup: StringBuilder,
    tls: BooleanBuilder,
    fingerprint: Int64Builder,
}

/// Whether a protocol's `query` text is SQL, which `--redact` rewrites, with its
/// `error_message` (a ZooKeeper path is not SQL: it holds no literals).
fn query_is_sql(protocol: Protocol) -> bool {
    match protocol {
        Protocol::ClickHouse | Protocol::ClickHouseHttp => true,
        Protocol::ZooKeeper => false,
    }
}

fn strings(rows: usize, bytes_per_row: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * bytes_per_row)
}

/// Appends `text`, or null when it is empty.
#[inline]
fn append_non_empty(builder: &mut StringBuilder, text: &str) {
    if text.is_empty() {
        builder.append_null()
    } else {
        builder.append_value(text)
    }
}

#[inline]
fn saturating_i64(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

impl RequestColumns {
    /// Builders pre-sized for `capacity` rows.
    pub fn new(capacity: usize, monotonic_to_unix_offset_ns: i64, redact_queries: bool) -> Self {
        let n = capacity;
        RequestColumns {
            monotonic_to_unix_offset_ns,
            redact_queries,
            capacity,
            rows: 0,
            addresses: AddressCache::default(),
            redacted_query: String::new(),
            clickhouse_nulls_due: 0,
            zookeeper_nulls_due: 0,
            ts: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            duration_ns: Int64Builder::with_capacity(n),
            protocol: strings(n, 10),
            side: strings(n, 6),
            pid: Int32Builder::with_capacity(n),
            comm: strings(n, STRING_BYTES_PER_ROW_HINT),
            client_addr: strings(n, 21),
            server_addr: strings(n, 21),
            operation: strings(n, 8),
            status: strings(n, 2),
            error_code: Int32Builder::with_capacity(n),
            error_name: strings(n, 0),
            query: strings(n, 128),
            query_id: strings(n, 36),
            query_kind: strings(n, 7),
            initial_query_id: strings(n, 36),
            user: strings(n, 8),
            client_name: strings(n, STRING_BYTES_PER_ROW_HINT),
            rows_read: Int64Builder::with_capacity(n),
            bytes_read: Int64Builder::with_capacity(n),
            zk_xid: Int32Builder::with_capacity(n),
            zk_zxid: Int64Builder::with_capacity(n),
            zk_session_id: Int64Builder::with_capacity(n),
            bytes_sent: Int64Builder::with_capacity(n),
            bytes_received: Int64Builder::with_capacity(n),
            error_message: strings(n, 0),
            query_truncated: BooleanBuilder::with_capacity(n),
            cgroup_id: Int64Builder::with_capacity(n),
            client_version: strings(n, 8),
            rows_written: Int64Builder::with_capacity(n),
            bytes_written: Int64Builder::with_capacity(n),
            result_rows: Int64Builder::with_capacity(n),
            zk_watch: BooleanBuilder::with_capacity(n),
            zk_multi_ops: ListBuilder::with_capacity(StringBuilder::new(), n),
            zk_event_type: Int32Builder::with_capacity(n),
            zk_keeper_state: Int32Builder::with_capacity(n),
            interface: strings(n, 6),
            database: strings(n, 8),
            format: strings(n, 8),
            http_status: Int32Builder::with_capacity(n),
            client_app: strings(n, 16),
            client_pid: Int32Builder::with_capacity(n),
            client_process: strings(n, 12),
            server_app: strings(n, 16),
            server_pid: Int32Builder::with_capacity(n),
            server_process: strings(n, 12),
            exe: strings(n, 16),
            cgroup: strings(n, 8),
            tls: BooleanBuilder::with_capacity(n),
            fingerprint: Int64Builder::with_capacity(n),
        }
    }

    /// The row's `ts` (Unix µs) without appending it.
    #[inline]
    pub fn ts_micros(&self, request: &CapturedRequest<'_>) -> i64 {
        monotonic_ns_to_unix_micros(request.record.start_ns, self.monotonic_to_unix_offset_ns)
    }

    /// Appends the nulls due to the ClickHouse-only columns.
    fn append_clickhouse_nulls(&mut self) {
        let n = std::mem::take(&mut self.clickhouse_nulls_due);
        if n == 0 {
            return;
        }
        self.query_id.append_nulls(n);
        self.query_kind.append_nulls(n);
        self.initial_query_id.append_nulls(n);
        self.user.append_nulls(n);
        self.client_name.append_nulls(n);
        self.rows_read.append_nulls(n);
        self.bytes_read.append_nulls(n);
        self.client_version.append_nulls(n);
        self.rows_written.append_nulls(n);
        self.bytes_written.append_nulls(n);
        self.result_rows.append_nulls(n);
        self.database.append_nulls(n);
        self.format.append_nulls(n);
        self.http_status.append_nulls(n);
    }

    /// Appends the nulls due to the ZooKeeper-only columns.
    fn append_zookeeper_nulls(&mut self) {
        let n = std::mem::take(&mut self.zookeeper_nulls_due);
        if n == 0 {
            return;
        }
        self.zk_xid.append_nulls(n);
        self.zk_zxid.append_nulls(n);
        self.zk_session_id.append_nulls(n);
        self.zk_watch.append_nulls(n);
        self.zk_multi_ops.append_nulls(n);
        self.zk_event_type.append_nulls(n);
        self.zk_keeper_state.append_nulls(n);
    }

    /// Appends one row.
    pub fn append(&mut self, request: &CapturedRequest<'_>) {
        let record = &request.record;
        let conn = &request.conn;
        let (client_addr, server_addr) = self.addresses.get(conn);
        self.rows += 1;

        self.ts.append_value(monotonic_ns_to_unix_micros(
            record.start_ns,
            self.monotonic_to_unix_offset_ns,
        ));
        self.duration_ns.append_value(saturating_i64(
            record.end_ns.saturating_sub(record.start_ns),
        ));
        self.protocol.append_value(record.protocol.family());
        self.interface.append_value(record.protocol.interface());
        self.side.append_value(conn.side.name());
        self.pid.append_value(conn.pid as i32);
        self.comm.append_value(&conn.comm);
        for (end, app, pid, process) in [
            (
                conn.client_end(),
                &mut self.client_app,
                &mut self.client_pid,
                &mut self.client_process,
            ),
            (
                conn.server_end(),
                &mut self.server_app,
                &mut self.server_pid,
                &mut self.server_process,
            ),
        ] {
            app.append_option(end.map(|e| e.app));
            pid.append_option(end.map(|e| e.pid as i32));
            process.append_option(end.map(|e| e.process));
        }
        append_non_empty(&mut self.exe, &conn.identity.exe);
        append_non_empty(&mut self.cgroup, &conn.identity.cgroup);
        self.client_addr.append_value(client_addr);
        self.server_addr.append_value(server_addr);
        self.operation.append_value(record.operation);
        self.status.append_value(record.status.name());
        self.error_code.append_option(record.error_code);
        self.error_name.append_option(record.error_name);
        match request.query() {
            Some(query) if self.redact_queries && query_is_sql(record.protocol) => {
                redact_query_into(query, &mut self.redacted_query);
                self.query.append_value(&self.redacted_query);
            }
            Some(query) => self.query.append_value(query),
            None => self.query.append_null(),
        }
        self.bytes_sent
            .append_value(saturating_i64(record.bytes_sent));
        self.bytes_received
            .append_value(saturating_i64(record.bytes_received));
        match request.opt_str(record.error_message) {
            // ClickHouse quotes the query's literals in its errors (`Syntax error: failed at
            // position 8 ('secret')`), so an SQL protocol's message is redacted like its query.
            Some(message) if self.redact_queries && query_is_sql(record.protocol) => {
                redact_query_into(message, &mut self.redacted_query);
                self.error_message.append_value(&self.redacted_query);
            }
            message => self.error_message.append_option(message),
        }
        self.query_truncated.append_value(record.query_truncated);
        self.cgroup_id.append_value(conn.cgroup_id as i64);
        self.tls.append_value(conn.tls);
        self.fingerprint.append_value(request.fingerprint.as_i64());

        match &record.details {
            Details::ClickHouse(ch) => {
                self.append_clickhouse_nulls();
                append_non_empty(&mut self.query_id, request.str(ch.query_id));
                self.query_kind.append_option(
                    ch.query_kind
                        .map(|kind| kind.name())
                        .filter(|n| !n.is_empty()),
                );
                append_non_empty(&mut self.initial_query_id, request.str(ch.initial_query_id));
                append_non_empty(&mut self.user, request.str(ch.user));
                append_non_empty(&mut self.client_name, request.str(ch.client_name));
                self.rows_read.append_value(saturating_i64(ch.rows_read));
                self.bytes_read.append_value(saturating_i64(ch.bytes_read));
                append_non_empty(&mut self.client_version, request.str(ch.client_version));
                self.rows_written
                    .append_value(saturating_i64(ch.rows_written));
                self.bytes_written
                    .append_value(saturating_i64(ch.bytes_written));
                self.result_rows
                    .append_value(saturating_i64(ch.result_rows));
                append_non_empty(&mut self.database, request.str(ch.database));
                append_non_empty(&mut self.format, request.str(ch.format));
                self.http_status
                    .append_option((ch.http_status != 0).then_some(i32::from(ch.http_status)));
                self.zookeeper_nulls_due += 1;
            }
            Details::ZooKeeper(zk) => {
                self.clickhouse_nulls_due += 1;
                self.append_zookeeper_nulls();
                self.zk_xid.append_value(zk.xid);
                self.zk_zxid.append_value(zk.zxid);
                self.zk_session_id.append_option(zk.session_id);
                self.zk_watch.append_value(zk.watch);
                if zk.multi_ops.is_empty() {
                    self.zk_multi_ops.append_null();
                } else {
                    for op in request.multi_ops() {
                        self.zk_multi_ops.values().append_value(op);
                    }
                    self.zk_multi_ops.append(true);
                }
                let (event_type, keeper_state) = zk.notification.unzip();
                self.zk_event_type.append_option(event_type);
                self.zk_keeper_state.append_option(keeper_state);
            }
        }
    }
}

impl TableColumns for RequestColumns {
    const TABLE: Table = Table::Requests;

    fn len(&self) -> usize {
        self.rows
    }

    fn estimated_bytes(&self) -> usize {
        let strings = self.comm.values_slice().len()
            + self.client_addr.values_slice().len()
            + self.server_addr.values_slice().len()
            + self.operation.values_slice().len()
            + self.query.values_slice().len()
            + self.query_id.values_slice().len()
            + self.initial_query_id.values_slice().len()
            + self.error_message.values_slice().len();
        strings + self.rows * 200
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        self.append_clickhouse_nulls();
        self.append_zookeeper_nulls();
        let mut full = std::mem::replace(
            self,
            RequestColumns::new(
                self.capacity,
                self.monotonic_to_unix_offset_ns,
                self.redact_queries,
            ),
        );
        // Keep the address cache across batches.
        std::mem::swap(&mut self.addresses, &mut full.addresses);
        let f = &mut full;
        vec![
            Arc::new(f.ts.finish()),
            Arc::new(f.duration_ns.finish()),
            Arc::new(f.protocol.finish()),
            Arc::new(f.side.finish()),
            Arc::new(f.pid.finish()),
            Arc::new(f.comm.finish()),
            Arc::new(f.client_addr.finish()),
            Arc::new(f.server_addr.finish()),
            Arc::new(f.operation.finish()),
            Arc::new(f.status.finish()),
            Arc::new(f.error_code.finish()),
            Arc::new(f.error_name.finish()),
            Arc::new(f.query.finish()),
            Arc::new(f.query_id.finish()),
            Arc::new(f.query_kind.finish()),
            Arc::new(f.initial_query_id.finish()),
            Arc::new(f.user.finish()),
            Arc::new(f.client_name.finish()),
            Arc::new(f.rows_read.finish()),
            Arc::new(f.bytes_read.finish()),
            Arc::new(f.zk_xid.finish()),
            Arc::new(f.zk_zxid.finish()),
            Arc::new(f.zk_session_id.finish()),
            Arc::new(f.bytes_sent.finish()),
            Arc::new(f.bytes_received.finish()),
            Arc::new(f.error_message.finish()),
            Arc::new(f.query_truncated.finish()),
            Arc::new(f.cgroup_id.finish()),
            Arc::new(f.client_version.finish()),
            Arc::new(f.rows_written.finish()),
            Arc::new(f.bytes_written.finish()),
            Arc::new(f.result_rows.finish()),
            Arc::new(f.zk_watch.finish()),
            Arc::new(f.zk_multi_ops.finish()),
            Arc::new(f.zk_event_type.finish()),
            Arc::new(f.zk_keeper_state.finish()),
            Arc::new(f.interface.finish()),
            Arc::new(f.database.finish()),
            Arc::new(f.format.finish()),
            Arc::new(f.http_status.finish()),
            Arc::new(f.client_app.finish()),
            Arc::new(f.client_pid.finish()),
            Arc::new(f.client_process.finish()),
            Arc::new(f.server_app.finish()),
            Arc::new(f.server_pid.finish()),
            Arc::new(f.server_process.finish()),
            Arc::new(f.exe.finish()),
            Arc::new(f.cgroup.finish()),
            Arc::new(f.tls.finish()),
            Arc::new(f.fingerprint.finish()),
        ]
    }
}
