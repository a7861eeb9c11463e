//! The fast path: whole frames of a confirmed session, decoded with plain slice reads
//! instead of the bounded [`JuteReader`](super::framing::JuteReader) walk: requests of the
//! kinds that make up almost all traffic (reads, creates, deletes, setData, pings), and
//! reply headers.
//!
//! It decides nothing on its own: it either returns exactly the fields the general decoder
//! would return for that frame (framed, not strict), or `None`, and the general decoder
//! takes the frame (and rejects it, if it must). So it may be narrower than the general
//! decoder, never different; the fixture tests, which run every re-chunking of real
//! conversations through both paths, hold it to that.
use super::codes::{xid, ErrorCode, OpCode};
use super::decoding::{ReplyHeader, RequestFields, RequestHeader};
use super::framing::LENGTH_PREFIX;
use super::RequestFrame;

/// Decodes the request frame at the front of `bytes` if all of it is at hand, it has 32-bit
/// xids, is at most `max_frame` bytes long, and is of a kind this path knows.
#[inline]
pub fn request(bytes: &[u8], max_path: usize, max_frame: usize) -> Option<RequestFrame<'_>> {
    let mut at = Cursor(bytes);
    let len = usize::try_from(at.i32()?).ok()?;
    if len > max_frame {
        return None;
    }
    let mut body = Cursor(at.0.get(..len)?);
    let request_xid = body.i32()?;
    let op = OpCode(body.i32()?);
    let mut fields = RequestFields {
        complete: true,
        ..RequestFields::default()
    };
    match op {
        OpCode::PING if i64::from(request_xid) == xid::PING => {}
        OpCode::EXISTS | OpCode::GET_DATA | OpCode::GET_CHILDREN | OpCode::GET_CHILDREN2 => {
            fields.path = Some(body.path(max_path)?);
            fields.watch = match body.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
        }
        OpCode::DELETE | OpCode::CHECK => {
            fields.path = Some(body.path(max_path)?);
            fields.version = Some(body.i32()?);
        }
        OpCode::SET_DATA => {
            fields.path = Some(body.path(max_path)?);
            body.buffer()?;
            fields.version = Some(body.i32()?);
        }
        OpCode::CREATE | OpCode::CREATE2 | OpCode::CREATE_CONTAINER => {
            fields.path = Some(body.path(max_path)?);
            body.buffer()?; // data
            let acls = match body.i32()? {
                -1 => 0,
                n => u32::try_from(n).ok()?,
            };
            for _ in 0..acls {
                body.i32()?; // perms
                body.buffer()?; // scheme
                body.buffer()?; // id
            }
            body.i32()?; // flags
        }
        _ => return None,
    }
    Some(RequestFrame {
        header: RequestHeader {
            xid: i64::from(request_xid),
            op,
        },
        fields,
        frame_len: LENGTH_PREFIX + len,
    })
}

/// The header of the reply frame at the front of `bytes` and the frame's length (prefix
/// included), if all of the frame is at hand, it has 32-bit xids and its length is at most
/// `max_frame`.
#[inline]
pub fn reply_header(bytes: &[u8], max_frame: u32) -> Option<(ReplyHeader, usize)> {
    let mut at = Cursor(bytes);
    let len = u32::try_from(at.i32()?)
        .ok()
        .filter(|&len| len <= max_frame)? as usize;
    let mut body = Cursor(at.0.get(..len)?);
    let reply_xid = body.i32()?;
    let zxid = body.i64()?;
    let err = ErrorCode(body.i32()?);
    let header = ReplyHeader {
        xid: i64::from(reply_xid),
        zxid,
        err,
    };
    Some((header, LENGTH_PREFIX + len))
}

/// The unread rest of a frame whose bytes are all at hand.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    #[inline]
    fn i32(&mut self) -> Option<i32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(i32::from_be_bytes(*head))
    }

    #[inline]
    fn i64(&mut self) -> Option<i64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(i64::from_be_bytes(*head))
    }

    #[inline]
    fn u8(&mut self) -> Option<u8> {
        let (&head, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(head)
    }

    /// A jute `buffer` / `ustring` (-1: null, read as empty).
    #[inline]
    fn buffer(&mut self) -> Option<&'a [u8]> {
        let len = match self.i32()? {
            -1 => 0,
            n => usize::try_from(n).ok()?,
        };
        let bytes = self.0.get(..len)?;
        self.0 = &self.0[len..];
        Some(bytes)
    }

    /// A path, kept up to `max` bytes, and whether it was longer.
    #[inline]
    fn path(&mut self, max: usize) -> Option<(&'a [u8], bool)> {
        let path = self.buffer()?;
        Some((&path[..path.len().min(max)], path.len() > max))
    }
}
