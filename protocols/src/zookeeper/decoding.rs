//! Decoding: the jute records inside frames, reduced to what a request record needs. Nothing
//! here allocates except the multi op-name list, which becomes the record's own.
//!
//! Every decoder takes a `strict` flag. Strict decoding is used where the parser does not
//! know that a frame starts at the current position (start of capture, after a gap, while
//! resynchronising): it accepts only what real clients and servers send (known codes, paths
//! starting with `/`, no trailing bytes where the layout is fixed). Framed decoding, once the
//! position is confirmed, trusts the length prefix and tolerates unknown codes and extra
//! trailing fields.
use super::codes::{is_event_type, is_keeper_state, protocol_version, xid, ErrorCode, OpCode};
use super::framing::{read_i32_at, read_i64_at, JuteReader, Read, Short, LENGTH_PREFIX};

/// The answer of a detector that looks at a stream's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detect<T> {
    Yes(T),
    No,
    NeedMore,
}

/// Bytes of the session password in both handshake frames.
const PASSWORD_LEN: i32 = 16;

/// `ConnectRequest`: the client's first frame (no request header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub read_only: bool,
    /// Keeper protocol 11: the extra `use_compression` byte.
    pub use_compression: bool,
    /// Bytes on the wire including the length prefix (Keeper protocol 11 sends one byte
    /// more than its length says).
    pub frame_len: usize,
}

/// Recognises a `ConnectRequest` at the start of the client's stream: length 44 or 45, a
/// known protocol version, a 16-byte password.
pub fn connect_request(bytes: &[u8]) -> Detect<ConnectRequest> {
    let Some(len) = read_i32_at(bytes, 0) else {
        return Detect::NeedMore;
    };
    if len != 44 && len != 45 {
        return Detect::No;
    }
    let Some(version) = read_i32_at(bytes, 4) else {
        return Detect::NeedMore;
    };
    if !matches!(version, 0 | 10..=12) {
        return Detect::No;
    }
    // Protocol 11 inserts `bool use_compression` after the version but keeps the length.
    let shift = usize::from(version == protocol_version::KEEPER_XID_64);
    let frame_len = LENGTH_PREFIX + len as usize + shift;
    if bytes.len() < frame_len {
        return Detect::NeedMore;
    }
    let at = 8 + shift;
    let (Some(last_zxid_seen), Some(timeout_ms), Some(session_id), Some(password_len)) = (
        read_i64_at(bytes, at),
        read_i32_at(bytes, at + 8),
        read_i64_at(bytes, at + 12),
        read_i32_at(bytes, at + 20),
    ) else {
        return Detect::No;
    };
    let read_only = match (len, bytes[frame_len - 1]) {
        (44, _) => false,
        (_, 0) => false,
        (_, 1) => true,
        _ => return Detect::No,
    };
    let use_compression = match (shift, bytes[8]) {
        (0, _) => version == protocol_version::KEEPER_COMPRESSION,
        (_, 0) => false,
        (_, 1) => true,
        _ => return Detect::No,
    };
    if password_len != PASSWORD_LEN || timeout_ms < 0 || last_zxid_seen < 0 {
        return Detect::No;
    }
    Detect::Yes(ConnectRequest {
        protocol_version: version,
        last_zxid_seen,
        timeout_ms,
        session_id,
        read_only,
        use_compression,
        frame_len,
    })
}

/// `ConnectResponse`: the server's first frame (no reply header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    /// 0: the session expired or was refused.
    pub session_id: i64,
    pub read_only: bool,
    pub frame_len: usize,
}

/// Recognises a `ConnectResponse` at the start of the server's stream. `versions` are the
/// protocol versions acceptable here (the request's, or only 0 when it was not seen).
pub fn connect_response(bytes: &[u8], versions: &[i32]) -> Detect<ConnectResponse> {
    let Some(len) = read_i32_at(bytes, 0) else {
        return Detect::NeedMore;
    };
    if len != 36 && len != 37 {
        return Detect::No;
    }
    let frame_len = LENGTH_PREFIX + len as usize;
    if bytes.len() < frame_len {
        return Detect::NeedMore;
    }
    let version = read_i32_at(bytes, 4).unwrap_or(-1);
    let timeout_ms = read_i32_at(bytes, 8).unwrap_or(-1);
    let session_id = read_i64_at(bytes, 12).unwrap_or(-1);
    let password_len = read_i32_at(bytes, 20).unwrap_or(-1);
    let read_only = match (len, bytes[frame_len - 1]) {
        (36, _) => false,
        (_, 0) => false,
        (_, 1) => true,
        _ => return Detect::No,
    };
    if !versions.contains(&version) || password_len != PASSWORD_LEN || timeout_ms < 0 {
        return Detect::No;
    }
    Detect::Yes(ConnectResponse {
        protocol_version: version,
        timeout_ms,
        session_id,
        read_only,
        frame_len,
    })
}

