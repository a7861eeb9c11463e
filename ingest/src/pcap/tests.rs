//! Packet captures built by hand (every link type, both pcap byte orders, nanosecond pcap,
//! pcapng, reordered, retransmitted, lost and snaplen-cut segments, a truncated file), read
//! back into the events the probes would have sent.
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use l7tap_abi::events::{decode, Event, Flow, Role};
use l7tap_abi::Protocol;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, TsResolution};

use super::packet::{self, LinkType, Segment, Skipped, TCP_ACK, TCP_FIN, TCP_SYN};
use super::*;

const CLIENT: &str = "10.0.0.1:40000";
const SERVER: &str = "10.0.0.2:2181";

/// A TCP segment's bytes from IP on: `(src, dst, seq, ack, flags, payload)`.
fn ip_tcp(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let mut ip = Vec::new();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            ip.extend_from_slice(&[0x45, 0]);
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            ip.extend_from_slice(&s.ip().octets());
            ip.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[6, 64]);
            ip.extend_from_slice(&s.ip().octets());
            ip.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("mixed address families"),
    }
    ip.extend_from_slice(&tcp);
    ip
}

fn ethertype(ip: &[u8]) -> [u8; 2] {
    if ip[0] >> 4 == 4 {
        [0x08, 0x00]
    } else {
        [0x86, 0xdd]
    }
}

