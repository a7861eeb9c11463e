//! Protocol codes as newtypes: operation codes, error codes, special xids and four-letter
//! words. Unknown values survive decoding and print as their number.
//!
//! Sources: ZooKeeper 3.8 `ZooDefs.OpCode` and `KeeperException.Code` (checked against the
//! 3.8.0 jar installed here), ClickHouse `src/Common/ZooKeeper/ZooKeeperConstants.h`
//! (Keeper extensions 500–507, 997), `FourLetterCommands` (3.8) and Keeper's 4lw registry.
use std::fmt;
use std::sync::Mutex;

/// `RequestHeader.type`: what a request asks for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpCode(pub i32);

impl OpCode {
    pub const NOTIFICATION: OpCode = OpCode(0);
    pub const CREATE: OpCode = OpCode(1);
    pub const DELETE: OpCode = OpCode(2);
    pub const EXISTS: OpCode = OpCode(3);
    pub const GET_DATA: OpCode = OpCode(4);
    pub const SET_DATA: OpCode = OpCode(5);
    pub const GET_ACL: OpCode = OpCode(6);
    pub const SET_ACL: OpCode = OpCode(7);
    pub const GET_CHILDREN: OpCode = OpCode(8);
    pub const SYNC: OpCode = OpCode(9);
    pub const PING: OpCode = OpCode(11);
    pub const GET_CHILDREN2: OpCode = OpCode(12);
    pub const CHECK: OpCode = OpCode(13);
    pub const MULTI: OpCode = OpCode(14);
    pub const CREATE2: OpCode = OpCode(15);
    pub const RECONFIG: OpCode = OpCode(16);
    pub const CHECK_WATCHES: OpCode = OpCode(17);
    pub const REMOVE_WATCHES: OpCode = OpCode(18);
    pub const CREATE_CONTAINER: OpCode = OpCode(19);
    pub const DELETE_CONTAINER: OpCode = OpCode(20);
    pub const CREATE_TTL: OpCode = OpCode(21);
    pub const MULTI_READ: OpCode = OpCode(22);
    pub const AUTH: OpCode = OpCode(100);
    pub const SET_WATCHES: OpCode = OpCode(101);
    pub const SASL: OpCode = OpCode(102);
    pub const GET_EPHEMERALS: OpCode = OpCode(103);
    pub const GET_ALL_CHILDREN_NUMBER: OpCode = OpCode(104);
    pub const SET_WATCHES2: OpCode = OpCode(105);
    pub const ADD_WATCH: OpCode = OpCode(106);
    pub const WHO_AM_I: OpCode = OpCode(107);
    pub const CREATE_SESSION: OpCode = OpCode(-10);
    pub const CLOSE_SESSION: OpCode = OpCode(-11);
    /// Type of a failed sub-result in a multi reply (and of the terminator header).
    pub const ERROR: OpCode = OpCode(-1);
    // ClickHouse Keeper extensions.
    pub const FILTERED_LIST: OpCode = OpCode(500);
    pub const CHECK_NOT_EXISTS: OpCode = OpCode(501);
    pub const CREATE_IF_NOT_EXISTS: OpCode = OpCode(502);
    pub const REMOVE_RECURSIVE: OpCode = OpCode(503);
    pub const CHECK_STAT: OpCode = OpCode(504);
    pub const TRY_REMOVE: OpCode = OpCode(505);
    pub const FILTERED_LIST_WITH_STATS_AND_DATA: OpCode = OpCode(506);
    pub const LIST_RECURSIVE: OpCode = OpCode(507);
    pub const KEEPER_SESSION_ID: OpCode = OpCode(997);

