//! Primitive decoding of the native protocol's encodings over a borrowed byte slice: VarUInt
//! (LEB128), length-prefixed strings, fixed-width little-endian integers. Every read says
//! whether the bytes ran out (`Short`: wait for more) or cannot be this encoding (`Bad`).

/// Why a read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The bytes end before the value does: more input is needed.
    Short,
    /// The bytes cannot be this value (overlong VarUInt, string over its cap, ...).
    Bad(&'static str),
}

pub(crate) type WireResult<T> = Result<T, WireError>;

/// Strings longer than this are malformed (upstream `DEFAULT_MAX_STRING_SIZE`).
pub(crate) const MAX_STRING: u64 = 1 << 30;
/// Strings of the handshake are capped upstream at 4 KiB (`DBMS_MAX_HELLO_STRING_SIZE`)... but
/// older servers had no cap; a generous bound still rejects garbage quickly.
pub(crate) const MAX_HELLO_STRING: u64 = 64 * 1024;
/// Identifier-like strings (setting names, type names, column names) are never this long.
pub(crate) const MAX_NAME: u64 = 64 * 1024;

/// A read position over one contiguous slice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn u8(&mut self) -> WireResult<u8> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Short)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self, n: usize) -> WireResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(WireError::Short);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn skip(&mut self, n: u64) -> WireResult<()> {
        if (self.remaining() as u64) < n {
            return Err(WireError::Short);
        }
        self.pos += n as usize;
        Ok(())
    }

    pub fn u32_le(&mut self) -> WireResult<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32_le(&mut self) -> WireResult<i32> {
        Ok(self.u32_le()? as i32)
    }

    pub fn u64_le(&mut self) -> WireResult<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Unsigned LEB128, at most 10 bytes.
    pub fn varuint(&mut self) -> WireResult<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(WireError::Bad("VarUInt overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Bad("VarUInt longer than 10 bytes"))
    }

    /// A VarUInt that must fit `max`.
    pub fn varuint_max(&mut self, max: u64, what: &'static str) -> WireResult<u64> {
        let v = self.varuint()?;
        if v > max {
            return Err(WireError::Bad(what));
        }
        Ok(v)
    }

    /// `VarUInt len` + `len` bytes, `len <= max`.
    pub fn string(&mut self, max: u64) -> WireResult<&'a [u8]> {
        let len = self.varuint()?;
        if len > max {
            return Err(WireError::Bad("string longer than its limit"));
        }
        self.bytes(len as usize)
    }

    /// Skips a string without requiring its bytes to be present: returns how many bytes of it
    /// lie beyond the buffer (0 when it is complete).
    pub fn skip_string_partial(&mut self, max: u64) -> WireResult<u64> {
        let len = self.varuint()?;
        if len > max {
            return Err(WireError::Bad("string longer than its limit"));
        }
        let here = (self.remaining() as u64).min(len);
        self.pos += here as usize;
        Ok(len - here)
    }
}

/// Whether `s` is a plausible identifier (setting or parameter name): `[A-Za-z0-9_.]+`.
pub(crate) fn is_identifier(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Whether `s` is printable ASCII text (names, ids, addresses).
pub(crate) fn is_printable(s: &[u8]) -> bool {
    s.iter().all(|&b| (0x20..0x7f).contains(&b))
}

/// Lossy UTF-8 of at most `max` bytes, cut at a character boundary; `(text, truncated)`.
pub(crate) fn bounded_text(s: &[u8], max: usize) -> (&[u8], bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut cut = max;
    // Do not split a UTF-8 sequence: back up over continuation bytes.
    while cut > 0 && cut < s.len() && (s[cut] & 0xc0) == 0x80 {
        cut -= 1;
    }
    (&s[..cut], true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varuint_round_values_and_limits() {
        let mut c = Cursor::new(&[0x8c, 0xa9, 0x03]);
        assert_eq!(c.varuint(), Ok(54412));
        assert_eq!(Cursor::new(&[0x80]).varuint(), Err(WireError::Short));
        let overlong = [0xffu8; 11];
        assert!(matches!(
            Cursor::new(&overlong).varuint(),
            Err(WireError::Bad(_))
        ));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Cursor::new(&max).varuint(), Ok(u64::MAX));
    }

    #[test]
    fn strings_and_partial_skips() {
        let mut c = Cursor::new(b"\x03abcd");
        assert_eq!(c.string(10), Ok(&b"abc"[..]));
        let mut c = Cursor::new(b"\x05ab");
        assert_eq!(c.skip_string_partial(10), Ok(3));
        assert_eq!(c.remaining(), 0);
        assert!(matches!(
            Cursor::new(b"\x05abcde").string(4),
            Err(WireError::Bad(_))
        ));
    }

    #[test]
    fn bounded_text_cuts_at_char_boundaries() {
        assert_eq!(bounded_text("héllo".as_bytes(), 2), (&b"h"[..], true));
        assert_eq!(bounded_text(b"abc", 3), (&b"abc"[..], false));
    }
}
