//! Shards frames into the actors' rings by connection, and records them when asked.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use l7tap_abi::events::{decode, peek_header, ConnId, Event, EventKind};
use l7tap_abi::Protocol;

use crate::frame::Tag;
use crate::identity::IdentityFrame;
use crate::join::ConnectionIdentities;
use crate::recording::{RecordingError, RecordingWriter};
use crate::ring::FrameProducer;

/// Counters of the router, readable from other threads (progress line, summary). They are
/// updated once per batch of events (at each watermark), not per event.
#[derive(Debug, Default)]
pub struct RouterStats {
    pub events: AtomicU64,
    pub event_bytes: AtomicU64,
    /// Events dropped because their actor's ring was full (live capture only).
    pub ring_drops: AtomicU64,
    /// Events whose header could not be read.
    pub malformed: AtomicU64,
    /// Connections classified (open events), by [`Protocol::index`].
    pub opened: [AtomicU64; Protocol::COUNT],
    /// Identity frames sent (a live capture's, or a recording's).
    pub identities: AtomicU64,
}

pub struct Router {
    rings: Vec<FrameProducer>,
    recorder: Option<RecordingWriter>,
    /// Replay waits for room in a ring; a live capture must not stall the kernel's
    /// buffers, so it drops and counts instead.
    wait_when_full: bool,
    stats: Arc<RouterStats>,
    /// The counters, kept here and copied to `stats` at each watermark: an atomic
    /// read-modify-write per event and counter was a few percent of a replay's time.
    counts: Counts,
    /// A live capture resolves who is at each connection's ends at its open; a replay reads
    /// the identity frames the capture recorded instead.
    identities: Option<Box<dyn ConnectionIdentities>>,
    identity_frames: Vec<IdentityFrame>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    events: u64,
    event_bytes: u64,
    ring_drops: u64,
    malformed: u64,
    opened: [u64; Protocol::COUNT],
    identities: u64,
}

/// The actor that owns a connection.
pub fn shard_of(conn: &ConnId, n_shards: usize) -> usize {
    let mut h = (conn.tgid as u64) << 32 | conn.fd as u32 as u64;
    h ^= conn.start_ns.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 29;
    // The high half of `h * n_shards`: maps the hash onto 0..n_shards like `%`, without a
    // division per event.
    ((h as u128 * n_shards as u128) >> 64) as usize
}

impl Router {
    pub fn new(
        rings: Vec<FrameProducer>,
        recorder: Option<RecordingWriter>,
        wait_when_full: bool,
    ) -> Self {
        assert!(!rings.is_empty(), "a router needs at least one ring");
        Router {
            rings,
            recorder,
            wait_when_full,
            stats: Arc::default(),
            counts: Counts::default(),
            identities: None,
            identity_frames: Vec::new(),
        }
    }

    /// Resolves identities at every open event (a live capture) and sends them as frames.
    pub fn with_identities(mut self, identities: Box<dyn ConnectionIdentities>) -> Self {
        self.identities = Some(identities);
        self
    }

    pub fn stats(&self) -> Arc<RouterStats> {
        self.stats.clone()
    }

    /// Routes one raw kernel event to its connection's actor.
    pub fn event(&mut self, raw: &[u8]) -> Result<(), RecordingError> {
        let Ok(header) = peek_header(raw) else {
            self.counts.malformed += 1;
            return Ok(());
        };
        match header.kind {
            EventKind::Open if self.identities.is_some() => self.resolve_identities(raw)?,
            EventKind::Close => {
                if let Some(identities) = &mut self.identities {
                    identities.closed(&header.conn);
                }
            }
            _ => {}
        }
        let shard = shard_of(&header.conn, self.rings.len());
        let ring = &mut self.rings[shard];
        let pushed = if self.wait_when_full {
            // Replay: the actor is woken at the next watermark (it holds events until then
            // anyway), or by `push_blocking` when the ring is full. A wake per event was a
            // fence per event: 2 % of a replay's time.
            ring.push_blocking(Tag::KernelEvent, &[raw])
        } else {
            ring.try_push(Tag::KernelEvent, &[raw])
        };
        if !pushed {
            self.counts.ring_drops += 1;
            return Ok(());
        }
        self.counts.events += 1;
        if header.kind == EventKind::Open {
            // An unknown wire id is not counted here: the actor ignores the connection and
            // counts it (`connections.unknown_protocol`).
            if let Some(protocol) = header.protocol {
                self.counts.opened[protocol.index()] += 1;
            }
        }
        self.counts.event_bytes += raw.len() as u64;
        if let Some(rec) = &mut self.recorder {
            rec.write(Tag::KernelEvent, &[raw])?;
        }
        Ok(())
    }

