//! Who is at each end of a connection, as carried by identity frames ([`crate::Tag::Identity`]):
//! the observed process as `/proc` showed it at the connection's open, and, for a local
//! connection whose other end is watched too, that end's process.
//!
//! A live capture resolves identities (`procfs.rs`, `join.rs`) and sends them to the actors
//! as frames, which `--record` writes like every other frame: a replay reads them back
//! instead of reading `/proc`, so it reproduces the live run.
//!
//! ```text
//! body: u32 tgid | i32 fd | u64 start_ns | u8 flags (1: resolved, 2: peer follows)
//!       | u32 pid | str process | str exe | str cgroup | str app
//!       [| u32 peer pid | str peer process | str peer app]
//! str:  u16 length | UTF-8 bytes   (all integers little-endian)
//! ```
use l7tap_abi::events::ConnId;

/// A process as resolved from `/proc` (or, when it had exited, from the kernel's open event).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// `/proc` was read; false: the process had exited, the rest is the kernel's comm.
    pub resolved: bool,
    /// Process name (`comm`, completed from argv[0] when the kernel cut it).
    pub process: String,
    /// `/proc/PID/exe`; empty when unknown.
    pub exe: String,
    /// The cgroup path shown for it; empty when unknown.
    pub cgroup: String,
    /// The application name (see `app_name.rs`).
    pub app: String,
}

/// The other end of a local connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub pid: u32,
    pub process: String,
    pub app: String,
}

/// One identity frame: a connection's own process and, when joined, its peer's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityFrame {
    pub conn: ConnId,
    pub own: ProcessIdentity,
    pub peer: Option<PeerIdentity>,
}

const RESOLVED: u8 = 1;
const HAS_PEER: u8 = 2;
/// Longest text kept in a frame (a path), in bytes.
const MAX_TEXT: usize = 4096;

fn put_str(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn str(&mut self) -> Option<String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as usize;
        Some(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
}

impl IdentityFrame {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.conn.tgid.to_le_bytes());
        out.extend_from_slice(&self.conn.fd.to_le_bytes());
        out.extend_from_slice(&self.conn.start_ns.to_le_bytes());
        let flags = if self.own.resolved { RESOLVED } else { 0 }
            | if self.peer.is_some() { HAS_PEER } else { 0 };
        out.push(flags);
        out.extend_from_slice(&self.own.pid.to_le_bytes());
        for text in [
            &self.own.process,
            &self.own.exe,
            &self.own.cgroup,
            &self.own.app,
        ] {
            put_str(&mut out, text);
        }
        if let Some(peer) = &self.peer {
            out.extend_from_slice(&peer.pid.to_le_bytes());
            put_str(&mut out, &peer.process);
            put_str(&mut out, &peer.app);
        }
        out
    }

    /// The frame in `body`; none when it is cut short.
    pub fn decode(body: &[u8]) -> Option<IdentityFrame> {
        let mut c = Cursor(body);
        let conn = ConnId {
            tgid: c.u32()?,
            fd: c.u32()? as i32,
            start_ns: c.u64()?,
        };
        let flags = c.u8()?;
        let own = ProcessIdentity {
            pid: c.u32()?,
            resolved: flags & RESOLVED != 0,
            process: c.str()?,
            exe: c.str()?,
            cgroup: c.str()?,
            app: c.str()?,
        };
        let peer = if flags & HAS_PEER != 0 {
            Some(PeerIdentity {
                pid: c.u32()?,
                process: c.str()?,
                app: c.str()?,
            })
        } else {
            None
        };
        Some(IdentityFrame { conn, own, peer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_and_without_a_peer_and_cut_ones_are_refused() {
        let mut frame = IdentityFrame {
            conn: ConnId {
                tgid: 42,
                fd: -1,
                start_ns: 7,
            },
            own: ProcessIdentity {
                pid: 42,
                resolved: true,
                process: "clickhouse-server".into(),
                exe: "/usr/bin/clickhouse".into(),
                cgroup: "/".into(),
                app: "clickhouse-server :9000".into(),
            },
            peer: None,
        };
        assert_eq!(IdentityFrame::decode(&frame.encode()), Some(frame.clone()));
        frame.peer = Some(PeerIdentity {
            pid: 9,
            process: "batch".into(),
            app: "batch.service".into(),
        });
        let body = frame.encode();
        assert_eq!(IdentityFrame::decode(&body), Some(frame));
        assert_eq!(IdentityFrame::decode(&body[..body.len() - 1]), None);
    }
}
