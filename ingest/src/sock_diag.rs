//! The TCP sockets in LISTEN state of l7tap's network namespace, from the kernel's sock_diag
//! netlink interface: a dump of the listening table only. `/proc/net/tcp` gives the same rows
//! but walks every bucket of the established table to get them (about 4 ms per read with
//! 262,144 buckets), once per new process seen at a connection's open.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `1 << TCP_LISTEN`.
const LISTEN_STATES: u32 = 1 << 10;
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQUEST_LEN: usize = 56;
/// `struct inet_diag_msg`: family, state, timer, retrans, the socket id (48 bytes), expires,
/// rqueue, wqueue, uid, inode.
const DIAG_MSG_LEN: usize = 72;
const SPORT_AT: usize = 4;
const INODE_AT: usize = 68;
/// Bytes read per `recv`; the kernel fills at most this much per call.
const RECV_BUFFER: usize = 32 * 1024;

/// A netlink reply that cannot be read as a sock_diag dump.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiagReplyError {
    #[error("a netlink message of {len} bytes runs past the {left} bytes received")]
    Truncated { len: usize, left: usize },
    #[error("the kernel refused the dump: errno {0}")]
    Refused(i32),
    #[error("a socket message of {0} bytes, shorter than inet_diag_msg")]
    ShortSocket(usize),
}

/// What one `recv` of a dump held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiagChunk {
    /// (socket inode, local port) of each socket in the chunk.
    pub sockets: Vec<(u64, u16)>,
    /// The dump's last message (NLMSG_DONE) was in the chunk.
    pub done: bool,
}