/// Width of the xid field: 4 bytes, or 8 with Keeper protocol 11.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XidWidth {
    #[default]
    Bits32,
    Bits64,
}

impl XidWidth {
    pub const fn bytes(self) -> usize {
        match self {
            XidWidth::Bits32 => 4,
            XidWidth::Bits64 => 8,
        }
    }

    /// `RequestHeader`: xid, int32 type.
    pub const fn request_header_len(self) -> usize {
        self.bytes() + 4
    }

    /// `ReplyHeader`: xid, int64 zxid, int32 err.
    pub const fn reply_header_len(self) -> usize {
        self.bytes() + 12
    }

    fn read(self, r: &mut JuteReader<'_>) -> Read<i64> {
        match self {
            XidWidth::Bits32 => r.i32().map(i64::from),
            XidWidth::Bits64 => r.i64(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub xid: i64,
    pub op: OpCode,
}

pub fn request_header(r: &mut JuteReader<'_>, width: XidWidth) -> Read<RequestHeader> {
    let xid = width.read(r)?;
    let op = OpCode(r.i32()?);
    Ok(RequestHeader { xid, op })
}

impl RequestHeader {
    /// What real clients send: a known request type, and an xid that is positive or the
    /// special xid that goes with its type.
    pub fn is_plausible(&self) -> bool {
        let op = self.op;
        if !op.is_request() || op == OpCode::KEEPER_SESSION_ID {
            return false;
        }
        match self.xid {
            xid::PING => op == OpCode::PING,
            xid::AUTH => op == OpCode::AUTH,
            xid::SET_WATCHES => op == OpCode::SET_WATCHES || op == OpCode::SET_WATCHES2,
            x if x > 0 => op != OpCode::PING && op != OpCode::AUTH,
            _ => false,
        }
    }
}

/// What a request record keeps of a request body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFields<'a> {
    /// The znode path (first sub-request's path for a multi), at most `max_path` bytes, and
    /// whether it was longer.
    pub path: Option<(&'a [u8], bool)>,
    pub watch: bool,
    /// Expected version (delete, setData, setACL, check).
    pub version: Option<i32>,
    /// Auth scheme of an auth request (the credentials are skipped, never kept).
    pub auth_scheme: Option<&'a [u8]>,
    /// Every field was decoded; false when only a prefix of a large frame was at hand (or
    /// a multi contains a sub-request whose layout is unknown).
    pub complete: bool,
}

/// Decodes the body of a request of type `op` from `r`, pushing a multi's sub-request names
/// to `multi_ops`. Fields beyond the bytes at hand are left out (`complete == false`).
pub fn request_fields<'a>(
    op: OpCode,
    r: &mut JuteReader<'a>,
    max_path: usize,
    strict: bool,
    multi_ops: &mut Vec<&'static str>,
) -> Result<RequestFields<'a>, &'static str> {
    let mut fields = RequestFields::default();
    let walk = if op.is_multi() {
        multi_request(r, max_path, strict, &mut fields, multi_ops)
    } else {
        request_body(op, r, max_path, strict, &mut fields)
    };
    match walk {
        Ok(()) => {
            fields.complete = true;
            if strict && !r.at_end() && !tolerates_trailing_bytes(op) {
                return Err("trailing bytes after the request body");
            }
            Ok(fields)
        }
        Err(Short::Truncated) => Ok(fields),
        Err(Short::Invalid(what)) => Err(what),
    }
}

/// Requests some servers extend with trailing fields: Keeper's `list_request_type` after
/// getChildren/getChildren2, and the Keeper extensions whose layout is only partly known.
fn tolerates_trailing_bytes(op: OpCode) -> bool {
    matches!(op.0, 8 | 12 | 500..=507) || op.name().is_none()
}

fn path<'a>(
    r: &mut JuteReader<'a>,
    max_path: usize,
    strict: bool,
    fields: &mut RequestFields<'a>,
) -> Read<()> {
    let (bytes, truncated) = r.string_prefix(max_path)?;
    if strict && !is_plausible_path(bytes) {
        return Err(Short::Invalid("path does not look like a znode path"));
    }
    if fields.path.is_none() {
        fields.path = Some((bytes, truncated));
    }
    Ok(())
}

/// A znode path as ZooKeeper accepts it (`PathUtils.validatePath`): starts with `/`, no
/// control characters, UTF-8 (a multi-byte character cut by the length bound is fine).
pub fn is_plausible_path(bytes: &[u8]) -> bool {
    if bytes.first() != Some(&b'/') || bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return false;
    }
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fn skip_acls(r: &mut JuteReader<'_>) -> Read<()> {
    // ACL = int32 perms + Id{ustring scheme, ustring id}: at least 12 bytes.
    let count = r.vector_count(12)?;
    for _ in 0..count {
        r.i32()?;
        r.skip_buffer()?;
        r.skip_buffer()?;
    }
    Ok(())
}

fn request_body<'a>(
    op: OpCode,
    r: &mut JuteReader<'a>,
    max_path: usize,
    strict: bool,
    fields: &mut RequestFields<'a>,
) -> Read<()> {
    if op.has_path() {
        path(r, max_path, strict, fields)?;
    }
    match op {
        OpCode::CREATE
        | OpCode::CREATE2
        | OpCode::CREATE_CONTAINER
        | OpCode::CREATE_IF_NOT_EXISTS
        | OpCode::CREATE_TTL => {
            r.skip_buffer()?; // data
            skip_acls(r)?;
            r.i32()?; // flags
            if op == OpCode::CREATE_TTL {
                r.i64()?;
            }
        }
        OpCode::SET_DATA => {
            r.skip_buffer()?;
            fields.version = Some(r.i32()?);
        }
        OpCode::SET_ACL => {
            skip_acls(r)?;
            fields.version = Some(r.i32()?);
        }
        OpCode::DELETE | OpCode::CHECK | OpCode::CHECK_NOT_EXISTS | OpCode::TRY_REMOVE => {
            fields.version = Some(r.i32()?);
        }
        OpCode::EXISTS
        | OpCode::GET_DATA
        | OpCode::GET_CHILDREN
        | OpCode::GET_CHILDREN2
        | OpCode::FILTERED_LIST
        | OpCode::FILTERED_LIST_WITH_STATS_AND_DATA => {
            fields.watch = r.bool()?;
        }
        OpCode::CHECK_WATCHES | OpCode::REMOVE_WATCHES | OpCode::ADD_WATCH => {
            r.i32()?; // watcher type / mode
        }
        OpCode::AUTH => {
            r.i32()?; // type, always 0
            let (scheme, _) = r.string_prefix(64)?;
            if strict && (scheme.is_empty() || !scheme.iter().all(u8::is_ascii_graphic)) {
                return Err(Short::Invalid("auth scheme is not a word"));
            }
            fields.auth_scheme = Some(scheme);
            r.skip_buffer()?; // credentials: never looked at
        }
        OpCode::SET_WATCHES | OpCode::SET_WATCHES2 => {
            r.i64()?; // relativeZxid
            let lists = if op == OpCode::SET_WATCHES { 3 } else { 5 };
            for _ in 0..lists {
                r.skip_string_vector()?;
            }
        }
        OpCode::SASL => r.skip_buffer()?,
        OpCode::RECONFIG => {
            for _ in 0..3 {
                r.skip_buffer()?;
            }
            r.i64()?;
        }
        // No fields beyond the path (or none at all), or a layout only partly known
        // (Keeper 503, 504, 507): the path is what the record keeps.
        _ => {}
    }
    Ok(())
}

