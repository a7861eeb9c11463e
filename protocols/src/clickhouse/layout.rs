//! Which revision's packet layout a ClickHouse connection uses. The handshake negotiates
//! it; on a connection seen from its middle it is inferred: a Query packet gives a range of
//! revisions (the layout epochs whose reading of it looks like SQL and ends where a packet
//! ends), and later packets narrow it.
//!
//! Where the revision was inferred from a Query, a packet whose layout changed inside the
//! inferred range (Progress, ProfileInfo) is read with each candidate layout; the one
//! followed by the syscall's end or by another packet wins, and when only one fits, the range
//! shrinks to it for the rest of the connection.
use super::block::read_block_header;
use super::codes::{revision, ServerPacket};
use super::compression::FrameHeader;
use super::packets::{self, QueryHead};
use super::session::{ends_syscall, ClickHouseParser};
use super::statement::statement_type;
use super::wire::{Cursor, WireError, WireResult, MAX_NAME};
use crate::Input;

/// Which layout revision the parser uses: negotiated in the handshake (`lo == hi`), or a
/// range inferred from a Query packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) lo: u64,
    pub(super) hi: u64,
}

impl Layout {
    pub(super) fn exact(r: u64) -> Self {
        Layout { lo: r, hi: r }
    }

    /// Candidate revisions with distinct layouts for a packet whose layout changes at
    /// `thresholds`: `hi` first, then just below each threshold inside the range.
    fn candidates(&self, thresholds: &[u64]) -> ([u64; 4], usize) {
        let mut out = [self.hi; 4];
        let mut n = 1;
        let mut sorted = [0u64; 4];
        let k = thresholds.len().min(4);
        sorted[..k].copy_from_slice(&thresholds[..k]);
        sorted[..k].sort_unstable_by(|a, b| b.cmp(a));
        for &t in &sorted[..k] {
            if t > self.lo && t <= self.hi && n < 4 {
                out[n] = t - 1;
                n += 1;
            }
        }
        (out, n)
    }

    /// The part of this range with the same layout as candidate `r` (one of
    /// [`Layout::candidates`] for `thresholds`).
    fn narrowed_to(&self, r: u64, thresholds: &[u64]) -> Layout {
        let mut narrowed = *self;
        for &t in thresholds {
            if t > self.lo && t <= self.hi {
                if t <= r {
                    narrowed.lo = narrowed.lo.max(t);
                } else {
                    narrowed.hi = narrowed.hi.min(t - 1);
                }
            }
        }
        narrowed
    }
}

/// A packet body read by [`ClickHouseParser::pick_layout`]: its length, and the layout range
/// its bytes proved.
pub(super) struct Picked<T> {
    pub(super) value: T,
    pub(super) len: usize,
    pub(super) narrowed: Option<Layout>,
}

/// Where a Query read with an inferred layout ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PacketEnd {
    At(usize),
    /// A text too long for the buffer, trusted on its head.
    BeyondBuffer,
}

/// Outcome of looking for a Query packet at the start of a buffer.
pub(super) struct QueryMatch<'a> {
    pub(super) head: QueryHead<'a>,
    pub(super) layout: Layout,
}

impl ClickHouseParser {
    /// The negotiated revision, when the handshake was seen.
    pub fn negotiated_revision(&self) -> Option<u64> {
        self.layout.filter(|l| l.lo == l.hi).map(|l| l.hi)
    }

    pub(super) fn layout_hi(&self) -> u64 {
        self.layout.map_or(revision::NEWEST, |l| l.hi)
    }

    /// Keeps a layout range a packet proved (an exact, negotiated layout stays as it is).
    pub(super) fn narrow_layout(&mut self, narrowed: Option<Layout>) {
        if let (Some(n), Some(l)) = (narrowed, self.layout) {
            if l.lo != l.hi {
                self.layout = Some(n);
            }
        }
    }

    pub(super) fn custom_serialization(&self) -> bool {
        self.layout_hi() >= revision::CUSTOM_SERIALIZATION
    }

