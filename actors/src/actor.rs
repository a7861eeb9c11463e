//! One actor: a thread (pinned to a core when asked) that owns a shard of connections. It
//! reads frames from its ring, restores timestamp order, keeps each connection's parser
//! state, and sends finished records in batches.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use l7tap_abi::events::{self, ConnId, Event, Flow, Header, Role};
use l7tap_aggregate::{Aggregator, AggregatorConfig, IntervalRow};
use l7tap_ingest::identity::IdentityFrame;
use l7tap_ingest::ring::FrameConsumer;
use l7tap_ingest::Tag;
use l7tap_protocols::fingerprint::FingerprintTable;
use l7tap_protocols::registry::{self, ConnectionParser, ParseTrouble, ParserLimits};
use l7tap_protocols::{
    CapturedBatch, ConnectionIdentity, ConnectionInfo, Direction, PeerIdentity, Protocol, Side,
    Status,
};

use crate::filter::ConnFilter;
use crate::pool::{BatchPool, BATCH};
use crate::reorder::Reorder;
use crate::summary::{RecordTally, Summary};

#[derive(Clone, Debug)]
pub struct ActorConfig {
    /// Core to pin the thread to.
    pub core: Option<usize>,
    /// A connection with no event for this long (by event time) is closed.
    pub idle_timeout_ns: u64,
    /// Cap on the unconsumed bytes held per connection direction.
    pub max_buffered: usize,
    /// Run only the frame counter, not the protocol parsers.
    pub frames_only: bool,
    /// Query text / path bytes kept per record.
    pub max_query_bytes: usize,
    /// Connections to keep.
    pub filter: ConnFilter,
    /// Per-window aggregation (`intervals`); `None` sends records only.
    pub aggregation: Option<AggregatorConfig>,
    /// Where new record batches come from (share it with whoever receives them).
    pub batch_pool: BatchPool,
}

impl Default for ActorConfig {
    fn default() -> Self {
        ActorConfig {
            core: None,
            idle_timeout_ns: 15 * 60 * 1_000_000_000,
            max_buffered: l7tap_protocols::stream::DEFAULT_MAX_BUFFERED,
            frames_only: false,
            max_query_bytes: 4096,
            filter: ConnFilter::default(),
            aggregation: None,
            batch_pool: BatchPool::default(),
        }
    }
}

/// What an actor sends on.
pub enum ActorOutput {
    /// Finished requests (the `requests` table).
    Requests(CapturedBatch),
    /// Every window ending at or before `until_unix_ns` is closed in this actor: its interval
    /// rows (to be merged with the other actors') and its counters for those windows.
    Windows {
        actor: usize,
        until_unix_ns: i64,
        rows: Vec<IntervalRow>,
        stats: Vec<WindowStats>,
    },
}

/// An actor's counters for one window (its share of a `capture_stats` row).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    pub window_start_unix_ns: i64,
    pub events: u64,
    pub bytes: u64,
    /// Parse errors and resyncs (those after capture gaps apart).
    pub trouble: ParseTrouble,
    /// Connections tracked at the window's end.
    pub connections: u64,
    /// Connections whose process identity was read from `/proc` at their open.
    pub identities_resolved: u64,
    /// Connections whose process had exited before `/proc` was read (named by the kernel).
    pub identities_unresolved: u64,
}

/// Running totals an actor reports window by window, as deltas.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    events: u64,
    /// Payload bytes the kernel captured (`bytes - captured` were cut).
    captured: u64,
    bytes: u64,
    trouble: ParseTrouble,
    identities_resolved: u64,
    identities_unresolved: u64,
}

struct Conn {
    info: Arc<ConnectionInfo>,
    protocol: Protocol,
    role: Role,
    parser: Box<dyn ConnectionParser>,
    last_ts: u64,
}

/// One actor: its ring and its state; [`Actor::run`] is its thread's body.
pub struct Actor {
    ring: FrameConsumer,
    state: ActorState,
}