/// `ip` framed for link type `link` (Ethernet with one VLAN tag when `vlan`).
fn framed(link: LinkType, ip: &[u8], vlan: bool) -> Vec<u8> {
    let mut f = Vec::new();
    match link {
        LinkType::Ethernet => {
            f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
            if vlan {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            }
            f.extend_from_slice(&ethertype(ip));
        }
        LinkType::LinuxSll => {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            f.extend_from_slice(&ethertype(ip));
        }
        LinkType::LinuxSll2 => {
            f.extend_from_slice(&ethertype(ip));
            f.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        LinkType::Null => {
            f.extend_from_slice(&(if ip[0] >> 4 == 4 { 2u32 } else { 30 }).to_le_bytes())
        }
        LinkType::RawIp => {}
    }
    f.extend_from_slice(ip);
    f
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A ZooKeeper getData request for `/zookeeper` (xid 1).
fn zk_get_data() -> Vec<u8> {
    let mut body = 1i32.to_be_bytes().to_vec();
    body.extend_from_slice(&4i32.to_be_bytes());
    body.extend_from_slice(&10u32.to_be_bytes());
    body.extend_from_slice(b"/zookeeper");
    body.push(0);
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

#[test]
fn every_link_type_yields_the_tcp_segment() {
    for (client, server) in [(CLIENT, SERVER), ("[fd00::1]:40000", "[fd00::2]:2181")] {
        let (c, s) = (addr(client), addr(server));
        let ip = ip_tcp(c, s, 100, 7, TCP_ACK, b"hello");
        for (link, vlan) in [
            (LinkType::Ethernet, false),
            (LinkType::Ethernet, true),
            (LinkType::LinuxSll, false),
            (LinkType::LinuxSll2, false),
            (LinkType::RawIp, false),
            (LinkType::Null, false),
        ] {
            let frame = framed(link, &ip, vlan);
            let seg = packet::decode(link, &frame, frame.len() as u32).unwrap();
            let expected = Segment {
                src: c,
                dst: s,
                seq: 100,
                ack: 7,
                flags: TCP_ACK,
                payload: b"hello",
                cut: 0,
            };
            assert_eq!(seg, expected, "{link:?} vlan {vlan} {client}");
        }
    }
}

#[test]
fn frames_without_a_usable_tcp_segment_say_why() {
    let ip = ip_tcp(addr(CLIENT), addr(SERVER), 1, 0, TCP_ACK, b"x");
    let mut arp = framed(LinkType::Ethernet, &ip, false);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(
        packet::decode(LinkType::Ethernet, &arp, arp.len() as u32),
        Err(Skipped::NotIp)
    );
    let mut udp = ip.clone();
    udp[9] = 17;
    assert_eq!(
        packet::decode(LinkType::RawIp, &udp, udp.len() as u32),
        Err(Skipped::NotTcp)
    );
    let mut fragment = ip.clone();
    fragment[6] = 0x20; // more fragments
    assert_eq!(
        packet::decode(LinkType::RawIp, &fragment, fragment.len() as u32),
        Err(Skipped::Fragment)
    );
    assert_eq!(
        packet::decode(LinkType::RawIp, &ip[..30], ip.len() as u32),
        Err(Skipped::HeaderCut)
    );
    let mut bad = ip.clone();
    bad[32] = 2 << 4; // TCP header of 8 bytes
    assert_eq!(
        packet::decode(LinkType::RawIp, &bad, bad.len() as u32),
        Err(Skipped::Malformed)
    );
}

#[test]
fn a_snaplen_cut_frame_reports_its_cut_data_bytes() {
    let ip = ip_tcp(addr(CLIENT), addr(SERVER), 1, 0, TCP_ACK, &[9u8; 100]);
    let frame = framed(LinkType::Ethernet, &ip, false);
    let seg = packet::decode(
        LinkType::Ethernet,
        &frame[..14 + 40 + 30],
        frame.len() as u32,
    )
    .unwrap();
    assert_eq!((seg.payload.len(), seg.cut), (30, 70));
}

/// The events the probes would have sent for `packets` (Unix ns, IP bytes), with counts.
fn feed(packets: &[(u64, Vec<u8>)]) -> (Vec<Vec<u8>>, PcapCounts) {
    let mut f = PacketFeed::new(&PcapOptions {
        clickhouse_http_ports: vec![8123],
    });
    let mut events = Vec::new();
    let mut out = |frame: Frame| {
        if let Frame::Event(e) = frame {
            events.push(e);
        }
        Ok(())
    };
    for (ts, ip) in packets {
        f.packet(*ts, LinkType::RawIp, ip, ip.len() as u32, &mut out)
            .unwrap();
    }
    f.finish(&mut out).unwrap();
    (events, f.counts)
}

/// What an event says, in short: ("open" | "data" | "close", flow, payload, total).
type Short = (&'static str, Option<Flow>, Vec<u8>, u64);

fn summary(raw: &[u8]) -> Short {
    match decode(raw).unwrap() {
        Event::Open(o) => {
            assert_eq!(o.header.role, Role::Server);
            assert_eq!((o.local, o.remote), (addr(SERVER), addr(CLIENT)));
            assert_eq!((o.comm.as_str(), o.header.conn.tgid), ("", 0));
            ("open", None, Vec::new(), 0)
        }
        Event::Data(d) => ("data", Some(d.header.flow), d.payload.to_vec(), d.total),
        Event::Close(_) => ("close", None, Vec::new(), 0),
    }
}

/// A ZooKeeper exchange: handshake, the request in two segments (sent out of order, the
/// first retransmitted), a reply of which a middle segment was lost, FINs.
fn conversation() -> Vec<(u64, Vec<u8>)> {
    let (c, s) = (addr(CLIENT), addr(SERVER));
    let req = zk_get_data();
    let (a, b) = req.split_at(10);
    let b_seq = 1001 + a.len() as u32;
    let reply_end = 5001 + 30;
    vec![
        (1_000, ip_tcp(c, s, 1000, 0, TCP_SYN, b"")),
        (1_001, ip_tcp(s, c, 5000, 1001, TCP_SYN | TCP_ACK, b"")),
        (1_002, ip_tcp(c, s, 1001, 5001, TCP_ACK, b"")),
        (2_000, ip_tcp(c, s, b_seq, 5001, TCP_ACK, b)),
        (2_001, ip_tcp(c, s, 1001, 5001, TCP_ACK, a)),
        (2_002, ip_tcp(c, s, 1001, 5001, TCP_ACK, a)),
        (
            3_000,
            ip_tcp(s, c, 5001, 1001 + req.len() as u32, TCP_ACK, &[1u8; 10]),
        ),
        // 5011..5021 lost; the client acknowledges it all.
        (
            3_002,
            ip_tcp(s, c, 5021, 1001 + req.len() as u32, TCP_ACK, &[3u8; 10]),
        ),
        (
            3_003,
            ip_tcp(
                c,
                s,
                1001 + req.len() as u32,
                reply_end,
                TCP_ACK | TCP_FIN,
                b"",
            ),
        ),
        (
            3_004,
            ip_tcp(
                s,
                c,
                reply_end,
                1002 + req.len() as u32,
                TCP_ACK | TCP_FIN,
                b"",
            ),
        ),
    ]
}

#[test]
fn a_connection_becomes_the_server_side_events_of_the_probes() {
    let (events, counts) = feed(&conversation());
    let got: Vec<_> = events.iter().map(|e| summary(e)).collect();
    let req = zk_get_data();
    let expected = vec![
        ("open", None, Vec::new(), 0),
        ("data", Some(Flow::Ingress), req.clone(), req.len() as u64),
        ("data", Some(Flow::Egress), vec![1u8; 10], 10),
        // The lost segment: a gap of 10 bytes, then what followed it.
        ("data", Some(Flow::Egress), Vec::new(), 10),
        ("data", Some(Flow::Egress), vec![3u8; 10], 10),
        ("close", None, Vec::new(), 0),
    ];
    assert_eq!(got, expected);
    let Event::Open(open) = decode(&events[0]).unwrap() else {
        panic!("not an open event")
    };
    assert_eq!(open.header.protocol, Some(Protocol::ZooKeeper));
    assert_eq!(open.detected_by(), "zookeeper_request");
    assert_eq!(counts.connections.connections, 1);
    assert_eq!(counts.connections.classified, 1);
    assert_eq!(counts.connections.streams.lost_bytes, 10);
    assert_eq!(counts.connections.streams.duplicate_bytes, 10);
    assert_eq!(counts.tcp_segments, 10);
}

#[test]
fn unclassified_traffic_sends_nothing() {
    let (c, s) = (addr("10.0.0.1:40000"), addr("10.0.0.2:6379"));
    let packets: Vec<_> = (0..20u32)
        .map(|i| {
            (
                u64::from(i),
                ip_tcp(c, s, 1 + i * 14, 0, TCP_ACK, b"*1\r\n$4\r\nPING\r\n"),
            )
        })
        .collect();
    let (events, counts) = feed(&packets);
    assert!(events.is_empty());
    assert_eq!(counts.connections.unclassified, 1);
}

fn write_pcap(
    path: &std::path::Path,
    endianness: Endianness,
    ts_resolution: TsResolution,
    link: DataLink,
    frames: &[(u64, Vec<u8>)],
) {
    let header = PcapHeader {
        datalink: link,
        endianness,
        ts_resolution,
        snaplen: 262144,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(std::fs::File::create(path).unwrap(), header).unwrap();
    for (ts, frame) in frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(*ts),
            frame.len() as u32,
            frame,
        ))
        .unwrap();
    }
}

/// Reads a capture file; returns its events (decoded in short), timestamps and counts.
fn read(path: &std::path::Path) -> Result<(Vec<Short>, Vec<u64>, PcapCounts), PcapError> {
    let mut events = Vec::new();
    let counts = read_packet_capture(
        path,
        &PcapOptions {
            clickhouse_http_ports: vec![8123],
        },
        |frame| {
            if let Frame::Event(e) = frame {
                events.push(e);
            }
            Ok(())
        },
    )?;
    let ts = events
        .iter()
        .map(|e| decode(e).unwrap().header_ts())
        .collect();
    Ok((events.iter().map(|e| summary(e)).collect(), ts, counts))
}

trait HeaderTs {
    fn header_ts(&self) -> u64;
}

impl HeaderTs for Event<'_> {
    fn header_ts(&self) -> u64 {
        match self {
            Event::Open(o) => o.header.ts_ns,
            Event::Data(d) => d.header.ts_ns,
            Event::Close(h) => h.ts_ns,
        }
    }
}

/// The conversation at a realistic time, in whole microseconds.
fn timed_conversation(link: LinkType) -> Vec<(u64, Vec<u8>)> {
    conversation()
        .into_iter()
        .map(|(t, ip)| {
            (
                1_765_000_000_000_000_000 + t * 1_000,
                framed(link, &ip, false),
            )
        })
        .collect()
}

#[test]
fn pcap_files_of_either_byte_order_and_resolution_read_alike() {
    let dir = tempdir();
    let frames = timed_conversation(LinkType::LinuxSll2);
    let (expected, _) = feed(&conversation());
    let expected: Vec<_> = expected.iter().map(|e| summary(e)).collect();
    for endianness in [Endianness::Big, Endianness::Little] {
        for resolution in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
            let path = dir.join(format!("{endianness:?}-{resolution:?}.pcap"));
            write_pcap(&path, endianness, resolution, DataLink::LINUX_SLL2, &frames);
            assert_eq!(
                CaptureFormat::of_file(&path).unwrap(),
                Some(CaptureFormat::Pcap)
            );
            let (events, ts, counts) = read(&path).unwrap();
            assert_eq!(events, expected);
            // The open and the request: the request's second, first-sent segment (2_001 µs).
            assert_eq!(ts[1], 1_765_000_000_000_000_000 + 2_001_000);
            assert_eq!(counts.stopped, None);
        }
    }
}

