//! Session state: requests in flight and their pairing with replies.
//!
//! ZooKeeper answers a session's requests in order (the Java client treats anything else as
//! "xid out of order"), so a reply normally matches the oldest request in flight. Replies are
//! nevertheless matched by xid, which keeps pairing right when replies were lost (a gap on
//! the server's direction) or when the capture started mid-stream:
//!
//! - a reply matches the oldest in-flight request with its xid;
//! - requests of the same kind (normal xid, or the same special xid) that are older than the
//!   matched one can no longer be answered: they end `Incomplete`;
//! - a reply that matches nothing is counted and dropped, never recorded;
//! - the queue is bounded: at the cap the oldest request ends `Incomplete`.
//!
//! The paths and multi op names of the requests in flight live in the queue's own text arena
//! (cleared whenever the queue empties, compacted when it grows), so queueing a request
//! allocates nothing once the connection is warm.
use crate::{Details, Protocol, Records, RequestRecord, Status, Text, TextArena, ZooKeeperDetails};

use super::codes::{ErrorCode, OpCode};

/// A request waiting for its reply: what its record will say, kept compact (the full
/// record is built once, when the request ends; the session id is the queue's).
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    pub xid: i64,
    pub op: OpCode,
    pub start_ns: u64,
    /// The frame's length (frames are at most `jute.maxbuffer` plus slack, well below 4 GiB).
    pub bytes_sent: u32,
    /// Path (or an auth request's scheme), bounded, in the queue's arena, if `has_path`,
    /// and whether it was cut. (Not an `Option<Text>`: its tag would be stored apart from
    /// the span and read back with it, a stall on every request.)
    pub path: Text,
    pub has_path: bool,
    pub path_truncated: bool,
    pub watch: bool,
    pub version: Option<i32>,
    /// A multi's op names joined by `,`, in the queue's arena.
    pub multi_ops: Text,
}

/// What a reply says about its request.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub end_ns: u64,
    pub bytes_received: u64,
    pub zxid: i64,
    pub err: ErrorCode,
}

impl InFlight {
    /// The path (or scheme), if the request has one.
    #[inline]
    pub fn path(&self) -> Option<Text> {
        self.has_path.then_some(self.path)
    }

    /// The record of the answered request, with the request's text spans as they are.
    #[inline(always)]
    pub fn answered(&self, answer: Answer, session_id: Option<i64>) -> RequestRecord {
        self.record(answer, session_id, self.path(), self.multi_ops)
    }

    /// The record of the answered request, its text at `path` and `multi_ops` (the
    /// request's own spans or those of a copy), built in one go: records are large, and
    /// every move of one costs.
    #[inline(always)]
    fn record(
        &self,
        answer: Answer,
        session_id: Option<i64>,
        path: Option<Text>,
        multi_ops: Text,
    ) -> RequestRecord {
        let (status, error_code, error_name) = outcome(answer.err);
        RequestRecord {
            protocol: Protocol::ZooKeeper,
            start_ns: self.start_ns,
            end_ns: answer.end_ns,
            operation: self.op.record_name(),
            status,
            error_code,
            error_name,
            error_message: None,
            query: path,
            query_truncated: self.path_truncated,
            bytes_sent: u64::from(self.bytes_sent),
            bytes_received: answer.bytes_received,
            details: Details::ZooKeeper(ZooKeeperDetails {
                xid: clamp_xid(self.xid),
                zxid: answer.zxid,
                session_id,
                watch: self.watch,
                multi_ops,
                version: self.version,
                notification: None,
                connect: None,
            }),
        }
    }

    /// The record of a request with no answer: `Incomplete`, ending where it started.
    pub fn unanswered(&self, session_id: Option<i64>) -> RequestRecord {
        let answer = Answer {
            end_ns: self.start_ns,
            bytes_received: 0,
            zxid: 0,
            err: ErrorCode::OK,
        };
        let mut record = self.answered(answer, session_id);
        record.status = Status::Incomplete;
        record
    }
}