/// Everything an actor owns besides its ring.
pub struct ActorState {
    config: ActorConfig,
    records: Sender<ActorOutput>,
    /// Index of this actor (in `ActorOutput::Windows`).
    index: usize,
    aggregator: Option<Aggregator>,
    /// Totals so far, those already reported, and those of connections already closed.
    totals: Totals,
    reported: Totals,
    closed: Totals,
    /// Unix time up to which windows were flushed.
    flushed_until: i64,
    /// foldhash: the default SipHash showed up in profiles (a lookup per event).
    conns: HashMap<ConnId, Conn, foldhash::fast::RandomState>,
    /// Connections the filter dropped: their events are ignored until they close.
    filtered: std::collections::HashSet<ConnId, foldhash::fast::RandomState>,
    /// Identities of connections, from identity frames: they arrive before the connection's
    /// open event is released, and a second one when its peer opens.
    identities: HashMap<ConnId, ConnectionIdentity, foldhash::fast::RandomState>,
    reorder: Reorder,
    /// Parsers append their records (and text) straight to this batch; the connection of
    /// each is assigned right after.
    batch: CapturedBatch,
    /// Watermark at which the last partial batch was sent (see [`BATCH_DELAY_NS`]).
    batch_sent_at: u64,
    summary: Summary,
    records_counted: RecordCounts,
    last_expiry: u64,
}

/// What an actor counts of each record.
#[derive(Default)]
struct RecordCounts {
    /// Records by protocol and status, counted without building a key per record.
    by_status: [[u64; 4]; Protocol::COUNT],
    tally: RecordTally,
    /// Bounds the fingerprints this actor gives an identity of their own.
    fingerprints: FingerprintTable,
}

impl RecordCounts {
    /// Gives the records a parser just appended to `batch` their connection `info`, counts
    /// them and aggregates them.
    #[inline]
    fn count_new(
        &mut self,
        batch: &mut CapturedBatch,
        mut aggregator: Option<&mut Aggregator>,
        info: &Arc<ConnectionInfo>,
    ) {
        let first_new = batch.conns.len();
        batch.assign_new(info);
        for fingerprint in &mut batch.fingerprints[first_new..] {
            *fingerprint = self.fingerprints.fold(*fingerprint);
        }
        for i in first_new..batch.len() {
            let request = batch.get(i).expect("index below the batch length");
            let record = request.record;
            self.by_status[record.protocol.index()][record.status as usize] += 1;
            self.tally.count(record, info.side);
            if let Some(agg) = aggregator.as_deref_mut() {
                agg.record(&request);
            }
        }
    }
}

/// A partial batch is sent once the watermark has moved this far (event time) since the last
/// one, not at every watermark: watermarks come every few milliseconds, and a message per watermark
/// (a wakeup of the output thread each) cost more than parsing the requests it carried. The
/// sink writes once a second, so the delay is not seen in the output.
const BATCH_DELAY_NS: u64 = 200_000_000;

impl Actor {
    pub fn new(
        config: ActorConfig,
        ring: FrameConsumer,
        records: Sender<ActorOutput>,
        index: usize,
    ) -> Self {
        Actor {
            ring,
            state: ActorState::new(config, records, index),
        }
    }

    /// Processes frames until the ring's producer is gone and the ring is empty; returns
    /// what it counted.
    pub fn run(mut self) -> Summary {
        if let Some(core) = self.state.config.core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        let mut idle_rounds = 0u32;
        loop {
            let state = &mut self.state;
            if self.ring.pop(|tag, body| state.feed(tag, body)).is_some() {
                idle_rounds = 0;
                continue;
            }
            if self.ring.is_abandoned() && self.ring.is_empty() {
                break;
            }
            idle_rounds += 1;
            if idle_rounds < 100 {
                std::hint::spin_loop();
            } else {
                // Woken by the reactor after its next sweep; the timeout only bounds the
                // cost of a missed bell.
                self.ring.wait(Duration::from_millis(100));
            }
        }
        self.state.finish()
    }
}