    /// The identity frames of an open event, sent before it: an actor then knows who the
    /// connection's ends are when it processes the open.
    fn resolve_identities(&mut self, raw: &[u8]) -> Result<(), RecordingError> {
        let (Some(identities), Ok(Event::Open(open))) = (&mut self.identities, decode(raw)) else {
            return Ok(());
        };
        let mut frames = std::mem::take(&mut self.identity_frames);
        identities.opened(&open, &mut frames);
        for frame in frames.drain(..) {
            self.identity(&frame.encode())?;
        }
        self.identity_frames = frames;
        Ok(())
    }

    /// Routes one identity frame to its connection's actor (and records it).
    pub fn identity(&mut self, body: &[u8]) -> Result<(), RecordingError> {
        let Some(frame) = IdentityFrame::decode(body) else {
            self.counts.malformed += 1;
            return Ok(());
        };
        let shard = shard_of(&frame.conn, self.rings.len());
        let ring = &mut self.rings[shard];
        let pushed = if self.wait_when_full {
            ring.push_blocking(Tag::Identity, &[body])
        } else {
            ring.try_push(Tag::Identity, &[body])
        };
        if !pushed {
            self.counts.ring_drops += 1;
            return Ok(());
        }
        self.counts.identities += 1;
        if let Some(rec) = &mut self.recorder {
            rec.write(Tag::Identity, &[body])?;
        }
        Ok(())
    }

    /// Copies the counters to the shared [`RouterStats`].
    fn publish(&self) {
        let (c, s) = (&self.counts, &self.stats);
        s.events.store(c.events, Relaxed);
        s.event_bytes.store(c.event_bytes, Relaxed);
        s.ring_drops.store(c.ring_drops, Relaxed);
        s.malformed.store(c.malformed, Relaxed);
        s.identities.store(c.identities, Relaxed);
        for (shared, &count) in s.opened.iter().zip(&c.opened) {
            shared.store(count, Relaxed);
        }
    }

    /// Tells every actor that all events before `ts_ns` have been routed.
    pub fn watermark(&mut self, ts_ns: u64) -> Result<(), RecordingError> {
        self.publish();
        let body = ts_ns.to_le_bytes();
        for ring in &mut self.rings {
            // A watermark is never dropped: it is what lets actors release held events.
            ring.push_blocking(Tag::Watermark, &[&body]);
            // The end of a batch: wake the actor if it sleeps.
            ring.wake_consumer();
        }
        if let Some(rec) = &mut self.recorder {
            rec.write(Tag::Watermark, &[&body])?;
        }
        Ok(())
    }

    /// Records a frame that only the summary needs (kernel counters, ring drops).
    pub fn record_only(&mut self, tag: Tag, body: &[u8]) -> Result<(), RecordingError> {
        if let Some(rec) = &mut self.recorder {
            rec.write(tag, &[body])?;
        }
        Ok(())
    }

    /// Flushes the recording; the rings close when the router is dropped.
    pub fn finish(mut self) -> Result<(), RecordingError> {
        match self.recorder.take() {
            Some(rec) => rec.finish(),
            None => Ok(()),
        }
    }
}

