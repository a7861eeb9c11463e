//! Fuzz target: arbitrary bytes as a packet capture, read the way `l7tap replay FILE.pcap`
//! reads it (`read_packet_capture`: file format, link layers, IP, TCP, reassembly,
//! classification, events). The reader must never panic, must end in counts or a typed
//! error, and every event it makes must decode as the probes' events do.
//!
//! Input: the first byte picks the file's start. Mode 0: the rest is the whole file (the
//! format's own checks are fuzzed); 1 and 2: a pcap header (little-endian, nanoseconds;
//! link type Ethernet or SLL2) precedes records of the rest, so most executions reach the
//! packet decoders and reassembly.
#![no_main]

use std::io::Write;

use l7tap_abi::events;
use l7tap_ingest::pcap::{read_packet_capture, Frame, PcapOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let path = std::env::temp_dir().join(format!("l7tap-fuzz-pcap-{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&path).expect("temporary file");
        match mode % 3 {
            0 => file.write_all(rest).unwrap(),
            m => {
                let linktype: u32 = if m == 1 { 1 } else { 276 };
                file.write_all(&0xa1b2_3c4du32.to_le_bytes()).unwrap();
                file.write_all(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                    .unwrap();
                file.write_all(&65535u32.to_le_bytes()).unwrap();
                file.write_all(&linktype.to_le_bytes()).unwrap();
                // Records: 2-byte length from the input, then that many bytes, with a
                // timestamp that grows by the record's index.
                let mut at = 0;
                let mut index = 0u32;
                while at + 2 <= rest.len() {
                    let len = usize::from(u16::from_le_bytes([rest[at], rest[at + 1]])) % 2048;
                    let body = &rest[at + 2..(at + 2 + len).min(rest.len())];
                    let orig = body.len() as u32 + u32::from(rest[at] & 0x0f);
                    file.write_all(&index.to_le_bytes()).unwrap();
                    file.write_all(&0u32.to_le_bytes()).unwrap();
                    file.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
                    file.write_all(&orig.to_le_bytes()).unwrap();
                    file.write_all(body).unwrap();
                    at += 2 + len;
                    index += 1;
                }
            }
        }
    }
    let options = PcapOptions {
        clickhouse_http_ports: vec![8123],
    };
    let _ = read_packet_capture(&path, &options, |frame| {
        if let Frame::Event(raw) = frame {
            events::decode(&raw).expect("the reader made an event the actors cannot decode");
        }
        Ok(())
    });
    let _ = std::fs::remove_file(&path);
});
