//! The one record framing shared by the rtrb rings and the recording file:
//! `[u32 len (LE)][u8 tag][len - 1 bytes of body]`.
//!
//! Live and replayed events travel as the same frames, which is what makes a replay take
//! exactly the path a live capture took.

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// A raw kernel event, byte for byte as the probe sent it.
    KernelEvent = 0,
    /// Body: u64 LE. Every event with a smaller timestamp has been delivered: actors may
    /// process what they hold up to it, in timestamp order.
    Watermark = 1,
    /// Body: a kernel counter snapshot taken by the reactor (time, ring drops, per-CPU
    /// counters; see `tools/src/stats.rs`). Only recorded, so a replay reports the same
    /// loss as the live run.
    KernelCounters = 2,
    /// Body: an [`crate::identity::IdentityFrame`]: who is at a connection's ends, resolved
    /// at its open by a live capture (recordings version 2 on).
    Identity = 3,
}

impl Tag {
    pub fn from_u8(v: u8) -> Option<Tag> {
        Some(match v {
            0 => Tag::KernelEvent,
            1 => Tag::Watermark,
            2 => Tag::KernelCounters,
            3 => Tag::Identity,
            _ => return None,
        })
    }
}

/// Bytes of the length and tag fields.
pub const FRAME_HEADER: usize = 5;

/// Largest frame body accepted anywhere (a data event with the largest payload fits).
pub const MAX_BODY: usize = 1 << 20;

pub fn header(tag: Tag, body_len: usize) -> [u8; FRAME_HEADER] {
    let len = (body_len as u32 + 1).to_le_bytes();
    [len[0], len[1], len[2], len[3], tag as u8]
}
