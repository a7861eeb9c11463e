//! The server → client direction of a ClickHouse connection: its state machine (Hello or
//! a refused login, then Data-family blocks, Progress, ProfileInfo, Exception, EndOfStream,
//! ... at packet boundaries) and the packets that end a query's record.
use super::codes::{revision, ServerPacket};
use super::layout::{Layout, Picked};
use super::packets;
use super::session::{ends_syscall, malformed, wire_error, BlockProgress, ClickHouseParser};
use super::wire::{Cursor, MAX_NAME};
use crate::{Direction, Input, ParseError, Records, Status, Step};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ServerState {
    Start,
    Ready,
    /// Inside a Data-family block (or a compressed TableColumns).
    Block,
    Resync,
}

impl ClickHouseParser {
    pub(super) fn parse_server(
        &mut self,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        let buf = input.bytes;
        loop {
            match self.server {
                ServerState::Start => match buf[0] {
                    0 => {
                        let mut c = Cursor::new(&buf[1..]);
                        return match packets::server_hello(&mut c, self.client_revision) {
                            // The server then waits for the client: its Hello is alone in its
                            // syscall. Bytes from the middle of a packet can start with 0 too.
                            Ok(h)
                                if h.server_name.is_empty()
                                    || h.revision < revision::CLIENT_INFO
                                    || !ends_syscall(input, 1 + c.pos) =>
                            {
                                Err(malformed("not a server Hello"))
                            }
                            Ok(h) => {
                                // Without the client's Hello only an upper bound is known.
                                self.layout = Some(match self.client_revision {
                                    Some(cr) => Layout::exact(cr.min(h.revision)),
                                    None => Layout {
                                        lo: revision::CLIENT_INFO,
                                        hi: h.revision,
                                    },
                                });
                                self.server = ServerState::Ready;
                                self.counters.n_messages += 1;
                                Ok(Step::Consumed(1 + c.pos as u64))
                            }
                            Err(e) => wire_error(e),
                        };
                    }
                    2 if self.hello_ts.is_some() => {
                        // Authentication refused: an Exception instead of the Hello.
                        let mut c = Cursor::new(&buf[1..]);
                        return match packets::exception(&mut c) {
                            Ok(e) => {
                                let len = 1 + c.pos;
                                self.login_failed(&e, input.ts_end(len), len as u64, out);
                                self.server = ServerState::Ready;
                                self.counters.n_messages += 1;
                                Ok(Step::Consumed(len as u64))
                            }
                            Err(e) => wire_error(e),
                        };
                    }
                    _ => {
                        self.server = ServerState::Resync;
                        self.counters.n_midstream_starts += 1;
                    }
                },
                ServerState::Ready => return self.server_packet(input, out),
                ServerState::Block => match self.step_block(Direction::ServerToClient, buf)? {
                    BlockProgress::Step(s) => return Ok(s),
                    BlockProgress::Ended(n) => {
                        self.server = ServerState::Ready;
                        if n > 0 {
                            return Ok(Step::Consumed(n));
                        }
                    }
                },
                ServerState::Resync => return self.resync_server(input, out),
            }
        }
    }

