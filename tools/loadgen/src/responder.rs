//! A minimal server that answers with bytes the real servers sent, so l7tap can be loaded far
//! above what a real ClickHouse or ZooKeeper serves on the same machine.
//!
//! - ClickHouse: replays a [`ClickHouseScript`] byte for byte: reads exactly the recorded
//!   client bytes of each exchange, then writes the recorded answer chunk by chunk (one
//!   write per chunk, as the real server did). Only a client replaying the same script (the
//!   `raw` client) fits it.
//! - ZooKeeper: reads length-prefixed frames; answers the ConnectRequest with the recorded
//!   ConnectResponse and every request with the recorded reply for its opcode, the xid
//!   patched to the request's so requests and replies still pair. Any ZooKeeper client
//!   works; an opcode without a recording gets an `UNIMPLEMENTED` error reply. Replies to
//!   pipelined requests that arrived together go out in one write.
use std::collections::HashMap;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use crate::script::{be_i32, opcode, ClickHouseScript, ZooKeeperScript};
use crate::LoadError;

/// ZooKeeper's `ZUNIMPLEMENTED` error code.
const ZOOKEEPER_UNIMPLEMENTED: i32 = -6;

/// Binds `listen` and serves every connection on its own thread with `serve`.
fn spawn_listener<S>(listen: SocketAddr, name: &str, serve: S) -> Result<SocketAddr, LoadError>
where
    S: Fn(TcpStream) -> std::io::Result<()> + Send + Sync + 'static,
{
    let listener = TcpListener::bind(listen).map_err(LoadError::io(format!("binding {listen}")))?;
    let addr = listener
        .local_addr()
        .map_err(LoadError::io("reading a listener's address"))?;
    let serve = Arc::new(serve);
    let thread_name = format!("{name}-conn");
    std::thread::Builder::new()
        .name(format!("{name}-accept"))
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let serve = serve.clone();
                let _ = std::thread::Builder::new()
                    .name(thread_name.clone())
                    .spawn(move || {
                        if let Err(e) = serve(stream) {
                            if !matches!(
                                e.kind(),
                                ErrorKind::UnexpectedEof
                                    | ErrorKind::ConnectionReset
                                    | ErrorKind::BrokenPipe
                            ) {
                                eprintln!("responder: connection ended: {e}");
                            }
                        }
                    });
            }
        })
        .map_err(LoadError::io("spawning an acceptor"))?;
    Ok(addr)
}

/// Starts a ClickHouse responder on `listen`; returns the bound address.
pub fn start_clickhouse(
    listen: SocketAddr,
    script: ClickHouseScript,
) -> Result<SocketAddr, LoadError> {
    let script = Arc::new(script);
    spawn_listener(listen, "ch", move |stream| {
        serve_clickhouse(stream, &script)
    })
}

/// Starts a ZooKeeper responder on `listen`; returns the bound address.
pub fn start_zookeeper(
    listen: SocketAddr,
    script: ZooKeeperScript,
) -> Result<SocketAddr, LoadError> {
    let script = Arc::new(script);
    spawn_listener(listen, "zk", move |stream| serve_zookeeper(stream, &script))
}

fn serve_clickhouse(mut stream: TcpStream, script: &ClickHouseScript) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let longest = script
        .handshake
        .iter()
        .chain(std::iter::once(&script.request))
        .map(|e| e.client_len())
        .max()
        .unwrap_or(0);
    let mut request = vec![0u8; longest];
    for exchange in script
        .handshake
        .iter()
        .chain(std::iter::repeat(&script.request))
    {
        match stream.read_exact(&mut request[..exchange.client_len()]) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        for chunk in &exchange.server {
            stream.write_all(chunk)?;
        }
    }
    Ok(())
}

/// Reads one length-prefixed frame body into `body`; `Ok(false)` on a clean end of stream.
pub fn read_frame(reader: &mut impl Read, body: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = i32::from_be_bytes(len);
    if !(0..=16 << 20).contains(&len) {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("frame length {len}"),
        ));
    }
    body.resize(len as usize, 0);
    reader.read_exact(body)?;
    Ok(true)
}

