//! ZooKeeper wire bytes for synthetic traffic: length-prefixed frames, request and reply
//! headers, jute strings.

/// `body` behind its 4-byte big-endian length.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// A request frame: xid, opcode, then `body`.
pub fn request(xid: i32, op: i32, body: &[u8]) -> Vec<u8> {
    let mut b = xid.to_be_bytes().to_vec();
    b.extend_from_slice(&op.to_be_bytes());
    b.extend_from_slice(body);
    frame(&b)
}

/// A reply frame: xid, zxid, error code, then `body`.
pub fn reply(xid: i32, zxid: i64, err: i32, body: &[u8]) -> Vec<u8> {
    let mut b = xid.to_be_bytes().to_vec();
    b.extend_from_slice(&zxid.to_be_bytes());
    b.extend_from_slice(&err.to_be_bytes());
    b.extend_from_slice(body);
    frame(&b)
}

/// A jute `ustring`: 4-byte big-endian length, then the bytes.
pub fn jute_string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// A request that carries a path and a watch flag (exists, getData, getChildren).
pub fn path_request(xid: i32, op: i32, path: &str, watch: bool) -> Vec<u8> {
    let mut body = jute_string(path);
    body.push(watch as u8);
    request(xid, op, &body)
}