    /// Finds the Query at the start of `input`: with the negotiated layout, or inferring it.
    ///
    /// An inferred range spans every layout epoch, from the newest that fits down, that reads
    /// the packet exactly alike: a Query without settings reads the same before and after
    /// 54429 (settings as strings), for example, and the true revision may lie in any of
    /// them. Taking only the newest epoch would read later packets (Progress: written rows
    /// from 54420) with a layout the connection does not use.
    pub(super) fn match_query<'a>(&self, input: &Input<'a>) -> WireResult<QueryMatch<'a>> {
        let buf = input.bytes;
        if buf.first() != Some(&1) {
            return Err(WireError::Bad("not a Query packet"));
        }
        if let Some(layout) = self.layout.filter(|l| l.lo == l.hi) {
            let head = packets::query_head(&buf[1..], layout.hi)?;
            return Ok(QueryMatch { head, layout });
        }
        let mut short = false;
        // The newest fitting epoch's reading (head and packet end), and its range so far.
        let mut found: Option<(QueryHead<'a>, PacketEnd, Layout)> = None;
        for &epoch in packets::QUERY_LAYOUT_EPOCHS {
            let upper = packets::epoch_upper_bound(epoch);
            if let Some(known) = self.layout {
                if upper < known.lo || epoch > known.hi {
                    continue;
                }
            }
            let reading = packets::query_head(&buf[1..], epoch).and_then(|head| {
                self.plausible_inferred_query(input, &head, epoch)
                    .map(|end| (head, end))
            });
            match (&mut found, reading) {
                (None, Ok((head, end))) => {
                    let mut hi = upper;
                    if head.kind == 1 && head.interface == 1 && head.client_revision >= epoch {
                        hi = hi.min(head.client_revision);
                    }
                    found = Some((head, end, Layout { lo: epoch, hi }));
                }
                (None, Err(WireError::Short)) => short = true,
                (None, Err(WireError::Bad(_))) => {}
                (Some((head, end, layout)), Ok(older)) if older == (*head, *end) => {
                    layout.lo = epoch;
                }
                // An older epoch that reads the packet otherwise, or not at all, ends the range.
                (Some(_), _) => break,
            }
        }
        match found {
            Some((head, _, layout)) => Ok(QueryMatch { head, layout }),
            None if short => Err(WireError::Short),
            None => Err(WireError::Bad("no Query layout fits")),
        }
    }

    /// Checks on a Query parsed with a guessed layout: the text must look like SQL, and the
    /// packet must end where a syscall ends or where the client's next packet (Data) begins.
    /// Returns where the packet ends.
    fn plausible_inferred_query(
        &self,
        input: &Input<'_>,
        head: &QueryHead<'_>,
        epoch: u64,
    ) -> WireResult<PacketEnd> {
        let buf = input.bytes;
        // An empty ClientInfo (kind 0) is too little structure to trust without a handshake.
        if head.kind == 0 {
            return Err(WireError::Bad("no ClientInfo"));
        }
        if head.kind == 1 && head.interface == 1 && head.client_revision < epoch {
            return Err(WireError::Bad("layout newer than the client"));
        }
        if head.text_len == 0 {
            return Err(WireError::Bad("empty query text"));
        }
        let text_at = 1 + head.text_at;
        let checked = (head.text_len as usize).min(4096);
        let Some(sample) = buf.get(text_at..text_at + checked) else {
            return Err(WireError::Short);
        };
        let sample_ok = match std::str::from_utf8(sample) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none() && checked < head.text_len as usize,
        };
        if !sample_ok || statement_type(sample).is_empty() {
            return Err(WireError::Bad("query text is not SQL"));
        }
        let text_end = text_at + head.text_len as usize;
        if text_end > buf.len() {
            return if head.text_len > 64 * 1024 {
                Ok(PacketEnd::BeyondBuffer)
            } else {
                Err(WireError::Short)
            };
        }
        let mut end = text_end;
        if epoch >= revision::PARAMETERS {
            let mut c = Cursor::new(&buf[text_end..]);
            packets::query_parameters(&mut c)?;
            end += c.pos;
        }
        if ends_syscall(input, end) || matches!(buf.get(end), Some(2) | Some(7)) {
            Ok(PacketEnd::At(end))
        } else {
            Err(WireError::Bad("query does not end at a packet boundary"))
        }
    }

    /// Parses a packet body whose layout depends on the revision. With an inferred revision
    /// range, each candidate layout is judged by what follows it: the end of a syscall (the
    /// writer's side flushes after every packet) or, when the reader's side gathered several
    /// packets into one syscall, the start of another server packet. A candidate followed by
    /// neither misreads bytes of the next packet. When exactly one candidate fits (none still
    /// waits for bytes), the layout range shrinks to it, so later packets are unambiguous.
    pub(super) fn pick_layout<T: Copy>(
        &self,
        input: &Input<'_>,
        body_at: usize,
        thresholds: &[u64],
        parse: impl Fn(&mut Cursor<'_>, u64) -> WireResult<T>,
    ) -> WireResult<Picked<T>> {
        let layout = self.layout.unwrap_or(Layout {
            lo: revision::CLIENT_INFO,
            hi: revision::NEWEST,
        });
        let (candidates, n) = layout.candidates(thresholds);
        if n == 1 {
            let mut c = Cursor::new(input.bytes);
            c.pos = body_at;
            let value = parse(&mut c, candidates[0])?;
            return Ok(Picked {
                value,
                len: c.pos,
                narrowed: None,
            });
        }
        // First candidate ending its syscall, first followed by a packet, first parsed.
        let mut at_boundary = None;
        let mut followed = None;
        let mut fallback = None;
        let mut fitting = 0;
        let mut short = false;
        let mut err = WireError::Bad("no layout");
        for &r in &candidates[..n] {
            let mut c = Cursor::new(input.bytes);
            c.pos = body_at;
            match parse(&mut c, r) {
                Ok(v) => {
                    let found = (v, c.pos, r);
                    if ends_syscall(input, c.pos) {
                        fitting += 1;
                        at_boundary.get_or_insert(found);
                    } else if self.server_packet_may_start(&input.bytes[c.pos..]) {
                        fitting += 1;
                        followed.get_or_insert(found);
                    } else {
                        fallback.get_or_insert(found);
                    }
                }
                Err(WireError::Short) => short = true,
                Err(e) => err = e,
            }
        }
        let (value, len, r) = match at_boundary.or(followed) {
            Some(found) => found,
            // A longer layout may still fit once more bytes arrive.
            None if short => return Err(WireError::Short),
            None => fallback.ok_or(err)?,
        };
        let narrowed = (fitting == 1 && !short).then(|| layout.narrowed_to(r, thresholds));
        Ok(Picked {
            value,
            len,
            narrowed,
        })
    }

    /// Whether a server packet may start at `buf[0]` (bytes after a packet inside one
    /// syscall). Permissive: every real packet start passes, bytes still to come included;
    /// what fails is an unknown packet code or a body that cannot be that packet's.
    fn server_packet_may_start(&self, buf: &[u8]) -> bool {
        let mut c = Cursor::new(buf);
        let code = match c.varuint() {
            Ok(code) => ServerPacket(code),
            Err(e) => return e == WireError::Short,
        };
        let fits = |r: WireResult<()>| r.is_ok() || r == Err(WireError::Short);
        match code {
            ServerPacket::DATA
            | ServerPacket::TOTALS
            | ServerPacket::EXTREMES
            | ServerPacket::LOG
            | ServerPacket::PROFILE_EVENTS
            | ServerPacket::PREVIEW_DATA => match c.string(MAX_NAME) {
                Ok(_) => {
                    let rest = c.rest();
                    fits(FrameHeader::parse(rest).map(|_| ()))
                        || fits(read_block_header(&mut Cursor::new(rest)).map(|_| ()))
                }
                Err(e) => e == WireError::Short,
            },
            ServerPacket::EXCEPTION => fits(packets::exception(&mut c).map(|_| ())),
            ServerPacket::PROGRESS => {
                fits(packets::progress(&mut c, revision::CLIENT_INFO).map(|_| ()))
            }
            ServerPacket::PROFILE_INFO => {
                fits(packets::profile_info(&mut c, revision::CLIENT_INFO).map(|_| ()))
            }
            ServerPacket::HELLO => false,
            other => other.name().is_some(),
        }
    }
}