#[test]
fn pcapng_files_read_with_their_interface_time_resolution() {
    let dir = tempdir();
    let frames = timed_conversation(LinkType::Ethernet);
    for tsresol in [None, Some(9u8)] {
        let path = dir.join(format!("{tsresol:?}.pcapng"));
        let mut w = PcapNgWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        let options = tsresol
            .map(InterfaceDescriptionOption::IfTsResol)
            .into_iter()
            .collect();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options,
        })
        .unwrap();
        let units_per_ns = if tsresol == Some(9) { 1 } else { 1_000 };
        for (ts, frame) in &frames {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                // The writer stores these "nanoseconds" as the interface's time units.
                timestamp: Duration::from_nanos(ts / units_per_ns),
                original_len: frame.len() as u32,
                data: frame.as_slice().into(),
                options: vec![],
            })
            .unwrap();
        }
        drop(w);
        assert_eq!(
            CaptureFormat::of_file(&path).unwrap(),
            Some(CaptureFormat::PcapNg)
        );
        let (events, ts, _) = read(&path).unwrap();
        assert_eq!(events.len(), 6);
        assert_eq!(ts[1], 1_765_000_000_000_000_000 + 2_001_000);
    }
}

#[test]
fn a_truncated_file_is_read_up_to_its_last_whole_packet() {
    let dir = tempdir();
    let path = dir.join("cut.pcap");
    let frames = timed_conversation(LinkType::Ethernet);
    write_pcap(
        &path,
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
        &frames,
    );
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 20).unwrap();
    let (_, _, counts) = read(&path).unwrap();
    assert_eq!(counts.packets, frames.len() as u64 - 1);
    let why = counts.stopped.unwrap();
    assert!(why.contains("ends inside a packet"), "{why}");
}

