//! Compression frames (`src/Compression/CompressionInfo.h`): how a compressed session's
//! Data-family blocks are walked by size, without decompressing.
//!
//! ```text
//! 16 bytes checksum (CityHash128 v1.0.2 of the rest) | u8 method | u32 compressed_size
//! (includes the 9-byte header) | u32 decompressed_size | body (compressed_size - 9)
//! ```
//!
//! A block ends at a frame boundary. Upstream writers (`CompressedWriteBuffer`) cut a large
//! block into frames of exactly [`WRITER_BUFFER_SIZE`] decompressed bytes; other writers
//! (Python driver, ch-go) put one block in one frame. So another frame of the same block can
//! follow only a frame of exactly that size, and only if the next bytes look like a frame.
use super::codes::CompressionMethod;
use super::wire::{Cursor, WireError, WireResult};

pub(crate) const CHECKSUM_LEN: u64 = 16;
/// Method byte + two u32 sizes.
pub(crate) const HEADER_LEN: u64 = 9;
/// Bytes needed to read a frame's sizes.
pub(crate) const PREFIX_LEN: usize = (CHECKSUM_LEN + HEADER_LEN) as usize;
/// `DBMS_MAX_COMPRESSED_SIZE`.
pub(crate) const MAX_FRAME: u64 = 0x4000_0000;
/// `DBMS_DEFAULT_BUFFER_SIZE`: the decompressed size of every frame but the last of a block
/// written by ClickHouse itself.
pub(crate) const WRITER_BUFFER_SIZE: u32 = 1 << 20;

/// The sizes of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub method: CompressionMethod,
    pub compressed_size: u32,
    pub decompressed_size: u32,
}

impl FrameHeader {
    /// Reads and checks the header of a frame starting (with its checksum) at `buf[0]`.
    pub fn parse(buf: &[u8]) -> WireResult<FrameHeader> {
        let mut c = Cursor::new(buf);
        c.skip(CHECKSUM_LEN)?;
        let method = CompressionMethod(u64::from(c.u8()?));
        let compressed_size = c.u32_le()?;
        let decompressed_size = c.u32_le()?;
        let h = FrameHeader {
            method,
            compressed_size,
            decompressed_size,
        };
        if method.name().is_none() || method == CompressionMethod::DEFLATE_QPL {
            return Err(WireError::Bad("unknown compression method"));
        }
        let body = u64::from(compressed_size)
            .checked_sub(HEADER_LEN)
            .ok_or(WireError::Bad("compressed size below the header size"))?;
        if u64::from(compressed_size) > MAX_FRAME || u64::from(decompressed_size) > MAX_FRAME {
            return Err(WireError::Bad("compression frame over 1 GiB"));
        }
        let plausible = match method {
            CompressionMethod::NONE => body == u64::from(decompressed_size),
            // LZ4 block bound: n + n/255 + 16; and no more than ~255x expansion.
            CompressionMethod::LZ4 => {
                let n = u64::from(decompressed_size);
                body <= n + n / 255 + 16 && n <= body.saturating_mul(255) + 16
            }
            CompressionMethod::ZSTD => {
                // A zstd frame starts with its magic number.
                match buf.get(PREFIX_LEN..PREFIX_LEN + 4) {
                    Some(magic) => magic == [0x28, 0xb5, 0x2f, 0xfd],
                    None => body >= 4,
                }
            }
            _ => true,
        };
        if !plausible {
            return Err(WireError::Bad(
                "compression frame sizes do not fit its method",
            ));
        }
        Ok(h)
    }

    /// Bytes of the whole frame on the wire.
    pub fn wire_len(&self) -> u64 {
        CHECKSUM_LEN + u64::from(self.compressed_size)
    }
}

/// Where a walk over a block's frames stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FrameWalk {
    pub n_frames: u32,
    pub last_decompressed: u32,
    /// Decompressed bytes of the block so far.
    pub decompressed_bytes: u64,
}

/// The result of one step over frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameStep {
    /// A frame of `n` bytes starts here; `n` may exceed the buffer (skip the rest).
    Frame(u64),
    /// The block ended before this position.
    BlockEnd,
    NeedMore,
}

impl FrameWalk {
    /// Looks at the bytes right after the frames walked so far.
    pub fn step(&mut self, buf: &[u8]) -> Result<FrameStep, &'static str> {
        if self.n_frames > 0 {
            if self.last_decompressed != WRITER_BUFFER_SIZE {
                return Ok(FrameStep::BlockEnd);
            }
            // A full-size frame: another frame of this block may follow.
            // Too few bytes to tell: wait (a block of exactly k MiB followed by a 1-byte
            // EndOfStream is decided only when more bytes of this direction arrive).
            match FrameHeader::parse(buf) {
                Err(WireError::Short) => return Ok(FrameStep::NeedMore),
                Err(WireError::Bad(_)) => return Ok(FrameStep::BlockEnd),
                Ok(_) => {}
            }
        }
        match FrameHeader::parse(buf) {
            Ok(h) => {
                self.n_frames += 1;
                self.last_decompressed = h.decompressed_size;
                self.decompressed_bytes += u64::from(h.decompressed_size);
                Ok(FrameStep::Frame(h.wire_len()))
            }
            Err(WireError::Short) => Ok(FrameStep::NeedMore),
            Err(WireError::Bad(what)) => Err(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(method: u8, compressed: u32, decompressed: u32) -> Vec<u8> {
        let mut v = vec![0xaa; 16];
        v.push(method);
        v.extend_from_slice(&compressed.to_le_bytes());
        v.extend_from_slice(&decompressed.to_le_bytes());
        v.resize(16 + compressed as usize, 0);
        if method == 0x90 {
            v[25..29].copy_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
        }
        v
    }

    #[test]
    fn ch_go_golden_frame_headers() {
        // ch-go compress/_golden/data_compressed_lz4.raw: 175 bytes in a 38-byte LZ4 frame.
        let lz4 = frame(0x82, 38, 175);
        let h = FrameHeader::parse(&lz4).unwrap();
        assert_eq!((h.method, h.wire_len()), (CompressionMethod::LZ4, 54));
        // data_compressed_none.raw: 184 = 175 + 9.
        assert!(FrameHeader::parse(&frame(0x02, 184, 175)).is_ok());
        assert!(FrameHeader::parse(&frame(0x02, 183, 175)).is_err());
        assert!(FrameHeader::parse(&frame(0x90, 37, 175)).is_ok());
        assert!(FrameHeader::parse(&frame(0x01, 37, 175)).is_err());
        assert_eq!(FrameHeader::parse(&lz4[..24]), Err(WireError::Short));
    }

    #[test]
    fn a_block_continues_only_after_a_full_size_frame() {
        let mut w = FrameWalk::default();
        let small = frame(0x82, 38, 175);
        assert_eq!(w.step(&small), Ok(FrameStep::Frame(54)));
        assert_eq!(w.step(&small), Ok(FrameStep::BlockEnd));

        let mut w = FrameWalk::default();
        let full = frame(0x02, WRITER_BUFFER_SIZE + 9, WRITER_BUFFER_SIZE);
        assert_eq!(w.step(&full[..30]), Ok(FrameStep::Frame(full.len() as u64)));
        assert_eq!(w.step(&[5]), Ok(FrameStep::NeedMore));
        assert_eq!(w.step(&[5; 30]), Ok(FrameStep::BlockEnd));
        assert_eq!(w.step(&small), Ok(FrameStep::Frame(54)));
        assert_eq!(w.step(&small), Ok(FrameStep::BlockEnd));
    }
}