/// Whether `buffered` starts with a whole frame (so reading it will not block).
fn holds_whole_frame(buffered: &[u8]) -> bool {
    buffered.len() >= 4 && buffered.len() - 4 >= be_i32(buffered, 0).max(0) as usize
}

/// The reply to a request with `op`: the recorded one, or an `UNIMPLEMENTED` error.
fn reply_template(replies: &HashMap<i32, Vec<u8>>, op: i32) -> std::borrow::Cow<'_, [u8]> {
    match replies.get(&op) {
        Some(frame) => std::borrow::Cow::Borrowed(frame),
        None => {
            // length 16: xid, zxid, err
            let mut frame = 16i32.to_be_bytes().to_vec();
            frame.extend_from_slice(&[0; 12]);
            frame.extend_from_slice(&ZOOKEEPER_UNIMPLEMENTED.to_be_bytes());
            std::borrow::Cow::Owned(frame)
        }
    }
}

fn serve_zookeeper(stream: TcpStream, script: &ZooKeeperScript) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut body = Vec::new();
    if !read_frame(&mut reader, &mut body)? {
        return Ok(());
    }
    writer.write_all(&script.connect_response)?;
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        if !out.is_empty() && !holds_whole_frame(reader.buffer()) {
            writer.write_all(&out)?;
            out.clear();
        }
        if !read_frame(&mut reader, &mut body)? {
            break;
        }
        let (xid, op) = (be_i32(&body, 0), be_i32(&body, 4));
        let reply = reply_template(&script.replies, op);
        let at = out.len();
        out.extend_from_slice(&reply);
        out[at + 4..at + 8].copy_from_slice(&xid.to_be_bytes());
        if op == opcode::CLOSE_SESSION {
            break;
        }
    }
    if !out.is_empty() {
        writer.write_all(&out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{Chunk, Exchange, Sender};

    #[test]
    fn clickhouse_replays_the_script() {
        let script = ClickHouseScript {
            handshake: vec![Exchange {
                client: vec![vec![0, 1]],
                server: vec![vec![0, 9]],
            }],
            request: Exchange {
                client: vec![vec![1], vec![2, 2]],
                server: vec![vec![1], vec![5]],
            },
        };
        let addr = start_clickhouse("127.0.0.1:0".parse().unwrap(), script).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 2];
        c.write_all(&[0, 1]).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0, 9]);
        for _ in 0..3 {
            c.write_all(&[1, 2, 2]).unwrap();
            c.read_exact(&mut buf).unwrap();
            assert_eq!(buf, [1, 5]);
        }
    }

    #[test]
    fn zookeeper_patches_xids_of_pipelined_requests() {
        let frame = |body: Vec<u8>| [(body.len() as i32).to_be_bytes().to_vec(), body].concat();
        let header = |a: i32, b: i32| [a.to_be_bytes(), b.to_be_bytes()].concat();
        let connect = frame(vec![0; 8]);
        let get = |xid| frame([header(xid, opcode::GET_DATA), vec![7]].concat());
        let reply = frame([header(1, 0), vec![0, 0, 0, 3, 0, 0, 0, 0, 0xab]].concat());
        let chunks = vec![
            Chunk {
                sender: Sender::Client,
                bytes: [connect.clone(), get(1)].concat(),
            },
            Chunk {
                sender: Sender::Server,
                bytes: [frame(vec![1; 4]), reply].concat(),
            },
        ];
        let script = ZooKeeperScript::from_chunks(&chunks, "t").unwrap();
        let addr = start_zookeeper("127.0.0.1:0".parse().unwrap(), script).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&[connect, get(40), get(41), frame(header(42, 99))].concat())
            .unwrap();
        let mut body = Vec::new();
        assert!(read_frame(&mut c, &mut body).unwrap());
        assert_eq!(body, vec![1; 4]);
        for xid in [40, 41] {
            assert!(read_frame(&mut c, &mut body).unwrap());
            assert_eq!((be_i32(&body, 0), body.last()), (xid, Some(&0xab)));
        }
        assert!(read_frame(&mut c, &mut body).unwrap());
        assert_eq!(
            (be_i32(&body, 0), be_i32(&body, 12)),
            (42, ZOOKEEPER_UNIMPLEMENTED)
        );
    }
}