impl ActorState {
    pub fn new(config: ActorConfig, records: Sender<ActorOutput>, index: usize) -> Self {
        let aggregator = config
            .aggregation
            .map(|c| Aggregator::new(c).expect("aggregation settings are validated by the caller"));
        let batch = config.batch_pool.take();
        ActorState {
            config,
            records,
            index,
            aggregator,
            totals: Totals::default(),
            reported: Totals::default(),
            closed: Totals::default(),
            flushed_until: i64::MIN,
            conns: HashMap::default(),
            filtered: Default::default(),
            identities: HashMap::default(),
            reorder: Reorder::default(),
            batch,
            batch_sent_at: 0,
            summary: Summary::default(),
            records_counted: RecordCounts::default(),
            last_expiry: 0,
        }
    }

    /// Handles one frame (tag and body, read in place from the ring).
    pub fn feed(&mut self, tag: Tag, body: &[u8]) {
        match tag {
            Tag::KernelEvent => self.event(body),
            Tag::Watermark => self.watermark(u64::from_le_bytes(
                body.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 8]),
            )),
            Tag::KernelCounters => {}
            Tag::Identity => self.identity(body),
        }
    }

    /// An identity frame: kept for the connection's open, and given at once to the
    /// connection when it is already open (its peer's identity came later).
    fn identity(&mut self, body: &[u8]) {
        let Some(frame) = IdentityFrame::decode(body) else {
            self.summary.add("identity.malformed", 1);
            return;
        };
        let identity = ConnectionIdentity {
            resolved: frame.own.resolved,
            process: frame.own.process,
            exe: frame.own.exe,
            cgroup: frame.own.cgroup,
            app: frame.own.app,
            peer: frame.peer.map(|p| PeerIdentity {
                pid: p.pid,
                process: p.process,
                app: p.app,
            }),
        };
        if identity.peer.is_some() {
            self.summary.add("identity.peers_joined", 1);
        }
        if let Some(conn) = self.conns.get_mut(&frame.conn) {
            if conn.info.identity != identity {
                let mut info = (*conn.info).clone();
                info.identity = identity.clone();
                conn.info = Arc::new(info);
            }
        }
        let first = self.identities.insert(frame.conn, identity).is_none();
        if first {
            if frame.own.resolved {
                self.totals.identities_resolved += 1;
            } else {
                self.totals.identities_unresolved += 1;
            }
        }
    }

    fn event(&mut self, raw: &[u8]) {
        // The timestamp alone: building the whole header here cost 41 instructions an event.
        let Ok(ts_ns) = events::peek_ts(raw) else {
            self.summary.add("events.malformed", 1);
            return;
        };
        if ts_ns < self.reorder.watermark() {
            // Arrived after its watermark: process now, out of order, and say so.
            self.summary.add("events.late", 1);
            self.process(raw);
        } else {
            self.reorder.hold(ts_ns, raw);
        }
    }

    fn watermark(&mut self, ts: u64) {
        let mut reorder = std::mem::take(&mut self.reorder);
        reorder.release(ts, |raw| self.process(raw));
        self.reorder = reorder;
        if ts == u64::MAX {
            // The end of the input: what is still in flight ends here, and its records must
            // reach the windows flushed below, as they reach `requests`.
            self.close_open_connections();
        } else if ts > self.last_expiry + 1_000_000_000 {
            self.expire_idle(ts);
            self.last_expiry = ts;
        }
        if !self.batch.is_empty()
            && (ts == u64::MAX || ts >= self.batch_sent_at.saturating_add(BATCH_DELAY_NS))
        {
            self.send_batch();
            self.batch_sent_at = ts;
        }
        self.flush_windows(ts);
    }

    /// Closes the aggregation windows the watermark has passed and sends them.
    fn flush_windows(&mut self, watermark: u64) {
        let Some(agg) = &mut self.aggregator else {
            return;
        };
        let window = agg.config().window_ns as i64;
        let until = if watermark == u64::MAX {
            i64::MAX
        } else {
            let now = agg.monotonic_to_unix_ns(watermark);
            now - now.rem_euclid(window)
        };
        if until <= self.flushed_until {
            return;
        }
        let rows = agg.flush_until(until);
        self.records_counted.fingerprints.end_window();
        // The counters since the last flush go to the window that just closed (or, at the
        // end, the window of the last watermark).
        let stats_window = if until == i64::MAX {
            self.flushed_until.max(0)
        } else {
            until - window
        };
        self.flushed_until = until;
        let live = self.live_totals();
        let stats = WindowStats {
            window_start_unix_ns: stats_window,
            events: live.events - self.reported.events,
            bytes: live.bytes - self.reported.bytes,
            trouble: live.trouble.since(&self.reported.trouble),
            connections: self.conns.len() as u64,
            identities_resolved: live.identities_resolved - self.reported.identities_resolved,
            identities_unresolved: live.identities_unresolved - self.reported.identities_unresolved,
        };
        self.reported = live;
        let _ = self.records.send(ActorOutput::Windows {
            actor: self.index,
            until_unix_ns: until,
            rows,
            stats: vec![stats],
        });
    }

    /// Totals including the counters of connections still open.
    fn live_totals(&self) -> Totals {
        let mut t = self.totals;
        t.trouble = self.closed.trouble;
        for conn in self.conns.values() {
            t.trouble.add(&conn.parser.trouble());
        }
        t
    }

    fn process(&mut self, raw: &[u8]) {
        // Matched in place: moving the decoded event to a local first copied the largest
        // variant (an open event, ~150 bytes) with a memcpy call for every event.
        match events::decode(raw) {
            Err(_) => self.summary.add("events.malformed", 1),
            Ok(Event::Open(open)) => {
                self.summary.add("events.open", 1);
                let h = open.header;
                let Some(protocol) = h.protocol else {
                    self.ignore_unknown_protocol(h.conn);
                    return;
                };
                let detected_by = open.detected_by();
                let side = side_of(h.role);
                let (client_addr, server_addr) = match side {
                    Side::Client => (open.local, open.remote),
                    Side::Server => (open.remote, open.local),
                };
                let info = Arc::new(ConnectionInfo {
                    pid: h.conn.tgid,
                    comm: open.comm,
                    cgroup_id: open.cgroup_id,
                    side,
                    client_addr,
                    server_addr,
                    identity: self.identities.get(&h.conn).cloned().unwrap_or_default(),
                    tls: open.tls,
                });
                if !self.config.filter.keeps(protocol, &info) {
                    self.summary.add("connections.filtered_out", 1);
                    self.filtered.insert(h.conn);
                    return;
                }
                let key = connection_key(protocol, h.role);
                self.summary.add(&key, 1);
                self.summary
                    .add(&format!("{key}.server_port.{}", info.server_addr.port()), 1);
                self.summary.add(&format!("{key}.comm.{}", info.comm), 1);
                self.summary
                    .add(&format!("{key}.detected_by.{}", detected_by), 1);
                let conn = self.new_conn(&h, protocol, info);
                if let Some(old) = self.conns.insert(h.conn, conn) {
                    self.summary.add("connections.reopened", 1);
                    self.close_conn(old, h.ts_ns);
                }
            }
            Ok(Event::Data(data)) => {
                let h = data.header;
                if self.filtered.contains(&h.conn) {
                    return;
                }
                // Per-event counts go to plain fields (no map lookup on the hot path); they
                // reach the summary in `finish`.
                self.totals.events += 1;
                self.totals.bytes += data.total;
                self.totals.captured += data.payload.len() as u64;
                // One lookup on the common path (the connection is known); a second one only
                // after inserting a connection whose open event was lost.
                let conn = match self.conns.get_mut(&h.conn) {
                    Some(conn) => conn,
                    None => {
                        // Its open event was lost: keep what the header says.
                        let Some(protocol) = h.protocol else {
                            self.ignore_unknown_protocol(h.conn);
                            return;
                        };
                        self.summary.add("connections.without_open", 1);
                        self.summary.add(&connection_key(protocol, h.role), 1);
                        let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
                        let info = Arc::new(ConnectionInfo {
                            pid: h.conn.tgid,
                            comm: String::new(),
                            cgroup_id: 0,
                            side: side_of(h.role),
                            client_addr: unspecified,
                            server_addr: unspecified,
                            identity: Default::default(),
                            tls: data.tls,
                        });
                        let conn = self.new_conn(&h, protocol, info);
                        self.conns.entry(h.conn).insert_entry(conn).into_mut()
                    }
                };
                conn.last_ts = h.ts_ns;
                let dir = direction(conn.role, h.flow);
                let out = &mut self.batch.records;
                if data.tail && data.cut() == 0 {
                    conn.parser.push_tail(dir, h.ts_ns, data.payload, out);
                } else {
                    // An unreadable tail is one more cut.
                    conn.parser
                        .push(dir, h.ts_ns, data.payload, data.cut(), out);
                }
                if self.batch.records.len() > self.batch.conns.len() {
                    // Field by field, so that `conn.info` is lent, not cloned (an atomic
                    // increment and decrement per event).
                    self.records_counted.count_new(
                        &mut self.batch,
                        self.aggregator.as_mut(),
                        &conn.info,
                    );
                    if self.batch.len() >= BATCH {
                        self.send_batch();
                    }
                }
            }
            Ok(Event::Close(h)) => {
                self.summary.add("events.close", 1);
                self.filtered.remove(&h.conn);
                self.identities.remove(&h.conn);
                if let Some(conn) = self.conns.remove(&h.conn) {
                    self.close_conn(conn, h.ts_ns);
                }
            }
        }
    }

    fn new_conn(&self, h: &Header, protocol: Protocol, info: Arc<ConnectionInfo>) -> Conn {
        let limits = ParserLimits {
            max_query_bytes: self.config.max_query_bytes,
            max_buffered: self.config.max_buffered,
        };
        Conn {
            info,
            protocol,
            role: h.role,
            parser: if self.config.frames_only {
                registry::new_frame_counter(&limits)
            } else {
                registry::new_parser(protocol, &limits)
            },
            last_ts: h.ts_ns,
        }
    }

    /// A connection whose events name a protocol this build does not know (a recording
    /// from a newer build): counted, and its events ignored until it closes.
    #[cold]
    fn ignore_unknown_protocol(&mut self, conn: ConnId) {
        if self.filtered.insert(conn) {
            self.summary.add("connections.unknown_protocol", 1);
        }
    }

    fn close_conn(&mut self, mut conn: Conn, ts: u64) {
        self.closed.trouble.add(&conn.parser.trouble());
        conn.parser.close(ts, &mut self.batch.records);
        self.collect(&conn.info);
        let summary = &mut self.summary;
        let protocol = conn.protocol.name();
        conn.parser.for_each_counter(&mut |stage, name, value| {
            summary.add(&format!("{stage}.{protocol}.{name}"), value)
        });
        self.summary.add("connections.closed", 1);
    }

    /// Closes every connection still open at the end of the input, at the time of the last
    /// event any of them saw: requests in flight become incomplete records.
    fn close_open_connections(&mut self) {
        let ts = self
            .conns
            .values()
            .map(|c| c.last_ts)
            .max()
            .unwrap_or_default();
        let open: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in open {
            if let Some(conn) = self.conns.remove(&id) {
                self.summary.add("connections.open_at_end", 1);
                self.close_conn(conn, ts);
            }
        }
    }

    fn expire_idle(&mut self, now: u64) {
        let timeout = self.config.idle_timeout_ns;
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last_ts) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            // An expired connection's identity goes too (its close may never come).
            self.identities.remove(&id);
            if let Some(conn) = self.conns.remove(&id) {
                self.summary.add("connections.expired", 1);
                self.close_conn(conn, now);
            }
        }
    }

    /// The records the parser of `info`'s connection just appended to the batch: counted,
    /// aggregated and given their connection.
    fn collect(&mut self, info: &Arc<ConnectionInfo>) {
        self.records_counted
            .count_new(&mut self.batch, self.aggregator.as_mut(), info);
        if self.batch.len() >= BATCH {
            self.send_batch();
        }
    }

    fn send_batch(&mut self) {
        let batch = std::mem::replace(&mut self.batch, self.config.batch_pool.take());
        // A receiver that went away (no sink) is not an error: records are then counted only.
        let _ = self.records.send(ActorOutput::Requests(batch));
    }

    /// Ends every connection still open (the capture stopped) and returns the summary.
    pub fn finish(mut self) -> Summary {
        // Closes what is still open, then sends the last records and windows (a no-op when
        // the input already ended with this watermark).
        self.watermark(u64::MAX);
        self.summary.add("events.data", self.totals.events);
        self.summary
            .add("identity.resolved", self.totals.identities_resolved);
        self.summary
            .add("identity.unresolved", self.totals.identities_unresolved);
        self.summary.add("bytes.captured", self.totals.captured);
        self.summary.add(
            "bytes.cut",
            self.totals.bytes.saturating_sub(self.totals.captured),
        );
        self.records_counted.tally.add_to(&mut self.summary);
        let folded = self.records_counted.fingerprints.folded();
        if folded > 0 {
            self.summary.add("fingerprint.folded", folded);
        }
        for protocol in Protocol::ALL {
            for status in [
                Status::Ok,
                Status::Error,
                Status::Cancelled,
                Status::Incomplete,
            ] {
                let n = self.records_counted.by_status[protocol.index()][status as usize];
                let key = format!("records.{}.{}", protocol.name(), status.name());
                self.summary.add(&key, n);
            }
        }
        self.summary
    }
}

