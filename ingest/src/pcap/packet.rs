//! One captured frame decoded down to its TCP segment: link layer (Ethernet with VLAN tags,
//! Linux cooked SLL and SLL2, raw IP, BSD loopback), IPv4 or IPv6, TCP. Frames that carry no
//! TCP segment say why, so the reader can count them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The link layers the reader decodes (pcap's LINKTYPE_* values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    Null,
    Ethernet,
    /// The packet starts at the IP header.
    RawIp,
    LinuxSll,
    LinuxSll2,
}

impl LinkType {
    /// The link layer of a pcap link type number; none for one the reader does not decode.
    pub fn from_linktype(n: u32) -> Option<LinkType> {
        Some(match n {
            0 | 108 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 | 228 | 229 => LinkType::RawIp,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A TCP segment of a frame. `payload` is what the capture kept of its data; `cut` bytes of
/// data followed it on the wire but are not in the file (snaplen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: &'a [u8],
    pub cut: u32,
}

/// Why a frame holds no TCP segment the reader can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
    /// IP, but not TCP (UDP, ICMP, ...).
    NotTcp,
    /// An IP fragment: TCP over fragmented IP is not reassembled.
    Fragment,
    /// The capture cut the frame inside its IP or TCP header (its data counts as lost).
    HeaderCut,
    /// Header fields contradict each other.
    Malformed,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes a frame of link type `link`; `orig_len` is its length on the wire.
pub fn decode(link: LinkType, frame: &[u8], orig_len: u32) -> Result<Segment<'_>, Skipped> {
    // Bytes of the wire frame missing from the file.
    let missing = (orig_len as usize).saturating_sub(frame.len());
    let (ethertype, ip) = match link {
        LinkType::Null => {
            let family = frame.get(..4).ok_or(Skipped::HeaderCut)?;
            // Either byte order: AF_INET is 2; AF_INET6 is 10, 24, 28 or 30 by system.
            let family = u32::from_le_bytes(family.try_into().unwrap())
                .min(u32::from_be_bytes(family.try_into().unwrap()));
            let ethertype = match family {
                2 => ETHERTYPE_IPV4,
                10 | 24 | 28 | 30 => ETHERTYPE_IPV6,
                _ => return Err(Skipped::NotIp),
            };
            (ethertype, &frame[4..])
        }
        LinkType::Ethernet => vlan_untagged(be16(frame, 12).ok_or(Skipped::HeaderCut)?, frame, 14)?,
        LinkType::RawIp => match frame.first().map(|b| b >> 4) {
            Some(4) => (ETHERTYPE_IPV4, frame),
            Some(6) => (ETHERTYPE_IPV6, frame),
            Some(_) => return Err(Skipped::NotIp),
            None => return Err(Skipped::HeaderCut),
        },
        LinkType::LinuxSll => vlan_untagged(be16(frame, 14).ok_or(Skipped::HeaderCut)?, frame, 16)?,
        LinkType::LinuxSll2 => vlan_untagged(be16(frame, 0).ok_or(Skipped::HeaderCut)?, frame, 20)?,
    };
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(ip, missing),
        ETHERTYPE_IPV6 => ipv6(ip, missing),
        _ => Err(Skipped::NotIp),
    }
}

/// The ethertype after any VLAN tags, and the bytes after them; `at` is where the bytes
/// after the link header's ethertype start.
fn vlan_untagged(mut ethertype: u16, frame: &[u8], mut at: usize) -> Result<(u16, &[u8]), Skipped> {
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        ethertype = be16(frame, at + 2).ok_or(Skipped::HeaderCut)?;
        at += 4;
    }
    Ok((ethertype, frame.get(at..).ok_or(Skipped::HeaderCut)?))
}

fn ipv4(ip: &[u8], missing: usize) -> Result<Segment<'_>, Skipped> {
    let first = *ip.first().ok_or(Skipped::HeaderCut)?;
    if first >> 4 != 4 {
        return Err(Skipped::Malformed);
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 {
        return Err(Skipped::Malformed);
    }
    if ip.len() < header_len {
        return Err(Skipped::HeaderCut);
    }
    let total_len = usize::from(be16(ip, 2).unwrap());
    let fragment = be16(ip, 6).unwrap();
    // More fragments, or a fragment offset: part of a fragmented datagram.
    if fragment & 0x3fff != 0 {
        return Err(Skipped::Fragment);
    }
    if ip[9] != IPPROTO_TCP {
        return Err(Skipped::NotTcp);
    }
    // A segmentation-offloaded packet captured before segmentation says 0.
    let total_len = if total_len == 0 {
        ip.len() + missing
    } else {
        total_len
    };
    if total_len < header_len {
        return Err(Skipped::Malformed);
    }
    let src = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()));
    let dst = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()));
    tcp(src, dst, &ip[header_len..], total_len - header_len)
}

fn ipv6(ip: &[u8], missing: usize) -> Result<Segment<'_>, Skipped> {
    if ip.len() < 40 {
        return Err(Skipped::HeaderCut);
    }
    if ip[0] >> 4 != 6 {
        return Err(Skipped::Malformed);
    }
    let payload_len = usize::from(be16(ip, 4).unwrap());
    let payload_len = if payload_len == 0 {
        // A jumbogram or an offloaded packet: the frame says how long it is.
        ip.len() - 40 + missing
    } else {
        payload_len
    };
    let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()));
    let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()));
    let mut next = ip[6];
    let mut at = 40;
    let mut left = payload_len;
    loop {
        match next {
            IPPROTO_TCP => break,
            // Hop-by-hop, routing, destination options: skipped by their length.
            0 | 43 | 60 => {
                let len = (usize::from(*ip.get(at + 1).ok_or(Skipped::HeaderCut)?) + 1) * 8;
                next = ip[at];
                if len > left {
                    return Err(Skipped::Malformed);
                }
                at += len;
                left -= len;
            }
            44 => return Err(Skipped::Fragment),
            _ => return Err(Skipped::NotTcp),
        }
    }
    tcp(src, dst, ip.get(at..).ok_or(Skipped::HeaderCut)?, left)
}

/// The TCP segment in `tcp` (what the file holds of it), `wire_len` bytes long on the wire.
fn tcp(src: IpAddr, dst: IpAddr, tcp: &[u8], wire_len: usize) -> Result<Segment<'_>, Skipped> {
    if tcp.len() < 20 {
        return Err(Skipped::HeaderCut);
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < 20 || header_len > wire_len {
        return Err(Skipped::Malformed);
    }
    if tcp.len() < header_len {
        return Err(Skipped::HeaderCut);
    }
    let data_len = wire_len - header_len;
    // Ethernet pads short frames: the IP length bounds the data, not the frame.
    let kept = (tcp.len() - header_len).min(data_len);
    Ok(Segment {
        src: SocketAddr::new(src, be16(tcp, 0).unwrap()),
        dst: SocketAddr::new(dst, be16(tcp, 2).unwrap()),
        seq: be32(tcp, 4).unwrap(),
        ack: be32(tcp, 8).unwrap(),
        flags: tcp[13],
        payload: &tcp[header_len..header_len + kept],
        cut: u32::try_from(data_len - kept).map_err(|_| Skipped::Malformed)?,
    })
}