/// A multi (or multiRead) request: `{MultiHeader, sub-request}*` then the terminator header
/// `{-1, done = true, -1}`.
fn multi_request<'a>(
    r: &mut JuteReader<'a>,
    max_path: usize,
    strict: bool,
    fields: &mut RequestFields<'a>,
    multi_ops: &mut Vec<&'static str>,
) -> Read<()> {
    loop {
        let op = OpCode(r.i32()?);
        let done = r.bool()?;
        let err = r.i32()?;
        if done {
            if strict && (op != OpCode::ERROR || err != -1) {
                return Err(Short::Invalid("bad multi terminator"));
            }
            return Ok(());
        }
        if strict && err != -1 {
            return Err(Short::Invalid("multi header err is not -1"));
        }
        let Some(name) = op.name().filter(|_| is_multi_sub_request(op)) else {
            if strict {
                return Err(Short::Invalid("unknown multi sub-request"));
            }
            // Unknown layout: keep the names so far, stop walking.
            return Err(Short::Truncated);
        };
        multi_ops.push(name);
        let mut sub = RequestFields::default();
        request_body(op, r, max_path, strict, &mut sub)?;
        if fields.path.is_none() {
            fields.path = sub.path;
        }
    }
}

fn is_multi_sub_request(op: OpCode) -> bool {
    matches!(
        op,
        OpCode::CREATE
            | OpCode::CREATE2
            | OpCode::CREATE_CONTAINER
            | OpCode::CREATE_TTL
            | OpCode::CREATE_IF_NOT_EXISTS
            | OpCode::DELETE
            | OpCode::SET_DATA
            | OpCode::CHECK
            | OpCode::CHECK_NOT_EXISTS
            | OpCode::TRY_REMOVE
            | OpCode::EXISTS
            | OpCode::GET_DATA
            | OpCode::GET_CHILDREN
            | OpCode::GET_CHILDREN2
            | OpCode::FILTERED_LIST
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: i64,
    pub zxid: i64,
    pub err: ErrorCode,
}

pub fn reply_header(r: &mut JuteReader<'_>, width: XidWidth) -> Read<ReplyHeader> {
    let xid = width.read(r)?;
    let zxid = r.i64()?;
    let err = ErrorCode(r.i32()?);
    Ok(ReplyHeader { xid, zxid, err })
}

/// Zxids are `epoch << 32 | counter` (ZooKeeper) or a log index (Keeper): far below 2^48
/// in practice; -1 in notifications of older servers.
const MAX_PLAUSIBLE_ZXID: i64 = 1 << 48;

impl ReplyHeader {
    /// What real servers send, given the frame's body length: an xid that is positive or
    /// special, a sane zxid, a known error code; no body after an error; pings and
    /// notifications never carry errors.
    pub fn is_plausible(&self, body_len: usize, header_len: usize) -> bool {
        let xid_ok = self.xid > 0
            || matches!(
                self.xid,
                xid::NOTIFICATION | xid::PING | xid::AUTH | xid::SET_WATCHES
            );
        xid_ok
            && (-1..MAX_PLAUSIBLE_ZXID).contains(&self.zxid)
            && self.err.name().is_some()
            && self.follows_error_rules(body_len, header_len)
            && (self.xid != xid::PING || body_len == header_len)
    }

    /// Protocol invariants that hold whatever the position: a reply with an error has no
    /// body, and a notification carries no error.
    pub fn follows_error_rules(&self, body_len: usize, header_len: usize) -> bool {
        (self.err.is_ok() || body_len == header_len)
            && (self.xid != xid::NOTIFICATION || self.err.is_ok())
    }
}

/// `WatcherEvent`, the body of a notification (xid -1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatcherEvent<'a> {
    pub event_type: i32,
    pub state: i32,
    pub path: (&'a [u8], bool),
}

pub fn watcher_event<'a>(
    r: &mut JuteReader<'a>,
    max_path: usize,
    strict: bool,
) -> Result<WatcherEvent<'a>, Short> {
    let event_type = r.i32()?;
    let state = r.i32()?;
    let path = r.string_prefix(max_path)?;
    if strict {
        // Servers notify about znodes; an event without a path (type None) is client-made.
        if !is_event_type(event_type)
            || !is_keeper_state(state)
            || !is_plausible_path(path.0)
            || !r.at_end()
        {
            return Err(Short::Invalid("not a watcher event"));
        }
    }
    Ok(WatcherEvent {
        event_type,
        state,
        path,
    })
}