fn side_of(role: Role) -> Side {
    match role {
        Role::Server => Side::Server,
        Role::Client | Role::Unknown => Side::Client,
    }
}

/// Which way the bytes went on the connection, from who observed them.
fn direction(role: Role, flow: Flow) -> Direction {
    match (side_of(role), flow) {
        (Side::Client, Flow::Egress) | (Side::Server, Flow::Ingress) => Direction::ClientToServer,
        _ => Direction::ServerToClient,
    }
}

fn connection_key(protocol: Protocol, role: Role) -> String {
    format!("connections.{}.{}", protocol.name(), side_of(role).name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use l7tap_abi::events::{build, EventKind};

    fn header(kind: EventKind, ts: u64, flow: Flow) -> Header {
        Header {
            kind,
            ts_ns: ts,
            conn: ConnId {
                tgid: 10,
                fd: 3,
                start_ns: 1,
            },
            tid: 10,
            protocol: Some(Protocol::ZooKeeper),
            role: Role::Client,
            flow,
        }
    }

    fn state() -> ActorState {
        let (tx, _rx) = crossbeam_channel::unbounded();
        ActorState::new(
            ActorConfig {
                frames_only: true,
                ..ActorConfig::default()
            },
            tx,
            0,
        )
    }

    #[test]
    fn events_from_two_cpus_are_processed_in_timestamp_order() {
        let open = build::open(
            &header(EventKind::Open, 5, Flow::Egress),
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:2181".parse().unwrap(),
            "python3",
        );
        // request, response, request: arriving response first (it came from another CPU).
        let req1 = build::data(&header(EventKind::Data, 10, Flow::Egress), 3, b"abc");
        let resp = build::data(&header(EventKind::Data, 20, Flow::Ingress), 2, b"de");
        let req2 = build::data(&header(EventKind::Data, 30, Flow::Egress), 1, b"f");
        let mut s = state();
        for raw in [&open, &resp, &req1, &req2] {
            s.feed(Tag::KernelEvent, raw);
        }
        s.feed(Tag::Watermark, &u64::MAX.to_le_bytes());
        let summary = s.finish();
        // In timestamp order the frame counter sees three turns (c, s, c); in arrival order
        // it would see two (s, then c c).
        assert_eq!(summary.get("parse.zookeeper.messages"), 3);
        assert_eq!(summary.get("connections.zookeeper.client"), 1);
        assert_eq!(
            summary.get("connections.zookeeper.client.server_port.2181"),
            1
        );
        assert_eq!(summary.get("connections.without_open"), 0);
        assert_eq!(summary.get("events.late"), 0);
    }

    #[test]
    fn an_event_older_than_the_watermark_is_processed_and_counted_late() {
        let mut s = state();
        s.feed(Tag::Watermark, &100u64.to_le_bytes());
        let late = build::data(&header(EventKind::Data, 50, Flow::Egress), 1, b"x");
        s.feed(Tag::KernelEvent, &late);
        let summary = s.finish();
        assert_eq!(summary.get("events.late"), 1);
        assert_eq!(summary.get("connections.without_open"), 1);
        assert_eq!(summary.get("bytes.captured"), 1);
    }

    /// A ZooKeeper frame: length, xid, opcode or zxid and error, then `body`.
    fn zk_frame(fields: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = fields.concat();
        [&(body.len() as u32).to_be_bytes()[..], &body].concat()
    }

    fn exists(xid: i32, path: &str) -> Vec<u8> {
        let len = (path.len() as u32).to_be_bytes();
        zk_frame(&[
            &xid.to_be_bytes(),
            &3i32.to_be_bytes(),
            &len,
            path.as_bytes(),
            &[0],
        ])
    }

    #[test]
    fn requests_in_flight_at_the_end_of_the_input_reach_the_last_windows() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut s = ActorState::new(
            ActorConfig {
                aggregation: Some(AggregatorConfig::default()),
                ..ActorConfig::default()
            },
            tx,
            0,
        );
        let at = |ms: u64| 1_000_000_000_000 + ms * 1_000_000;
        let open = build::open(
            &header(EventKind::Open, at(0), Flow::Egress),
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:2181".parse().unwrap(),
            "python3",
        );
        // exists /a answered; exists /b still in flight when the input ends.
        let answered = exists(1, "/a");
        let reply = zk_frame(&[
            &1i32.to_be_bytes(),
            &7i64.to_be_bytes(),
            &0i32.to_be_bytes(),
        ]);
        let in_flight = exists(2, "/b");
        let events = [
            open,
            build::data(
                &header(EventKind::Data, at(1), Flow::Egress),
                answered.len() as u64,
                &answered,
            ),
            build::data(
                &header(EventKind::Data, at(2), Flow::Ingress),
                reply.len() as u64,
                &reply,
            ),
            build::data(
                &header(EventKind::Data, at(3), Flow::Egress),
                in_flight.len() as u64,
                &in_flight,
            ),
        ];
        for raw in &events {
            s.feed(Tag::KernelEvent, raw);
        }
        // The end of the input, as the router sends it; then the thread ends.
        s.feed(Tag::Watermark, &u64::MAX.to_le_bytes());
        let summary = s.finish();
        let (mut records, mut incomplete, mut counted, mut counted_incomplete) = (0, 0, 0, 0);
        for output in rx.try_iter() {
            match output {
                ActorOutput::Requests(batch) => {
                    records += batch.len();
                    incomplete += batch
                        .iter()
                        .filter(|r| r.record.status == Status::Incomplete)
                        .count();
                }
                ActorOutput::Windows { rows, .. } => {
                    for row in rows {
                        counted += row.count;
                        if row.key.status == Status::Incomplete {
                            counted_incomplete += row.count;
                        }
                    }
                }
            }
        }
        assert_eq!((records, incomplete), (2, 1));
        assert_eq!(
            (counted, counted_incomplete),
            (2, 1),
            "every record is in a window"
        );
        assert_eq!(summary.get("connections.open_at_end"), 1);
    }

    #[test]
    fn a_connection_of_a_protocol_this_build_does_not_know_is_ignored_and_counted() {
        let unknown = |kind, ts, flow| Header {
            protocol: None,
            ..header(kind, ts, flow)
        };
        let open = build::open(
            &unknown(EventKind::Open, 5, Flow::Egress),
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:7000".parse().unwrap(),
            "newer",
        );
        let data = build::data(&unknown(EventKind::Data, 10, Flow::Egress), 3, b"abc");
        let mut s = state();
        for raw in [&open, &data] {
            s.feed(Tag::KernelEvent, raw);
        }
        s.feed(Tag::Watermark, &u64::MAX.to_le_bytes());
        let summary = s.finish();
        assert_eq!(summary.get("connections.unknown_protocol"), 1);
        assert_eq!(summary.get("connections.without_open"), 0);
        assert_eq!(summary.get("connections.open_at_end"), 0);
    }

    #[test]
    fn identity_frames_reach_the_connection_and_a_later_peer_reaches_its_next_records() {
        use l7tap_ingest::identity::{PeerIdentity as FramePeer, ProcessIdentity};
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut s = ActorState::new(ActorConfig::default(), tx, 0);
        let conn = header(EventKind::Open, 5, Flow::Egress).conn;
        let mut frame = IdentityFrame {
            conn,
            own: ProcessIdentity {
                pid: 10,
                resolved: true,
                process: "batch".into(),
                exe: "/usr/bin/python3".into(),
                cgroup: "/nightly.service".into(),
                app: "nightly.service".into(),
            },
            peer: None,
        };
        s.feed(Tag::Identity, &frame.encode());
        s.feed(
            Tag::KernelEvent,
            &build::open(
                &header(EventKind::Open, 5, Flow::Egress),
                "127.0.0.1:40000".parse().unwrap(),
                "127.0.0.1:2181".parse().unwrap(),
                "batch",
            ),
        );
        let reply =
            |xid: i32| zk_frame(&[&xid.to_be_bytes(), &7i64.to_be_bytes(), &0i32.to_be_bytes()]);
        let exchange = |s: &mut ActorState, xid: i32, at: u64| {
            let request = exists(xid, "/a");
            let answer = reply(xid);
            let out = header(EventKind::Data, at, Flow::Egress);
            let back = header(EventKind::Data, at + 1, Flow::Ingress);
            s.feed(
                Tag::KernelEvent,
                &build::data(&out, request.len() as u64, &request),
            );
            s.feed(
                Tag::KernelEvent,
                &build::data(&back, answer.len() as u64, &answer),
            );
            s.feed(Tag::Watermark, &(at + 2).to_le_bytes());
        };
        exchange(&mut s, 1, 10);
        // The server's end opened: the second frame names it.
        frame.peer = Some(FramePeer {
            pid: 20,
            process: "java".into(),
            app: "java :2181".into(),
        });
        s.feed(Tag::Identity, &frame.encode());
        exchange(&mut s, 2, 20);
        s.feed(Tag::Watermark, &u64::MAX.to_le_bytes());
        let summary = s.finish();
        let mut servers = vec![];
        for output in rx.try_iter() {
            if let ActorOutput::Requests(batch) = output {
                for request in batch.iter() {
                    let client = request.conn.client_end().unwrap();
                    assert_eq!(
                        (client.pid, client.process, client.app),
                        (10, "batch", "nightly.service")
                    );
                    servers.push(request.conn.server_end().map(|e| e.app.to_string()));
                }
            }
        }
        assert_eq!(servers, vec![None, Some("java :2181".to_string())]);
        assert_eq!(summary.get("identity.resolved"), 1);
        assert_eq!(summary.get("identity.unresolved"), 0);
        assert_eq!(summary.get("identity.peers_joined"), 1);
    }
}
