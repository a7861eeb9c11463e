//! The client → server direction of a ClickHouse connection: its state machine (Hello,
//! Addendum, then Query, Data, Cancel, Ping, ... at packet boundaries) and the Query packet
//! that starts each record.
use super::codes::{revision, ClientPacket};
use super::layout::{Layout, QueryMatch};
use super::packets;
use super::session::{ends_syscall, malformed, wire_error, BlockProgress, ClickHouseParser};
use super::wire::{bounded_text, Cursor, WireError, MAX_NAME};
use crate::{Direction, Input, ParseError, Protocol, Records, Step};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientState {
    /// Nothing parsed yet: a Hello, or a connection seen from its middle.
    Start,
    /// Hello seen; an Addendum follows the server Hello at revision >= 54458.
    AwaitAddendum,
    /// At a packet boundary.
    Ready,
    /// Inside a Data or Scalar block.
    Block,
    /// After a query text skipped beyond the buffer: the parameters list (>= 54459).
    QueryParameters,
    Resync,
}

fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

impl ClickHouseParser {
    pub(super) fn parse_client(
        &mut self,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        let buf = input.bytes;
        loop {
            match self.client {
                ClientState::Start => {
                    if buf[0] != 0 {
                        self.client = ClientState::Resync;
                        self.counters.n_midstream_starts += 1;
                        continue;
                    }
                    let mut c = Cursor::new(&buf[1..]);
                    return match packets::client_hello(&mut c) {
                        // A Hello is alone in its syscall: the client then waits for the server.
                        Ok(_) if !ends_syscall(input, 1 + c.pos) => {
                            Err(malformed("Hello does not end its syscall"))
                        }
                        Ok(h) => {
                            self.client_revision = Some(h.revision);
                            self.user = text(h.user);
                            self.client_name = text(h.client_name);
                            self.client_version =
                                format!("{}.{}", h.version_major, h.version_minor);
                            self.hello_ts = Some(input.ts_at(0));
                            self.client = ClientState::AwaitAddendum;
                            self.counters.n_messages += 1;
                            Ok(Step::Consumed(1 + c.pos as u64))
                        }
                        Err(WireError::Short) => Ok(Step::NeedMore),
                        Err(WireError::Bad(what)) => Err(malformed(what)),
                    };
                }
                ClientState::AwaitAddendum => {
                    let Some(layout) = self.layout.filter(|l| l.lo == l.hi) else {
                        // The server Hello has not been seen yet.
                        return Ok(Step::NeedMore);
                    };
                    if layout.hi < revision::ADDENDUM {
                        self.client = ClientState::Ready;
                        continue;
                    }
                    let mut c = Cursor::new(buf);
                    return match packets::addendum(&mut c, layout.hi) {
                        Ok(a) if a.chunked_client_to_server || a.chunked_server_to_client => {
                            Err(ParseError::Unfollowable {
                                protocol: Protocol::ClickHouse,
                                what: "chunked packet framing",
                            })
                        }
                        Ok(_) => {
                            self.client = ClientState::Ready;
                            Ok(Step::Consumed(c.pos as u64))
                        }
                        Err(e) => wire_error(e),
                    };
                }
                ClientState::Ready => return self.client_packet(input, out),
                ClientState::Block => {
                    match self.step_block(Direction::ClientToServer, buf)? {
                        BlockProgress::Step(s) => return Ok(s),
                        BlockProgress::Ended(0) => {
                            // The block ended where this input starts: parse the next packet.
                            self.client = ClientState::Ready;
                            continue;
                        }
                        BlockProgress::Ended(n) => {
                            self.client = ClientState::Ready;
                            return Ok(Step::Consumed(n));
                        }
                    }
                }
                ClientState::QueryParameters => {
                    let mut c = Cursor::new(buf);
                    return match packets::query_parameters(&mut c) {
                        Ok(()) => {
                            self.client = ClientState::Ready;
                            Ok(Step::Consumed(c.pos as u64))
                        }
                        Err(e) => wire_error(e),
                    };
                }
                ClientState::Resync => return self.resync_client(input, out),
            }
        }
    }

