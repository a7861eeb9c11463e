//! Framing: the 4-byte big-endian length envelope every ZooKeeper message has (except
//! four-letter words), and a bounded reader for the jute fields inside one frame.
//!
//! The reader works on the bytes of a frame that are at hand, which may be only a prefix of
//! the frame: a field that lies beyond them is [`Short::Truncated`] (decode what came
//! before, or wait for more bytes), a field that contradicts the frame's declared length or
//! the jute encoding is [`Short::Invalid`].

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Why a read stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Short {
    /// The field lies beyond the bytes at hand but inside the frame.
    Truncated,
    /// The bytes cannot be this field: the frame is not what it was taken for.
    Invalid(&'static str),
}

pub type Read<T> = Result<T, Short>;

/// The declared length (bytes after the prefix) of the frame starting at `bytes`, if the
/// prefix is there.
pub fn declared_length(bytes: &[u8]) -> Option<i32> {
    read_i32_at(bytes, 0)
}

pub fn read_i32_at(bytes: &[u8], at: usize) -> Option<i32> {
    let b = bytes.get(at..at + 4)?;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn read_i64_at(bytes: &[u8], at: usize) -> Option<i64> {
    let b = bytes.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(i64::from_be_bytes(a))
}

/// A cursor over the body of one frame (the bytes after its length prefix).
#[derive(Clone, Debug)]
pub struct JuteReader<'a> {
    /// The body bytes at hand (a prefix of the body, or all of it).
    bytes: &'a [u8],
    pos: usize,
    /// The body length the frame declares.
    body_len: usize,
}

impl<'a> JuteReader<'a> {
    /// `bytes`: the body bytes at hand (longer input is cut at `body_len`).
    pub fn new(bytes: &'a [u8], body_len: usize) -> Self {
        JuteReader {
            bytes: &bytes[..bytes.len().min(body_len)],
            pos: 0,
            body_len,
        }
    }

    /// Bytes of the body after the cursor, at hand or not.
    pub fn remaining(&self) -> usize {
        self.body_len - self.pos
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.body_len
    }

    /// Reserves `n` bytes of the body: `Invalid` past the body's end, `Truncated` past the
    /// bytes at hand.
    fn take(&mut self, n: usize) -> Read<&'a [u8]> {
        if n > self.remaining() {
            return Err(Short::Invalid("field runs past the frame end"));
        }
        let start = self.pos;
        if start + n > self.bytes.len() {
            return Err(Short::Truncated);
        }
        self.pos += n;
        Ok(&self.bytes[start..start + n])
    }

    pub fn i32(&mut self) -> Read<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Read<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn u8(&mut self) -> Read<u8> {
        Ok(self.take(1)?[0])
    }

    /// A jute `bool`: writers emit 0 or 1, anything else is not a bool.
    pub fn bool(&mut self) -> Read<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Short::Invalid("bool is neither 0 nor 1")),
        }
    }

    /// Skips `n` bytes of the body without their being at hand.
    pub fn skip(&mut self, n: usize) -> Read<()> {
        if n > self.remaining() {
            return Err(Short::Invalid("field runs past the frame end"));
        }
        self.pos += n;
        Ok(())
    }

    /// Reads the `int32` length of a `buffer`/`ustring` (-1 = null, read as 0) and checks
    /// it against the frame.
    pub fn length(&mut self) -> Read<usize> {
        match self.i32()? {
            -1 => Ok(0),
            n if n < -1 => Err(Short::Invalid("negative length")),
            n if n as usize > self.remaining() => {
                Err(Short::Invalid("length runs past the frame end"))
            }
            n => Ok(n as usize),
        }
    }

    /// Skips a `buffer` or `ustring`, whose bytes need not be at hand.
    pub fn skip_buffer(&mut self) -> Read<()> {
        let n = self.length()?;
        self.skip(n)
    }

    /// Reads a `ustring`, keeping at most `max` of its bytes (which must be at hand); the
    /// rest is skipped. Returns the kept bytes and whether the string was longer.
    pub fn string_prefix(&mut self, max: usize) -> Read<(&'a [u8], bool)> {
        let n = self.length()?;
        let kept = self.take(n.min(max))?;
        self.skip(n - kept.len())?;
        Ok((kept, n > kept.len()))
    }

    /// Skips a `vector<ustring>`.
    pub fn skip_string_vector(&mut self) -> Read<()> {
        let count = self.vector_count(4)?;
        for _ in 0..count {
            self.skip_buffer()?;
        }
        Ok(())
    }

    /// Reads a vector's element count (-1 = null, read as 0), checked against the bytes
    /// left given the smallest encoded element.
    pub fn vector_count(&mut self, min_element_bytes: usize) -> Read<usize> {
        match self.i32()? {
            -1 => Ok(0),
            n if n < -1 => Err(Short::Invalid("negative vector count")),
            n if n as usize > self.remaining() / min_element_bytes.max(1) => {
                Err(Short::Invalid("vector count runs past the frame end"))
            }
            n => Ok(n as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_within_the_prefix_and_tells_truncated_from_invalid() {
        // body: int32 5, "ab", then 3 bytes not at hand.
        let body = [0, 0, 0, 5, b'a', b'b'];
        let mut r = JuteReader::new(&body, 9);
        assert_eq!(r.clone().string_prefix(8), Err(Short::Truncated));
        assert_eq!(r.string_prefix(2), Ok((&b"ab"[..], true)));
        assert!(r.at_end());

        let mut r = JuteReader::new(&body, 6);
        assert_eq!(
            r.string_prefix(8),
            Err(Short::Invalid("length runs past the frame end"))
        );
        let mut r = JuteReader::new(&[0xff, 0xff, 0xff, 0xfe], 4);
        assert_eq!(r.length(), Err(Short::Invalid("negative length")));
        let mut r = JuteReader::new(&[2], 1);
        assert_eq!(r.bool(), Err(Short::Invalid("bool is neither 0 nor 1")));
    }
}
