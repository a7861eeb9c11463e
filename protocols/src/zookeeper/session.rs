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
use std::borrow::Cow;
use std::collections::VecDeque;

use crate::{Details, Protocol, Record, RequestRecord, Status, ZooKeeperDetails};

use super::codes::{ErrorCode, OpCode};

/// A request waiting for its reply: what its record will say, kept compact (the full
/// record is built once, when the request ends).
#[derive(Debug)]
pub struct InFlight {
    pub xid: i64,
    pub op: OpCode,
    pub start_ns: u64,
    pub bytes_sent: u64,
    pub session_id: Option<i64>,
    /// Path (or an auth request's scheme), bounded, and whether it was cut.
    pub path: Option<String>,
    pub path_truncated: bool,
    pub watch: bool,
    pub version: Option<i32>,
    pub multi_ops: Vec<&'static str>,
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
    /// The record of the answered request, built in one go (records are large: every
    /// move of one costs).
    pub fn answered(self, answer: Answer) -> RequestRecord {
        let (status, error_code, error_name) = outcome(answer.err);
        RequestRecord {
            protocol: Protocol::ZooKeeper,
            start_ns: self.start_ns,
            end_ns: answer.end_ns,
            operation: operation_name(self.op),
            status,
            error_code,
            error_name,
            error_message: None,
            query: self.path,
            query_truncated: self.path_truncated,
            bytes_sent: self.bytes_sent,
            bytes_received: answer.bytes_received,
            details: Details::ZooKeeper(ZooKeeperDetails {
                xid: clamp_xid(self.xid),
                zxid: answer.zxid,
                session_id: self.session_id,
                watch: self.watch,
                multi_ops: self.multi_ops,
                version: self.version,
                notification: None,
                connect: None,
            }),
        }
    }

    /// The record of a request with no answer: `Incomplete`, ending where it started.
    pub fn unanswered(self) -> RequestRecord {
        let start_ns = self.start_ns;
        let mut record = self.answered(Answer {
            end_ns: start_ns,
            bytes_received: 0,
            zxid: 0,
            err: ErrorCode::OK,
        });
        record.status = Status::Incomplete;
        record
    }
}

fn operation_name(op: OpCode) -> Cow<'static, str> {
    match op.name() {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(op.to_string()),
    }
}

/// The record's xid field is 32 bits; Keeper's 64-bit xids saturate (its 64-bit close xid
/// becomes the 32-bit one).
pub fn clamp_xid(xid: i64) -> i32 {
    i32::try_from(xid).unwrap_or(if xid < 0 { i32::MIN } else { i32::MAX })
}

/// Requests in flight, oldest first.
#[derive(Debug)]
pub struct InFlightQueue {
    queue: VecDeque<InFlight>,
    cap: usize,
    /// Requests ended `Incomplete` because the queue was full.
    pub n_overflows: u64,
    /// Requests ended `Incomplete` because a younger request of their kind was answered.
    pub n_overtaken: u64,
}

impl InFlightQueue {
    pub fn new(cap: usize) -> Self {
        InFlightQueue {
            queue: VecDeque::new(),
            cap: cap.max(1),
            n_overflows: 0,
            n_overtaken: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn push(&mut self, request: InFlight, out: &mut Vec<Record>) {
        if self.queue.len() >= self.cap {
            if let Some(oldest) = self.queue.pop_front() {
                self.n_overflows += 1;
                out.push(Record::Request(oldest.unanswered()));
            }
        }
        self.queue.push_back(request);
    }

    /// The type of the request a reply with `xid` would be paired with.
    pub fn op_of(&self, xid: i64) -> Option<OpCode> {
        self.queue.iter().find(|r| r.xid == xid).map(|r| r.op)
    }

    /// The most recent request, if it has `xid` (to complete fields read after it was
    /// queued).
    pub fn newest_mut(&mut self, xid: i64) -> Option<&mut InFlight> {
        self.queue.back_mut().filter(|r| r.xid == xid)
    }

    /// Takes the request a reply with `xid` answers; older requests of the same kind end
    /// `Incomplete` (their replies were lost).
    pub fn take(&mut self, xid: i64, out: &mut Vec<Record>) -> Option<InFlight> {
        let at = self.queue.iter().position(|r| r.xid == xid)?;
        if at == 0 {
            return self.queue.pop_front();
        }
        let kind = xid_kind(xid);
        let mut i = 0;
        let mut target = at;
        while i < target {
            if xid_kind(self.queue[i].xid) == kind {
                let lost = self.queue.remove(i).expect("index in range");
                self.n_overtaken += 1;
                out.push(Record::Request(lost.unanswered()));
                target -= 1;
            } else {
                i += 1;
            }
        }
        self.queue.remove(target)
    }

    /// The connection ended at `ts_ns`: everything in flight ends. A closeSession the server
    /// did not answer was answered by the close itself (ClickHouse Keeper never replies to
    /// it); everything else is `Incomplete`.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Record>) {
        for request in self.queue.drain(..) {
            let record = if request.op == OpCode::CLOSE_SESSION {
                let answer = Answer {
                    end_ns: ts_ns.max(request.start_ns),
                    bytes_received: 0,
                    zxid: 0,
                    err: ErrorCode::OK,
                };
                request.answered(answer)
            } else {
                request.unanswered()
            };
            out.push(Record::Request(record));
        }
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
    operation: Cow<'static, str>,
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

/// Status, error code and error name for a reply's error code.
fn outcome(err: ErrorCode) -> (Status, Option<i32>, Option<Cow<'static, str>>) {
    if err.is_ok() {
        return (Status::Ok, None, None);
    }
    let name = match err.name() {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(err.to_string()),
    };
    (Status::Error, Some(err.0), Some(name))
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
            session_id: None,
            path: None,
            path_truncated: false,
            watch: false,
            version: None,
            multi_ops: Vec::new(),
        }
    }

    fn statuses(out: &[Record]) -> Vec<(u64, Status)> {
        out.iter()
            .map(|Record::Request(r)| (r.start_ns, r.status))
            .collect()
    }

    #[test]
    fn a_reply_overtakes_only_older_requests_of_its_kind() {
        let mut q = InFlightQueue::new(100);
        let mut out = vec![];
        q.push(request(1, OpCode::GET_DATA, 1), &mut out);
        q.push(request(xid::PING, OpCode::PING, 2), &mut out);
        q.push(request(2, OpCode::GET_DATA, 3), &mut out);
        q.push(request(3, OpCode::GET_DATA, 4), &mut out);
        let taken = q.take(3, &mut out).unwrap();
        assert_eq!(taken.start_ns, 4);
        assert_eq!(
            statuses(&out),
            vec![(1, Status::Incomplete), (3, Status::Incomplete)]
        );
        assert_eq!(q.len(), 1);
        assert!(q.take(7, &mut out).is_none());
        assert!(q.take(xid::PING, &mut out).is_some());
        assert_eq!(q.n_overtaken, 2);
    }

    #[test]
    fn overflow_ends_the_oldest_and_close_ends_the_rest() {
        let mut q = InFlightQueue::new(2);
        let mut out = vec![];
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
}
