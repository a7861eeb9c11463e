//! Protocol numbers: packet codes of each direction (`src/Core/Protocol.h`), protocol
//! revision thresholds (`src/Core/ProtocolDefines.h`) and compression method bytes. Codes are
//! newtypes so that unknown values survive and print.
use std::fmt;

macro_rules! code_newtype {
    ($(#[$doc:meta])* $name:ident { $($konst:ident = $value:literal => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub u64);

        impl $name {
            $(pub const $konst: $name = $name($value);)*

            /// The upstream name, or `None` for a code this parser does not know.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "Unknown({})", self.0),
                }
            }
        }
    };
}

code_newtype! {
    /// Packet type of a client → server packet (`Protocol::Client`).
    ClientPacket {
        HELLO = 0 => "Hello",
        QUERY = 1 => "Query",
        DATA = 2 => "Data",
        CANCEL = 3 => "Cancel",
        PING = 4 => "Ping",
        TABLES_STATUS_REQUEST = 5 => "TablesStatusRequest",
        KEEP_ALIVE = 6 => "KeepAlive",
        SCALAR = 7 => "Scalar",
        IGNORED_PART_UUIDS = 8 => "IgnoredPartUUIDs",
        READ_TASK_RESPONSE = 9 => "ReadTaskResponse",
        MERGE_TREE_READ_TASK_RESPONSE = 10 => "MergeTreeReadTaskResponse",
        SSH_CHALLENGE_REQUEST = 11 => "SSHChallengeRequest",
        SSH_CHALLENGE_RESPONSE = 12 => "SSHChallengeResponse",
        QUERY_PLAN = 13 => "QueryPlan",
        MERGE_TREE_ALL_RANGES_ANNOUNCEMENT_RESPONSE = 14 => "MergeTreeAllRangesAnnouncementResponse",
    }
}

code_newtype! {
    /// Packet type of a server → client packet (`Protocol::Server`).
    ServerPacket {
        HELLO = 0 => "Hello",
        DATA = 1 => "Data",
        EXCEPTION = 2 => "Exception",
        PROGRESS = 3 => "Progress",
        PONG = 4 => "Pong",
        END_OF_STREAM = 5 => "EndOfStream",
        PROFILE_INFO = 6 => "ProfileInfo",
        TOTALS = 7 => "Totals",
        EXTREMES = 8 => "Extremes",
        TABLES_STATUS_RESPONSE = 9 => "TablesStatusResponse",
        LOG = 10 => "Log",
        TABLE_COLUMNS = 11 => "TableColumns",
        PART_UUIDS = 12 => "PartUUIDs",
        READ_TASK_REQUEST = 13 => "ReadTaskRequest",
        PROFILE_EVENTS = 14 => "ProfileEvents",
        MERGE_TREE_ALL_RANGES_ANNOUNCEMENT = 15 => "MergeTreeAllRangesAnnouncement",
        MERGE_TREE_READ_TASK_REQUEST = 16 => "MergeTreeReadTaskRequest",
        TIMEZONE_UPDATE = 17 => "TimezoneUpdate",
        SSH_CHALLENGE = 18 => "SSHChallenge",
        PREVIEW_DATA = 19 => "PreviewData",
    }
}

code_newtype! {
    /// Method byte of a compression frame (`CompressionMethodByte`).
    CompressionMethod {
        NONE = 0x02 => "NONE",
        LZ4 = 0x82 => "LZ4",
        ZSTD = 0x90 => "ZSTD",
        MULTIPLE = 0x91 => "Multiple",
        DELTA = 0x92 => "Delta",
        T64 = 0x93 => "T64",
        DOUBLE_DELTA = 0x94 => "DoubleDelta",
        GORILLA = 0x95 => "Gorilla",
        AES_128_GCM_SIV = 0x96 => "AES_128_GCM_SIV",
        AES_256_GCM_SIV = 0x97 => "AES_256_GCM_SIV",
        FPC = 0x98 => "FPC",
        DEFLATE_QPL = 0x99 => "DeflateQpl",
        GCD = 0x9a => "GCD",
        ZSTD_QPL = 0x9b => "ZSTD_QPL",
        SZ3 = 0x9c => "SZ3",
    }
}