/// What a multi reply says about its sub-results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MultiOutcome {
    /// The first sub-result error that is not "rolled back because another op failed"
    /// (or that one, if it is all there is).
    pub first_error: Option<ErrorCode>,
    /// Every sub-result was walked.
    pub complete: bool,
}

/// Walks a multi / multiRead reply body (after the reply header).
pub fn multi_reply(r: &mut JuteReader<'_>, strict: bool) -> Result<MultiOutcome, &'static str> {
    let mut outcome = MultiOutcome::default();
    let mut rolled_back = None;
    let walk = (|| -> Read<()> {
        loop {
            let op = OpCode(r.i32()?);
            let done = r.bool()?;
            let err = ErrorCode(r.i32()?);
            if done {
                return Ok(());
            }
            if op == OpCode::ERROR {
                // ErrorResponse repeats the code.
                let err = ErrorCode(r.i32()?);
                if strict && err.name().is_none() {
                    return Err(Short::Invalid("unknown error in a multi result"));
                }
                if err == ErrorCode::RUNTIME_INCONSISTENCY {
                    rolled_back.get_or_insert(err);
                } else if !err.is_ok() {
                    outcome.first_error.get_or_insert(err);
                }
                continue;
            }
            if strict && !err.is_ok() {
                return Err(Short::Invalid("multi result has an error but is not one"));
            }
            match op {
                OpCode::CREATE => r.skip_buffer()?,
                OpCode::CREATE2 | OpCode::CREATE_CONTAINER | OpCode::CREATE_TTL => {
                    r.skip_buffer()?;
                    r.skip(STAT_BYTES)?;
                }
                OpCode::DELETE | OpCode::CHECK | OpCode::CHECK_NOT_EXISTS | OpCode::TRY_REMOVE => {}
                OpCode::SET_DATA | OpCode::EXISTS => r.skip(STAT_BYTES)?,
                OpCode::GET_DATA => {
                    r.skip_buffer()?;
                    r.skip(STAT_BYTES)?;
                }
                OpCode::GET_CHILDREN => r.skip_string_vector()?,
                OpCode::GET_CHILDREN2 | OpCode::FILTERED_LIST => {
                    r.skip_string_vector()?;
                    r.skip(STAT_BYTES)?;
                }
                _ if strict => return Err(Short::Invalid("unknown multi result type")),
                // A result whose layout is unknown: what came before is all we know.
                _ => return Err(Short::Truncated),
            }
        }
    })();
    outcome.first_error = outcome.first_error.or(rolled_back);
    match walk {
        Ok(()) => {
            outcome.complete = true;
            Ok(outcome)
        }
        Err(Short::Truncated) => Ok(outcome),
        Err(Short::Invalid(what)) => Err(what),
    }
}

/// `Stat`: 3 × int64, 2 × int64 times, 3 × int32 versions, int64 owner, 2 × int32, int64.
pub const STAT_BYTES: usize = 68;

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn connect_frames_from_zktraffic() {
        let req = hex("0000002d 00000000 0000000000000000 00002710 0000000000000000 00000010 00000000000000000000000000000000 01");
        let Detect::Yes(c) = connect_request(&req) else {
            panic!()
        };
        assert_eq!((c.timeout_ms, c.read_only, c.frame_len), (10000, true, 49));
        assert_eq!(connect_request(&req[..20]), Detect::NeedMore);
        let rsp = hex("00000025 00000000 00002710 01001113200f0001 00000010 56c508a4b49f089b4ed3fa7e513d47cc 00");
        let Detect::Yes(r) = connect_response(&rsp, &[0]) else {
            panic!()
        };
        assert_eq!(r.session_id, 0x01001113200f0001);
        assert_eq!(connect_response(&rsp, &[10]), Detect::No);
    }

    #[test]
    fn keeper_protocol_11_handshake_is_one_byte_longer_than_it_says() {
        let mut req = hex("0000002d 0000000b 00");
        req.extend_from_slice(&hex("0000000000000000 00007530 0000000000000000 00000010"));
        req.extend_from_slice(&[0; 16]);
        req.push(1);
        let Detect::Yes(c) = connect_request(&req) else {
            panic!()
        };
        assert_eq!((c.protocol_version, c.frame_len), (11, 50));
        assert!(!c.use_compression);
    }

    #[test]
    fn paths_must_look_like_znode_paths_when_strict() {
        assert!(is_plausible_path(b"/a/b"));
        assert!(is_plausible_path("/é".as_bytes()));
        assert!(is_plausible_path(&"/é".as_bytes()[..2])); // cut inside a character
        assert!(!is_plausible_path(b"a/b"));
        assert!(!is_plausible_path(b"/a\0"));
        assert!(!is_plausible_path(b""));
    }
}