impl Drop for Router {
    /// The counters of events routed after the last watermark.
    fn drop(&mut self) {
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::frame_ring;
    use l7tap_abi::events::{build, Flow, Header, Role};

    fn header(fd: i32, ts: u64) -> Header {
        Header {
            kind: l7tap_abi::events::EventKind::Data,
            ts_ns: ts,
            conn: ConnId {
                tgid: 100,
                fd,
                start_ns: 1,
            },
            tid: 100,
            protocol: Some(Protocol::ClickHouse),
            role: Role::Client,
            flow: Flow::Egress,
        }
    }

    #[test]
    fn a_connection_always_lands_in_the_same_ring_in_order() {
        let (rings, mut consumers): (Vec<_>, Vec<_>) = (0..3).map(|_| frame_ring(1 << 16)).unzip();
        let mut router = Router::new(rings, None, true);
        for i in 0..30u64 {
            let raw = build::data(&header((i % 5) as i32, i), 1, &[i as u8]);
            router.event(&raw).unwrap();
        }
        router.watermark(99).unwrap();
        let mut seen = vec![];
        for (shard, c) in consumers.iter_mut().enumerate() {
            while let Some(item) =
                c.pop(|tag, body| (tag == Tag::KernelEvent).then(|| peek_header(body).unwrap()))
            {
                if let Some(h) = item {
                    assert_eq!(shard_of(&h.conn, 3), shard);
                    seen.push((h.conn.fd, h.ts_ns));
                }
            }
        }
        for fd in 0..5 {
            let ts: Vec<u64> = seen.iter().filter(|s| s.0 == fd).map(|s| s.1).collect();
            assert_eq!(ts.len(), 6);
            assert!(ts.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn live_routing_drops_and_counts_when_a_ring_is_full() {
        let (ring, _consumer) = frame_ring(256);
        let mut router = Router::new(vec![ring], None, false);
        let raw = build::data(&header(1, 1), 100, &[0; 100]);
        for _ in 0..5 {
            router.event(&raw).unwrap();
        }
        let stats = router.stats();
        // Counters are published at watermarks and when the router goes away.
        drop(router);
        assert_eq!(stats.events.load(Relaxed), 1);
        assert_eq!(stats.ring_drops.load(Relaxed), 4);
    }

    /// Names every connection "app-<tgid>".
    struct NameByPid;

    impl ConnectionIdentities for NameByPid {
        fn opened(&mut self, open: &l7tap_abi::events::OpenEvent, frames: &mut Vec<IdentityFrame>) {
            frames.push(IdentityFrame {
                conn: open.header.conn,
                own: crate::identity::ProcessIdentity {
                    pid: open.header.conn.tgid,
                    app: format!("app-{}", open.header.conn.tgid),
                    ..Default::default()
                },
                peer: None,
            });
        }
        fn closed(&mut self, _conn: &ConnId) {}
    }

    #[test]
    fn an_open_events_identity_frame_reaches_its_ring_first() {
        let (ring, mut consumer) = frame_ring(1 << 16);
        let mut router = Router::new(vec![ring], None, true).with_identities(Box::new(NameByPid));
        let mut open = header(3, 1);
        open.kind = EventKind::Open;
        let local = "127.0.0.1:9000".parse().unwrap();
        let remote = "127.0.0.1:40000".parse().unwrap();
        router
            .event(&build::open(&open, local, remote, "x"))
            .unwrap();
        router.watermark(2).unwrap();
        let mut tags = vec![];
        while let Some(item) = consumer.pop(|tag, body| {
            (
                tag,
                (tag == Tag::Identity).then(|| IdentityFrame::decode(body).unwrap().own.app),
            )
        }) {
            tags.push(item);
        }
        assert_eq!(
            tags,
            vec![
                (Tag::Identity, Some("app-100".to_string())),
                (Tag::KernelEvent, None),
                (Tag::Watermark, None),
            ]
        );
        assert_eq!(router.stats().identities.load(Relaxed), 1);
    }
}