/// The record's xid field is 32 bits; Keeper's 64-bit xids saturate (its 64-bit close xid
/// becomes the 32-bit one).
pub fn clamp_xid(xid: i64) -> i32 {
    i32::try_from(xid).unwrap_or(if xid < 0 { i32::MIN } else { i32::MAX })
}

/// Arena size from which the queue's text is compacted (while requests stay in flight).
const MIN_COMPACTION_BYTES: usize = 64 * 1024;

/// Requests in flight, oldest first.
#[derive(Debug)]
pub struct InFlightQueue {
    queue: Fifo,
    /// Text of the requests in the queue (and of nothing else).
    text: TextArena,
    /// Arena length at which to drop the text of requests no longer in flight.
    compact_at: usize,
    cap: usize,
    /// Requests ended `Incomplete` because the queue was full.
    pub n_overflows: u64,
    /// Requests ended `Incomplete` because a younger request of their kind was answered.
    pub n_overtaken: u64,
    /// The session of the connection, once its handshake was seen: every record's.
    pub session_id: Option<i64>,
}

impl InFlightQueue {
    pub fn new(cap: usize) -> Self {
        InFlightQueue {
            queue: Fifo::default(),
            text: TextArena::default(),
            compact_at: MIN_COMPACTION_BYTES,
            cap: cap.max(1),
            n_overflows: 0,
            n_overtaken: 0,
            session_id: None,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The arena that a request's text must be in before it is pushed.
    #[inline]
    pub fn text_mut(&mut self) -> &mut TextArena {
        if self.queue.is_empty() {
            self.text.clear();
            // Give back what a burst of requests in flight made the arena grow to.
            if self.text.capacity() > 4 * MIN_COMPACTION_BYTES {
                self.text.shrink_to(MIN_COMPACTION_BYTES);
            }
        } else if self.text.len() >= self.compact_at {
            self.compact();
        }
        &mut self.text
    }

    /// The text of the requests in flight.
    pub fn text(&self) -> &TextArena {
        &self.text
    }

    /// Answers the oldest request (which the caller checked is there) and drops it from the
    /// queue: its record is built from the queue's slot, not moved out first.
    #[inline]
    pub fn answer_oldest(&mut self, answer: Answer, out: &mut Records) {
        if let Some(oldest) = self.queue.first() {
            self.emit(oldest, answer, out);
            self.queue.drop_front();
        }
    }

    /// Emits the record of `request` (of this queue) answered by `answer`: its text is
    /// copied to `out` first, so the record is built once, with its final spans.
    #[inline(always)]
    pub fn emit(&self, request: &InFlight, answer: Answer, out: &mut Records) {
        let path = request
            .path()
            .map(|path| out.text.copy_from(&self.text, path));
        let multi_ops = match request.multi_ops.is_empty() {
            true => Text::EMPTY,
            false => out.text.copy_from(&self.text, request.multi_ops),
        };
        out.push(request.record(answer, self.session_id, path, multi_ops));
    }

    #[inline]
    pub fn push(&mut self, request: InFlight, out: &mut Records) {
        if self.queue.len() >= self.cap {
            self.end_oldest_for_room(out);
        }
        self.queue.push_back(request);
    }

    /// The queue is full: its oldest request ends `Incomplete`.
    #[cold]
    fn end_oldest_for_room(&mut self, out: &mut Records) {
        if let Some(oldest) = self.queue.pop_front() {
            self.n_overflows += 1;
            out.push_from(oldest.unanswered(self.session_id), &self.text);
        }
    }

    /// Drops the text before the oldest span still in flight and rebases the rest.
    #[cold]
    fn compact(&mut self) {
        let live_start = self
            .queue
            .iter()
            .flat_map(|r| [r.path, r.multi_ops])
            .filter(|t| !t.is_empty())
            .map(Text::start)
            .min();
        match live_start {
            None => self.text.clear(),
            Some(dead) => {
                self.text.drain_front(dead);
                for r in self.queue.iter_mut() {
                    if !r.path.is_empty() {
                        r.path = r.path.shifted_back(dead);
                    }
                    if !r.multi_ops.is_empty() {
                        r.multi_ops = r.multi_ops.shifted_back(dead);
                    }
                }
            }
        }
        self.compact_at = MIN_COMPACTION_BYTES.max(2 * self.text.len());
    }

    /// The request in flight longest.
    #[inline]
    pub fn oldest(&self) -> Option<&InFlight> {
        self.queue.first()
    }

    /// The type of the request a reply with `xid` would be paired with.
    #[inline]
    pub fn op_of(&self, xid: i64) -> Option<OpCode> {
        // Replies come in order: the oldest request is nearly always the one.
        match self.queue.first() {
            Some(oldest) if oldest.xid == xid => Some(oldest.op),
            _ => self.queue.iter().find(|r| r.xid == xid).map(|r| r.op),
        }
    }

    /// The most recent request, if it has `xid` (to complete fields read after it was
    /// queued).
    pub fn newest_mut(&mut self, xid: i64) -> Option<&mut InFlight> {
        self.queue.last_mut().filter(|r| r.xid == xid)
    }

    /// Takes the request a reply with `xid`, whose last byte came at `end_ns`, answers;
    /// older requests of the same kind end `Incomplete` (their replies were lost). A request
    /// sent after that reply ended is not the one it answers (garbage that looked like a
    /// reply, held until a request came).
    #[inline]
    pub fn take(&mut self, xid: i64, end_ns: u64, out: &mut Records) -> Option<InFlight> {
        if self
            .queue
            .first()
            .is_some_and(|oldest| oldest.xid == xid && oldest.start_ns <= end_ns)
        {
            return self.queue.pop_front();
        }
        self.take_overtaking(xid, end_ns, out)
    }

    /// [`Self::take`] of a request that is not the oldest.
    fn take_overtaking(&mut self, xid: i64, end_ns: u64, out: &mut Records) -> Option<InFlight> {
        let at = self
            .queue
            .iter()
            .position(|r| r.xid == xid && r.start_ns <= end_ns)?;
        let kind = xid_kind(xid);
        let mut i = 0;
        let mut target = at;
        while i < target {
            if xid_kind(self.queue[i].xid) == kind {
                let lost = self.queue.remove(i);
                self.n_overtaken += 1;
                out.push_from(lost.unanswered(self.session_id), &self.text);
                target -= 1;
            } else {
                i += 1;
            }
        }
        Some(self.queue.remove(target))
    }

    /// The connection ended at `ts_ns`: everything in flight ends. A closeSession the server
    /// did not answer was answered by the close itself (ClickHouse Keeper never replies to
    /// it); everything else is `Incomplete`.
    pub fn close(&mut self, ts_ns: u64, out: &mut Records) {
        for &request in self.queue.iter() {
            let record = if request.op == OpCode::CLOSE_SESSION {
                let answer = Answer {
                    end_ns: ts_ns.max(request.start_ns),
                    bytes_received: 0,
                    zxid: 0,
                    err: ErrorCode::OK,
                };
                request.answered(answer, self.session_id)
            } else {
                request.unanswered(self.session_id)
            };
            out.push_from(record, &self.text);
        }
        self.queue.clear();
        self.text.clear();
    }
}

/// The requests in flight, oldest first: a `Vec` read from `head`, and a slice of the live
/// ones through `Deref`. Answering the oldest only moves `head` (a `VecDeque` wraps its index
/// on every access, on the hot path of every request and reply); the answered prefix is
/// dropped when the queue empties, as pipelining clients' queues do between bursts, or
/// instead of growing once it is half the `Vec`.
#[derive(Debug, Default)]
struct Fifo {
    items: Vec<InFlight>,
    head: usize,
}

impl std::ops::Deref for Fifo {
    type Target = [InFlight];

    #[inline]
    fn deref(&self) -> &[InFlight] {
        &self.items[self.head..]
    }
}

impl std::ops::DerefMut for Fifo {
    #[inline]
    fn deref_mut(&mut self) -> &mut [InFlight] {
        &mut self.items[self.head..]
    }
}

impl Fifo {
    #[inline]
    fn push_back(&mut self, request: InFlight) {
        if self.items.len() == self.items.capacity() && self.head >= self.len() && self.head > 0 {
            self.drop_answered();
        }
        self.items.push(request);
    }

    #[cold]
    fn drop_answered(&mut self) {
        self.items.drain(..self.head);
        self.head = 0;
    }

    /// Drops the oldest request (if any).
    #[inline]
    fn drop_front(&mut self) {
        if self.head < self.items.len() {
            self.head += 1;
            if self.head == self.items.len() {
                self.clear();
            }
        }
    }

    #[inline]
    fn pop_front(&mut self) -> Option<InFlight> {
        let oldest = *self.first()?;
        self.drop_front();
        Some(oldest)
    }

    /// Takes the request at `index` (0: the oldest), which must be there.
    fn remove(&mut self, index: usize) -> InFlight {
        let request = self.items.remove(self.head + index);
        if self.is_empty() {
            self.clear();
        }
        request
    }

    fn clear(&mut self) {
        self.items.clear();
        self.head = 0;
    }
}

/// Pairing classes: replies to normal requests overtake only normal requests; a ping reply
/// only pings, and so on (servers may answer special xids on their own path).
fn xid_kind(x: i64) -> i64 {
    if x > 0 {
        1
    } else {
        x
    }
}

/// A fresh ZooKeeper record, `Incomplete` until told otherwise, for a request that started
/// at `start_ns`.
pub fn request_record(
    operation: &'static str,
    start_ns: u64,
    bytes_sent: u64,
    details: ZooKeeperDetails,
) -> RequestRecord {
    RequestRecord {
        protocol: Protocol::ZooKeeper,
        start_ns,
        end_ns: start_ns,
        operation,
        status: Status::Incomplete,
        error_code: None,
        error_name: None,
        error_message: None,
        query: None,
        query_truncated: false,
        bytes_sent,
        bytes_received: 0,
        details: Details::ZooKeeper(details),
    }
}

pub fn details_mut(record: &mut RequestRecord) -> &mut ZooKeeperDetails {
    match &mut record.details {
        Details::ZooKeeper(d) => d,
        // Records of this module are always built by `request_record`.
        Details::ClickHouse(_) => unreachable!("ZooKeeper record with ClickHouse details"),
    }
}

/// Sets the outcome of `record` from the reply's error code.
pub fn set_outcome(record: &mut RequestRecord, err: ErrorCode) {
    (record.status, record.error_code, record.error_name) = outcome(err);
}

/// Status, error code and error name for a reply's error code (a code outside the table
/// has no name, as in ClickHouse records).
#[inline]
fn outcome(err: ErrorCode) -> (Status, Option<i32>, Option<&'static str>) {
    match err.is_ok() {
        true => (Status::Ok, None, None),
        false => (Status::Error, Some(err.0), err.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zookeeper::codes::xid;

    fn request(xid: i64, op: OpCode, start: u64) -> InFlight {
        InFlight {
            xid,
            op,
            start_ns: start,
            bytes_sent: 10,
            path: Text::EMPTY,
            has_path: false,
            path_truncated: false,
            watch: false,
            version: None,
            multi_ops: Text::EMPTY,
        }
    }

    fn statuses(out: &Records) -> Vec<(u64, Status)> {
        out.iter().map(|r| (r.start_ns, r.status)).collect()
    }

    #[test]
    fn the_fifo_keeps_order_and_reuses_its_vec_under_a_steady_window() {
        let mut fifo = Fifo::default();
        let xids = |f: &Fifo| f.iter().map(|r| r.xid).collect::<Vec<_>>();
        for x in 0..8 {
            fifo.push_back(request(x, OpCode::GET_DATA, 0));
        }
        // Eight in flight, one answered per request: once warm, the answered prefix is
        // dropped instead of the Vec growing.
        let mut warm_capacity = 0;
        for x in 8..1000 {
            fifo.push_back(request(x, OpCode::GET_DATA, 0));
            assert_eq!(fifo.pop_front().map(|r| r.xid), Some(x - 8));
            assert_eq!(xids(&fifo), (x - 7..=x).collect::<Vec<_>>());
            if x == 100 {
                warm_capacity = fifo.items.capacity();
            }
        }
        assert!(warm_capacity <= 16, "{warm_capacity}");
        assert_eq!(fifo.items.capacity(), warm_capacity);
        assert_eq!(fifo.remove(2).xid, 994);
        assert_eq!(xids(&fifo), vec![992, 993, 995, 996, 997, 998, 999]);
        while fifo.pop_front().is_some() {}
        assert_eq!((fifo.items.len(), fifo.head), (0, 0));
    }

    #[test]
    fn a_reply_overtakes_only_older_requests_of_its_kind() {
        let mut q = InFlightQueue::new(100);
        let mut out = Records::default();
        q.push(request(1, OpCode::GET_DATA, 1), &mut out);
        q.push(request(xid::PING, OpCode::PING, 2), &mut out);
        q.push(request(2, OpCode::GET_DATA, 3), &mut out);
        q.push(request(3, OpCode::GET_DATA, 4), &mut out);
        let taken = q.take(3, 10, &mut out).unwrap();
        assert_eq!(taken.start_ns, 4);
        assert_eq!(
            statuses(&out),
            vec![(1, Status::Incomplete), (3, Status::Incomplete)]
        );
        assert_eq!(q.len(), 1);
        assert!(q.take(7, 10, &mut out).is_none());
        assert!(q.take(xid::PING, 10, &mut out).is_some());
        assert_eq!(q.n_overtaken, 2);
    }

    #[test]
    fn a_reply_never_answers_a_request_sent_after_it() {
        let mut q = InFlightQueue::new(100);
        let mut out = Records::default();
        q.push(request(1, OpCode::GET_DATA, 5), &mut out);
        // A reply-like frame that ended at 2, before the request at 5: not its answer.
        assert!(q.take(1, 2, &mut out).is_none());
        assert_eq!(q.len(), 1);
        assert!(q.take(1, 5, &mut out).is_some());
        assert!(out.is_empty());
    }

    #[test]
    fn overflow_ends_the_oldest_and_close_ends_the_rest() {
        let mut q = InFlightQueue::new(2);
        let mut out = Records::default();
        q.push(request(1, OpCode::GET_DATA, 1), &mut out);
        q.push(request(2, OpCode::GET_DATA, 2), &mut out);
        q.push(request(3, OpCode::CLOSE_SESSION, 3), &mut out);
        assert_eq!(statuses(&out), vec![(1, Status::Incomplete)]);
        q.close(9, &mut out);
        assert_eq!(
            statuses(&out),
            vec![
                (1, Status::Incomplete),
                (2, Status::Incomplete),
                (3, Status::Ok)
            ]
        );
        assert_eq!(q.n_overflows, 1);
    }

    #[test]
    fn paths_survive_compaction_and_the_text_stays_bounded() {
        let mut q = InFlightQueue::new(1000);
        let mut out = Records::default();
        let path = |i: u64| format!("/clickhouse/tables/01/replicas/r1/queue/query-{i:010}");
        // Ten requests always in flight, 20,000 answered: about 1 MB of paths went through.
        for i in 0..20_010u64 {
            let mut request = request(i as i64 + 1, OpCode::GET_DATA, i);
            request.path = q.text_mut().push(&path(i));
            request.has_path = true;
            q.push(request, &mut out);
            if i >= 10 {
                let answered = q.take(i as i64 - 9, i, &mut out).unwrap();
                let answer = Answer {
                    end_ns: i,
                    bytes_received: 1,
                    zxid: 1,
                    err: ErrorCode::OK,
                };
                q.emit(&answered, answer, &mut out);
                assert!(q.text.len() <= 2 * MIN_COMPACTION_BYTES, "{}", q.text.len());
            }
        }
        q.close(30_000, &mut out);
        let paths: Vec<_> = out.iter().map(|r| out.opt_str(r.query).unwrap()).collect();
        assert_eq!(paths.len(), 20_010);
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(*p, path(i as u64));
        }
    }
}
