//! Fuzz target: arbitrary bytes as a recording file, read frame by frame the way `l7tap
//! replay` and `l7tap dump` read it (`RecordingReader::next_frame_ref`, each kernel event
//! and identity frame decoded). The reader must never panic, must end in a frame, the end of the file or a typed
//! error, and must hold no frame larger than the format allows, whatever the lengths claim.
//!
//! Input: the first byte picks the file's start. Odd: a valid magic, version and 16-byte
//! header are written before the rest, so most executions reach the frames; even: the rest
//! is the whole file, so the header checks are fuzzed too.
#![no_main]

use std::io::Write;

use l7tap_abi::events;
use l7tap_ingest::frame::MAX_BODY;
use l7tap_ingest::identity::IdentityFrame;
use l7tap_ingest::recording::{RecordingReader, MAGIC, VERSION};
use l7tap_ingest::Tag;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let path = std::env::temp_dir().join(format!("l7tap-fuzz-recording-{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&path).expect("temporary file");
        if mode & 1 == 1 {
            file.write_all(MAGIC).unwrap();
            file.write_all(&VERSION.to_le_bytes()).unwrap();
            file.write_all(&16u32.to_le_bytes()).unwrap();
            file.write_all(&[0u8; 16]).unwrap();
        }
        file.write_all(rest).unwrap();
    }
    if let Ok(mut reader) = RecordingReader::open(&path) {
        let mut frames = 0usize;
        loop {
            match reader.next_frame_ref() {
                Ok(Some((tag, body))) => {
                    assert!(body.len() <= MAX_BODY, "a frame of {} bytes", body.len());
                    // Decoding never panics, whatever the event or frame claims.
                    match tag {
                        Tag::KernelEvent => {
                            let _ = events::decode(body);
                        }
                        Tag::Identity => {
                            let _ = IdentityFrame::decode(body);
                        }
                        Tag::Watermark | Tag::KernelCounters => {}
                    }
                    frames += 1;
                    assert!(frames <= rest.len(), "more frames than bytes");
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
