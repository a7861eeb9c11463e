//! The recording file (`--record FILE`): a small versioned header, then the frames of
//! [`crate::frame`] exactly as they were sent to the actors (kernel events, watermarks,
//! kernel counters). `l7tap replay` feeds them back through the same rings.
//!
//! ```text
//! "L7TAPREC" | u32 version | u32 header_len | header | frames...
//! header: i64 monotonic_to_unix_ns | u32 capture_bytes | u32 n_cpus
//! ```
//! Version 3 adds identity frames (`Tag::Identity`), and its kernel counters frame carries
//! the TLS attach counts and two more counters per CPU (`tools/src/stats.rs`). Older
//! versions are refused: their counters frames have another layout, which would be misread.
//! A recording cut short (the capture was killed) ends at its last whole frame.
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::frame::{self, Tag, FRAME_HEADER, MAX_BODY};

pub const MAGIC: &[u8; 8] = b"L7TAPREC";
pub const VERSION: u32 = 3;
/// The oldest version this build reads.
pub const OLDEST_VERSION: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordingHeader {
    /// Add to a kernel (CLOCK_MONOTONIC) timestamp to get Unix time in ns.
    pub monotonic_to_unix_ns: i64,
    pub capture_bytes: u32,
    pub n_cpus: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not an l7tap recording (bad magic)")]
    NotARecording { path: PathBuf },
    #[error("{path}: recording version {version} is not supported (this l7tap reads {OLDEST_VERSION} to {VERSION})")]
    Version { path: PathBuf, version: u32 },
    #[error("{path}: corrupt frame at byte {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: &'static str,
    },
}

pub struct RecordingWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl RecordingWriter {
    pub fn create(path: &Path, header: &RecordingHeader) -> Result<Self, RecordingError> {
        let io_err = |source| RecordingError::Io {
            path: path.to_owned(),
            source,
        };
        // Raw payloads can hold credentials (a ClickHouse Hello's password): owner only.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut head = Vec::with_capacity(32);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&16u32.to_le_bytes());
        head.extend_from_slice(&header.monotonic_to_unix_ns.to_le_bytes());
        head.extend_from_slice(&header.capture_bytes.to_le_bytes());
        head.extend_from_slice(&header.n_cpus.to_le_bytes());
        out.write_all(&head).map_err(io_err)?;
        Ok(RecordingWriter {
            out,
            path: path.to_owned(),
        })
    }

    pub fn write(&mut self, tag: Tag, parts: &[&[u8]]) -> Result<(), RecordingError> {
        let body: usize = parts.iter().map(|p| p.len()).sum();
        let res = self
            .out
            .write_all(&frame::header(tag, body))
            .and_then(|_| parts.iter().try_for_each(|p| self.out.write_all(p)));
        res.map_err(|source| RecordingError::Io {
            path: self.path.clone(),
            source,
        })
    }