    fn client_packet(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let mut c = Cursor::new(buf);
        let code = match c.varuint() {
            Ok(v) => ClientPacket(v),
            Err(e) => return wire_error(e),
        };
        let consumed = |c: &Cursor<'_>| Ok(Step::Consumed(c.pos as u64));
        let result = match code {
            ClientPacket::QUERY => return self.query_packet(input, out),
            ClientPacket::DATA | ClientPacket::SCALAR => match c.string(MAX_NAME) {
                Ok(_) => {
                    let compressed = self.query_compressed();
                    let custom = self.custom_serialization();
                    self.client_block
                        .start(compressed, custom, code == ClientPacket::DATA);
                    self.client = ClientState::Block;
                    consumed(&c)
                }
                Err(e) => wire_error(e),
            },
            ClientPacket::CANCEL => {
                if let Some(q) = &mut self.query {
                    q.cancelled = true;
                }
                consumed(&c)
            }
            ClientPacket::PING | ClientPacket::KEEP_ALIVE | ClientPacket::SSH_CHALLENGE_REQUEST => {
                consumed(&c)
            }
            ClientPacket::TABLES_STATUS_REQUEST => match packets::tables_status_request(&mut c) {
                Ok(()) => consumed(&c),
                Err(e) => wire_error(e),
            },
            ClientPacket::IGNORED_PART_UUIDS => match packets::part_uuids(&mut c) {
                Ok(()) => consumed(&c),
                Err(e) => wire_error(e),
            },
            ClientPacket::READ_TASK_RESPONSE => match c.varuint().and_then(|_| c.string(1 << 30)) {
                Ok(_) => consumed(&c),
                Err(e) => wire_error(e),
            },
            ClientPacket::SSH_CHALLENGE_RESPONSE => match c.string(MAX_NAME) {
                Ok(_) => consumed(&c),
                Err(e) => wire_error(e),
            },
            _ => Err(malformed("client packet that cannot be followed")),
        };
        if matches!(result, Ok(Step::Consumed(_))) {
            self.counters.n_messages += 1;
        }
        result
    }

    pub(super) fn query_packet(
        &mut self,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let QueryMatch { head, layout } = match self.match_query(input) {
            Ok(m) => m,
            Err(WireError::Bad(what)) => {
                // A Query starts at this packet boundary, unreadable: the response in flight
                // ended unseen, and a later end would be this Query's.
                self.end_unanswered(out);
                return Err(malformed(what));
            }
            Err(WireError::Short) => return Ok(Step::NeedMore),
        };
        let text_at = 1 + head.text_at;
        let text_end = text_at as u64 + head.text_len;
        let max = self.config.max_query_bytes;
        let kept = (head.text_len as usize).min(max);
        let with_parameters = layout.hi >= revision::PARAMETERS;
        let (packet_len, next) = if text_end <= buf.len() as u64 {
            let mut len = text_end as usize;
            if with_parameters {
                let mut c = Cursor::new(&buf[len..]);
                if let Err(e) = packets::query_parameters(&mut c) {
                    return wire_error(e);
                }
                len += c.pos;
            }
            (len as u64, ClientState::Ready)
        } else if buf.len() >= text_at + kept && head.text_len as usize > kept {
            // A long text: keep its head, skip the rest unbuffered.
            let next = if with_parameters {
                ClientState::QueryParameters
            } else {
                ClientState::Ready
            };
            (text_end, next)
        } else {
            return Ok(Step::NeedMore);
        };
        let captured = &buf[text_at..(text_at + kept).min(buf.len())];
        let (query_bytes, cut) = bounded_text(captured, max);
        let truncated = cut || head.text_len as usize > max;
        match self.layout {
            None => self.layout = Some(layout),
            // Keep what earlier packets proved: the ranges overlap (see `match_query`).
            Some(l) if l.lo != l.hi => {
                let lo = l.lo.max(layout.lo);
                let hi = l.hi.min(layout.hi);
                self.layout = Some(if lo <= hi { Layout { lo, hi } } else { layout });
            }
            Some(_) => {}
        }
        // The record reports what the Query itself shows (the negotiated revision, or the
        // highest its layout allows), not what later packets proved on this side.
        self.start_query(
            &head,
            layout.hi,
            query_bytes,
            truncated,
            input.ts_at(0),
            out,
        );
        self.client = next;
        self.counters.n_messages += 1;
        Ok(Step::Consumed(packet_len))
    }
}