/// Reads the netlink messages of one `recv` of a sock_diag dump.
pub fn parse_chunk(mut buf: &[u8]) -> Result<DiagChunk, DiagReplyError> {
    let mut chunk = DiagChunk::default();
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
        if len < NLMSG_HDR_LEN || len > buf.len() {
            return Err(DiagReplyError::Truncated {
                len,
                left: buf.len(),
            });
        }
        let body = &buf[NLMSG_HDR_LEN..len];
        match kind as i32 {
            libc::NLMSG_DONE => {
                chunk.done = true;
                return Ok(chunk);
            }
            libc::NLMSG_ERROR => {
                let errno = body
                    .get(0..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                    .unwrap_or(0);
                return Err(DiagReplyError::Refused(-errno));
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => {
                if body.len() < DIAG_MSG_LEN {
                    return Err(DiagReplyError::ShortSocket(body.len()));
                }
                let port = u16::from_be_bytes([body[SPORT_AT], body[SPORT_AT + 1]]);
                let inode =
                    u32::from_ne_bytes(body[INODE_AT..INODE_AT + 4].try_into().expect("4 bytes"));
                chunk.sockets.push((inode.into(), port));
            }
            // Other message types (NLMSG_NOOP; none other is sent for this request) carry no
            // socket.
            _ => {}
        }
        // Messages are 4-byte aligned.
        let advance = (len + 3) & !3;
        buf = buf.get(advance..).unwrap_or(&[]);
    }
    Ok(chunk)
}

/// The request: a dump of `family`'s TCP sockets in LISTEN state.
fn request(family: u8) -> [u8; NLMSG_HDR_LEN + REQUEST_LEN] {
    let mut msg = [0u8; NLMSG_HDR_LEN + REQUEST_LEN];
    msg[0..4].copy_from_slice(&((NLMSG_HDR_LEN + REQUEST_LEN) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    let req = &mut msg[NLMSG_HDR_LEN..];
    req[0] = family;
    req[1] = libc::IPPROTO_TCP as u8;
    req[4..8].copy_from_slice(&LISTEN_STATES.to_ne_bytes());
    msg
}

/// (socket inode, local port) of every TCP socket of `family` (`AF_INET` or `AF_INET6`) in
/// LISTEN state in l7tap's network namespace.
pub fn listening_sockets(family: i32) -> io::Result<Vec<(u64, u16)>> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor just opened here and owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let msg = request(family as u8);
    // SAFETY: `msg` is a live buffer of `msg.len()` bytes; with no address the message goes
    // to the kernel (the socket's default peer).
    let sent = unsafe { libc::send(socket.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut sockets = Vec::new();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
        let got = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the sock_diag dump ended without NLMSG_DONE",
            ));
        }
        let chunk = parse_chunk(&buf[..got as usize])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        sockets.extend(chunk.sockets);
        if chunk.done {
            return Ok(sockets);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR_LEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn diag_msg(port: u16, inode: u32) -> Vec<u8> {
        let mut body = vec![0u8; DIAG_MSG_LEN];
        body[0] = libc::AF_INET as u8;
        body[1] = 10; // TCP_LISTEN
        body[SPORT_AT..SPORT_AT + 2].copy_from_slice(&port.to_be_bytes());
        body[INODE_AT..INODE_AT + 4].copy_from_slice(&inode.to_ne_bytes());
        body
    }

    #[test]
    fn a_chunk_yields_its_sockets_and_the_end_of_the_dump() {
        let mut buf = message(SOCK_DIAG_BY_FAMILY, &diag_msg(9000, 4242));
        buf.extend(message(SOCK_DIAG_BY_FAMILY, &diag_msg(2181, 77)));
        let chunk = parse_chunk(&buf).unwrap();
        assert_eq!(chunk.sockets, vec![(4242, 9000), (77, 2181)]);
        assert!(!chunk.done);
        buf.extend(message(libc::NLMSG_DONE as u16, &[0; 4]));
        assert!(parse_chunk(&buf).unwrap().done);
    }

    #[test]
    fn an_error_reply_and_a_cut_message_are_errors_every_prefix_is_safe() {
        let refused = message(libc::NLMSG_ERROR as u16, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_chunk(&refused),
            Err(DiagReplyError::Refused(libc::EPERM))
        );
        let full = message(SOCK_DIAG_BY_FAMILY, &diag_msg(9000, 4242));
        for cut in 0..full.len() {
            let result = parse_chunk(&full[..cut]);
            if cut >= NLMSG_HDR_LEN {
                assert!(
                    matches!(result, Err(DiagReplyError::Truncated { .. })),
                    "{cut}: {result:?}"
                );
            } else {
                assert_eq!(result, Ok(DiagChunk::default()), "{cut}");
            }
        }
        // A socket message too short for its fields is refused, not read past.
        let short = message(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(9000, 4242)[..DIAG_MSG_LEN - 4],
        );
        assert_eq!(
            parse_chunk(&short),
            Err(DiagReplyError::ShortSocket(DIAG_MSG_LEN - 4))
        );
        // A length below the header's is refused rather than looped on.
        let mut zero = full.clone();
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse_chunk(&zero).is_err());
    }

    /// Listening sockets of a `/proc/net/tcp{,6}` table of this namespace.
    fn proc_table(name: &str) -> Vec<(u64, u16)> {
        let table = std::fs::read_to_string(format!("/proc/net/{name}")).unwrap();
        crate::procfs::listening_sockets(&table).collect()
    }

    #[test]
    fn the_dump_holds_the_same_listening_sockets_as_proc_net_tcp() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for (family, name) in [(libc::AF_INET, "tcp"), (libc::AF_INET6, "tcp6")] {
            // The oracle is /proc's table, read before and after the dump: another process's
            // listener may come or go meanwhile.
            let before = proc_table(name);
            let dumped = listening_sockets(family).unwrap();
            let after = proc_table(name);
            for socket in &dumped {
                assert!(
                    before.contains(socket) || after.contains(socket),
                    "{name}: {socket:?} is not in /proc"
                );
            }
            for socket in before.iter().filter(|s| after.contains(s)) {
                assert!(
                    dumped.contains(socket),
                    "{name}: {socket:?} is not in the dump"
                );
            }
            if family == libc::AF_INET {
                assert!(
                    dumped.iter().any(|&(_, p)| p == port),
                    "{dumped:?} lacks {port}"
                );
            }
        }
    }
}