#[test]
fn unsupported_link_types_and_other_files_are_refused_in_one_line() {
    let dir = tempdir();
    let path = dir.join("wifi.pcap");
    write_pcap(
        &path,
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::IEEE802_11,
        &[],
    );
    let err = read(&path).unwrap_err().to_string();
    assert!(
        err.contains("wifi.pcap: link type 105 is not supported"),
        "{err}"
    );
    let text = dir.join("notes.txt");
    std::fs::File::create(&text)
        .unwrap()
        .write_all(b"hello world")
        .unwrap();
    assert_eq!(CaptureFormat::of_file(&text).unwrap(), None);
}

#[test]
fn a_snaplen_cut_segment_is_sent_with_its_cut_bytes() {
    let (c, s) = (addr(CLIENT), addr(SERVER));
    let req = zk_get_data();
    let ip = ip_tcp(c, s, 1001, 0, TCP_ACK, &req);
    let mut f = PacketFeed::new(&PcapOptions {
        clickhouse_http_ports: vec![],
    });
    let mut events = Vec::new();
    let mut out = |frame: Frame| {
        if let Frame::Event(e) = frame {
            events.push(e);
        }
        Ok(())
    };
    // Kept: the IP and TCP headers and 20 bytes of the request.
    f.packet(1, LinkType::RawIp, &ip[..60], ip.len() as u32, &mut out)
        .unwrap();
    f.finish(&mut out).unwrap();
    let got: Vec<_> = events.iter().map(|e| summary(e)).collect();
    assert_eq!(
        got[1],
        (
            "data",
            Some(Flow::Ingress),
            req[..20].to_vec(),
            req.len() as u64
        )
    );
    assert_eq!(
        f.counts.connections.streams.cut_bytes,
        req.len() as u64 - 20
    );
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "l7tap-pcap-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