    /// The ZooKeeper name (`ZooDefs.OpCode` spelling; Keeper extensions in the same style),
    /// or `None` for a code neither server defines.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "notification",
            1 => "create",
            2 => "delete",
            3 => "exists",
            4 => "getData",
            5 => "setData",
            6 => "getACL",
            7 => "setACL",
            8 => "getChildren",
            9 => "sync",
            11 => "ping",
            12 => "getChildren2",
            13 => "check",
            14 => "multi",
            15 => "create2",
            16 => "reconfig",
            17 => "checkWatches",
            18 => "removeWatches",
            19 => "createContainer",
            20 => "deleteContainer",
            21 => "createTTL",
            22 => "multiRead",
            100 => "auth",
            101 => "setWatches",
            102 => "sasl",
            103 => "getEphemerals",
            104 => "getAllChildrenNumber",
            105 => "setWatches2",
            106 => "addWatch",
            107 => "whoAmI",
            -10 => "createSession",
            -11 => "closeSession",
            -1 => "error",
            500 => "filteredList",
            501 => "checkNotExists",
            502 => "createIfNotExists",
            503 => "removeRecursive",
            504 => "checkStat",
            505 => "tryRemove",
            506 => "filteredListWithStatsAndData",
            507 => "listRecursive",
            997 => "sessionID",
            _ => return None,
        })
    }

    /// The name a record gives this op: its own, or `op(N)` for a code outside the table.
    #[inline]
    pub fn record_name(self) -> &'static str {
        // Every request's record asks: the common codes come from a table, not the match.
        match COMMON_OP_NAMES.get(self.0 as usize) {
            Some(name) if !name.is_empty() => name,
            _ => self.rare_record_name(),
        }
    }

    #[inline(never)]
    fn rare_record_name(self) -> &'static str {
        match self.name() {
            Some(name) => name,
            None => unknown_op_name(self.0),
        }
    }

    /// Whether a client may send this code as a request type (excludes `notification`,
    /// `error` and the server-internal `createSession`).
    pub const fn is_request(self) -> bool {
        !matches!(self.0, 0 | -1 | -10) && self.name().is_some()
    }

    /// Requests whose body starts with a znode path (`int32 len` + bytes).
    pub const fn has_path(self) -> bool {
        matches!(
            self.0,
            1..=9 | 12 | 13 | 15 | 17..=21 | 103 | 104 | 106 | 500..=507
        )
    }

    /// Requests whose last field is an `int32` expected version.
    pub const fn ends_with_version(self) -> bool {
        matches!(self.0, 2 | 5 | 7 | 13 | 501 | 505)
    }

    /// Requests made of sub-requests.
    pub const fn is_multi(self) -> bool {
        matches!(self.0, 14 | 22)
    }
}

/// [`OpCode::name`] of the codes 0..=22 ("" where none), indexed by code.
const COMMON_OP_NAMES: [&str; 23] = {
    let mut names = [""; 23];
    let mut code = 0;
    while code < names.len() {
        if let Some(name) = OpCode(code as i32).name() {
            names[code] = name;
        }
        code += 1;
    }
    names
};

/// Distinct `op(N)` names kept; later unknown codes are all `op(?)`.
const MAX_UNKNOWN_OP_NAMES: usize = 64;

/// `op(N)` as a `&'static str` (a record's operation is one): made once per code and kept
/// for the life of the process, at most [`MAX_UNKNOWN_OP_NAMES`] of them, so that garbage
/// accepted as frames cannot grow memory.
fn unknown_op_name(code: i32) -> &'static str {
    static NAMES: Mutex<Vec<(i32, &'static str)>> = Mutex::new(Vec::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&(_, name)) = names.iter().find(|(c, _)| *c == code) {
        return name;
    }
    if names.len() >= MAX_UNKNOWN_OP_NAMES {
        return "op(?)";
    }
    let name: &'static str = Box::leak(format!("op({code})").into_boxed_str());
    names.push((code, name));
    name
}

impl fmt::Display for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "op({})", self.0),
        }
    }
}

impl fmt::Debug for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `ReplyHeader.err` and multi sub-result errors (`KeeperException.Code`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    pub const OK: ErrorCode = ErrorCode(0);
    /// In a failed multi: the sub-operation was rolled back because another one failed.
    pub const RUNTIME_INCONSISTENCY: ErrorCode = ErrorCode(-2);
    pub const NO_NODE: ErrorCode = ErrorCode(-101);
    pub const AUTH_FAILED: ErrorCode = ErrorCode(-115);

    /// The `KeeperException.Code` name in its CamelCase spelling (`NoNode`, `BadVersion`),
    /// or `None` for an unknown code.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "Ok",
            -1 => "SystemError",
            -2 => "RuntimeInconsistency",
            -3 => "DataInconsistency",
            -4 => "ConnectionLoss",
            -5 => "MarshallingError",
            -6 => "Unimplemented",
            -7 => "OperationTimeout",
            -8 => "BadArguments",
            -12 => "UnknownSession",
            -13 => "NewConfigNoQuorum",
            -14 => "ReconfigInProgress",
            -100 => "APIError",
            -101 => "NoNode",
            -102 => "NoAuth",
            -103 => "BadVersion",
            -108 => "NoChildrenForEphemerals",
            -110 => "NodeExists",
            -111 => "NotEmpty",
            -112 => "SessionExpired",
            -113 => "InvalidCallback",
            -114 => "InvalidACL",
            -115 => "AuthFailed",
            -118 => "SessionMoved",
            -119 => "NotReadOnly",
            -120 => "EphemeralOnLocalSession",
            -121 => "NoWatcher",
            -122 => "RequestTimeout",
            -123 => "ReconfigDisabled",
            -124 => "SessionClosedRequireSaslAuth",
            -125 => "QuotaExceeded",
            -127 => "ThrottledOp",
            _ => return None,
        })
    }

    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "error({})", self.0),
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Special request/reply xids.
pub mod xid {
    /// Server → client watch notification.
    pub const NOTIFICATION: i64 = -1;
    pub const PING: i64 = -2;
    pub const AUTH: i64 = -4;
    /// setWatches / setWatches2 sent by the Java client when it reconnects.
    pub const SET_WATCHES: i64 = -8;
}