    pub(super) fn server_packet(
        &mut self,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let mut c = Cursor::new(buf);
        let code = match c.varuint() {
            Ok(v) => ServerPacket(v),
            Err(e) => return wire_error(e),
        };
        let r = self.layout_hi();
        let result = match code {
            ServerPacket::DATA
            | ServerPacket::TOTALS
            | ServerPacket::EXTREMES
            | ServerPacket::LOG
            | ServerPacket::PROFILE_EVENTS
            | ServerPacket::PREVIEW_DATA => match c.string(MAX_NAME) {
                Ok(_) => {
                    let frames_for_logs = r >= revision::COMPRESSED_LOGS_PROFILE_EVENTS_COLUMNS;
                    let is_log = matches!(code, ServerPacket::LOG | ServerPacket::PROFILE_EVENTS);
                    let compressed = self
                        .query_compressed()
                        .map(|c| c && (!is_log || frames_for_logs));
                    let custom = self.custom_serialization();
                    let count = matches!(code, ServerPacket::DATA | ServerPacket::PREVIEW_DATA);
                    self.server_block.start(compressed, custom, count);
                    self.server = ServerState::Block;
                    Ok(Step::Consumed(c.pos as u64))
                }
                Err(e) => wire_error(e),
            },
            ServerPacket::EXCEPTION => match packets::exception(&mut c) {
                Ok(e) => {
                    let len = c.pos;
                    let ts = input.ts_end(len);
                    if let Some(q) = self.take_query_answered_at(input.ts_at(0)) {
                        self.finish_with_exception(q, &e, ts, len as u64, out);
                    }
                    Ok(Step::Consumed(len as u64))
                }
                Err(e) => wire_error(e),
            },
            ServerPacket::PROGRESS => {
                match self.pick_layout(input, c.pos, packets::PROGRESS_LAYOUT_THRESHOLDS, |c, r| {
                    packets::progress(c, r)
                }) {
                    Ok(Picked {
                        value: p,
                        len,
                        narrowed,
                    }) => {
                        self.narrow_layout(narrowed);
                        if let Some(q) = &mut self.query {
                            let written = p.written_rows > 0 || p.written_bytes > 0;
                            q.progress_written |= written;
                            let d = q.details();
                            d.rows_read += p.read_rows;
                            d.bytes_read += p.read_bytes;
                            d.rows_written += p.written_rows;
                            d.bytes_written += p.written_bytes;
                        }
                        Ok(Step::Consumed(len as u64))
                    }
                    Err(e) => wire_error(e),
                }
            }
            ServerPacket::PROFILE_INFO => {
                match self.pick_layout(
                    input,
                    c.pos,
                    packets::PROFILE_INFO_LAYOUT_THRESHOLDS,
                    packets::profile_info,
                ) {
                    Ok(Picked {
                        value: p,
                        len,
                        narrowed,
                    }) => {
                        self.narrow_layout(narrowed);
                        if let Some(q) = &mut self.query {
                            q.profile_rows += p.rows;
                        }
                        Ok(Step::Consumed(len as u64))
                    }
                    Err(e) => wire_error(e),
                }
            }
            ServerPacket::END_OF_STREAM => {
                let len = c.pos;
                if let Some(q) = self.take_query_answered_at(input.ts_at(0)) {
                    let status = if q.cancelled {
                        Status::Cancelled
                    } else {
                        Status::Ok
                    };
                    self.finish(q, status, input.ts_end(len), len as u64, out);
                }
                Ok(Step::Consumed(len as u64))
            }
            ServerPacket::PONG | ServerPacket::READ_TASK_REQUEST => {
                Ok(Step::Consumed(c.pos as u64))
            }
            ServerPacket::TABLES_STATUS_RESPONSE => {
                match packets::tables_status_response(&mut c, r) {
                    Ok(()) => Ok(Step::Consumed(c.pos as u64)),
                    Err(e) => wire_error(e),
                }
            }
            ServerPacket::TABLE_COLUMNS => {
                if self.query_compressed() == Some(true)
                    && r >= revision::COMPRESSED_LOGS_PROFILE_EVENTS_COLUMNS
                {
                    // Both strings inside one compression frame.
                    self.server_block.start(Some(true), false, false);
                    self.server = ServerState::Block;
                    Ok(Step::Consumed(c.pos as u64))
                } else {
                    match c.string(MAX_NAME).and_then(|_| c.string(1 << 30)) {
                        Ok(_) => Ok(Step::Consumed(c.pos as u64)),
                        Err(e) => wire_error(e),
                    }
                }
            }
            ServerPacket::PART_UUIDS => match packets::part_uuids(&mut c) {
                Ok(()) => Ok(Step::Consumed(c.pos as u64)),
                Err(e) => wire_error(e),
            },
            ServerPacket::TIMEZONE_UPDATE | ServerPacket::SSH_CHALLENGE => match c.string(MAX_NAME)
            {
                Ok(_) => Ok(Step::Consumed(c.pos as u64)),
                Err(e) => wire_error(e),
            },
            _ => Err(malformed("server packet that cannot be followed")),
        };
        if matches!(result, Ok(Step::Consumed(_))) {
            self.counters.n_messages += 1;
        }
        result
    }
}