    pub fn finish(mut self) -> Result<(), RecordingError> {
        self.out
            .flush()
            .and_then(|_| self.out.get_ref().sync_all())
            .map_err(|source| RecordingError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

pub struct RecordingReader {
    input: BufReader<File>,
    path: PathBuf,
    offset: u64,
    pub header: RecordingHeader,
    /// The file ended inside a frame (a killed capture): the partial frame was ignored.
    pub truncated_tail: bool,
    /// Bytes of the input buffer taken by the frame [`RecordingReader::next_frame_ref`]
    /// returned last, consumed at the next call.
    returned_in_place: usize,
    /// Body of a frame that straddles the input buffer's end.
    straddling_body: Vec<u8>,
}

impl RecordingReader {
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let io_err = |source| RecordingError::Io {
            path: path.to_owned(),
            source,
        };
        let mut input = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err)?);
        let mut fixed = [0u8; 16];
        input
            .read_exact(&mut fixed)
            .map_err(|_| RecordingError::NotARecording {
                path: path.to_owned(),
            })?;
        if &fixed[..8] != MAGIC {
            return Err(RecordingError::NotARecording {
                path: path.to_owned(),
            });
        }
        let version = u32::from_le_bytes(fixed[8..12].try_into().unwrap());
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(RecordingError::Version {
                path: path.to_owned(),
                version,
            });
        }
        let header_len = u32::from_le_bytes(fixed[12..16].try_into().unwrap()) as usize;
        if !(16..=4096).contains(&header_len) {
            return Err(RecordingError::Corrupt {
                path: path.to_owned(),
                offset: 12,
                what: "header length",
            });
        }
        let mut h = vec![0u8; header_len];
        input.read_exact(&mut h).map_err(io_err)?;
        let header = RecordingHeader {
            monotonic_to_unix_ns: i64::from_le_bytes(h[0..8].try_into().unwrap()),
            capture_bytes: u32::from_le_bytes(h[8..12].try_into().unwrap()),
            n_cpus: u32::from_le_bytes(h[12..16].try_into().unwrap()),
        };
        Ok(RecordingReader {
            input,
            path: path.to_owned(),
            offset: 16 + header_len as u64,
            header,
            truncated_tail: false,
            returned_in_place: 0,
            straddling_body: Vec::new(),
        })
    }

    /// The next frame, its body borrowed from the input buffer when the frame lies whole in
    /// it (no copy), which is every frame but those straddling a buffer refill; `None` at the
    /// end of the recording.
    pub fn next_frame_ref(&mut self) -> Result<Option<(Tag, &[u8])>, RecordingError> {
        self.input
            .consume(std::mem::take(&mut self.returned_in_place));
        let buffered = self.input.fill_buf().map_err(|source| RecordingError::Io {
            path: self.path.clone(),
            source,
        })?;
        let whole_frame = match buffered {
            [l0, l1, l2, l3, tag, ..] => {
                let len = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
                let tag = Tag::from_u8(*tag);
                match tag {
                    Some(tag) if len != 0 && len - 1 <= MAX_BODY => {
                        let end = FRAME_HEADER + len - 1;
                        (buffered.len() >= end).then_some((tag, end))
                    }
                    // Corrupt: the copying path reports it.
                    _ => None,
                }
            }
            _ => None,
        };
        match whole_frame {
            Some((tag, end)) => {
                self.returned_in_place = end;
                self.offset += end as u64;
                Ok(Some((tag, &self.input.buffer()[FRAME_HEADER..end])))
            }
            None => {
                let mut body = std::mem::take(&mut self.straddling_body);
                let tag = self.next_frame(&mut body);
                self.straddling_body = body;
                Ok(tag?.map(|tag| (tag, &self.straddling_body[..])))
            }
        }
    }

    /// Reads the next frame's body into `body`; `None` at the end of the recording.
    pub fn next_frame(&mut self, body: &mut Vec<u8>) -> Result<Option<Tag>, RecordingError> {
        self.input
            .consume(std::mem::take(&mut self.returned_in_place));
        let mut h = [0u8; FRAME_HEADER];
        match read_full(&mut self.input, &mut h) {
            Ok(0) => return Ok(None),
            Ok(n) if n < FRAME_HEADER => {
                self.truncated_tail = true;
                return Ok(None);
            }
            Ok(_) => {}
            Err(source) => {
                return Err(RecordingError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let corrupt = |what| RecordingError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
            what,
        };
        if len == 0 || len - 1 > MAX_BODY {
            return Err(corrupt("frame length"));
        }
        let tag = Tag::from_u8(h[4]).ok_or_else(|| corrupt("unknown frame tag"))?;
        body.resize(len - 1, 0);
        match read_full(&mut self.input, body) {
            Ok(n) if n == len - 1 => {}
            Ok(_) => {
                self.truncated_tail = true;
                return Ok(None);
            }
            Err(source) => {
                return Err(RecordingError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
        self.offset += (FRAME_HEADER + len - 1) as u64;
        Ok(Some(tag))
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RecordingHeader {
        RecordingHeader {
            monotonic_to_unix_ns: 1_700_000_000_000_000_000,
            capture_bytes: 4096,
            n_cpus: 2,
        }
    }

    #[test]
    fn frames_round_trip_and_a_cut_tail_is_ignored() {
        let dir = std::env::temp_dir().join(format!("l7tap-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.rec");
        let mut w = RecordingWriter::create(&path, &header()).unwrap();
        w.write(Tag::KernelEvent, &[b"abc", b"def"]).unwrap();
        w.write(Tag::Watermark, &[&7u64.to_le_bytes()]).unwrap();
        w.finish().unwrap();
        // A killed capture leaves half a frame at the end.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&frame::header(Tag::KernelEvent, 100));
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();

        let mut r = RecordingReader::open(&path).unwrap();
        assert_eq!(r.header, header());
        let mut body = Vec::new();
        assert_eq!(r.next_frame(&mut body).unwrap(), Some(Tag::KernelEvent));
        assert_eq!(body, b"abcdef");
        assert_eq!(r.next_frame(&mut body).unwrap(), Some(Tag::Watermark));
        assert_eq!(r.next_frame(&mut body).unwrap(), None);
        assert!(r.truncated_tail);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn frames_read_in_place_match_frames_read_by_copy_across_buffer_refills() {
        let dir = std::env::temp_dir().join(format!("l7tap-rec-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.rec");
        let mut w = RecordingWriter::create(&path, &header()).unwrap();
        // Bodies of varied lengths, 3 MiB in all: some frames straddle the 1 MiB buffer.
        let bodies: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![i as u8; (i as usize * 7919) % 2000 + 1])
            .collect();
        for (i, body) in bodies.iter().enumerate() {
            let tag = if i % 10 == 0 {
                Tag::Watermark
            } else {
                Tag::KernelEvent
            };
            w.write(tag, &[body]).unwrap();
        }
        w.finish().unwrap();
        let mut by_copy = RecordingReader::open(&path).unwrap();
        let mut in_place = RecordingReader::open(&path).unwrap();
        let mut body = Vec::new();
        for expected in &bodies {
            let tag = by_copy.next_frame(&mut body).unwrap().unwrap();
            assert_eq!(&body, expected);
            let (tag_in_place, body_in_place) = in_place.next_frame_ref().unwrap().unwrap();
            assert_eq!((tag_in_place, body_in_place), (tag, &expected[..]));
        }
        assert!(in_place.next_frame_ref().unwrap().is_none());
        assert!(!in_place.truncated_tail);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_files_are_refused_with_a_clear_error() {
        let path = std::env::temp_dir().join(format!("l7tap-notrec-{}", std::process::id()));
        std::fs::write(&path, b"hello world, not a recording").unwrap();
        let err = RecordingReader::open(&path).err().unwrap();
        assert!(err.to_string().contains("not an l7tap recording"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