/// `ConnectRequest.protocolVersion` values that change the wire format.
pub mod protocol_version {
    pub const ZOOKEEPER: i32 = 0;
    /// Keeper: both directions are ClickHouse compression frames after the handshake.
    pub const KEEPER_COMPRESSION: i32 = 10;
    /// Keeper: 64-bit xids; one extra `bool use_compression` byte after protocolVersion.
    pub const KEEPER_XID_64: i32 = 11;
    /// Keeper: tracing; wire effect unknown.
    pub const KEEPER_TRACING: i32 = 12;
    /// Keeper's ConnectResponse when it refuses the session (not leader, not active).
    pub const KEEPER_CONNECTION_REJECT: i32 = 42;
}

/// A four-letter word a monitoring client sends instead of a ConnectRequest, and the
/// operation name its record gets.
pub fn four_letter_word(first: [u8; 4]) -> Option<&'static str> {
    const WORDS: &[(&[u8; 4], &str)] = &[
        // ZooKeeper 3.8 (FourLetterCommands).
        (b"conf", "4lw:conf"),
        (b"cons", "4lw:cons"),
        (b"crst", "4lw:crst"),
        (b"dirs", "4lw:dirs"),
        (b"dump", "4lw:dump"),
        (b"envi", "4lw:envi"),
        (b"gtmk", "4lw:gtmk"),
        (b"ruok", "4lw:ruok"),
        (b"stmk", "4lw:stmk"),
        (b"srvr", "4lw:srvr"),
        (b"srst", "4lw:srst"),
        (b"stat", "4lw:stat"),
        (b"wchc", "4lw:wchc"),
        (b"wchp", "4lw:wchp"),
        (b"wchs", "4lw:wchs"),
        (b"mntr", "4lw:mntr"),
        (b"isro", "4lw:isro"),
        (b"hash", "4lw:hash"),
        // Telnet "interrupt process" (IAC IP IAC DO), which ZooKeeper treats as close.
        (&[0xff, 0xf4, 0xff, 0xfd], "4lw:telnetClose"),
        // ClickHouse Keeper only.
        (b"rcvr", "4lw:rcvr"),
        (b"apiv", "4lw:apiv"),
        (b"csnp", "4lw:csnp"),
        (b"lgif", "4lw:lgif"),
        (b"rqld", "4lw:rqld"),
        (b"rclc", "4lw:rclc"),
        (b"clrs", "4lw:clrs"),
        (b"ftfl", "4lw:ftfl"),
        (b"ydld", "4lw:ydld"),
        (b"pfev", "4lw:pfev"),
        (b"lgrq", "4lw:lgrq"),
        (b"rcfg", "4lw:rcfg"),
        (b"jmst", "4lw:jmst"),
        (b"jmfp", "4lw:jmfp"),
        (b"jmep", "4lw:jmep"),
        (b"jmdp", "4lw:jmdp"),
    ];
    WORDS
        .iter()
        .find(|(word, _)| **word == first)
        .map(|&(_, name)| name)
}

/// `stmk` carries an 8-byte trace mask after the word.
pub const SET_TRACE_MASK: [u8; 4] = *b"stmk";

/// `WatcherEvent.type` values (`Watcher.Event.EventType`).
pub const fn is_event_type(t: i32) -> bool {
    matches!(t, -1..=7)
}

/// `WatcherEvent.state` values (`Watcher.Event.KeeperState`) a server may send.
pub const fn is_keeper_state(s: i32) -> bool {
    matches!(s, 0 | 3..=7 | -112)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_survive_and_print_their_number() {
        assert_eq!(OpCode(4).to_string(), "getData");
        assert_eq!(OpCode(1234).to_string(), "op(1234)");
        assert_eq!(ErrorCode(-101).to_string(), "NoNode");
        assert_eq!(ErrorCode(-999).to_string(), "error(-999)");
        assert!(OpCode::SET_DATA.ends_with_version());
        assert!(!OpCode::NOTIFICATION.is_request());
        assert_eq!(four_letter_word(*b"mntr"), Some("4lw:mntr"));
        assert_eq!(four_letter_word(*b"\0\0\0\x2d"), None);
    }
}