impl ServerPacket {
    /// Packets whose body is `String name` + Block (compressed when the query compresses).
    pub const fn carries_block(self) -> bool {
        matches!(self.0, 1 | 7 | 8 | 10 | 14 | 19)
    }
}

/// Protocol revision thresholds: a field or packet exists iff the negotiated revision is at
/// least the constant (upstream `DBMS_MIN_REVISION_WITH_*` / `DBMS_MIN_PROTOCOL_VERSION_WITH_*`).
pub mod revision {
    pub const CLIENT_INFO: u64 = 54032;
    pub const SERVER_TIMEZONE: u64 = 54058;
    pub const QUOTA_KEY_IN_CLIENT_INFO: u64 = 54060;
    pub const SERVER_DISPLAY_NAME: u64 = 54372;
    pub const VERSION_PATCH: u64 = 54401;
    pub const CLIENT_WRITE_INFO: u64 = 54420;
    pub const SETTINGS_SERIALIZED_AS_STRINGS: u64 = 54429;
    pub const INTERSERVER_SECRET: u64 = 54441;
    pub const OPENTELEMETRY: u64 = 54442;
    pub const X_FORWARDED_FOR_IN_CLIENT_INFO: u64 = 54443;
    pub const REFERER_IN_CLIENT_INFO: u64 = 54447;
    pub const DISTRIBUTED_DEPTH: u64 = 54448;
    pub const INITIAL_QUERY_START_TIME: u64 = 54449;
    pub const PARALLEL_REPLICAS: u64 = 54453;
    pub const CUSTOM_SERIALIZATION: u64 = 54454;
    pub const ADDENDUM: u64 = 54458;
    pub const PARAMETERS: u64 = 54459;
    pub const SERVER_QUERY_TIME_IN_PROGRESS: u64 = 54460;
    pub const PASSWORD_COMPLEXITY_RULES: u64 = 54461;
    pub const INTERSERVER_SECRET_V2: u64 = 54462;
    pub const TOTAL_BYTES_IN_PROGRESS: u64 = 54463;
    pub const TABLE_READ_ONLY_CHECK: u64 = 54467;
    pub const ROWS_BEFORE_AGGREGATION: u64 = 54469;
    pub const CHUNKED_PACKETS: u64 = 54470;
    pub const VERSIONED_PARALLEL_REPLICAS_PROTOCOL: u64 = 54471;
    pub const INTERSERVER_EXTERNALLY_GRANTED_ROLES: u64 = 54472;
    pub const SERVER_SETTINGS: u64 = 54474;
    pub const QUERY_AND_LINE_NUMBERS: u64 = 54475;
    pub const JWT_IN_INTERSERVER: u64 = 54476;
    pub const QUERY_PLAN_SERIALIZATION: u64 = 54477;
    pub const VERSIONED_CLUSTER_FUNCTION_PROTOCOL: u64 = 54479;
    pub const COMPRESSED_LOGS_PROFILE_EVENTS_COLUMNS: u64 = 54481;
    pub const CLIENT_AGENT_IN_CLIENT_INFO: u64 = 54485;
    /// Newest revision whose Query/ClientInfo layout is fully known. Above it (54486 internal
    /// query flag, 54488 current roles, ...) a few bytes of unknown layout may follow
    /// ClientInfo; the Query parser tolerates them.
    pub const NEWEST_KNOWN_LAYOUT: u64 = 54485;
    /// `DBMS_TCP_PROTOCOL_VERSION` of the newest ProtocolDefines.h read.
    pub const NEWEST: u64 = 54492;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_survive_and_print() {
        assert_eq!(ServerPacket(5).to_string(), "EndOfStream");
        assert_eq!(ServerPacket(77).to_string(), "Unknown(77)");
        assert_eq!(ClientPacket::QUERY.name(), Some("Query"));
        assert_eq!(CompressionMethod(0x82).to_string(), "LZ4");
        assert_eq!(CompressionMethod(0x01).name(), None);
    }

    #[test]
    fn error_names_come_from_the_static_table() {
        use super::super::error_codes::{error_name, ERROR_NAMES};
        assert_eq!(error_name(60), Some("UNKNOWN_TABLE"));
        assert_eq!(error_name(62), Some("SYNTAX_ERROR"));
        assert_eq!(error_name(394), Some("QUERY_WAS_CANCELLED"));
        assert_eq!(error_name(-5), None);
        assert!(ERROR_NAMES.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
